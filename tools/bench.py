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

--roofline: float32 GEMM on the model's own shapes (q/k/v/o, gate/up, down and the unembedding at
  1..1024 rows) by the gemm crate (`knowlens bench --workload gemm`), numpy's BLAS and torch,
  2 threads each, in this run; the best of them per shape turns the model's FLOPs into the
  tokens/s ceiling of each workload, printed beside every figure. knowlens' own kernel for each
  shape (the packed int8-coded kernel or the matmul, as the model runs it) is set beside them.
--busy: every measurement again while another process keeps one core busy (a spinning loop at
  normal priority), reported beside the quiet figure.
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


def worker_gemm(impl, shapes_file, reps):
    """GFLOP/s of `impl` (numpy or torch) on the shapes knowlens measured: one JSON line each."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(N_THREADS)
    import numpy as np
    shapes = json.load(open(shapes_file))
    if impl == "torch":
        import torch
        torch.set_num_threads(N_THREADS)
    rng = np.random.default_rng(0)
    out = []
    for sh in shapes:
        m, k, n, name = sh["m"], sh["k"], sh["n"], sh["matrix"]
        x = rng.standard_normal((m, k), dtype=np.float32)
        # The unembedding is a [vocab, d] table used transposed, as the model stores it.
        w = rng.standard_normal((n, k) if name == "unembed" else (k, n), dtype=np.float32) * 0.02
        if impl == "torch":
            x, w = torch.from_numpy(x), torch.from_numpy(w)
            run = (lambda: x @ w.T) if name == "unembed" else (lambda: x @ w)
        else:
            run = (lambda: x @ w.T) if name == "unembed" else (lambda: x @ w)
        run()
        t0 = time.perf_counter()
        run()
        once = max(time.perf_counter() - t0, 1e-6)
        ts = []
        for _ in range(max(reps, min(10000, int(0.3 / once)))):
            t0 = time.perf_counter()
            run()
            ts.append(time.perf_counter() - t0)
        sec = statistics.median(ts)
        out.append(dict(sh, impl=impl, seconds=sec, gflops=2 * m * k * n / sec / 1e9))
    for o in out:
        print(json.dumps(o))
    return out


def run_worker(args):
    if args.workload == "gemm":
        worker_gemm(args.impl, args.shapes, args.reps)
        return
    fn = {"transformers": worker_transformers, "llamacpp": worker_llamacpp}[args.impl]
    n, secs = fn(args.workload, args.gguf, args.reps)
    print(json.dumps({"impl": args.impl, "workload": args.workload, "tokens": n, "seconds": secs,
                      "tokens_per_s": (n / secs) if secs else None}))


class Busy:
    """Keeps one core busy while active: a spinning process at normal priority, as a browser tab
    or a second job would."""

    def __init__(self, on):
        self.on, self.proc = on, None

    def __enter__(self):
        if self.on:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.kill()
            self.proc.wait()


def measure(cmd, busy=False, all_lines=False):
    """Runs cmd under /usr/bin/time (with one core kept busy if asked); returns (its last JSON
    line, or all of them, and its max RSS in MB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf, Busy(busy):
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name] + cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.stderr.write(p.stderr[-2000:])
            return None, None
        rss_mb = int(tf.read().strip().splitlines()[-1]) / 1024
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return (lines if all_lines else lines[-1]), rss_mb


# Rows per forward pass and whether it unembeds one position per row, for the ceilings.
PASSES = {"cache": (1024, False), "prefill": (128, "last"), "decode": (1, True), "decode32": (32, True)}


def roofline(args):
    """GEMM GFLOP/s per shape (knowlens, numpy, torch) and each workload's tokens/s ceiling."""
    kl, _ = measure([args.knowlens, "bench", "--workload", "gemm", "--reps", str(args.reps)], all_lines=True)
    kl, plain = [r for r in kl if r["impl"] == "knowlens"], [r for r in kl if r["impl"] == "gemm"]
    shapes = [{k: r[k] for k in ("matrix", "m", "k", "n")} for r in kl]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(shapes, f)
    results = {"knowlens": kl, "gemm": plain}
    for impl in ["numpy", "torch"]:
        env_cmd = [sys.executable, __file__, "--gguf", args.gguf, "--reps", str(args.reps), "--shapes", f.name,
                   "--worker", impl, "gemm"]
        res, _ = measure(env_cmd, all_lines=True)
        results[impl] = res or []
    os.unlink(f.name)
    by = {}
    for impl, rows in results.items():
        for r in rows:
            by.setdefault((r["matrix"], r["m"]), {})[impl] = r["gflops"]
    # The ceiling is the best general float32 GEMM of the machine (the gemm crate, numpy's BLAS,
    # torch); knowlens' own kernel may pass it: the packed kernel reads exact float32 weights
    # stored as int8 codes and a scale per 32, a quarter of the bytes, which no float32 GEMM can.
    refs = ("gemm", "numpy", "torch")
    best_ref = lambda g: max(v for i, v in g.items() if i in refs)
    print("| matrix | rows | k × n | knowlens GFLOP/s | gemm crate | numpy (BLAS) | torch | knowlens / best reference |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in kl:
        g = by[(r["matrix"], r["m"])]
        fmt = lambda v: f"{v:,.1f}" if v is not None else "—"
        print(f"| {r['matrix']} | {r['m']} | {r['k']} × {r['n']} | {fmt(g.get('knowlens'))} | {fmt(g.get('gemm'))} "
              f"| {fmt(g.get('numpy'))} | {fmt(g.get('torch'))} | {g['knowlens'] / best_ref(g):.2f} |")
    n_layers = kl[0]["n_layers"]
    dims = {r["matrix"]: (r["k"], r["n"]) for r in kl}
    ceilings = {}
    for workload, (rows, unembed) in PASSES.items():
        m_blocks = min((m for (_, m) in by if m >= rows), default=rows)
        secs = 0.0
        for name, (k, n) in dims.items():
            if name == "unembed":
                if not unembed:
                    continue
                m = 1 if unembed == "last" else rows
                secs += 2 * m * k * n / (best_ref(by[(name, m)]) * 1e9)
            else:
                secs += n_layers * 2 * rows * k * n / (best_ref(by[(name, m_blocks)]) * 1e9)
        ceilings[workload] = rows / secs
    print()
    print("| workload | GEMM-bound ceiling (tokens/s) |")
    print("|---|---:|")
    for w, c in ceilings.items():
        print(f"| {w} | {c:,.0f} |")
    print(json.dumps({"roofline": ceilings, "kernel": kl[0].get("kernel"), "gemm": results}))
    return ceilings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--knowlens", default="target/release/knowlens")
    ap.add_argument("--gguf", default=None, help="defaults to the knowlens cache copy")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker", nargs=2, metavar=("IMPL", "WORKLOAD"))
    ap.add_argument("--shapes", help=argparse.SUPPRESS)
    ap.add_argument("--roofline", action="store_true", help="GEMM roofline and per-workload ceilings first")
    ap.add_argument("--busy", action="store_true", help="also measure everything with one core kept busy")
    ap.add_argument("--only", default="cache,prefill,decode,decode32", help="workloads to run")
    ap.add_argument("--skip", default="", help="implementations to skip, e.g. llamacpp,transformers")
    args = ap.parse_args()
    if args.gguf is None:
        args.gguf = subprocess.run([args.knowlens, "fetch"], capture_output=True, text=True, check=True).stdout.strip()
    if args.worker:
        args.impl, args.workload = args.worker
        return run_worker(args)

    ceilings = roofline(args) if args.roofline else {}
    kl = {"cache": ["--workload", "cache", "--batch", "16", "--tokens", "64"],
          "prefill": ["--workload", "prefill", "--tokens", "128"],
          "decode": ["--workload", "decode", "--batch", "1", "--new-tokens", "32"],
          "decode32": ["--workload", "decode", "--batch", "32", "--new-tokens", "32"]}
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    for workload in args.only.split(","):
        for busy in ([False, True] if args.busy else [False]):
            for impl in ["transformers", "llamacpp"]:
                if impl in skip:
                    continue
                res, rss = measure([sys.executable, __file__, "--gguf", args.gguf, "--reps", str(args.reps),
                                    "--worker", impl, workload], busy)
                rows.append((workload, busy, impl, "f32" if impl == "transformers" else "quantized", res, rss))
            variants = [("f32", []), ("quantized", [])]
            for label, extra in variants:
                precision = label.split(",")[0]
                res, rss = measure([args.knowlens, "bench", "--precision", precision, "--reps", str(args.reps)]
                                   + kl[workload] + extra, busy)
                rows.append((workload, busy, "knowlens", label, res, rss))
    print("| workload | one core busy | implementation | weights | tokens/s | % of ceiling | peak RSS (MB) |")
    print("|---|---|---|---|---:|---:|---:|")
    for workload, busy, impl, precision, res, rss in rows:
        tps = res.get("tokens_per_s") if res else None
        tps_s = f"{tps:,.1f}" if tps else "not measured"
        rss_s = f"{rss:,.0f}" if (rss and tps) else "—"
        ceil = ceilings.get(workload)
        pct = f"{100 * tps / ceil:.0f}%" if (tps and ceil and precision.startswith("f32")) else ""
        print(f"| {workload} | {'yes' if busy else 'no'} | {impl} | {precision} | {tps_s} | {pct} | {rss_s} |")
    for r in rows:
        print(json.dumps({"workload": r[0], "busy": r[1], "impl": r[2], "precision": r[3], "result": r[4],
                          "rss_mb": r[5]}))


if __name__ == "__main__":
    main()
