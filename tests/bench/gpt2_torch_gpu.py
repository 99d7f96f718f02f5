#!/usr/bin/env python3
"""The PyTorch baseline of bench-cuda.sh: GPT-2 (124M shape by default) trained
on random tokens in bf16 autocast on the GPU, eager and torch.compile, with the
same step bench-cuda times (forward, backward, clip to 1.0, fused AdamW).

    gpt2_torch_gpu.py [--mode eager|compile|both] [-B 32] [-T 1024] [--steps 20]
Prints one line per mode: torch_<mode> tokens_per_s=... step_ms=...
"""
import argparse
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, NH, C, V, maxT):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(maxT, C)
        self.h = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.h:
            x = b(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def run(mode, a):
    torch.manual_seed(1)
    model = GPT(a.L, a.H, a.C, a.V, a.T).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, fused=True)
    fwd = torch.compile(model) if mode == "compile" else model
    x = torch.randint(0, a.V, (a.B, a.T), device="cuda")
    y = torch.randint(0, a.V, (a.B, a.T), device="cuda")
    times = []
    t_first = time.perf_counter()
    for s in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if s == a.warmup - 1:
            print(f"torch_{mode}: warm-up (compile included) {time.perf_counter() - t_first:.1f} s",
                  flush=True)
        if s >= a.warmup:
            times.append(dt)
    mean = sum(times) / len(times)
    fpt = 6 * n_params + 12 * a.L * a.T * a.C
    tps = a.B * a.T / mean
    print(f"torch_{mode} tokens_per_s={tps:.0f} step_ms={mean * 1e3:.2f} best_ms={min(times) * 1e3:.2f} "
          f"mfu_datasheet={tps * fpt / 989e12:.3f} params={n_params} loss={loss.item():.4f}", flush=True)
    del model, opt, fwd
    torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="both")
    p.add_argument("-B", type=int, default=32)
    p.add_argument("-T", type=int, default=1024)
    p.add_argument("-L", type=int, default=12)
    p.add_argument("-H", type=int, default=12)
    p.add_argument("-C", type=int, default=768)
    p.add_argument("-V", type=int, default=50257)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("SKIP torch baseline: no CUDA device for PyTorch")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    for mode in (["eager", "compile"] if a.mode == "both" else [a.mode]):
        run(mode, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
