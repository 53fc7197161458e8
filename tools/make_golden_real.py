#!/usr/bin/env python3
"""Golden activations for real GGUF models, from two independent references:
transformers (GGUF de-quantised to float32, eager attention) and llama.cpp
(llama-cpp-python, default CPU settings).

Writes, per model, tests/fixtures/<name>/prompts.json and golden.safetensors:
  p{i}.ids                    int64 [S]     token ids fed to both references
  p{i}.embed                  f32 [S,D]     input hidden states of layer 0 (transformers)
  p{i}.resid_post             f32 [L,S,D]   output of every decoder layer (transformers; no final norm)
  p{i}.top20_ids/_logits      int64/f32 [20] transformers logits, last position, sorted desc
  p{i}.llamacpp_top20_ids/_logits          same from llama.cpp on the same ids

Usage: /opt/refenv/bin/python tools/make_golden_real.py [--models-dir /tmp/models] [--only gemma-3-270m]
"""
import argparse
import gc
import hashlib
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_write  # noqa: E402
from json_cases import dump_one_case_per_line

torch.set_num_threads(2)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")

MODELS = {
    "gemma-3-270m": {"gguf": "gemma-3-270m-q4_k_m.gguf"},
    "smollm2-135m-instruct": {"gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"},
}

PROMPTS = [
    "Michael Jordan plays the sport of",
    "The movie 'The Godfather' was directed by",
    "Paris is in the country of",
    "What is the album of 'Gangnam Style'?",
    "Pi is 3.14, e is",                     # digits
    "Café in 東京 is",                      # accent + CJK
    "def f(x):\n    return",                # code
    "Hi  there.\nThe sky is",                # double space + newline
    "The chemical symbol for gold is",
    "She opened the door and saw a",
]
MAX_TOKENS = 12
TOPK = 20


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gguf_meta(path):
    import gguf
    r = gguf.GGUFReader(path)
    out = {}
    for k in ("general.architecture", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id",
              "tokenizer.ggml.pre", "tokenizer.ggml.model"):
        if k in r.fields:
            out[k] = r.fields[k].contents()
    return out




def topk_sorted(logits, k=TOPK):
    logits = np.asarray(logits, dtype=np.float32)
    # stable descending sort: ties resolved by lower id first
    order = np.argsort(-logits, kind="stable")[:k]
    return order.astype(np.int64), logits[order].astype(np.float32)


def hf_phase(models_dir, gguf_name, add_bos):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(models_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(
        models_dir, gguf_file=gguf_name, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    print(f"  transformers config: model_type={cfg.model_type} L={cfg.num_hidden_layers} D={cfg.hidden_size} "
          f"vocab={cfg.vocab_size} rope={getattr(cfg, 'rope_parameters', None)} "
          f"sliding_window={getattr(cfg, 'sliding_window', None)} layer_types[:7]={(getattr(cfg, 'layer_types', None) or [])[:7]} "
          f"qpas={getattr(cfg, 'query_pre_attn_scalar', None)} tie={cfg.tie_word_embeddings}")
    layers = model.model.layers
    res = []
    for text in PROMPTS:
        enc_special = tok(text, add_special_tokens=True)["input_ids"]
        enc_plain = tok(text, add_special_tokens=False)["input_ids"]
        if add_bos:
            ids = enc_special
            assert ids[0] == tok.bos_token_id and ids[1:] == enc_plain, (ids, enc_plain)
        else:
            ids = enc_plain
        assert len(ids) <= MAX_TOKENS, (text, len(ids), ids)
        cap = {}
        hs = []

        def pre0(mod, args, kwargs):
            cap["embed"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        def post(mod, args, out):
            hs.append((out[0] if isinstance(out, tuple) else out).detach().clone())

        handles = [layers[0].register_forward_pre_hook(pre0, with_kwargs=True)]
        handles += [l.register_forward_hook(post) for l in layers]
        try:
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids]), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        assert len(hs) == cfg.num_hidden_layers
        logits = out.logits[0, -1].float().numpy()
        tid, tlog = topk_sorted(logits)
        res.append({
            "text": text,
            "ids": ids,
            "hf_add_special_tokens_ids": enc_special,
            "embed": cap["embed"][0].float(),
            "resid_post": torch.stack([h[0] for h in hs]).float(),
            "top_ids": tid, "top_logits": tlog,
            "hf_tokens": tok.convert_ids_to_tokens(ids),
        })
    del model
    gc.collect()
    return res


def last_logits(llm, ids):
    """Logits of the last position after evaluating ids from an empty KV cache.
    (With logits_all=False, llama-cpp-python 0.3.x no longer copies logits into
    llm.scores, so read them straight from the context.)"""
    llm.reset()
    llm.eval(ids)
    ptr = llm._ctx.get_logits_ith(-1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32).copy()


def llamacpp_phase(gguf_path, add_bos, prompts_ids):
    from llama_cpp import Llama
    llm = Llama(model_path=gguf_path, n_ctx=512, logits_all=False, verbose=False, n_threads=2, seed=0)
    out = []
    for text, ids in prompts_ids:
        lc_ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
        lc_ids_sp = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        logits = last_logits(llm, ids)
        # re-evaluate once to make sure the KV cache was reset properly
        logits2 = last_logits(llm, ids)
        assert np.array_equal(logits, logits2), "llama.cpp not reproducible across reset()"
        tid, tlog = topk_sorted(logits)
        out.append({"lc_ids": list(map(int, lc_ids)), "lc_ids_special": list(map(int, lc_ids_sp)),
                    "top_ids": tid, "top_logits": tlog, "n_vocab": llm.n_vocab()})
    del llm
    gc.collect()
    return out


def run_model(name, models_dir, out_root):
    import llama_cpp
    import transformers
    gguf_name = MODELS[name]["gguf"]
    gguf_path = os.path.join(models_dir, gguf_name)
    meta = gguf_meta(gguf_path)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    digest = sha256(gguf_path)
    print(f"=== {name}: {gguf_name} sha256={digest} add_bos={add_bos} meta={meta}")

    hf = hf_phase(models_dir, gguf_name, add_bos)
    lc = llamacpp_phase(gguf_path, add_bos, [(r["text"], r["ids"]) for r in hf])

    tensors = {}
    prompts_json = []
    print(f"  {'i':>2} {'S':>2} ids==lc top1(hf,lc) agree  max|dlogit| top20-overlap  text")
    for i, (h, l) in enumerate(zip(hf, lc)):
        ids = np.array(h["ids"], dtype=np.int64)
        tensors[f"p{i}.ids"] = ids
        tensors[f"p{i}.embed"] = h["embed"]
        tensors[f"p{i}.resid_post"] = h["resid_post"]
        tensors[f"p{i}.top20_ids"] = h["top_ids"]
        tensors[f"p{i}.top20_logits"] = h["top_logits"]
        tensors[f"p{i}.llamacpp_top20_ids"] = l["top_ids"]
        tensors[f"p{i}.llamacpp_top20_logits"] = l["top_logits"]
        ids_match = l["lc_ids"] == h["ids"]
        # compare logits on the union-free basis: the HF top-20 ids, looked up in both
        # (llama.cpp values are only stored for its own top-20, so compare on the
        # intersection of the two top-20 sets)
        common = [t for t in h["top_ids"] if t in set(l["top_ids"].tolist())]
        hmap = dict(zip(h["top_ids"].tolist(), h["top_logits"].tolist()))
        lmap = dict(zip(l["top_ids"].tolist(), l["top_logits"].tolist()))
        dmax = max(abs(hmap[t] - lmap[t]) for t in common) if common else float("nan")
        top1 = int(h["top_ids"][0]) == int(l["top_ids"][0])
        print(f"  {i:>2} {len(ids):>2} {str(ids_match):>6} ({int(h['top_ids'][0])},{int(l['top_ids'][0])}) {str(top1):>5}"
              f"  {dmax:10.4f}  {len(common):>2}/20  {h['text']!r}")
        prompts_json.append({
            "index": i,
            "text": h["text"],
            "ids": h["ids"],
            "tokens": h["hf_tokens"],
            "llamacpp_ids": l["lc_ids"],
            "ids_match_llamacpp": ids_match,
            "llamacpp_ids_parse_special": l["lc_ids_special"],
            "top1_agree": top1,
            "max_abs_top20_logit_diff": round(float(dmax), 6),
            "top20_overlap": len(common),
        })

    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    st_write.save(os.path.join(d, "golden.safetensors"), tensors, metadata={
        "generator": "tools/make_golden_real.py",
        "gguf_file": gguf_name,
        "gguf_sha256": digest,
        "add_bos": str(add_bos).lower(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "llama_cpp_python": llama_cpp.__version__,
        "n_prompts": str(len(PROMPTS)),
        "embed": "input hidden_states of decoder layer 0 (gemma: already * sqrt(hidden))",
        "resid_post": "output of each decoder layer, before the final norm",
        "top20": "last position, sorted by logit descending (stable, ties -> lower id)",
    })
    with open(os.path.join(d, "prompts.json"), "w", encoding="utf-8") as f:
        dump_one_case_per_line({
            "model": name,
            "gguf_file": gguf_name,
            "gguf_sha256": digest,
            "add_bos": add_bos,
            "tokenizer.ggml.pre": meta.get("tokenizer.ggml.pre"),
            "note": "ids are what both references were fed; they come from the transformers GGUF tokenizer "
                    "(add_special_tokens=add_bos) and are compared with llama.cpp's tokenize(add_bos, special=False).",
            "prompts": prompts_json,
        }, "prompts", f)
    for fn in ("golden.safetensors", "prompts.json"):
        p = os.path.join(d, fn)
        os.chmod(p, 0o644)
        print(f"  wrote {p} ({os.path.getsize(p)} bytes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", default=os.environ.get("KNOWLENS_MODELS_DIR", "/tmp/models"))
    ap.add_argument("--out", default=FIXTURES)
    ap.add_argument("--only", choices=sorted(MODELS), default=None)
    args = ap.parse_args()
    for name in MODELS:
        if args.only and name != args.only:
            continue
        run_model(name, args.models_dir, os.path.abspath(args.out))


if __name__ == "__main__":
    main()
