#!/usr/bin/env python3
"""Small SAEs in every format knowlens reads, with SAELens's own encodings of fixed inputs.

Writes tests/fixtures/sae/:
  standard/           SAELens StandardSAE (apply_b_dec_to_input, reshape_activations=hook_z)
                      saved with SAE.save_model, plus a sparsity.safetensors as the training
                      runner writes it
  jumprelu/           SAELens JumpReLUSAE (apply_b_dec_to_input, ~10% negative thresholds)
  topk/               SAELens TopKSAE, k=8, rescale_acts_by_decoder_norm (decoder rows of
                      unequal norm, so the rescaling changes which latents win)
  batchtopk/          SAELens BatchTopKTrainingSAE saved with save_inference_model, i.e. as a
                      JumpReLU SAE whose threshold is the global top-k threshold
  pre6_topk/          a hand-written pre-6.0 flat cfg.json (hook_point, activation_fn_str=topk,
                      activation_fn_kwargs.k, no architecture, no sae_lens_version) with
                      bfloat16 weights
  gemma_scope/layer_3/width_128/average_l0_20/params.npz            np.savez (zip STORED)
  gemma_scope/layer_3/width_128/average_l0_20/params_deflated.npz   np.savez_compressed (DEFLATED)
  gemma_scope_2/resid_post/layer_5_width_128_l0_small/  params.safetensors (lowercase w_enc,
                      w_dec) + config.json, as Google publishes Gemma Scope 2
  expected.safetensors  x [8, 64] and, per fixture, SAELens's `{name}.encode` = encode(x) and
                      `{name}.decode` = decode(encode(x)), float32

The SAELens-made SAEs have d_in 64, d_sae 256; the numpy-made Gemma Scope ones d_sae 128 (to
keep the fixtures near 1 MB). Gemma Scope files carry no config: their reference is a SAELens
JumpReLUSAE with apply_b_dec_to_input=False holding the same weights, which is what SAELens's
Gemma Scope loaders build.

Usage:  /opt/refenv/bin/python tools/make_sae_fixtures.py [--out tests/fixtures/sae]

Deterministic: fixed seeds, CPU, float32, one thread, PYTHONHASHSEED=0 (SAELens builds the
inference cfg of a training SAE from a set, so its key order depends on the hash seed).
"""
import argparse
import json
import os
import shutil
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import numpy as np
import torch
from safetensors.torch import save_file

import sae_lens
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_write  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

D_IN, D_SAE, D_SAE_GS, N = 64, 256, 128, 8
MODEL = "knowlens-sae-fixture"


def rand_weights(g, d_in, d_sae, row_norm_spread=False):
    """Encoder and decoder not tied, biases non-zero, so every term of encode/decode shows."""
    w_enc = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
    w_dec = torch.randn(d_sae, d_in, generator=g) / d_in**0.5
    if row_norm_spread:
        w_dec = w_dec * torch.empty(d_sae, 1).uniform_(0.3, 2.0, generator=g)
    b_enc = 0.3 * torch.randn(d_sae, generator=g)
    b_dec = 0.5 * torch.randn(d_in, generator=g)
    return {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec}


def thresholds(g, d_sae, negative_fraction=0.0):
    t = torch.empty(d_sae).uniform_(0.1, 1.0, generator=g)
    if negative_fraction:
        # A negative threshold tells relu(pre)*1[pre>t] (SAELens) from pre*1[pre>t].
        neg = torch.rand(d_sae, generator=g) < negative_fraction
        t[neg] = -t[neg]
    return t


def load_into(sae, weights):
    sae.load_state_dict({k: v.clone() for k, v in weights.items()}, strict=True)
    return sae


def meta(hook):
    return SAEMetadata(model_name=MODEL, hook_name=hook, prepend_bos=True, context_size=128)


def reference(sae, x, z_heads=None):
    """SAELens's encode(x) and decode(encode(x)), as [N, d_sae] and [N, d_in]."""
    with torch.no_grad():
        xin = x if z_heads is None else x.reshape(x.shape[0], z_heads, -1)
        f = sae.encode(xin)
        r = sae.decode(f)
    return f.reshape(x.shape[0], -1).contiguous(), r.reshape(x.shape[0], -1).contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "sae"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        for name in os.listdir(out):
            # knowlens_saved/ is written by knowlens and checked by check_saelens_load.py.
            if name != "knowlens_saved":
                p = os.path.join(out, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    os.makedirs(out, exist_ok=True)

    g = torch.Generator().manual_seed(20250301)
    x = 1.5 * torch.randn(N, D_IN, generator=g)
    expected = {"x": x}

    # Standard, reading attention hook_z: SAELens flattens [.., heads, d_head] itself.
    cfg = StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=True,
                            reshape_activations="hook_z", metadata=meta("blocks.1.attn.hook_z"))
    sae = load_into(StandardSAE(cfg), rand_weights(g, D_IN, D_SAE))
    sae.save_model(os.path.join(out, "standard"))
    log_density = torch.empty(D_SAE).uniform_(-6.0, -1.0, generator=g)
    save_file({"sparsity": log_density}, os.path.join(out, "standard", "sparsity.safetensors"))
    expected["standard.encode"], expected["standard.decode"] = reference(sae, x, z_heads=4)

    # JumpReLU with b_dec subtracted from the input (SAELens's default; Gemma Scope's is off).
    cfg = JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=True,
                            metadata=meta("blocks.2.hook_resid_post"))
    w = rand_weights(g, D_IN, D_SAE)
    w["threshold"] = thresholds(g, D_SAE, negative_fraction=0.1)
    sae = load_into(JumpReLUSAE(cfg), w)
    sae.save_model(os.path.join(out, "jumprelu"))
    expected["jumprelu.encode"], expected["jumprelu.decode"] = reference(sae, x)

    # TopK scaled by decoder norms.
    cfg = TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=8, rescale_acts_by_decoder_norm=True,
                        apply_b_dec_to_input=True, metadata=meta("blocks.4.hook_mlp_out"))
    sae = load_into(TopKSAE(cfg), rand_weights(g, D_IN, D_SAE, row_norm_spread=True))
    sae.save_model(os.path.join(out, "topk"))
    expected["topk.encode"], expected["topk.decode"] = reference(sae, x)

    # BatchTopK: trained as batch top-k, saved (by SAELens) as JumpReLU with a global threshold,
    # decoder norms folded into the encoder. The reference is what SAELens loads back.
    cfg = BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=8, rescale_acts_by_decoder_norm=True,
                                     apply_b_dec_to_input=False, metadata=meta("blocks.3.hook_resid_post"))
    sae = BatchTopKTrainingSAE(cfg)
    w = rand_weights(g, D_IN, D_SAE, row_norm_spread=True)
    w["topk_threshold"] = torch.tensor(0.9, dtype=torch.double)
    load_into(sae, w)
    sae.save_inference_model(os.path.join(out, "batchtopk"))
    loaded = SAE.load_from_disk(os.path.join(out, "batchtopk"))
    assert type(loaded).__name__ == "JumpReLUSAE", type(loaded)
    expected["batchtopk.encode"], expected["batchtopk.decode"] = reference(loaded, x)

    # Pre-6.0 flat config, bfloat16 weights; SAELens converts it on load (handle_pre_6_0_config).
    d = os.path.join(out, "pre6_topk")
    os.makedirs(d)
    w = rand_weights(g, D_IN, D_SAE)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in w.items()}, os.path.join(d, "sae_weights.safetensors"))
    flat = {
        "model_name": MODEL, "hook_point": "blocks.5.hook_resid_pre", "hook_point_layer": 5,
        "hook_point_head_index": None, "d_in": D_IN, "d_sae": D_SAE, "dtype": "bfloat16",
        "device": "cpu", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 8},
        "apply_b_dec_to_input": True, "finetuning_scaling_factor": False, "context_size": 128,
        "dataset_path": "NeelNanda/pile-10k", "prepend_bos": True, "normalize_activations": "none",
        "sae_lens_training_version": "3.13.0",
    }
    with open(os.path.join(d, "cfg.json"), "w") as f:
        json.dump(flat, f, indent=2)
    loaded = SAE.load_from_disk(d, dtype="float32")  # compute in float32, as knowlens does
    assert type(loaded).__name__ == "TopKSAE" and loaded.cfg.k == 8, loaded.cfg
    expected["pre6_topk.encode"], expected["pre6_topk.decode"] = reference(loaded, x)

    # Gemma Scope params.npz, twice: stored and deflated entries.
    w = rand_weights(g, D_IN, D_SAE_GS)
    w["threshold"] = thresholds(g, D_SAE_GS)
    d = os.path.join(out, "gemma_scope", "layer_3", "width_128", "average_l0_20")
    os.makedirs(d)
    arrays = {k: v.numpy() for k, v in w.items()}
    np.savez(os.path.join(d, "params.npz"), **arrays)
    np.savez_compressed(os.path.join(d, "params_deflated.npz"), **arrays)
    cfg = JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE_GS, apply_b_dec_to_input=False,
                            metadata=meta("blocks.3.hook_resid_post"))
    sae = load_into(JumpReLUSAE(cfg), w)
    expected["gemma_scope.encode"], expected["gemma_scope.decode"] = reference(sae, x)

    # Gemma Scope 2 folder.
    w = rand_weights(g, D_IN, D_SAE_GS)
    w["threshold"] = thresholds(g, D_SAE_GS)
    d = os.path.join(out, "gemma_scope_2", "resid_post", "layer_5_width_128_l0_small")
    os.makedirs(d)
    st_write.save(os.path.join(d, "params.safetensors"),
                  {"w_enc": w["W_enc"], "w_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"],
                   "threshold": w["threshold"]})
    gs2_cfg = {"model_name": "google/gemma-3-270m-pt", "width": D_SAE_GS, "l0": 12, "architecture": "jump_relu",
               "type": "sae", "hf_hook_point_in": "model.layers.5.output",
               "hf_hook_point_out": "model.layers.5.output", "affine_connection": False}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(gs2_cfg, f, indent=2)
    cfg = JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE_GS, apply_b_dec_to_input=False,
                            metadata=meta("blocks.5.hook_resid_post"))
    sae = load_into(JumpReLUSAE(cfg), w)
    expected["gemma_scope_2.encode"], expected["gemma_scope_2.decode"] = reference(sae, x)

    st_write.save(os.path.join(out, "expected.safetensors"), expected,
                  metadata={"sae_lens": sae_lens.__version__, "torch": torch.__version__})
    for k in sorted(expected):
        if k.endswith(".encode"):
            f = expected[k]
            print(f"{k:24} active per row {[(r > 0).sum().item() for r in f]}")
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print(f"sae-lens {sae_lens.__version__}; wrote {out} ({total / 1e6:.2f} MB incl. knowlens_saved)")


if __name__ == "__main__":
    main()
