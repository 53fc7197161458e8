#!/usr/bin/env python3
"""Build tiny random-weight HF models (gemma3, gemma2, llama) plus reference
activations computed with transformers (eager attention, float32).

Writes tests/fixtures/tiny/{gemma3,gemma2,llama}/ with
  config.json, model.safetensors            (save_pretrained, float32)
  tokenizer.json, tokenizer_config.json     (tiny WordLevel tokenizer)
  expected.safetensors                      (reference activations, see README)

Usage:  /opt/refenv/bin/python tools/make_tiny_models.py [--out tests/fixtures/tiny]

Fully deterministic (fixed seeds, CPU, float32, single thread).
"""
import argparse
import json
import math
import os
import shutil
import sys

import torch
import transformers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from tokenizers import Tokenizer, models, pre_tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_write  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

VOCAB = 96
HIDDEN = 32
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 8
INTER = 64
B, S = 2, 10
N_PAD_ROW1 = 3
STEER_LAYER = 1
STEER_SCALE = 4.0

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


def build_tokenizer():
    vocab = {"<pad>": PAD_ID, "<eos>": EOS_ID, "<bos>": BOS_ID, "<unk>": UNK_ID}
    for i in range(4, VOCAB):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
    )
    return fast


# --------------------------------------------------------------------------
# Model configs
# --------------------------------------------------------------------------

def gemma3_config():
    n_layers = 6
    pattern = 6
    layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    assert layer_types == ["sliding_attention"] * 5 + ["full_attention"]
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=n_layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        tie_word_embeddings=True,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        query_pre_attn_scalar=16,
        sliding_window=4,
        layer_types=layer_types,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        attn_implementation="eager",
    )
    # legacy (transformers 4.5x style) keys, also written into config.json
    legacy = {
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "sliding_window_pattern": pattern,
        "rope_scaling": None,
    }
    return cfg, legacy


def gemma2_config():
    n_layers = 4
    layer_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n_layers)]
    cfg = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=n_layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        query_pre_attn_scalar=16,
        sliding_window=4,
        layer_types=layer_types,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        attn_implementation="eager",
    )
    legacy = {"rope_theta": 10000.0, "sliding_window_pattern": 2}
    return cfg, legacy


def llama_config():
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=3,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        hidden_act="silu",
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attention_bias=False,
        mlp_bias=False,
        attn_implementation="eager",
    )
    legacy = {"rope_theta": 10000.0, "rope_scaling": None}
    return cfg, legacy


# std choices: activations stay O(1); gemma2's q/k and embeddings are larger so
# that attn softcap (50) and final softcap (30) actually bind.
STDS = {
    "gemma3": dict(embed=1.0, qk=0.35, v=0.35, o=0.35, gate=0.35, up=0.35, down=0.25, norm=0.5, norm_mean=0.0),
    "gemma2": dict(embed=1.3, qk=1.0, v=0.35, o=0.35, gate=0.35, up=0.35, down=0.25, norm=0.5, norm_mean=0.0),
    "llama": dict(embed=1.0, qk=0.5, v=0.35, o=0.35, gate=0.35, up=0.35, down=0.25, norm=0.5, norm_mean=1.0),
}


def reinit(model, arch, seed):
    st = STDS[arch]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("embed_tokens.weight"):
                std, mean = st["embed"], 0.0
            elif "norm" in name:
                std, mean = st["norm"], st["norm_mean"]
            elif "q_proj" in name or "k_proj" in name:
                std, mean = st["qk"], 0.0
            elif "v_proj" in name:
                std, mean = st["v"], 0.0
            elif "o_proj" in name:
                std, mean = st["o"], 0.0
            elif "gate_proj" in name:
                std, mean = st["gate"], 0.0
            elif "up_proj" in name:
                std, mean = st["up"], 0.0
            elif "down_proj" in name:
                std, mean = st["down"], 0.0
            elif name == "lm_head.weight":
                continue  # tied
            else:
                raise RuntimeError(f"unhandled parameter {name}")
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std + mean)


def make_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, S), generator=g, dtype=torch.int64)
    mask = torch.ones(B, S, dtype=torch.int64)
    mask[1, :N_PAD_ROW1] = 0
    ids[1, :N_PAD_ROW1] = PAD_ID
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def run_with_hooks(model, arch, ids, mask, pos, steer=None):
    """Forward pass with capture hooks. If steer is given, add it to the input of
    layer STEER_LAYER at the last position of every row (no capture)."""
    inner = model.model
    cap = {}
    handles = []
    is_gemma = arch.startswith("gemma")

    def pre_layer(l):
        def fn(mod, args, kwargs):
            if args:
                h = args[0]
            else:
                h = kwargs["hidden_states"]
            if steer is not None and l == STEER_LAYER:
                h = h.clone()
                h[:, -1, :] += steer
                if args:
                    args = (h,) + tuple(args[1:])
                else:
                    kwargs = dict(kwargs)
                    kwargs["hidden_states"] = h
                return args, kwargs
            cap[f"blocks.{l}.hook_resid_pre"] = h.detach().clone()
            return None
        return fn

    def post_layer(l):
        def fn(mod, args, kwargs, out):
            cap[f"blocks.{l}.hook_resid_post"] = first(out).detach().clone()
        return fn

    def attn_out_hook(l):
        def fn(mod, args, out):
            cap[f"blocks.{l}.hook_attn_out"] = first(out).detach().clone()
        return fn

    def attn_pattern_hook(l):
        def fn(mod, args, kwargs, out):
            w = out[1]
            assert w is not None, "attention weights not returned (need eager)"
            cap[f"blocks.{l}.attn.hook_pattern"] = w.detach().clone()
        return fn

    def z_hook(l):
        def fn(mod, args):
            z = args[0]
            b, s, _ = z.shape
            cap[f"blocks.{l}.attn.hook_z"] = z.detach().reshape(b, s, HEADS, HEAD_DIM).clone()
        return fn

    def mlp_out_hook(l):
        def fn(mod, args, out):
            cap[f"blocks.{l}.hook_mlp_out"] = first(out).detach().clone()
        return fn

    for l, layer in enumerate(inner.layers):
        handles.append(layer.register_forward_pre_hook(pre_layer(l), with_kwargs=True))
        if steer is not None:
            continue
        handles.append(layer.register_forward_hook(post_layer(l), with_kwargs=True))
        handles.append(layer.self_attn.register_forward_hook(attn_pattern_hook(l), with_kwargs=True))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(z_hook(l)))
        if is_gemma:
            handles.append(layer.post_attention_layernorm.register_forward_hook(attn_out_hook(l)))
            handles.append(layer.post_feedforward_layernorm.register_forward_hook(mlp_out_hook(l)))
        else:
            handles.append(layer.self_attn.o_proj.register_forward_hook(attn_out_hook(l)))
            handles.append(layer.mlp.register_forward_hook(mlp_out_hook(l)))
    if steer is None:
        handles.append(inner.norm.register_forward_hook(
            lambda m, a, o: cap.__setitem__("ln_final.hook_normalized", o.detach().clone())))
        handles.append(model.lm_head.register_forward_hook(
            lambda m, a, o: cap.__setitem__("_lm_head_raw", o.detach().clone())))
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                        output_attentions=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out, cap


def patch_config_json(path, legacy):
    with open(path) as f:
        cfg = json.load(f)
    for k, v in legacy.items():
        cfg[k] = v
    cfg["torch_dtype"] = "float32"
    cfg["dtype"] = "float32"
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return cfg


def build_one(arch, out_dir, seed):
    print(f"=== {arch} ===")
    torch.manual_seed(seed)
    cfg, legacy = {"gemma3": gemma3_config, "gemma2": gemma2_config, "llama": llama_config}[arch]()
    cls = {"gemma3": Gemma3ForCausalLM, "gemma2": Gemma2ForCausalLM, "llama": LlamaForCausalLM}[arch]
    model = cls(cfg).eval().to(torch.float32)
    reinit(model, arch, seed)

    d = os.path.join(out_dir, arch)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    model.save_pretrained(d, safe_serialization=True)
    cfgd = patch_config_json(os.path.join(d, "config.json"), legacy)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    tok = build_tokenizer()
    tok.save_pretrained(d)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)
    tcp = os.path.join(d, "tokenizer_config.json")
    with open(tcp) as f:
        tc = json.load(f)
    tc.pop("model_max_length", None)
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(tcp, "w") as f:
        json.dump(tc, f, indent=2, sort_keys=True)
        f.write("\n")
    from transformers import AutoTokenizer
    t2 = AutoTokenizer.from_pretrained(d)
    assert t2("w5 w17 w95", add_special_tokens=False)["input_ids"] == [5, 17, 95]

    # Reload from disk: the expected activations are computed from the saved
    # files (verifies config.json, incl. the legacy keys, round-trips).
    m2 = cls.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
    if arch == "gemma3":
        assert list(m2.config.layer_types) == ["sliding_attention"] * 5 + ["full_attention"], m2.config.layer_types
        rp = m2.config.rope_parameters
        assert rp["sliding_attention"]["rope_theta"] == 1e4 and rp["full_attention"]["rope_theta"] == 1e6, rp
        assert m2.config.query_pre_attn_scalar == 16
    if arch == "gemma2":
        assert list(m2.config.layer_types) == ["sliding_attention", "full_attention"] * 2
    sd1, sd2 = model.state_dict(), m2.state_dict()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k

    ids, mask, pos = make_inputs(seed + 1)
    out, cap = run_with_hooks(m2, arch, ids, mask, pos)
    logits = out.logits.detach().clone()
    n_layers = cfg.num_hidden_layers

    exp = {"input_ids": ids, "attention_mask": mask}
    exp["hook_embed"] = cap["blocks.0.hook_resid_pre"]
    for l in range(n_layers):
        pre = cap[f"blocks.{l}.hook_resid_pre"]
        attn_out = cap[f"blocks.{l}.hook_attn_out"]
        mid = pre + attn_out
        post = cap[f"blocks.{l}.hook_resid_post"]
        mlp_out = cap[f"blocks.{l}.hook_mlp_out"]
        torch.testing.assert_close(mid + mlp_out, post, rtol=0, atol=1e-5)
        if l + 1 < n_layers:
            assert torch.equal(post, cap[f"blocks.{l + 1}.hook_resid_pre"]), f"resid_post {l} != resid_pre {l + 1}"
        exp[f"blocks.{l}.hook_resid_pre"] = pre
        exp[f"blocks.{l}.attn.hook_pattern"] = cap[f"blocks.{l}.attn.hook_pattern"]
        exp[f"blocks.{l}.attn.hook_z"] = cap[f"blocks.{l}.attn.hook_z"]
        exp[f"blocks.{l}.hook_attn_out"] = attn_out
        exp[f"blocks.{l}.hook_resid_mid"] = mid
        exp[f"blocks.{l}.hook_mlp_out"] = mlp_out
        exp[f"blocks.{l}.hook_resid_post"] = post
    exp["ln_final.hook_normalized"] = cap["ln_final.hook_normalized"]
    exp["logits"] = logits

    # sanity checks on the captured data
    if arch.startswith("gemma"):
        emb = m2.model.embed_tokens.weight[ids] * torch.tensor(math.sqrt(HIDDEN), dtype=torch.float32)
        torch.testing.assert_close(exp["hook_embed"], emb, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(exp["hook_embed"], m2.model.embed_tokens.weight[ids])
    # output_attentions must agree with our hook
    for l in range(n_layers):
        assert torch.equal(out.attentions[l], exp[f"blocks.{l}.attn.hook_pattern"])
    # pattern rows of real queries: zero on pad keys, zero in the future, sum 1
    for l in range(n_layers):
        pat = exp[f"blocks.{l}.attn.hook_pattern"]
        assert pat.shape == (B, HEADS, S, S)
        assert torch.all(pat[1, :, N_PAD_ROW1:, :N_PAD_ROW1] == 0)
        assert torch.all(torch.triu(pat[0], diagonal=1) == 0)
        torch.testing.assert_close(pat[0].sum(-1), torch.ones(HEADS, S))
        lt = m2.config.layer_types[l] if hasattr(m2.config, "layer_types") and m2.config.layer_types else "full_attention"
        if lt == "sliding_attention":
            w = m2.config.sliding_window
            qi = torch.arange(S)[:, None]
            ki = torch.arange(S)[None, :]
            assert torch.all(pat[0][:, (qi - ki) >= w] == 0), "sliding window not applied"
            assert torch.all(pat[0][:, (qi - ki) == w - 1] > 0)
    raw = cap["_lm_head_raw"]
    if arch == "gemma2":
        sc = 30.0
        torch.testing.assert_close(torch.tanh(raw / sc) * sc, logits)
        print(f"  final softcap: max|raw logit|={raw.abs().max():.2f}, "
              f"frac |raw|>15: {(raw.abs() > 15).float().mean():.3f}, "
              f"max |raw - capped|={(raw - logits).abs().max():.3f}")
        # diagnostic: how much does the attention softcap change the patterns?
        for layer in m2.model.layers:
            layer.self_attn.attn_logit_softcapping = None
        try:
            _, cap_nc = run_with_hooks(m2, arch, ids, mask, pos)
        finally:
            for layer in m2.model.layers:
                layer.self_attn.attn_logit_softcapping = m2.config.attn_logit_softcapping
        dmax = max((cap_nc[f"blocks.{l}.attn.hook_pattern"] - cap[f"blocks.{l}.attn.hook_pattern"]).abs().max().item()
                   for l in range(n_layers))
        print(f"  attn softcap: max |pattern(capped) - pattern(uncapped)| = {dmax:.4f}")
    else:
        assert torch.equal(raw, logits)
    for k, v in exp.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k

    # steering intervention
    gs = torch.Generator().manual_seed(seed + 2)
    steer_vec = torch.randn(HIDDEN, generator=gs, dtype=torch.float32)
    out_s, _ = run_with_hooks(m2, arch, ids, mask, pos, steer=STEER_SCALE * steer_vec)
    exp["steer.vector"] = steer_vec
    exp["steer.logits"] = out_s.logits.detach().clone()
    # positions before the last one must be unaffected (causal)
    # (pad query positions are excluded: their rows are fully masked and their
    # values are implementation-defined)
    real = mask.bool().clone()
    real[:, -1] = False
    assert torch.equal(exp["steer.logits"][real], logits[real])
    assert not torch.allclose(exp["steer.logits"][:, -1], logits[:, -1])

    exp = {k: v.detach().clone().contiguous() for k, v in exp.items()}
    for k, v in exp.items():
        if v.is_floating_point():
            assert v.dtype == torch.float32, k
    st_write.save(os.path.join(d, "expected.safetensors"), exp, metadata={
        "generator": "tools/make_tiny_models.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "arch": arch,
        "seed": str(seed),
        "steer_layer": str(STEER_LAYER),
        "steer_scale": str(STEER_SCALE),
        "steer_position": "last (S-1) of every row",
        "position_ids": "(attention_mask.cumsum(-1) - 1).clamp(min=0)",
    })

    # stats
    for l in range(n_layers):
        rp = exp[f"blocks.{l}.hook_resid_post"]
        print(f"  L{l} {m2.config.layer_types[l] if getattr(m2.config, 'layer_types', None) else 'full'}: "
              f"resid_post rms={rp.pow(2).mean().sqrt():.3f} attn_out rms={exp[f'blocks.{l}.hook_attn_out'].pow(2).mean().sqrt():.3f} "
              f"mlp_out rms={exp[f'blocks.{l}.hook_mlp_out'].pow(2).mean().sqrt():.3f} "
              f"pattern max={exp[f'blocks.{l}.attn.hook_pattern'][0].max():.3f}")
    print(f"  logits std={logits.std():.3f} max|.|={logits.abs().max():.3f}; "
          f"steer changes last-pos argmax: {(exp['steer.logits'][:, -1].argmax(-1) != logits[:, -1].argmax(-1)).tolist()}")
    return d


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "tiny"))
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    seeds = {"gemma3": 1234, "gemma2": 2345, "llama": 3456}
    for arch in ("gemma3", "gemma2", "llama"):
        build_one(arch, out_dir, seeds[arch])
    total = 0
    for root, _, files in os.walk(out_dir):
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
            total += os.path.getsize(os.path.join(root, f))
    print(f"total size of {out_dir}: {total} bytes")
    assert total < 1_000_000


if __name__ == "__main__":
    main()
