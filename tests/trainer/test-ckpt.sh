#!/usr/bin/env bash
# test-ckpt — checkpoints and exact resume of bursar-train (--ckpt DIR):
# SIGUSR1 checkpoints at the next step boundary and exits 75; relaunched on
# the same DIR the run resumes and reports the same losses as an
# uninterrupted run (and ends with the same weights), on 1 and 2 ranks.
# Also: ckpt_every keeps only the latest checkpoint, a checkpoint of another
# run shape is refused, gradient accumulation (explicit and picked under a
# memory cap) matches the plain run, eval_every reports eval lines.
set -u
cd "$(dirname "$0")/../.."
NAME=ckpt
. tests/trainer/lib.sh
STEPS=40
$PY tests/trainer/make-bundle.py "$tmp/b" --steps $STEPS

# compare.py CONT INTERRUPTED RESUMED: the interrupted run stopped early with
# a checkpoint event, the resumed run starts there and every step's loss
# equals the uninterrupted run's.
cat >"$tmp/compare.py" <<'PYEOF'
import json, sys
def steps(f, rank=0):
    out = {}
    for l in open(f):
        x = json.loads(l)
        if x.get("event") == "step" and x["rank"] == rank:
            out[x["step"]] = x["loss"]
    return out
def events(f, ev):
    return [json.loads(l) for l in open(f) if json.loads(l).get("event") == ev]
cont, a, b = steps(sys.argv[1]), steps(sys.argv[2]), steps(sys.argv[3])
ck = [e["step"] for e in events(sys.argv[2], "checkpoint") if e["rank"] == 0]
start = [e.get("start_step") for e in events(sys.argv[3], "start")]
n = len(cont)
if not ck or ck[-1] >= n or max(a) != ck[-1]:
    sys.exit("interrupted run: checkpoints %s, last step %s of %d" % (ck, max(a or [0]), n))
if start[0] != ck[-1] or min(b) != ck[-1] + 1 or max(b) != n:
    sys.exit("resumed run: start_step %s, steps %s..%s, want %d..%d" %
             (start, min(b or [0]), max(b or [0]), ck[-1] + 1, n))
d = max(abs(cont[s] - l) for s, l in list(a.items()) + list(b.items()))
if d > 1e-6:
    sys.exit("max |loss difference| %g at resume step %d" % (d, ck[-1]))
print("resumed at step %d of %d, max |dloss| %g" % (ck[-1], n, d))
PYEOF

# interrupt NAME RANKS: continuous run, a run stopped by SIGUSR1, its resume
interrupt() {
	local name=$1 ranks=$2 rc victim
	"$TRAIN" "$tmp/b" --ranks "$ranks" --ckpt "$tmp/$name-c0" --out "$tmp/$name-o0" \
		>"$tmp/$name-0.jsonl" 2>"$tmp/$name-0.err"
	rc=$?
	[ $rc -eq 0 ] || { fail "${name}_continuous" "status $rc: $(tail -2 "$tmp/$name-0.err")"; return; }
	"$TRAIN" "$tmp/b" --ranks "$ranks" --ckpt "$tmp/$name-c1" --out "$tmp/$name-o1" \
		>"$tmp/$name-1.jsonl" 2>"$tmp/$name-1.err" &
	victim=$!
	pids+=($victim)
	for _ in $(seq 200); do grep -q '"step": 3,' "$tmp/$name-1.jsonl" 2>/dev/null && break; sleep 0.05; done
	kill -USR1 $victim
	wait $victim
	rc=$?
	# (the output directory is made and probed at the start; nothing is in it)
	if [ $rc -eq 75 ] && [ ! -e "$tmp/$name-o1/model.safetensors" ]; then
		pass "${name}_sigusr1_checkpoints_and_exits_75"
	else
		fail "${name}_sigusr1_checkpoints_and_exits_75" "status $rc: $(tail -2 "$tmp/$name-1.err")"
	fi
	"$TRAIN" "$tmp/b" --ranks "$ranks" --ckpt "$tmp/$name-c1" --out "$tmp/$name-o1" \
		>"$tmp/$name-2.jsonl" 2>"$tmp/$name-2.err"
	rc=$?
	if [ $rc -eq 0 ] && why=$($PY "$tmp/compare.py" "$tmp/$name-0.jsonl" "$tmp/$name-1.jsonl" \
		"$tmp/$name-2.jsonl" 2>&1); then
		pass "${name}_resume_equals_continuous ($why)"
	else
		fail "${name}_resume_equals_continuous" "status $rc: $why $(tail -2 "$tmp/$name-2.err")"
	fi
	if cmp -s "$tmp/$name-o0/model.safetensors" "$tmp/$name-o1/model.safetensors" &&
		cmp -s "$tmp/$name-c0/step-$STEPS/optim-v.safetensors" \
			"$tmp/$name-c1/step-$STEPS/optim-v.safetensors"; then
		pass "${name}_resumed_weights_bitwise_equal"
	else
		fail "${name}_resumed_weights_bitwise_equal" "final weights or moments differ"
	fi
}
interrupt one 1
interrupt two 2

# layout: latest names the last checkpoint; ckpt_every keeps only it
mkdir -p "$tmp/e" && cp -r "$tmp/b/data" "$tmp/b/config.json" "$tmp/e/"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); j.update(ckpt_every=7, steps=20, eval_every=5); json.dump(j, open(sys.argv[2], "w"))' \
	"$tmp/b/bursar.json" "$tmp/e/bursar.json"
"$TRAIN" "$tmp/e" --ckpt "$tmp/ce" >"$tmp/e.jsonl" 2>"$tmp/e.err"
rc=$?
got=$(cd "$tmp/ce" 2>/dev/null && echo "$(cat latest) $(ls | tr '\n' ' ')$(ls step-20 | tr '\n' ' ')")
cks=$(grep -o '"event": "checkpoint", "rank": 0, "step": [0-9]*' "$tmp/e.jsonl" | grep -o '[0-9]*$' | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$got" = "step-20 latest step-20 config.json model.safetensors optim-m.safetensors optim-v.safetensors state.json " ] &&
	[ "$cks" = "7 14 20 " ]; then
	pass ckpt_every_keeps_latest
else
	fail ckpt_every_keeps_latest "status $rc, dir '$got', checkpoints at '$cks'"
fi
evs=$(grep -o '"event": "eval", "rank": 0, "step": [0-9]*' "$tmp/e.jsonl" | grep -o '[0-9]*$' | tr '\n' ' ')
if [ "$evs" = "5 10 15 " ] && grep -q '"eval_loss": [0-9]' "$tmp/e.jsonl"; then
	pass eval_every_reports
else
	fail eval_every_reports "eval lines at '$evs'"
fi

# the finished checkpoint resumed with another batch is refused
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); j.update(batch=4); json.dump(j, open(sys.argv[1], "w"))' "$tmp/e/bursar.json"
"$TRAIN" "$tmp/e" --ckpt "$tmp/ce" >/dev/null 2>"$tmp/m.err"
rc=$?
if [ $rc -eq 2 ] && grep -q "trained with batch 8 x seq_len 64, this run asks for 4 x 64" "$tmp/m.err"; then
	pass mismatched_checkpoint_refused
else
	fail mismatched_checkpoint_refused "status $rc: $(tail -2 "$tmp/m.err")"
fi
echo garbage >"$tmp/ce/latest"
"$TRAIN" "$tmp/e" --ckpt "$tmp/ce" >/dev/null 2>"$tmp/m2.err"
rc=$?
if [ $rc -eq 2 ] && grep -q "does not name a checkpoint" "$tmp/m2.err"; then
	pass damaged_latest_refused
else
	fail damaged_latest_refused "status $rc: $(tail -2 "$tmp/m2.err")"
fi

# gradient accumulation: grad_accum 2 (explicit) and a memory cap (picked)
# give the plain run's losses on the same global batch
mkdir -p "$tmp/g" && cp -r "$tmp/b/data" "$tmp/b/config.json" "$tmp/g/"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1])); j.update(grad_accum=2, steps=15); json.dump(j, open(sys.argv[2], "w"))' \
	"$tmp/b/bursar.json" "$tmp/g/bursar.json"
"$TRAIN" "$tmp/g" >"$tmp/g.jsonl" 2>"$tmp/g.err"
rc1=$?
BURSAR_TRAIN_MAX_MEM=6M "$TRAIN" "$tmp/b" --steps 15 >"$tmp/g2.jsonl" 2>"$tmp/g2.err"
rc2=$?
"$TRAIN" "$tmp/b" --steps 15 >"$tmp/g0.jsonl" 2>"$tmp/g0.err"
rc3=$?
why=$($PY - "$tmp" <<'PYEOF' 2>&1
import json, sys
T = sys.argv[1]
def run(f):
    l = [json.loads(x) for x in open(T + f)]
    return [x for x in l if x["event"] == "start"][0], [x["loss"] for x in l if x["event"] == "step"]
(s1, a), (s2, b), (s0, c) = run("/g.jsonl"), run("/g2.jsonl"), run("/g0.jsonl")
assert (s0["grad_accum"], s0["micro_batch"]) == (1, 8), s0
assert (s1["grad_accum"], s1["micro_batch"]) == (2, 4), s1
assert s2["grad_accum"] > 1 and s2["grad_accum"] * s2["micro_batch"] == 8, s2
assert len(a) == len(b) == len(c) == 15, (len(a), len(b), len(c))
d = max(max(abs(x - z), abs(y - z)) for x, y, z in zip(a, b, c))
assert d < 2e-3, "max |dloss| %g" % d
print("picked %d x %d under 6M, max |dloss| %.2g" % (s2["grad_accum"], s2["micro_batch"], d))
PYEOF
)
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ $rc3 -eq 0 ] && [ -n "$why" ] && ! echo "$why" | grep -q Error; then
	pass "grad_accum_matches_plain_run ($why)"
else
	fail grad_accum_matches_plain_run "status $rc1/$rc2/$rc3: $why $(tail -1 "$tmp/g2.err")"
fi
