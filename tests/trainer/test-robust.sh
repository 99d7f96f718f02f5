#!/usr/bin/env bash
# test-robust — bursar-train against input that is wrong in ways a real
# bundle, disk or operator produces: weights holding NaN, a damaged
# checkpoint (never a silent fresh start), a FIFO where a file belongs, data
# larger than the memory cap, an --out or --ckpt it cannot write (refused
# before training, not after), dropout and special-token entries it cannot
# honour, JSONL syntax errors, safetensors files whose tensors overlap or
# leave bytes over, a parent killed with -9 (its ranks go too) and SIGUSR1
# sent before the handler is in (a checkpoint, not a death).
set -u
cd "$(dirname "$0")/../.."
NAME=robust
. tests/trainer/lib.sh
$PY tests/trainer/make-bundle.py "$tmp/b" --steps 30
"$TRAIN" "$tmp/b" --steps 2 --out "$tmp/o" >/dev/null 2>"$tmp/o.err" ||
	{ fail setup "a clean run failed: $(tail -2 "$tmp/o.err")"; exit 1; }

# bundle B with a copy of b's files (config.json, bursar.json, data/)
clone() { rm -rf "$1" && mkdir -p "$1" && cp -r "$tmp/b/config.json" "$tmp/b/bursar.json" "$tmp/b/data" "$1/"; }
# expect NAME STATUS REGEX CMD...: CMD exits STATUS and its stderr matches REGEX
expect() {
	local name=$1 want=$2 re=$3 rc
	shift 3
	timeout 60 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
	rc=$?
	if [ "$rc" = "$want" ] && grep -Eq -- "$re" "$tmp/$name.err"; then
		pass "$name"
	else
		fail "$name" "status $rc (want $want): $(tail -2 "$tmp/$name.err")"
	fi
}
# st.py IN OUT EDIT: rewrites a safetensors file; EDIT is Python over the
# header h (a dict) and the data bytes d
cat >"$tmp/st.py" <<'PYEOF'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h, d = json.loads(raw[8:8 + n]), bytearray(raw[8 + n:])
exec(sys.argv[3])
hb = json.dumps(h).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + bytes(d))
PYEOF

clone "$tmp/nan"
$PY "$tmp/st.py" "$tmp/o/model.safetensors" "$tmp/nan/model.safetensors" \
	'a = h["wte.weight"]["data_offsets"][0] + 40; d[a:a + 4] = struct.pack("<f", float("nan"))'
expect nan_weights_refused 2 "model.safetensors: tensor 'wte.weight' holds NaN at element 10" \
	"$TRAIN" "$tmp/nan" --steps 2

clone "$tmp/ov"
$PY "$tmp/st.py" "$tmp/o/model.safetensors" "$tmp/ov/model.safetensors" \
	'w, p = h["wte.weight"]["data_offsets"], h["wpe.weight"]["data_offsets"]; h["wpe.weight"]["data_offsets"] = [w[0], w[0] + p[1] - p[0]]'
expect overlapping_tensors_refused 2 "tensors overlap or leave a gap" "$TRAIN" "$tmp/ov" --steps 2
clone "$tmp/tail"
$PY "$tmp/st.py" "$tmp/o/model.safetensors" "$tmp/tail/model.safetensors" 'd += b"junk"'
expect trailing_bytes_refused 2 "4 bytes after the last tensor's data" "$TRAIN" "$tmp/tail" --steps 2
clone "$tmp/meta"
$PY "$tmp/st.py" "$tmp/o/model.safetensors" "$tmp/meta/model.safetensors" 'h["__metadata__"] = 5'
expect bad_metadata_refused 2 "__metadata__ must be an object of strings" "$TRAIN" "$tmp/meta" --steps 2
clone "$tmp/junk"
$PY "$tmp/st.py" "$tmp/o/model.safetensors" "$tmp/junk/model.safetensors" 'h["h.0.attn.bias"] = "garbage"'
expect ignored_entry_still_checked 2 "entry 'h.0.attn.bias' is not a tensor" "$TRAIN" "$tmp/junk" --steps 2

clone "$tmp/fifo"
mkfifo "$tmp/fifo/model.safetensors"
expect fifo_refused_not_waited_on 2 "is not a regular file" "$TRAIN" "$tmp/fifo" --steps 2

# a damaged checkpoint is an error, never a fresh start that prunes it
clone "$tmp/ck"
"$TRAIN" "$tmp/ck" --steps 6 --ckpt "$tmp/ckd" >/dev/null 2>&1
cp -r "$tmp/ckd" "$tmp/ckd-good"
rm "$tmp/ckd/step-6/optim-m.safetensors"
expect damaged_checkpoint_refused 2 "cannot resume: checkpoint .*/step-6: cannot open .*optim-m.safetensors" \
	"$TRAIN" "$tmp/ck" --steps 8 --ckpt "$tmp/ckd"
if [ -d "$tmp/ckd/step-6" ]; then pass damaged_checkpoint_kept; else fail damaged_checkpoint_kept "step-6 was pruned"; fi
rm -rf "$tmp/ckd" && cp -r "$tmp/ckd-good" "$tmp/ckd" && printf step-7 >"$tmp/ckd/latest"
expect missing_checkpoint_refused 2 "latest names step-7, and .* cannot be read" \
	"$TRAIN" "$tmp/ck" --steps 8 --ckpt "$tmp/ckd"
rm -rf "$tmp/ckd" && cp -r "$tmp/ckd-good" "$tmp/ckd" && mv "$tmp/ckd/step-6" "$tmp/ckd/step-5" &&
	printf step-5 >"$tmp/ckd/latest"
expect misnamed_checkpoint_refused 2 "state.json says step 6, but it lies in step-5" \
	"$TRAIN" "$tmp/ck" --steps 8 --ckpt "$tmp/ckd"

# more data than the memory cap leaves after the model: refused, not 10x the cap
clone "$tmp/big"
head -c 60000000 /dev/zero | tr '\0' 'a' >"$tmp/big/data/big.txt"
BURSAR_TRAIN_MAX_MEM=100M expect data_over_memory_cap 2 "data/ does not fit in the [0-9.]+ MiB the memory limit leaves" \
	"$TRAIN" "$tmp/big" --steps 1

# --out and --ckpt checked before the first step
expect bad_out_refused_before_training 2 "cannot create the output directory '/proc/nope'" \
	"$TRAIN" "$tmp/b" --steps 30 --out /proc/nope
[ -s "$tmp/bad_out_refused_before_training.out" ] &&
	fail bad_out_no_steps "it trained first: $(head -c 200 "$tmp/bad_out_refused_before_training.out")" ||
	pass bad_out_no_steps
touch "$tmp/afile"
expect out_is_a_file_refused 2 "output directory '$tmp/afile': Not a directory" \
	"$TRAIN" "$tmp/b" --steps 2 --out "$tmp/afile"
expect bad_ckpt_refused_before_training 2 "cannot create the checkpoint directory" \
	"$TRAIN" "$tmp/b" --steps 30 --ckpt /proc/nope/ck

# dropout: out of range refused; in range trained without, and said so
clone "$tmp/dp"
$PY -c 'import json,sys; c=json.load(open(sys.argv[1])); c["attn_pdrop"]=7; json.dump(c, open(sys.argv[1], "w"))' "$tmp/dp/config.json"
expect dropout_out_of_range 2 "'attn_pdrop' must be a number in \[0, 1\)" "$TRAIN" "$tmp/dp" --steps 1
$PY -c 'import json,sys; c=json.load(open(sys.argv[1])); c["attn_pdrop"]=0.1; json.dump(c, open(sys.argv[1], "w"))' "$tmp/dp/config.json"
expect dropout_warned 0 "config.json asks for dropout 0.1; bursar trains without dropout" \
	"$TRAIN" "$tmp/dp" --steps 1

# a special token without an integer id is an error (it was read as id 0)
clone "$tmp/tk"
$PY - "$tmp/tk/tokenizer.json" <<'PYEOF'
import json, sys
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
vocab = {chr(c): b for b, c in zip(bs, cs)}
json.dump({"model": {"type": "BPE", "vocab": vocab, "merges": []},
           "pre_tokenizer": {"type": "ByteLevel"},
           "added_tokens": [{"id": "5", "content": "<|endoftext|>"}]}, open(sys.argv[1], "w"))
PYEOF
expect special_token_id_checked 2 "added_tokens\[0\] needs an integer 'id'" "$TRAIN" "$tmp/tk" --steps 1

# a JSONL syntax error names the parser's reason
clone "$tmp/jl"
rm -f "$tmp/jl/data/"* && printf '{"text": "abc"}\n{"text": "abc"\n' >"$tmp/jl/data/a.jsonl"
expect jsonl_reason 2 "a.jsonl line 2: not JSON: .* \(column [0-9]+\)" "$TRAIN" "$tmp/jl" --steps 1

# the batch split is checked once, before any rank is forked
expect batch_split_checked_once 2 "cannot be split evenly across 16 ranks" "$TRAIN" "$tmp/b" --ranks 16 --steps 1
n=$(grep -c "cannot be split evenly" "$tmp/batch_split_checked_once.err")
[ "$n" = 1 ] && pass batch_split_said_once || fail batch_split_said_once "said $n times"

# kill -9 of the parent of --ranks: the ranks do not run on without it
"$TRAIN" "$tmp/b" --ranks 2 --steps 100000 --out "$tmp/orphans" >"$tmp/k.jsonl" 2>/dev/null &
parent=$!
pids+=($parent)
for _ in $(seq 100); do grep -q '"step": 2,' "$tmp/k.jsonl" 2>/dev/null && break; sleep 0.1; done
ranks=$(pgrep -P "$parent" | tr '\n' ' ')
pids+=($ranks)
kill -9 "$parent"
wait "$parent" 2>/dev/null
left=
for _ in $(seq 50); do
	left=
	for r in $ranks; do kill -0 "$r" 2>/dev/null && left="$left $r"; done
	[ -z "$left" ] && break
	sleep 0.1
done
[ -n "$ranks" ] && [ -z "$left" ] && pass ranks_end_with_their_parent ||
	fail ranks_end_with_their_parent "ranks '$ranks', still running:${left:- (none found)}"

# SIGUSR1 while a rank starts: noded (and --ranks) start ranks with it held,
# the rank lets it in once its handler is in: a checkpoint and exit 75, not
# a death by the signal. Started here the same way (held through exec).
$PY -c 'import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
os.execv(sys.argv[1], sys.argv[1:])' "$TRAIN" "$tmp/b" --steps 100000 --ckpt "$tmp/early" \
	>/dev/null 2>"$tmp/early.err" &
p=$!
pids+=($p)
for _ in $(seq 200); do [ "$(readlink "/proc/$p/exe")" = "$(readlink -f "$TRAIN")" ] && break; sleep 0.01; done
kill -USR1 "$p"
(sleep 60 && kill -9 "$p") 2>/dev/null & # a signal held for good must not hang the test
killer=$!
wait "$p"
rc=$?
kill "$killer" 2>/dev/null
[ $rc = 75 ] && [ -s "$tmp/early/latest" ] && pass early_sigusr1_checkpoints ||
	fail early_sigusr1_checkpoints "status $rc: $(tail -2 "$tmp/early.err")"

# --params (what noded passes: the job's params as admission priced them)
# override bursar.json; a bad file is refused with a sentence
echo '{"steps": 3, "lr": 0.001}' >"$tmp/params.json"
"$TRAIN" "$tmp/b" --params "$tmp/params.json" >"$tmp/p.jsonl" 2>"$tmp/p.err"
rc=$?
last=$($PY -c 'import json,sys; s=[json.loads(l) for l in open(sys.argv[1])]; s=[x for x in s if x["event"]=="step"]; print(s[-1]["step"], s[-1]["steps"], max(x["lr"] for x in s) <= 0.001)' "$tmp/p.jsonl" 2>/dev/null)
[ $rc = 0 ] && [ "$last" = "3 3 True" ] && pass params_file_overrides_bundle ||
	fail params_file_overrides_bundle "status $rc, last step '$last': $(tail -1 "$tmp/p.err")"
echo '{"steps": -3}' >"$tmp/params.json"
expect params_file_checked 2 "--params '$tmp/params.json': .*steps" "$TRAIN" "$tmp/b" --params "$tmp/params.json"
