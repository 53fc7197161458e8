#!/usr/bin/env python3
"""Loads an SAE directory that knowlens saved (Sae::save_saelens) with SAELens's own
SAE.load_from_disk, encodes the inputs knowlens encoded, and compares.

INPUTS.json (written by knowlens, see the ignored test `write_knowlens_saved` in
tests/sae_formats.rs) holds {"x": [[...]], "encode": [[...]], "decode": [[...]]}: inputs [n, d_in]
and knowlens's encode(x) and decode(encode(x)).

Writes (to --out, default stdout) {"sae_lens_version", "dir", "class", "cfg", "n",
"max_abs_diff_encode", "max_abs_diff_decode", "encode", "decode"} where encode / decode are
SAELens's. Exits non-zero if the encodings differ by more than --tol (1e-5).

Usage:  /opt/refenv/bin/python tools/check_saelens_load.py DIR INPUTS.json [--out CHECK.json]
"""
import argparse
import json
import os
import sys

import torch

import sae_lens
from sae_lens import SAE

torch.set_num_threads(1)


def rows_json(t):
    """One row per line, so a diff of the committed file stays readable; each float32 as its
    shortest round-tripping decimal (reads back as the same float32)."""
    rows = [[float(str(v)) for v in r] for r in t.numpy()]
    return "[\n" + ",\n".join("  " + json.dumps(r) for r in rows) + "\n ]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("inputs")
    ap.add_argument("--out")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()

    with open(args.inputs) as f:
        inp = json.load(f)
    sae = SAE.load_from_disk(args.dir)  # the cfg's own dtype (float32), no converter, no overrides
    x = torch.tensor(inp["x"], dtype=torch.float32)
    if sae.cfg.reshape_activations == "hook_z":
        raise SystemExit("hook_z SAEs take [.., heads, d_head]: not handled by this check")
    with torch.no_grad():
        f = sae.encode(x)
        r = sae.decode(f)
    de = (f - torch.tensor(inp["encode"], dtype=torch.float32)).abs().max().item()
    dr = (r - torch.tensor(inp["decode"], dtype=torch.float32)).abs().max().item()

    with open(os.path.join(args.dir, "cfg.json")) as fh:
        cfg = json.load(fh)
    head = {
        "sae_lens_version": sae_lens.__version__,
        "dir": os.path.relpath(args.dir),
        "class": type(sae).__name__,
        "cfg": cfg,
        "n": x.shape[0],
        "max_abs_diff_encode": de,
        "max_abs_diff_decode": dr,
    }
    text = "{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
    text += f' "encode": {rows_json(f)},\n "decode": {rows_json(r)}\n}}\n'
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    print(f"{args.dir}: SAELens {sae_lens.__version__} loaded a {type(sae).__name__}; "
          f"max |encode diff| {de:.3g}, max |decode diff| {dr:.3g}", file=sys.stderr)
    if de > args.tol or dr > args.tol:
        sys.exit(1)


if __name__ == "__main__":
    main()
