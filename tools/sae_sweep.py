#!/usr/bin/env python3
"""Learning-rate / batch-size sweep for SAE training on an activation store (issue 10).

Trains one SAE per (batch size, learning rate) on the same hook and the same store rows
(`knowlens sae train --store ... --tokens N`, so every run sees the same number of tokens and its
warm-up and decay scale with its own step count), one after the other, then scores each:

* the training loss at the end: the mean per-batch FVU (in the trained units) over the last 10%
  of the run's logged steps; within one epoch every batch is new to the SAE, so this is an
  online held-out estimate;
* held-out reconstruction from `knowlens sae eval --no-downstream` on the corpus's held-out split
  (FVU in raw units, L0, dead and dense fractions), and optionally the delta LM loss on a few
  thousand held-out tokens (`--downstream-tokens`).

Writes OUT/sweep.json and OUT/sweep.md and prints the table. Reruns skip finished runs
(`knowlens sae train` resumes or reports done; evaluations are cached in OUT/<run>/eval.json).
Standard library only.

    python3 tools/sae_sweep.py --store runs/full/store --hook blocks.5.hook_resid_post \\
        --corpus ~/.cache/knowlens/corpus/gemma-3-270m/v1-edd29d82 --tokens 1024000 \\
        --grid 4096:2e-4,4096:4e-4,4096:8e-4,4096:1.6e-3,1024:2e-4,1024:4e-4 --out runs/sweep
"""
import argparse, json, os, shlex, subprocess, sys, time


def run_name(batch, lr, coef=None):
    return f"b{batch}-lr{lr:g}" + ("" if coef is None else f"-c{coef:g}")


def tail_fvu(log_path, hook, fraction=0.1):
    rows = [json.loads(l) for l in open(log_path) if l.strip()]
    rows = [r for r in rows if r.get("hook") == hook]
    if not rows:
        raise SystemExit(f"{log_path}: no log lines for {hook}")
    last = rows[-1]["tokens"]
    tail = [r for r in rows if r["tokens"] >= last * (1 - fraction)]
    mean = lambda k: sum(r[k] for r in tail) / len(tail)
    return {
        "train_fvu_tail": mean("fvu"),
        "train_l0_tail": mean("l0"),
        "train_dead_end": rows[-1].get("dead_fraction"),
        "train_dense_end": rows[-1].get("dense_fraction"),
        "train_tokens": last,
        "train_steps": rows[-1]["step"],
        "train_elapsed_s": rows[-1]["elapsed_s"],
    }


def sparsity_args(a, batch, coef):
    """The coefficient flag of a jumprelu / standard run and its warm-up in steps."""
    if coef is None:
        return []
    flag = "--l0-coefficient" if a.arch == "jumprelu" else "--l1-coefficient"
    warm = max(1, round(a.sparsity_warm_up * a.tokens / batch))
    return [flag, repr(coef), "--sparsity-warm-up-steps", str(warm)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/knowlens")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--store", required=True)
    ap.add_argument("--hook", required=True)
    ap.add_argument("--corpus", required=True, help="corpus directory (its held-out split is evaluated)")
    ap.add_argument("--tokens", type=int, default=1024000, help="training tokens per run")
    ap.add_argument("--arch", default="batchtopk")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--grid", required=True,
                    help="comma-separated batch:lr pairs, or batch:lr:coefficient triples for --arch jumprelu "
                         "(the L0 coefficient) and standard (the L1 coefficient)")
    ap.add_argument("--sparsity-warm-up", type=float, default=0.05,
                    help="jumprelu / standard: the sparsity coefficient ramps up over this fraction of each run's steps")
    ap.add_argument("--train-args", default="",
                    help="more `knowlens sae train` options for every run, e.g. \"--jumprelu-init-threshold 1\"")
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--downstream-tokens", type=int, default=0, help="0: reconstruction only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    grid = []
    for item in a.grid.split(","):
        parts = item.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3) != (a.arch in ("jumprelu", "standard")):
            raise SystemExit(f"--grid item {item!r}: want batch:lr for topk/batchtopk, batch:lr:coefficient for jumprelu/standard")
        grid.append((int(parts[0]), float(parts[1]), float(parts[2]) if len(parts) == 3 else None))
    os.makedirs(a.out, exist_ok=True)
    results = []
    for batch, lr, coef in grid:
        name = run_name(batch, lr, coef)
        d = os.path.join(a.out, name)
        t0 = time.time()
        subprocess.run([a.binary, "sae", "train", "--model", a.model, "--hooks", a.hook,
                        "--store", a.store, "--tokens", str(a.tokens), "--arch", a.arch,
                        "--k", str(a.k), "--width", str(a.width), "--per-dim-scale",
                        "--batch-size", str(batch), "--lr", repr(lr), "--seed", str(a.seed),
                        "--no-progress", "--out", d] + sparsity_args(a, batch, coef) + shlex.split(a.train_args),
                       check=True, stdout=subprocess.DEVNULL)
        # Wall time of this call (0 when the run had finished before); the log's elapsed_s is the
        # training time whenever it ran.
        row = {"run": name, "batch_size": batch, "lr": lr, "coefficient": coef, "call_wall_s": round(time.time() - t0, 1)}
        row.update(tail_fvu(os.path.join(d, "train_log.jsonl"), a.hook))
        ev_path = os.path.join(d, "eval.json")
        if not os.path.exists(ev_path):
            cmd = [a.binary, "sae", "eval", "--model", a.model, "--sae", os.path.join(d, a.hook),
                   "--corpus", a.corpus, "--tokens", str(a.eval_tokens), "--out", ev_path]
            if a.downstream_tokens > 0:
                cmd += ["--downstream-tokens", str(a.downstream_tokens), "--ablation-tokens", "128"]
            else:
                cmd += ["--no-downstream"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ev = json.load(open(ev_path))[0]
        row["heldout_fvu"] = ev.get("fvu")
        row["heldout_l0"] = ev.get("l0")
        row["heldout_dead"] = ev.get("dead_fraction")
        row["heldout_dense"] = ev.get("dense_fraction")
        ds = ev.get("downstream") or {}
        row["delta_lm_loss"] = ds.get("delta_lm_loss")
        results.append(row)
        print(json.dumps(row), flush=True)

    json.dump({"store": a.store, "hook": a.hook, "tokens": a.tokens, "arch": a.arch, "k": a.k,
               "train_args": a.train_args,
               "width": a.width, "seed": a.seed, "runs": results},
              open(os.path.join(a.out, "sweep.json"), "w"), indent=1)
    fmt = lambda v, f: "–" if v is None else format(v, f)
    lines = ["| batch | lr | coefficient | steps | train FVU (last 10%) | held-out FVU | held-out L0 | dead | dense | Δ LM loss | training s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['batch_size']} | {r['lr']:g} | {fmt(r['coefficient'], 'g')} | {r['train_steps']} | {r['train_fvu_tail']:.4f} | "
                     f"{fmt(r['heldout_fvu'], '.4f')} | {fmt(r['heldout_l0'], '.1f')} | "
                     f"{fmt(r['heldout_dead'], '.2%')} | {fmt(r['heldout_dense'], '.2%')} | "
                     f"{fmt(r['delta_lm_loss'], '.3f')} | {r['train_elapsed_s']:.0f} |")
    table = "\n".join(lines) + "\n"
    open(os.path.join(a.out, "sweep.md"), "w").write(table)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
