#!/usr/bin/env bash
# test-train — bursar-train end to end on a tiny generated bundle: loss falls,
# 1 rank and 2 ranks give the same loss curve, outputs are a valid HF
# checkpoint, bad input and dead ranks fail with a sentence, SIGTERM stops a
# run promptly, --probe reports FLOP/s. Real processes, real sockets.
set -u
cd "$(dirname "$0")/../.."
NAME=train
. tests/trainer/lib.sh
$PY tests/trainer/make-bundle.py "$tmp/b" --steps 60

# 2 ranks, then 1 rank, same seed and global batch
if "$TRAIN" "$tmp/b" --ranks 2 --out "$tmp/o2" >"$tmp/r2.jsonl" 2>"$tmp/r2.err"; then
	pass two_ranks_exit_0
else
	fail two_ranks_exit_0 "status $?: $(tail -3 "$tmp/r2.err")"
fi
if "$TRAIN" "$tmp/b" --ranks 1 --out "$tmp/o1" >"$tmp/r1.jsonl" 2>"$tmp/r1.err"; then
	pass one_rank_exit_0
else
	fail one_rank_exit_0 "status $?: $(tail -3 "$tmp/r1.err")"
fi

$PY - "$tmp" <<'PYEOF'
import json, struct, sys, os
T = sys.argv[1]
def lines(f):
    try:
        return [json.loads(l) for l in open(f)]
    except Exception as e:
        return []
def check(name, ok, why):
    print(("PASS %s" % name) if ok else ("FAIL %s: %s" % (name, why)))

r2, r1 = lines(T + "/r2.jsonl"), lines(T + "/r1.jsonl")
s2 = {r: [x for x in r2 if x.get("event") == "step" and x["rank"] == r] for r in (0, 1)}
s1 = [x for x in r1 if x.get("event") == "step"]
starts = [x for x in r2 if x.get("event") == "start"]
dones = [x for x in r2 if x.get("event") == "done"]
check("protocol_lines", len(starts) == 2 and len(dones) == 2 and len(s2[0]) == 60 and
      len(s2[1]) == 60 and all(k in s2[0][0] for k in ("loss", "lr", "tokens_per_s", "step_ms",
      "comm_ms", "comm_s", "mfu", "steps")) and starts[0]["size"] == 2 and
      starts[0]["tokens_per_step"] == 8 * 64,
      "starts %d, dones %d, steps %d/%d" % (len(starts), len(dones), len(s2[0]), len(s2[1])))
l0 = [x["loss"] for x in s2[0]]
ok = len(l0) == 60 and sum(l0[-5:]) / 5 < l0[0] - 2.0
check("loss_falls", ok, "first %s, last five %s" % (l0[:1], l0[-5:]))
check("ranks_agree_on_loss", len(s2[1]) == 60 and all(a["loss"] == b["loss"] for a, b in
      zip(s2[0], s2[1])), "rank 0 and rank 1 report different global losses")
d = [abs(a["loss"] - b["loss"]) for a, b in zip(s1, s2[0])]
check("one_vs_two_ranks_match", len(d) == 60 and max(d) < 2e-3,
      "max |loss1 - loss2| = %s" % (max(d) if d else "n/a"))
check("comm_s_cumulative", len(s2[0]) == 60 and s2[0][-1]["comm_s"] > 0 and
      all(b["comm_s"] >= a["comm_s"] for a, b in zip(s2[0], s2[0][1:])), "comm_s not cumulative")
ev = [x.get("eval_loss") for x in dones]
check("eval_loss_reported", all(isinstance(e, float) and e < l0[0] for e in ev), str(ev))

# checkpoint: a valid safetensors file with every HF GPT-2 tensor
p = T + "/o2/model.safetensors"
why = ""
try:
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"] + [
        "h.%d.%s" % (i, s) for i in range(2) for s in (
            "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
            "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
            "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")]
    if h.get("__metadata__") != {"format": "pt"}:
        why = "metadata %r" % h.get("__metadata__")
    for k in names:
        if k not in h or h[k]["dtype"] != "F32":
            why = "tensor %s missing or not F32" % k
    if h["h.0.attn.c_attn.weight"]["shape"] != [64, 192]:
        why = "c_attn shape %r, want [64, 192] (Conv1D in, out)" % h["h.0.attn.c_attn.weight"]["shape"]
    end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
    if 8 + n + end != len(raw):
        why = "data ends at %d, file is %d bytes" % (8 + n + end, len(raw))
    if len(h) != len(names) + 1:
        why = "%d entries, want %d" % (len(h), len(names) + 1)
except Exception as e:
    why = repr(e)
check("safetensors_valid", not why, why)
try:
    c = json.load(open(T + "/o2/config.json"))
    why = "" if (c["architectures"] == ["GPT2LMHeadModel"] and c["model_type"] == "gpt2" and
                 c["n_layer"] == 2 and c["n_embd"] == 64 and c["vocab_size"] == 256 and
                 c["activation_function"] == "gelu_new" and c["tie_word_embeddings"] is True and
                 c["layer_norm_epsilon"] == 1e-5) else "unexpected config %r" % c
except Exception as e:
    why = repr(e)
check("config_json_valid", not why, why)
check("only_rank0_writes_and_no_temp_files",
      sorted(os.listdir(T + "/o2")) == ["config.json", "model.safetensors"], str(os.listdir(T + "/o2")))
PYEOF

# resume from the written checkpoint: loss starts where training ended
mkdir -p "$tmp/b2" && cp -r "$tmp/b/data" "$tmp/b/config.json" "$tmp/b/bursar.json" "$tmp/b2/"
cp "$tmp/o2/model.safetensors" "$tmp/b2/"
if "$TRAIN" "$tmp/b2" --steps 2 >"$tmp/r3.jsonl" 2>"$tmp/r3.err" &&
	$PY -c 'import json,sys; l=[json.loads(x) for x in open(sys.argv[1])]; s=[x for x in l if x["event"]=="step"]; sys.exit(0 if s[0]["loss"] < 3.0 else 1)' "$tmp/r3.jsonl"; then
	pass loads_bundle_weights
else
	fail loads_bundle_weights "$(head -c 300 "$tmp/r3.jsonl") $(tail -2 "$tmp/r3.err")"
fi

# a truncated checkpoint in a bundle is refused with a sentence
head -c 1000 "$tmp/o2/model.safetensors" >"$tmp/b2/model.safetensors"
"$TRAIN" "$tmp/b2" --steps 2 >/dev/null 2>"$tmp/r4.err"
rc=$?
if [ $rc -eq 2 ] && grep -q "model.safetensors" "$tmp/r4.err"; then
	pass truncated_weights_rejected
else
	fail truncated_weights_rejected "status $rc: $(tail -2 "$tmp/r4.err")"
fi

# batch 8 does not split across 3 ranks
"$TRAIN" "$tmp/b" --ranks 3 --steps 2 >/dev/null 2>"$tmp/r5.err"
rc=$?
if [ $rc -ne 0 ] && grep -q "cannot be split evenly across 3 ranks" "$tmp/r5.err"; then
	pass batch_not_divisible_rejected
else
	fail batch_not_divisible_rejected "status $rc: $(tail -2 "$tmp/r5.err")"
fi

# a missing bundle
"$TRAIN" "$tmp/nope" --steps 1 >/dev/null 2>"$tmp/r6.err"
rc=$?
if [ $rc -eq 2 ] && grep -q "no config.json" "$tmp/r6.err"; then
	pass missing_bundle_rejected
else
	fail missing_bundle_rejected "status $rc: $(tail -2 "$tmp/r6.err")"
fi

# kill -9 one rank mid-run (--ranks): the parent fails the run naming it
"$TRAIN" "$tmp/b" --ranks 2 --steps 100000 >"$tmp/r7.jsonl" 2>"$tmp/r7.err" &
pids+=($!)
parent=$!
for _ in $(seq 100); do grep -q '"step": 3,' "$tmp/r7.jsonl" 2>/dev/null && break; sleep 0.1; done
victim=$(pgrep -P "$parent" | sort -n | tail -1)
[ -n "$victim" ] && kill -9 "$victim"
wait "$parent"
rc=$?
if [ -n "$victim" ] && [ $rc -ne 0 ] && grep -q "rank 1 was killed by signal 9" "$tmp/r7.err"; then
	pass dead_rank_fails_local_run
else
	fail dead_rank_fails_local_run "status $rc: $(tail -3 "$tmp/r7.err")"
fi

# ranks launched one by one as noded does (environment, no parent): when
# rank 1 dies, rank 0 exits 3 within the deadline, naming rank 1
mkdir -p "$tmp/rdv"
BURSAR_RANK=0 BURSAR_SIZE=2 BURSAR_RDV="dir:$tmp/rdv" BURSAR_JOB=j-test OMP_NUM_THREADS=1 \
	"$TRAIN" "$tmp/b" --steps 100000 --out "$tmp/o9" >"$tmp/r9.jsonl" 2>"$tmp/r9.err" &
r0=$!
BURSAR_RANK=1 BURSAR_SIZE=2 BURSAR_RDV="dir:$tmp/rdv" BURSAR_JOB=j-test OMP_NUM_THREADS=1 \
	"$TRAIN" "$tmp/b" --steps 100000 --out "$tmp/o9" >/dev/null 2>&1 &
r1=$!
pids+=($r0 $r1)
for _ in $(seq 100); do grep -q '"step": 3,' "$tmp/r9.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -9 $r1
wait $r1 2>/dev/null
start=$(date +%s)
wait $r0
rc=$?
took=$(( $(date +%s) - start ))
if [ $rc -eq 3 ] && [ $took -le 12 ] && grep -qE "rank 1 (closed the connection|\(pid [0-9]+\) died)" "$tmp/r9.err"; then
	pass peer_death_names_rank
else
	fail peer_death_names_rank "status $rc after ${took}s: $(tail -2 "$tmp/r9.err")"
fi

# SIGTERM stops a run promptly
"$TRAIN" "$tmp/b" --ranks 2 --steps 100000 >"$tmp/r8.jsonl" 2>"$tmp/r8.err" &
pids+=($!)
parent=$!
for _ in $(seq 100); do grep -q '"step": 2,' "$tmp/r8.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -TERM "$parent"
start=$(date +%s)
wait "$parent"
rc=$?
if [ $rc -ne 0 ] && [ $(( $(date +%s) - start )) -le 3 ] && ! pgrep -P "$parent" >/dev/null; then
	pass sigterm_stops_promptly
else
	fail sigterm_stops_promptly "status $rc: $(tail -2 "$tmp/r8.err")"
fi

# --probe
out=$("$TRAIN" --probe)
if $PY -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["flops"] > 1e8 else 1)' "$out"; then
	pass probe_reports_flops
else
	fail probe_reports_flops "got '$out'"
fi
