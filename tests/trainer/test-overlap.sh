#!/usr/bin/env bash
# test-overlap — gradient buckets allreduced during the backward pass: 2 and
# 4 ranks (overlapped), 2 ranks with BURSAR_NO_OVERLAP=1, with grad_accum 2
# and with small buckets (BURSAR_BUCKET_FLOATS: slices split in place plus
# several packed buckets per layer) all give 1 rank's loss curve. The mean
# comm_ms (time blocked waiting) of the overlapped and the plain run are
# printed, not asserted (noisy machine).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
TRAIN=$BUILD/bin/bursar-train
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/test-overlap-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x "$TRAIN" ]; then
	echo "FAIL build: $TRAIN is missing (run make)"
	exit 1
fi
export BCOLL_TIMEOUT_MS=20000
# 4 layers of width 128: one packed bucket per layer by default
$PY tests/trainer/make-bundle.py "$tmp/b" --steps 12 --layers 4 --embd 128 --seq 32
$PY - "$tmp/b/bursar.json" "$tmp/acc.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1])); j["grad_accum"] = 2; json.dump(j, open(sys.argv[2], "w"))
PYEOF
mkdir -p "$tmp/ba" && cp -r "$tmp/b/config.json" "$tmp/b/data" "$tmp/ba/" &&
	cp "$tmp/acc.json" "$tmp/ba/bursar.json"

run() { # name ranks bundle [env...]
	local name=$1 n=$2 b=$3
	shift 3
	if env "$@" "$TRAIN" "$b" --ranks "$n" >"$tmp/$name.jsonl" 2>"$tmp/$name.err"; then
		echo "PASS ${name}_exit_0"
	else
		echo "FAIL ${name}_exit_0: status $?: $(tail -2 "$tmp/$name.err")"
	fi
}
run one 1 "$tmp/b"
run two 2 "$tmp/b"
run two_plain 2 "$tmp/b" BURSAR_NO_OVERLAP=1
run two_accum 2 "$tmp/ba"
run four 4 "$tmp/b"
# small buckets: slices split in place and packs of several buckets per layer
run two_small 2 "$tmp/b" BURSAR_BUCKET_FLOATS=20000
grep -ho "[0-9]* gradient buckets[a-z ,]*" "$tmp/two.err" "$tmp/two_plain.err" \
	"$tmp/two_small.err" | sort -u | sed 's/^/    /'

$PY - "$tmp" <<'PYEOF'
import json, sys
T = sys.argv[1]
def steps(name, rank=0):
    try:
        return [x for x in map(json.loads, open("%s/%s.jsonl" % (T, name)))
                if x.get("event") == "step" and x["rank"] == rank]
    except Exception:
        return []
ref = [x["loss"] for x in steps("one")]
for name in ("two", "two_plain", "two_accum", "four", "two_small"):
    got = [x["loss"] for x in steps(name)]
    d = max((abs(a - b) for a, b in zip(ref, got)), default=1)
    ok = len(ref) == 12 and len(got) == 12 and d < 2e-3
    print(("PASS %s_matches_one_rank (max |dloss| %.2g)" % (name, d)) if ok else
          "FAIL %s_matches_one_rank: %d/%d steps, max |dloss| %.3g" % (name, len(got), len(ref), d))
def comm(name):
    s = steps(name)[2:]
    return sum(x["comm_ms"] for x in s) / max(len(s), 1), sum(x["step_ms"] for x in s) / max(len(s), 1)
(co, so), (cp, sp) = comm("two"), comm("two_plain")
print("    2 ranks, mean over steps 3-12: overlapped comm_ms %.2f step_ms %.1f; "
      "BURSAR_NO_OVERLAP=1 comm_ms %.2f step_ms %.1f" % (co, so, cp, sp))
PYEOF
