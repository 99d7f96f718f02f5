#!/usr/bin/env bash
# test-llama — bursar-train on a tiny Llama bundle (GQA, untied head) end to
# end: 1, 2 and 4 ranks give the same loss curve, the loss falls, the output
# is a Llama checkpoint under HF names whose config.json the bundle parser
# accepts, and training from it starts where the run ended.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
TRAIN=$BUILD/bin/bursar-train
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/test-llama-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x "$TRAIN" ]; then
	echo "FAIL build: $TRAIN is missing (run make)"
	exit 1
fi
export BCOLL_TIMEOUT_MS=10000
$PY tests/trainer/make-bundle.py "$tmp/b" --llama 1 --steps 25 --batch 8
for n in 1 2 4; do
	if "$TRAIN" "$tmp/b" --ranks $n --out "$tmp/o$n" >"$tmp/r$n.jsonl" 2>"$tmp/r$n.err"; then
		echo "PASS llama_ranks_${n}_exit_0"
	else
		echo "FAIL llama_ranks_${n}_exit_0: status $?: $(tail -3 "$tmp/r$n.err")"
	fi
done
mkdir -p "$tmp/b2" && cp -r "$tmp/b/data" "$tmp/b/bursar.json" "$tmp/b2/"
cp "$tmp/o1/model.safetensors" "$tmp/o1/config.json" "$tmp/b2/"
"$TRAIN" "$tmp/b2" --steps 1 >"$tmp/r9.jsonl" 2>"$tmp/r9.err"

$PY - "$tmp" <<'PYEOF'
import json, struct, sys
T = sys.argv[1]
def check(name, ok, why):
    print(("PASS %s" % name) if ok else ("FAIL %s: %s" % (name, why)))
def steps(f, rank=0):
    try:
        return [json.loads(l) for l in open(f) if '"step"' in l]
    except Exception:
        return []
l = {n: [x["loss"] for x in steps("%s/r%d.jsonl" % (T, n)) if x["rank"] == 0] for n in (1, 2, 4)}
check("llama_loss_falls", len(l[1]) == 25 and sum(l[1][-3:]) / 3 < l[1][0] - 1.0, str(l[1][:1] + l[1][-3:]))
for n in (2, 4):
    d = [abs(a - b) for a, b in zip(l[1], l[n])]
    check("llama_one_vs_%d_ranks_match" % n, len(d) == 25 and max(d) < 2e-3,
          "max |loss1 - loss%d| = %s" % (n, max(d) if d else "n/a"))
why = ""
try:
    raw = open(T + "/o1/model.safetensors", "rb").read()
    h = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    want = {"model.embed_tokens.weight": [257, 64], "lm_head.weight": [257, 64],
            "model.norm.weight": [64], "model.layers.1.self_attn.k_proj.weight": [32, 64],
            "model.layers.0.self_attn.q_proj.weight": [64, 64],
            "model.layers.0.mlp.down_proj.weight": [64, 96],
            "model.layers.1.post_attention_layernorm.weight": [64]}
    for k, s in want.items():
        if h.get(k, {}).get("shape") != s:
            why = "%s: %r, want %r" % (k, h.get(k), s)
    if len(h) != 1 + 3 + 2 * 9:
        why = "%d entries, want 22" % len(h)
    c = json.load(open(T + "/o1/config.json"))
    if c["architectures"] != ["LlamaForCausalLM"] or c["num_key_value_heads"] != 2 or \
       c["tie_word_embeddings"] is not False or c["head_dim"] != 16:
        why = "config %r" % c
except Exception as e:
    why = repr(e)
check("llama_checkpoint_hf_names", not why, why)
r9 = steps(T + "/r9.jsonl")
check("llama_checkpoint_reloads", len(r9) == 1 and abs(r9[0]["loss"] - l[1][-1]) < 0.5,
      "first loss from the checkpoint %s, run ended at %s" % (r9[:1], l[1][-1:]))
PYEOF
