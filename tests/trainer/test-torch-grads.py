#!/usr/bin/python3
"""test-torch-grads — bursar-train's GPT-2 and Llama against independent
float64 PyTorch models written here (Debian's python3-torch; no transformers):
random weights in model.safetensors, then (1) `--dump-grads`: the loss, the
log-softmax of the logits and every gradient of step 1's batch, and (2) 10
AdamW steps (constant lr, weight decay, clipping) with matching losses. The
Llamas cover GQA, head_dim != hidden/heads, biases, tied and untied heads,
llama3 RoPE scaling and both rope_scaling / rope_parameters spellings. SKIP
when torch is missing."""
import json, math, os, random, shutil, struct, subprocess, sys, tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BUILD = os.environ.get("BUILD", "build")
TRAIN = os.path.join(ROOT, BUILD, "bin", "bursar-train")

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except Exception as e:  # noqa
    print("SKIP torch_grads: python3-torch or numpy is not installed (%s)" % e)
    sys.exit(0)

B, T, STEPS, LR, WD, CLIP = 2, 16, 10, 1e-2, 0.1, 1.0
MODELS = {
    "gpt2": {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 32, "n_positions": 32,
             "vocab_size": 260, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5},
    "llama_gqa": {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "hidden_size": 24, "head_dim": 8,
                  "intermediate_size": 40, "max_position_embeddings": 32, "vocab_size": 260,
                  "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
                  "tie_word_embeddings": False, "attention_bias": True, "mlp_bias": False,
                  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8}},
    "llama_tied": {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 2,
                   "hidden_size": 16, "intermediate_size": 24, "max_position_embeddings": 32,
                   "vocab_size": 260, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
                   "mlp_bias": True, "rope_parameters": {"rope_type": "default",
                                                          "rope_theta": 10000.0}},
}


def write_safetensors(path, tensors):
    head, off, blobs = {}, 0, []
    for k, v in tensors.items():
        b = v.detach().to(torch.float32).contiguous().numpy().tobytes()
        head[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(head).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    out = {}
    for k, v in json.loads(raw[8:8 + n]).items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            out[k] = torch.from_numpy(np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32)
                                      .reshape(v["shape"]).copy()).double()
    return out


def shapes(cfg):
    """HF tensor names and shapes of the config, in a fixed order."""
    if cfg["model_type"] == "gpt2":
        C, V, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"]
        out = [("wte.weight", (V, C)), ("wpe.weight", (cfg["n_positions"], C))]
        for i in range(L):
            for s, shp in [("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                           ("attn.c_attn.weight", (C, 3 * C)), ("attn.c_attn.bias", (3 * C,)),
                           ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                           ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                           ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                           ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))]:
                out.append(("h.%d.%s" % (i, s), shp))
        return out + [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    C, V, L, Fi = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"], \
        cfg["intermediate_size"]
    nh = cfg["num_attention_heads"]
    kvh = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", C // nh)
    out = [("model.embed_tokens.weight", (V, C))]
    for i in range(L):
        p = "model.layers.%d." % i
        out += [(p + "input_layernorm.weight", (C,)),
                (p + "self_attn.q_proj.weight", (nh * hd, C)),
                (p + "self_attn.k_proj.weight", (kvh * hd, C)),
                (p + "self_attn.v_proj.weight", (kvh * hd, C)),
                (p + "self_attn.o_proj.weight", (C, nh * hd))]
        if cfg.get("attention_bias"):
            out += [(p + "self_attn.%s_proj.bias" % x, (n,))
                    for x, n in (("q", nh * hd), ("k", kvh * hd), ("v", kvh * hd), ("o", C))]
        out += [(p + "post_attention_layernorm.weight", (C,)),
                (p + "mlp.gate_proj.weight", (Fi, C)), (p + "mlp.up_proj.weight", (Fi, C)),
                (p + "mlp.down_proj.weight", (C, Fi))]
        if cfg.get("mlp_bias"):
            out += [(p + "mlp.%s_proj.bias" % x, (n,))
                    for x, n in (("gate", Fi), ("up", Fi), ("down", C))]
    out.append(("model.norm.weight", (C,)))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (V, C)))
    return out


def causal_attention(q, k, v):
    Tq = q.shape[2]
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    mask = torch.tril(torch.ones(Tq, Tq, dtype=torch.bool))
    return att.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def gpt2_logits(w, cfg, idx):
    Bn, Tn = idx.shape
    C, nh, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    x = w["wte.weight"][idx] + w["wpe.weight"][:Tn]
    for i in range(cfg["n_layer"]):
        p = lambda s: w["h.%d.%s" % (i, s)]
        h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), eps)
        q, k, v = (h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")).split(C, dim=2)
        q, k, v = [t.view(Bn, Tn, nh, C // nh).transpose(1, 2) for t in (q, k, v)]
        y = causal_attention(q, k, v).transpose(1, 2).reshape(Bn, Tn, C)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), eps)
        h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
    return x @ w["wte.weight"].T


def llama_inv_freq(cfg, hd):
    rp = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    if rp.get("rope_type", rp.get("type")) != "llama3":
        return inv
    factor, lo, hi, old = (rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"],
                           rp["original_max_position_embeddings"])
    wl = 2 * math.pi / inv
    out = torch.where(wl > old / lo, inv / factor, inv)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wl < old / hi) & ~(wl > old / lo)
    return torch.where(medium, smoothed, out)


def rms(x, wt, eps):
    return wt * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def llama_logits(w, cfg, idx):
    Bn, Tn = idx.shape
    C, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    kvh = cfg.get("num_key_value_heads", nh)
    hd, eps = cfg.get("head_dim", C // nh), cfg.get("rms_norm_eps", 1e-6)
    ang = torch.arange(Tn, dtype=torch.float64)[:, None] * llama_inv_freq(cfg, hd)[None, :]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = lambda t: torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1)
    x = w["model.embed_tokens.weight"][idx]
    for i in range(cfg["num_hidden_layers"]):
        p = lambda s: w.get("model.layers.%d.%s" % (i, s))
        h = rms(x, p("input_layernorm.weight"), eps)
        q = F.linear(h, p("self_attn.q_proj.weight"), p("self_attn.q_proj.bias"))
        k = F.linear(h, p("self_attn.k_proj.weight"), p("self_attn.k_proj.bias"))
        v = F.linear(h, p("self_attn.v_proj.weight"), p("self_attn.v_proj.bias"))
        q = q.view(Bn, Tn, nh, hd).transpose(1, 2)
        k = k.view(Bn, Tn, kvh, hd).transpose(1, 2)
        v = v.view(Bn, Tn, kvh, hd).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(nh // kvh, 1), v.repeat_interleave(nh // kvh, 1)
        y = causal_attention(q, k, v).transpose(1, 2).reshape(Bn, Tn, nh * hd)
        x = x + F.linear(y, p("self_attn.o_proj.weight"), p("self_attn.o_proj.bias"))
        h = rms(x, p("post_attention_layernorm.weight"), eps)
        g = F.linear(h, p("mlp.gate_proj.weight"), p("mlp.gate_proj.bias"))
        u = F.linear(h, p("mlp.up_proj.weight"), p("mlp.up_proj.bias"))
        x = x + F.linear(F.silu(g) * u, p("mlp.down_proj.weight"), p("mlp.down_proj.bias"))
    x = rms(x, w["model.norm.weight"], eps)
    return F.linear(x, w.get("lm_head.weight", w["model.embed_tokens.weight"]))


def logits_of(w, cfg, idx):
    return (gpt2_logits if cfg["model_type"] == "gpt2" else llama_logits)(w, cfg, idx)


def corpus(n, seed=3):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "quiet", "moves",
             "under", "over", "the", "a", "bright", "dark"]
    return " ".join(rng.choice(words) for _ in range(n))


def tokens(bundle, vocab):
    eot = vocab - 1 if vocab > 256 else 0
    out = []
    for f in sorted(os.listdir(os.path.join(bundle, "data"))):
        out += list(open(os.path.join(bundle, "data", f), "rb").read()) + [eot]
    return out


def batch(tok, step):
    n_train = len(tok) - len(tok) // 20
    span = n_train - T
    rows = []
    for b in range(B):
        start = ((step * B + b) * T) % span
        rows.append(tok[start:start + T + 1])
    t = torch.tensor(rows)
    return t[:, :-1], t[:, 1:]


def check(name, ok, why):
    print(("PASS %s" % name) if ok else ("FAIL %s: %s" % (name, why)))
    return ok


def run_model(tmp, mname, cfg):
    b = os.path.join(tmp, mname)
    os.makedirs(os.path.join(b, "data"))
    json.dump(cfg, open(os.path.join(b, "config.json"), "w"))
    json.dump({"steps": STEPS, "batch": B, "seq_len": T, "lr": LR, "warmup": 0,
               "schedule": "constant", "weight_decay": WD, "grad_clip": CLIP, "seed": 1},
              open(os.path.join(b, "bursar.json"), "w"))
    open(os.path.join(b, "data", "a.txt"), "w").write(corpus(1500))
    gen = torch.Generator().manual_seed(11)
    w = {}
    for k, shp in shapes(cfg):
        r = torch.randn(shp, generator=gen, dtype=torch.float64)
        w[k] = 1.0 + 0.1 * r if len(shp) == 1 and "norm" in k or k.endswith("ln_1.weight") \
            or k.endswith("ln_2.weight") or k == "ln_f.weight" else 0.1 * r
    write_safetensors(os.path.join(b, "model.safetensors"), w)
    w = read_safetensors(os.path.join(b, "model.safetensors"))  # the same f32-rounded bits
    env = dict(os.environ, OMP_NUM_THREADS="2")
    g = os.path.join(tmp, mname + ".grads")
    r = subprocess.run([TRAIN, b, "--dump-grads", g], capture_output=True, text=True,
                       timeout=120, env=env)
    ok = True
    if not check("%s_dump_grads_runs" % mname, r.returncode == 0,
                 "exit %d: %s" % (r.returncode, r.stderr[-400:])):
        return False
    got_loss = [json.loads(x) for x in r.stdout.splitlines()
                if '"grads"' in x][0]["loss"]
    tok = tokens(b, cfg["vocab_size"])
    idx, tgt = batch(tok, 0)
    for v in w.values():
        v.requires_grad_(True)
    logits = logits_of(w, cfg, idx)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
    loss.backward()
    ok &= check("%s_loss" % mname, abs(got_loss - loss.item()) < 1e-5 * max(1, loss.item()),
                "trainer %.8f, torch %.8f" % (got_loss, loss.item()))
    lp = np.fromfile(g + ".logprobs", dtype=np.float32).reshape(logits.shape)
    want = F.log_softmax(logits, -1).detach().numpy()
    err = float(np.abs(lp - want).max())
    ok &= check("%s_logits" % mname, err < 1e-4, "log-softmax differs by %.3g" % err)
    gr = read_safetensors(g)
    worst, bad = 0.0, []
    for k, v in w.items():
        ref = v.grad
        e = float((gr[k] - ref).abs().max() / (ref.abs().max() + 1e-6))
        worst = max(worst, e)
        if e > 1e-3 or gr[k].shape != ref.shape:
            bad.append("%s (%.3g)" % (k, e))
    print("# %s: %d gradients, worst relative error %.3g" % (mname, len(w), worst))
    ok &= check("%s_every_gradient" % mname, not bad and set(gr) == set(w),
                "differ: %s; missing %s" % (", ".join(bad[:5]), sorted(set(w) - set(gr))[:3]))
    # 10 AdamW steps, as optim.c: betas (0.9, 0.95), eps 1e-8, decay on matrices
    r = subprocess.run([TRAIN, b], capture_output=True, text=True, timeout=300, env=env)
    if not check("%s_train_runs" % mname, r.returncode == 0,
                 "exit %d: %s" % (r.returncode, r.stderr[-400:])):
        return False
    got = [json.loads(x)["loss"] for x in r.stdout.splitlines() if '"step"' in x]
    params = {k: v.detach().clone() for k, v in w.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    s = {k: torch.zeros_like(v) for k, v in params.items()}
    want = []
    for step in range(STEPS):
        for v in params.values():
            v.grad = None
            v.requires_grad_(True)
        idx, tgt = batch(tok, step)
        logits = logits_of(params, cfg, idx)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        loss.backward()
        want.append(loss.item())
        norm = math.sqrt(sum(float((v.grad ** 2).sum()) for v in params.values()))
        scale = CLIP / norm if norm > CLIP else 1.0
        with torch.no_grad():
            for k, v in params.items():
                gk = v.grad * scale
                m[k] = 0.9 * m[k] + 0.1 * gk
                s[k] = 0.95 * s[k] + 0.05 * gk * gk
                mh, sh = m[k] / (1 - 0.9 ** (step + 1)), s[k] / (1 - 0.95 ** (step + 1))
                wd = WD if v.dim() == 2 else 0.0
                v -= LR * (mh / (sh.sqrt() + 1e-8) + wd * v)
    diff = max(abs(a - b) for a, b in zip(got, want)) if len(got) == STEPS else float("inf")
    print("# %s: trainer losses %s" % (mname, " ".join("%.5f" % x for x in got)))
    print("# %s: torch   losses %s" % (mname, " ".join("%.5f" % x for x in want)))
    ok &= check("%s_adamw_10_steps" % mname, diff < 2e-4 and want[-1] < want[0],
                "largest loss difference %.3g over %d steps" % (diff, len(got)))
    return ok


def main():
    if not os.access(TRAIN, os.X_OK):
        print("FAIL torch_grads: %s is missing (run make)" % TRAIN)
        return 1
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="test-torch-grads-")
    try:
        ok = True
        for name, cfg in MODELS.items():
            ok &= run_model(tmp, name, cfg)
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
