#!/usr/bin/env bash
# test-shards — sharded weights (model.safetensors.index.json): a checkpoint
# split into two shards gives the same first loss as the single file; an
# index that maps a tensor to the wrong shard, names a missing or unsafe
# shard file, leaves a tensor out, or points at a truncated shard is refused
# with a sentence naming the problem.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
TRAIN=$BUILD/bin/bursar-train
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/test-shards-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x "$TRAIN" ]; then
	echo "FAIL build: $TRAIN is missing (run make)"
	exit 1
fi
$PY tests/trainer/make-bundle.py "$tmp/b" --steps 3 --seq 32
if ! "$TRAIN" "$tmp/b" --out "$tmp/o" >/dev/null 2>"$tmp/o.err"; then
	echo "FAIL train_weights: $(tail -2 "$tmp/o.err")"
	exit 1
fi

# bundle NAME MODE: the weights of $tmp/o split into two shards, then MODE
# spoils the index or a shard
bundle() {
	mkdir -p "$tmp/$1" && cp -r "$tmp/b/config.json" "$tmp/b/bursar.json" "$tmp/b/data" "$tmp/$1/"
	$PY - "$tmp/o/model.safetensors" "$tmp/$1" "$2" <<'PYEOF'
import json, struct, sys, os
src, d, mode = sys.argv[1:]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
data = raw[8 + n:]
names = sorted(k for k in head if k != "__metadata__")
parts = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
wmap = {}
for f, ns in parts.items():
    h, blob = {}, b""
    for k in ns:
        a, b = head[k]["data_offsets"]
        h[k] = dict(head[k], data_offsets=[len(blob), len(blob) + b - a])
        blob += data[a:b]
        wmap[k] = f
    hj = json.dumps(h).encode()
    out = struct.pack("<Q", len(hj)) + hj + blob
    if mode == "truncated" and f.startswith("model-00002"):
        out = out[:len(out) // 2]
    open(os.path.join(d, f), "wb").write(out)
if mode == "wrong_shard":
    wmap[names[0]] = "model-00002-of-00002.safetensors"
elif mode == "missing_file":
    wmap[names[1]] = "model-00003-of-00003.safetensors"
elif mode == "unsafe_name":
    wmap[names[1]] = "../o/model.safetensors"
elif mode == "left_out":
    os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
    wmap = {k: v for k, v in wmap.items() if not v.startswith("model-00002")}
json.dump({"metadata": {"total_size": len(data)}, "weight_map": wmap},
          open(os.path.join(d, "model.safetensors.index.json"), "w"))
PYEOF
}

# the same weights, one file and two shards: the same first loss
mkdir -p "$tmp/single" && cp -r "$tmp/b/config.json" "$tmp/b/bursar.json" "$tmp/b/data" \
	"$tmp/o/model.safetensors" "$tmp/single/"
bundle sharded ok
"$TRAIN" "$tmp/single" --steps 1 >"$tmp/single.jsonl" 2>"$tmp/single.err"
r1=$?
"$TRAIN" "$tmp/sharded" --steps 1 >"$tmp/sharded.jsonl" 2>"$tmp/sharded.err"
r2=$?
l1=$(grep -o '"loss": [0-9.]*' "$tmp/single.jsonl")
l2=$(grep -o '"loss": [0-9.]*' "$tmp/sharded.jsonl")
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ -n "$l1" ] && [ "$l1" = "$l2" ] &&
	grep -q "loaded weights from the shards" "$tmp/sharded.err"; then
	echo "PASS sharded_equals_single_file ($l1)"
else
	echo "FAIL sharded_equals_single_file: status $r1/$r2, '$l1' vs '$l2': $(tail -1 "$tmp/sharded.err")"
fi

check() { # name mode pattern
	bundle "$1" "$2"
	"$TRAIN" "$tmp/$1" --steps 1 >/dev/null 2>"$tmp/$1.err"
	rc=$?
	if [ $rc -eq 2 ] && grep -q "$3" "$tmp/$1.err"; then
		echo "PASS $1_rejected"
	else
		echo "FAIL $1_rejected: status $rc: $(tail -1 "$tmp/$1.err")"
	fi
}
check wrong_shard wrong_shard "not mapped to this shard"
check missing_file missing_file "model-00003-of-00003.safetensors"
check unsafe_name unsafe_name "not a \*.safetensors file beside it"
check left_out left_out "is missing"
check truncated truncated "shard 'model-00002-of-00002.safetensors'"
