#!/usr/bin/env python3
"""Independent from-scratch numpy forward pass for the tiny fixtures.

Reads only config.json + model.safetensors (no transformers) and checks every
tensor of expected.safetensors at real (non-pad) query positions. Serves as a
second, readable reference of the conventions the fixtures encode:
  * Gemma RMSNorm: x / sqrt(mean(x^2) + eps) * (1 + w);  Llama: ... * w
  * Gemma embedding scaled by sqrt(hidden) (rounded to the weight dtype, f32)
  * RoPE "neox" halves layout (rotate_half), positions from position_ids
  * scores * query_pre_attn_scalar**-0.5 (gemma) / head_dim**-0.5 (llama)
  * gemma2: tanh softcap on scores (before mask) and on final logits
  * sliding window layers: key visible iff 0 <= q_idx - k_idx < sliding_window
  * gemma3: q_norm / k_norm (per head, (1+w)) before RoPE; local/global rope theta
Usage: /opt/refenv/bin/python tools/check_tiny_numpy.py [tests/fixtures/tiny]
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def rms(x, w, eps, gemma):
    x64 = x.astype(np.float64)
    n = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + eps)
    return (n * ((1.0 + w) if gemma else w)).astype(np.float32)


def gelu_tanh(x):
    x = x.astype(np.float64)
    return (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))).astype(np.float32)


def silu(x):
    x = x.astype(np.float64)
    return (x / (1 + np.exp(-x))).astype(np.float32)


def rope(x, pos, theta):
    # x [B,H,S,dh], pos [B,S]
    dh = x.shape[-1]
    inv = 1.0 / (theta ** (np.arange(0, dh, 2, dtype=np.float64) / dh))
    ang = pos[:, None, :, None].astype(np.float64) * inv[None, None, None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    rot = np.concatenate([-x2, x1], -1)
    return (x * cos + rot * sin).astype(np.float32)


def forward(d, steer=None):
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = load_file(os.path.join(d, "model.safetensors"))
    E = load_file(os.path.join(d, "expected.safetensors"))
    mt = cfg["model_type"]
    gemma = mt.startswith("gemma")
    ids, am = E["input_ids"], E["attention_mask"]
    B, S = ids.shape
    D, H, KV, dh = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    L = cfg["num_hidden_layers"]
    eps = cfg["rms_norm_eps"]
    pos = np.clip(np.cumsum(am, -1) - 1, 0, None)
    emb = W["model.embed_tokens.weight"][ids]
    if gemma:
        emb = emb * np.float32(math.sqrt(D))
    layer_types = cfg.get("layer_types") or ["full_attention"] * L
    if mt == "gemma3_text":
        theta = {"full_attention": cfg["rope_theta"], "sliding_attention": cfg["rope_local_base_freq"]}
    else:
        theta = {"full_attention": cfg["rope_theta"], "sliding_attention": cfg["rope_theta"]}
    scale = (cfg["query_pre_attn_scalar"] if gemma else dh) ** -0.5
    softcap = cfg.get("attn_logit_softcapping")
    out = {"hook_embed": emb}
    h = emb
    qi = np.arange(S)[:, None]
    ki = np.arange(S)[None, :]
    for l in range(L):
        p = f"model.layers.{l}."
        if steer is not None and l == 1:
            h = h.copy()
            h[:, -1, :] += steer
        out[f"blocks.{l}.hook_resid_pre"] = h
        x = rms(h, W[p + "input_layernorm.weight"], eps, gemma)
        q = (x @ W[p + "self_attn.q_proj.weight"].T).reshape(B, S, H, dh).transpose(0, 2, 1, 3)
        k = (x @ W[p + "self_attn.k_proj.weight"].T).reshape(B, S, KV, dh).transpose(0, 2, 1, 3)
        v = (x @ W[p + "self_attn.v_proj.weight"].T).reshape(B, S, KV, dh).transpose(0, 2, 1, 3)
        if mt == "gemma3_text":
            q = rms(q, W[p + "self_attn.q_norm.weight"], eps, True)
            k = rms(k, W[p + "self_attn.k_norm.weight"], eps, True)
        lt = layer_types[l]
        q, k = rope(q, pos, theta[lt]), rope(k, pos, theta[lt])
        k = np.repeat(k, H // KV, axis=1)
        v = np.repeat(v, H // KV, axis=1)
        sc = (q.astype(np.float64) @ k.transpose(0, 1, 3, 2).astype(np.float64)) * scale
        if softcap:
            sc = np.tanh(sc / softcap) * softcap
        allowed = (ki <= qi)[None] & (am[:, None, :] == 1)
        if lt == "sliding_attention":
            allowed = allowed & ((qi - ki) < cfg["sliding_window"])[None]
        sc = np.where(allowed[:, None], sc, -np.inf)
        with np.errstate(invalid="ignore"):  # fully masked pad rows -> nan (ignored)
            sc = sc - sc.max(-1, keepdims=True)
            pr = np.exp(sc)
            pr = pr / pr.sum(-1, keepdims=True)
        out[f"blocks.{l}.attn.hook_pattern"] = pr.astype(np.float32)
        z = (pr @ v.astype(np.float64)).transpose(0, 2, 1, 3)  # B,S,H,dh
        out[f"blocks.{l}.attn.hook_z"] = z.astype(np.float32)
        a = z.reshape(B, S, H * dh).astype(np.float32) @ W[p + "self_attn.o_proj.weight"].T
        if gemma:
            a = rms(a, W[p + "post_attention_layernorm.weight"], eps, True)
        out[f"blocks.{l}.hook_attn_out"] = a
        mid = h + a
        out[f"blocks.{l}.hook_resid_mid"] = mid
        x = rms(mid, W[p + ("pre_feedforward_layernorm.weight" if gemma else "post_attention_layernorm.weight")], eps, gemma)
        act = gelu_tanh if gemma else silu
        m = (act(x @ W[p + "mlp.gate_proj.weight"].T) * (x @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
        if gemma:
            m = rms(m, W[p + "post_feedforward_layernorm.weight"], eps, True)
        out[f"blocks.{l}.hook_mlp_out"] = m
        h = mid + m
        out[f"blocks.{l}.hook_resid_post"] = h
    f = rms(h, W["model.norm.weight"], eps, gemma)
    out["ln_final.hook_normalized"] = f
    lm = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    logits = f @ lm.T
    if cfg.get("final_logit_softcapping"):
        c = cfg["final_logit_softcapping"]
        logits = np.tanh(logits / c) * c
    out["logits"] = logits
    return E, out, am


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tiny")
    ok = True
    for arch in ("gemma3", "gemma2", "llama"):
        E, out, am = forward(os.path.join(root, arch))
        real = am.astype(bool)  # [B,S] real query positions
        worst = 0.0
        for k, v in out.items():
            e = E[k]
            assert e.shape == v.shape, (arch, k, e.shape, v.shape)
            if k.endswith("hook_pattern"):
                diff = np.abs(e - v).transpose(0, 2, 1, 3)[real]
                scale = 1.0
            else:
                diff = np.abs(e - v)[real]
                scale = max(1.0, float(np.abs(e[real]).max()))
            rel = float(diff.max()) / scale
            worst = max(worst, rel)
            if rel > 1e-4:
                ok = False
                print(f"  {arch} {k}: max diff {diff.max():.3g} (scale {scale:.3g})")
        _, outs, _ = forward(os.path.join(root, arch), steer=np.float32(4.0) * E["steer.vector"])
        d = np.abs(outs["logits"] - E["steer.logits"])[real]
        rel = float(d.max()) / max(1.0, float(np.abs(E["steer.logits"][real]).max()))
        worst = max(worst, rel)
        if rel > 1e-4:
            ok = False
            print(f"  {arch} steer.logits: max diff {d.max():.3g}")
        print(f"{arch}: {len(out) + 1} tensors, worst max|diff|/max(1,max|x|) = {worst:.2e} at real positions")
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
