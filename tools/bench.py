#!/usr/bin/env python3
"""Speed of knowlens against transformers (float32, CPU) and llama.cpp (llama-cpp-python) on the
same workloads, in one run, each measurement in its own process so that its peak memory (max RSS,
from /usr/bin/time) is its own. Writes a markdown table (and JSON lines) to stdout.

    /opt/refenv/bin/python tools/bench.py [--knowlens target/release/knowlens] [--reps 3]

Workloads (all on Gemma 3 270M, the same token ids everywhere, median of --reps after a warm-up):
  cache    residual stream of every layer, batch 16 x 64 tokens, no logits
  prefill  one prompt of 128 tokens, logits at the last position
  decode   greedy decoding of 32 tokens after an 8-token prompt, batch 1
  decode32 the same with 32 prompts at once (aggregate generated tokens / s)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
N_THREADS = 2


def bench_ids(rows, length, bos, vocab):
    """The same generator as `knowlens bench` (src/cli/bench.rs)."""
    out = []
    for r in range(rows):
        v = [bos] if bos is not None else []
        x = 12345 + r
        while len(v) < length:
            x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            v.append(1000 + (x >> 33) % (vocab // 4))
        out.append(v)
    return out


def timed(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        n = fn()
        ts.append(time.perf_counter() - t0)
    return n, statistics.median(ts)


def worker_transformers(workload, gguf, reps):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(N_THREADS)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), torch_dtype=torch.float32
    ).eval()
    vocab = model.config.vocab_size
    with torch.inference_mode():
        if workload == "cache":
            ids = torch.tensor(bench_ids(16, 64, 2, vocab))
            def fn():
                out = model.model(input_ids=ids, output_hidden_states=True)
                assert len(out.hidden_states) == model.config.num_hidden_layers + 1
                return ids.numel()
        elif workload == "prefill":
            ids = torch.tensor(bench_ids(1, 128, 2, vocab))
            def fn():
                model(input_ids=ids, logits_to_keep=1)
                return ids.numel()
        else:
            rows = 32 if workload == "decode32" else 1
            ids = torch.tensor(bench_ids(rows, 8, 2, vocab))
            mask = torch.ones_like(ids)
            def fn():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=32, min_new_tokens=32,
                                     do_sample=False, pad_token_id=0)
                return (out.shape[1] - ids.shape[1]) * rows
        return timed(fn, reps)


def worker_llamacpp(workload, gguf, reps):
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=512, n_batch=512, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                verbose=False, logits_all=False)
    vocab = llm.n_vocab()
    if workload == "prefill":
        ids = bench_ids(1, 128, 2, vocab)[0]
        def fn():
            llm.reset()
            llm.eval(ids)
            llm._ctx.get_logits_ith(-1)
            return len(ids)
    elif workload == "decode":
        ids = bench_ids(1, 8, 2, vocab)[0]
        def fn():
            llm.reset()
            n = 0
            for _tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):
                n += 1
                if n == 32:
                    break
            return n
    else:
        return None, None  # cache (hidden states) and batched decode: not exposed by llama-cpp-python
    return timed(fn, reps)


def run_worker(args):
    fn = {"transformers": worker_transformers, "llamacpp": worker_llamacpp}[args.impl]
    n, secs = fn(args.workload, args.gguf, args.reps)
    print(json.dumps({"impl": args.impl, "workload": args.workload, "tokens": n, "seconds": secs,
                      "tokens_per_s": (n / secs) if secs else None}))


def measure(cmd):
    """Runs cmd under /usr/bin/time; returns (its last JSON line, max RSS in MB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name] + cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.stderr.write(p.stderr[-2000:])
            return None, None
        rss_mb = int(tf.read().strip().splitlines()[-1]) / 1024
    line = [l for l in p.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line), rss_mb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--knowlens", default="target/release/knowlens")
    ap.add_argument("--gguf", default=None, help="defaults to the knowlens cache copy")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", nargs=2, metavar=("IMPL", "WORKLOAD"))
    args = ap.parse_args()
    if args.gguf is None:
        args.gguf = subprocess.run([args.knowlens, "fetch"], capture_output=True, text=True, check=True).stdout.strip()
    if args.worker:
        args.impl, args.workload = args.worker
        return run_worker(args)

    kl = {"cache": ["--workload", "cache", "--batch", "16", "--tokens", "64"],
          "prefill": ["--workload", "prefill", "--tokens", "128"],
          "decode": ["--workload", "decode", "--batch", "1", "--new-tokens", "32"],
          "decode32": ["--workload", "decode", "--batch", "32", "--new-tokens", "32"]}
    rows = []
    for workload in ["cache", "prefill", "decode", "decode32"]:
        for impl in ["transformers", "llamacpp"]:
            res, rss = measure([sys.executable, __file__, "--gguf", args.gguf, "--reps", str(args.reps),
                                "--worker", impl, workload])
            rows.append((workload, impl, "f32" if impl == "transformers" else "quantized", res, rss))
        for precision in ["f32", "quantized"]:
            res, rss = measure([args.knowlens, "bench", "--precision", precision, "--reps", str(args.reps)] + kl[workload])
            rows.append((workload, "knowlens", precision, res, rss))
    print("| workload | implementation | weights | tokens/s | peak RSS (MB) |")
    print("|---|---|---|---:|---:|")
    for workload, impl, precision, res, rss in rows:
        tps = res.get("tokens_per_s") if res else None
        tps_s = f"{tps:,.1f}" if tps else "not measured"
        rss_s = f"{rss:,.0f}" if (rss and tps) else "—"
        print(f"| {workload} | {impl} | {precision} | {tps_s} | {rss_s} |")
    for r in rows:
        print(json.dumps({"workload": r[0], "impl": r[1], "precision": r[2], "result": r[3], "rss_mb": r[4]}))


if __name__ == "__main__":
    main()
