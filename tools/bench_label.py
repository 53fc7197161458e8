#!/usr/bin/env python3
"""Labeling speed: knowlens against transformers' batched `generate` (float32, CPU) on the same
questions, in the same run.

1. `knowlens label` answers the questions of `--per-type` entities per type (greedy, then
   likelihood mode) into a scratch directory; its summary gives questions/s without model loading.
2. transformers answers the very same prompts (read back from knowlens's records): greedy
   `generate` with the same batch size, token budgets and stop strings; a teacher-forced forward
   pass per (question, gold value) for the likelihood mode; and for the estimate mode (the full
   rule: P(an answer at T = 1 is correct) from the teacher-forced probability of every surface
   form of the gold answers), a teacher-forced pass per (question, form) over the very forms
   knowlens scored, whose summed probabilities are also compared with knowlens's estimates.
Also reports how often the two greedy completions are identical.

    /opt/refenv/bin/python tools/bench_label.py [--per-type 24] [--batch 64] [--modes greedy,likelihood,estimate]
"""
import argparse, json, os, subprocess, sys, tempfile, time

N_THREADS = 2
STOPS = ["\n", ". ", ", ", "; "]


def budget(attr, etype):
    """Token budget per answer kind, as max_new_tokens in src/entities/label.rs."""
    if attr == "population":
        return 14
    if attr in ("release_year", "birth_year") or (etype, attr) == ("movie", "genre"):
        return 8
    return 12


def knowlens_run(binary, per_type, batch, mode, out, home):
    cmd = [binary, "label", "--out", out, "--per-type", str(per_type), "--mode", mode,
           "--templates", "paper", "--batch-size", str(batch)]
    env = dict(os.environ, KNOWLENS_HOME=home) if home else None
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    s = json.load(open(os.path.join(out, mode, "summary.json")))
    return s["questions_this_run"], s["seconds_this_run"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=24)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--binary", default="target/release/knowlens")
    ap.add_argument("--gguf", default=os.path.expanduser("~/.cache/knowlens/models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--home", default=None, help="KNOWLENS_HOME for the knowlens runs")
    ap.add_argument("--modes", default="greedy,likelihood", help="comma-separated: greedy, likelihood, estimate")
    args = ap.parse_args()
    modes = args.modes.split(",")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(N_THREADS)
    out = tempfile.mkdtemp(prefix="bench_label_")
    res = {}
    for mode in modes:
        n, sec = knowlens_run(args.binary, args.per_type, args.batch, mode, out, args.home)
        res[f"knowlens_{mode}_qps"] = n / sec
        res[f"knowlens_{mode}_questions"] = n
    first = modes[0]
    recs = [json.loads(l) for l in open(os.path.join(out, first, "completions.jsonl"))]
    ents = {}
    for f in ["movie", "city", "player", "song", "person", "company"]:
        for l in open(f"data/entities/v2/{f}.jsonl"):
            e = json.loads(l)
            ents[e["id"]] = e

    d, f = os.path.split(args.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()

    if "estimate" in modes:
        res.update(transformers_estimate(tok, model, os.path.join(out, "estimate", "completions.jsonl"), args.batch))
        res["estimate_speedup"] = res["knowlens_estimate_qps"] / res["transformers_estimate_qps"]
    if "greedy" not in modes:
        print(json.dumps(res, indent=1))
        return
    # Greedy generate, grouped by budget and prompt length as knowlens batches them.
    recs.sort(key=lambda r: (budget(r["attribute"], r["entity_type"]), len(tok(r["prompt"]).input_ids), r["entity_id"]))
    same = 0
    t0 = time.perf_counter()
    i = 0
    while i < len(recs):
        b = budget(recs[i]["attribute"], recs[i]["entity_type"])
        j = i
        while j < len(recs) and j - i < args.batch and budget(recs[j]["attribute"], recs[j]["entity_type"]) == b:
            j += 1
        chunk = recs[i:j]
        enc = tok([r["prompt"] for r in chunk], return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=b, do_sample=False, stop_strings=STOPS, tokenizer=tok,
                                 pad_token_id=tok.pad_token_id)
        for r, g in zip(chunk, gen[:, enc.input_ids.shape[1]:]):
            text = tok.decode(g, skip_special_tokens=True)
            cut = min([text.find(s) for s in STOPS if s in text] or [len(text)])
            same += text[:cut] == r["greedy"]["text"]
        i = j
    sec = time.perf_counter() - t0
    res["transformers_greedy_qps"] = len(recs) / sec
    res["greedy_identical_completions"] = f"{same}/{len(recs)}"

    # Likelihood: teacher forcing of prompt + " value" per (question, gold value ≤ 4).
    rows = []
    for r in recs:
        for v in ents[r["entity_id"]]["attributes"][r["attribute"]][:4]:
            p = tok(r["prompt"]).input_ids
            a = tok(" " + v, add_special_tokens=False).input_ids
            rows.append((p, a))
    t0 = time.perf_counter()
    for k in range(0, len(rows), args.batch):
        chunk = rows[k:k + args.batch]
        L = max(len(p) + len(a) for p, a in chunk)
        ids = torch.full((len(chunk), L), tok.pad_token_id)
        mask = torch.zeros((len(chunk), L), dtype=torch.long)
        for n, (p, a) in enumerate(chunk):
            s = p + a
            ids[n, L - len(s):] = torch.tensor(s)
            mask[n, L - len(s):] = 1
        # Left padding puts every answer at the end: logits only for the last positions.
        keep = max(len(a) for _, a in chunk) + 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            _ = lp.gather(-1, ids[:, L - keep + 1:, None])
    sec = time.perf_counter() - t0
    res["transformers_likelihood_qps"] = len(recs) / sec
    res["greedy_speedup"] = res["knowlens_greedy_qps"] / res["transformers_greedy_qps"]
    if "likelihood" in modes:
        res["likelihood_speedup"] = res["knowlens_likelihood_qps"] / res["transformers_likelihood_qps"]
    print(json.dumps(res, indent=1))


def teacher_forced_logprobs(tok, model, rows, batch):
    """Sum of log P(answer tokens | prompt) for each (prompt ids, answer ids), batched with left padding."""
    import torch
    out = []
    for k in range(0, len(rows), batch):
        chunk = rows[k:k + batch]
        L = max(len(p) + len(a) for p, a in chunk)
        ids = torch.full((len(chunk), L), tok.pad_token_id)
        mask = torch.zeros((len(chunk), L), dtype=torch.long)
        for n, (p, a) in enumerate(chunk):
            s = p + a
            ids[n, L - len(s):] = torch.tensor(s)
            mask[n, L - len(s):] = 1
        keep = max(len(a) for _, a in chunk) + 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            tgt = lp.gather(-1, ids[:, L - keep + 1:, None])[..., 0]
        for n, (_, a) in enumerate(chunk):
            out.append(float(tgt[n, keep - 1 - len(a):].sum()))
    return out


def transformers_estimate(tok, model, path, batch):
    """The estimate mode's computation in transformers: every scored form of every question."""
    import math
    recs = [json.loads(l) for l in open(path)]
    rows, owner, want = [], [], []
    for qi, r in enumerate(recs):
        p = tok(r["prompt"]).input_ids
        for g in r.get("likelihood", []):
            a = tok(g["value"], add_special_tokens=False).input_ids
            if a:
                rows.append((p, a))
                owner.append(qi)
        want.append(r.get("estimate") or 0.0)
    t0 = time.perf_counter()
    lps = teacher_forced_logprobs(tok, model, rows, batch)
    sec = time.perf_counter() - t0
    est = [0.0] * len(recs)
    for qi, lp in zip(owner, lps):
        est[qi] += math.exp(lp)
    diffs = [abs(min(e, 1.0) - w) for e, w in zip(est, want)]
    return {"transformers_estimate_qps": len(recs) / sec, "estimate_forms": len(rows),
            "estimate_questions": len(recs), "estimate_max_abs_diff": max(diffs, default=0.0),
            "estimate_speedup": None}


if __name__ == "__main__":
    main()
