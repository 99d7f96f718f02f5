#!/usr/bin/python3
"""test-torch — the CPU trainer's GPT-2 against an independent PyTorch
implementation (Debian's python3-torch): train a few steps with bursar-train,
read the written model.safetensors with numpy, recompute the validation loss
the trainer reported on exactly the same sequences, and compare. SKIP when
torch is missing."""
import json, os, shutil, struct, subprocess, sys, tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BUILD = os.environ.get("BUILD", "build")
TRAIN = os.path.join(ROOT, BUILD, "bin", "bursar-train")

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except Exception as e:  # noqa
    print("SKIP torch_matches_trainer: python3-torch or numpy is not installed (%s)" % e)
    sys.exit(0)


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32)
                                  .reshape(v["shape"]).copy())
    return out


def gpt2_losses(w, cfg, idx, tgt):
    """Per-sequence mean cross-entropy of HF GPT-2 (Conv1D weights are (in, out))."""
    B, T = idx.shape
    C, nh, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    x = w["wte.weight"][idx] + w["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg["n_layer"]):
        p = lambda s: w["h.%d.%s" % (i, s)]
        h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), eps)
        q, k, v = (h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")).split(C, dim=2)
        q, k, v = [t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v)]
        att = (q @ k.transpose(-2, -1)) / (C // nh) ** 0.5
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), eps)
        h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
    logits = x @ w["wte.weight"].T
    return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(-1),
                           reduction="none").view(B, T).mean(1)


def tokens(bundle, vocab):
    """The trainer's token stream: sorted files, one EOT after each document."""
    eot = vocab - 1 if vocab > 256 else 0
    out = []
    paths = []
    for root, _, files in os.walk(os.path.join(bundle, "data")):
        paths += [os.path.join(root, f) for f in files if f.endswith((".txt", ".jsonl"))]
    for p in sorted(paths):
        if p.endswith(".jsonl"):
            for line in open(p, "rb").read().split(b"\n"):
                if line.strip():
                    out += list(json.loads(line)["text"].encode()) + [eot]
        else:
            out += list(open(p, "rb").read()) + [eot]
    return out


def main():
    if not os.access(TRAIN, os.X_OK):
        print("FAIL torch_matches_trainer: %s is missing (run make)" % TRAIN)
        return 1
    tmp = tempfile.mkdtemp(prefix="test-torch-")
    try:
        b = os.path.join(tmp, "b")
        subprocess.check_call([sys.executable, os.path.join(ROOT, "tests/trainer/make-bundle.py"),
                               b, "--steps", "15"])
        r = subprocess.run([TRAIN, b, "--out", os.path.join(tmp, "o")], capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"))
        if r.returncode != 0:
            print("FAIL torch_matches_trainer: bursar-train exited %d: %s" %
                  (r.returncode, r.stderr[-300:]))
            return 1
        lines = [json.loads(l) for l in r.stdout.splitlines()]
        done = [x for x in lines if x["event"] == "done"][0]
        cfg = json.load(open(os.path.join(tmp, "o", "config.json")))
        params = json.load(open(os.path.join(b, "bursar.json")))
        w = read_safetensors(os.path.join(tmp, "o", "model.safetensors"))
        tok = tokens(b, cfg["vocab_size"])
        T, B, n = params["seq_len"], params["batch"], len(tok)
        n_train = n - n // 20
        count = (n - n_train - 1) // T
        nb = max(1, min(8, count // B))
        total = 0.0
        with torch.no_grad():
            for i in range(nb):
                ks = [(i * B + j) % count for j in range(B)]
                seqs = torch.tensor([tok[n_train + k * T:n_train + k * T + T + 1] for k in ks])
                total += gpt2_losses(w, cfg, seqs[:, :-1], seqs[:, 1:]).mean().item()
        want = total / nb
        got = done["eval_loss"]
        ok = got is not None and abs(got - want) < 1e-3 * max(1.0, abs(want))
        print(("PASS torch_matches_trainer" if ok else
               "FAIL torch_matches_trainer: trainer eval_loss %s, torch %s" % (got, want)))
        print("# trainer %s, torch %.6f" % (got, want))
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


sys.exit(main())
