#!/usr/bin/python3
"""test-hf — what bursar-train writes loads back in Hugging Face transformers
and computes the same function: for the GPT-2 and the two Llamas of
test-torch-grads.py (GQA, head_dim != hidden/heads, biases, llama3 RoPE,
untied head; tied head, rope_parameters), random weights are trained for 3
steps, the output folder is loaded with AutoModelForCausalLM.from_pretrained,
and its log-softmax over step 1's batch must match bursar-train's own
(--dump-grads on the trained weights) within 1e-4. SKIP where transformers
is not installed (Debian 12 has no package for it). BURSAR_LIBRARY_PATH, when
set, is the LD_LIBRARY_PATH bursar-train runs with (a Python with its own
libraries can then run this without them)."""
import importlib.util, json, os, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("tg", os.path.join(HERE, "test-torch-grads.py"))
tg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tg)  # SKIPs and exits itself without torch

try:
    import transformers
    from transformers import AutoModelForCausalLM
except Exception as e:  # noqa
    print("SKIP hf_from_pretrained: transformers is not installed (%s)" % e)
    sys.exit(0)

import numpy as np
import torch
import torch.nn.functional as F


def run(args, env):
    return subprocess.run([tg.TRAIN] + args, capture_output=True, text=True, timeout=300,
                          env=env)


def check_model(tmp, name, cfg, env):
    b = os.path.join(tmp, name)
    os.makedirs(os.path.join(b, "data"))
    json.dump(cfg, open(os.path.join(b, "config.json"), "w"))
    json.dump({"steps": 3, "batch": tg.B, "seq_len": tg.T, "lr": 1e-2, "warmup": 0,
               "schedule": "constant", "seed": 1, "device": "cpu"},
              open(os.path.join(b, "bursar.json"), "w"))
    open(os.path.join(b, "data", "a.txt"), "w").write(tg.corpus(1500))
    gen = torch.Generator().manual_seed(5)
    tg.write_safetensors(os.path.join(b, "model.safetensors"),
                         {k: 0.1 * torch.randn(shp, generator=gen, dtype=torch.float64) +
                          (1.0 if len(shp) == 1 and ("norm" in k or "ln_" in k) else 0.0)
                          for k, shp in tg.shapes(cfg)})
    out = os.path.join(tmp, name + ".out")
    r = run([b, "--out", out], env)
    if not tg.check("hf_%s_trains" % name, r.returncode == 0,
                    "exit %d: %s" % (r.returncode, r.stderr[-400:])):
        return False
    # the trained weights as a bundle of their own: bursar-train's log-softmax
    b2 = os.path.join(tmp, name + ".trained")
    shutil.copytree(os.path.join(b, "data"), os.path.join(b2, "data"))
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(out, f), os.path.join(b2, f))
    shutil.copy(os.path.join(b, "bursar.json"), os.path.join(b2, "bursar.json"))
    g = os.path.join(tmp, name + ".grads")
    r = run([b2, "--dump-grads", g], env)
    if not tg.check("hf_%s_dump" % name, r.returncode == 0,
                    "exit %d: %s" % (r.returncode, r.stderr[-400:])):
        return False
    try:
        model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
    except Exception as e:  # noqa
        return tg.check("hf_%s_from_pretrained" % name, False, repr(e)[:400])
    model.eval()
    idx, _ = tg.batch(tg.tokens(b2, cfg["vocab_size"]), 0)
    with torch.no_grad():
        want = F.log_softmax(model(input_ids=idx).logits.float(), -1).numpy()
    lp = np.fromfile(g + ".logprobs", dtype=np.float32).reshape(want.shape)
    err = float(np.abs(lp - want).max())
    ok = tg.check("hf_%s_from_pretrained" % name, model.config.model_type == cfg["model_type"],
                  "model_type %s" % model.config.model_type)
    ok &= tg.check("hf_%s_same_logits" % name, err < 1e-4,
                   "log-softmax differs by %.3g from transformers %s" %
                   (err, transformers.__version__))
    return ok


def main():
    if not os.access(tg.TRAIN, os.X_OK):
        print("FAIL hf: %s is missing (run make)" % tg.TRAIN)
        return 1
    torch.set_num_threads(2)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    if os.environ.get("BURSAR_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["BURSAR_LIBRARY_PATH"]
    tmp = tempfile.mkdtemp(prefix="test-hf-")
    try:
        ok = True
        for name, cfg in tg.MODELS.items():
            ok &= check_model(tmp, name, cfg, env)
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


sys.exit(main())
