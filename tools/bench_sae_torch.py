#!/usr/bin/env python3
"""Times SAE training steps in plain PyTorch (CPU), for comparison with `knowlens sae bench`.

A straightforward TopK SAE (Gao et al.: top k of the pre-activations, ReLU, MSE), BatchTopK
(the k * batch largest ReLU'd pre-activations of the whole batch, as SAELens) or ReLU SAE
with an L1 penalty, trained with torch.optim.Adam (betas 0.9/0.999) on random Gaussian
activations, with the decoder-parallel gradient removed before each step and decoder rows
renormalised after it -- the same work per step as `knowlens sae bench`. Prints one JSON line
with the same fields.

    /opt/refenv/bin/python tools/bench_sae_torch.py --arch topk --k 64 --width 16384
"""

import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["topk", "batchtopk", "standard"], default="topk")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--l1-coefficient", type=float, default=5.0)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d, m, n = a.d_in, a.width, a.batch_size

    w_dec = torch.randn(m, d)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    W_dec = torch.nn.Parameter(w_dec)
    W_enc = torch.nn.Parameter(w_dec.T.clone().contiguous())
    b_enc = torch.nn.Parameter(torch.zeros(m))
    b_dec = torch.nn.Parameter(torch.zeros(d))
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=a.lr, betas=(0.9, 0.999))
    batches = [torch.randn(n, d) for _ in range(2)]

    def step(x):
        pre = (x - b_dec) @ W_enc + b_enc
        if a.arch == "topk":
            vals, idx = pre.topk(a.k, dim=-1, sorted=False)
            acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
            sparsity = 0.0
        elif a.arch == "batchtopk":
            flat = pre.relu().flatten()
            vals, idx = flat.topk(a.k * n, sorted=False)
            acts = torch.zeros_like(flat).scatter(-1, idx, vals).reshape(pre.shape)
            sparsity = 0.0
        else:
            acts = pre.relu()
            sparsity = a.l1_coefficient * acts.sum(dim=-1).mean()
        x_hat = acts @ W_dec + b_dec
        loss = (x_hat - x).pow(2).sum(dim=-1).mean() + sparsity
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            # Remove the gradient component parallel to each (unit) decoder row.
            W_dec.grad -= (W_dec.grad * W_dec).sum(dim=1, keepdim=True) * W_dec
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))
        return (acts > 0).float().sum(dim=-1).mean().item()

    times = []
    l0 = 0.0
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        l0 = step(batches[i % 2])
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    print(json.dumps({
        "impl": "torch", "torch": torch.__version__, "workload": "sae-train", "arch": a.arch,
        "d_in": d, "width": m, "batch": n, "k": a.k, "steps": a.steps, "threads": a.threads,
        "seconds": med, "step_seconds": times, "tokens_per_s": n / med, "l0": l0,
    }))


if __name__ == "__main__":
    main()
