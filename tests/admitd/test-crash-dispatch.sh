#!/usr/bin/env bash
# test-crash-dispatch — kill -9 admitd mid-dispatch, in a loop: rounds of
# concurrent submissions and node heartbeats (a node driven with curl that
# "runs" what it is launched and reports it finished) against a real admitd
# and a real ledgerd, each round ended by kill -9 at a random moment. Then:
# every job acknowledged with 201 exists exactly once, none was placed twice
# (attempt <= 1), every job that ran holds its estimate in the ledger exactly
# once (reserved = estimate, not a multiple) and that hold is released at the
# end, and nothing is left running. ROUNDS (default 30) sets the loop.
set -u
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-30}
NAME=crash_dispatch
NODE_TIMEOUT=600
. tests/admitd/harness.sh
HOLDS=1
[ "$(curl -s -m 5 --unix-socket "$LSOCK" -o /dev/null -w '%{http_code}' http://l/v1/holds/j-x)" = 404 ] &&
	curl -s -m 5 --unix-socket "$LSOCK" http://l/v1/holds/j-x | grep -q 'no such endpoint' && HOLDS=0

MODEL='{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256}'
submit() { # writes the id of an acknowledged job to $T/acked
	local out
	out=$(curl -s -m 5 --unix-socket "$SOCK" -w '\n%{http_code}' -H 'Content-Type: application/json' \
		--data-binary "{\"tenant\":\"acme\",\"user\":\"alice\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/b-1\",\"model\":$MODEL,\"params\":{\"steps\":10,\"batch\":8,\"ranks\":1}}" \
		http://a/v1/jobs 2>/dev/null)
	local id
	[ "$(tail -1 <<<"$out")" = 201 ] || return 0
	id=$(head -1 <<<"$out" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])') &&
		printf '%s\n' "$id" >>"$T/acked"
	return 0
}
# The node: reports what it was launched (running, then succeeded), like noded.
heartbeat() {
	local reps="" id
	touch "$T/launched" "$T/reported"
	while read -r id; do
		if grep -qx "$id" "$T/reported"; then
			reps="$reps${reps:+,}{\"job\":\"$id\",\"state\":\"succeeded\"}"
		else
			reps="$reps${reps:+,}{\"job\":\"$id\",\"state\":\"running\"}"
		fi
	done < <(sort -u "$T/launched" | tail -200)
	curl -s -m 5 --unix-socket "$SOCK" -H 'Content-Type: application/json' \
		--data-binary "{\"node\":\"node-a\",\"addr\":\"127.0.0.1\",\"slots\":4,\"flops_per_slot\":2e10,\"jobs\":[$reps]}" \
		http://a/v1/nodes/heartbeat 2>/dev/null >"$T/hb.$1" || return 0
	# launched jobs reported running once are reported succeeded next time
	sort -u "$T/launched" >>"$T/reported"
	"$PY" -c 'import json,sys; [print(l["job"]) for l in json.load(open(sys.argv[1]))["launch"]]' "$T/hb.$1" \
		>>"$T/launched" 2>/dev/null
	return 0
}

start
heartbeat 0
for ((round = 1; round <= ROUNDS; round++)); do
	[ -n "$PID" ] || start
	SUBS=()
	for k in 1 2 3; do submit & SUBS+=($!); done
	heartbeat "$round"
	sleep "0.0$((RANDOM % 10))"
	kill -9 "$PID"; wait "$PID" 2>/dev/null; PID=
	wait "${SUBS[@]}"
done
start
for i in $(seq 40); do
	heartbeat "f$i"
	[ "$(curl -s -m 5 --unix-socket "$SOCK" 'http://a/v1/jobs?limit=1000' |
		"$PY" -c 'import json,sys; print(sum(j["state"] not in ("succeeded",) or (j["hold"]["state"] == "held") for j in json.load(sys.stdin)["jobs"]))')" = 0 ] && break
	sleep 0.3
done

curl -s -m 5 --unix-socket "$SOCK" 'http://a/v1/jobs?limit=1000' >"$T/jobs.json"
for id in $("$PY" -c 'import json,sys; [print(j["id"]) for j in json.load(open(sys.argv[1]))["jobs"]]' "$T/jobs.json"); do
	curl -s -m 5 --unix-socket "$LSOCK" "http://l/v1/holds/$id"; echo
done >"$T/holds.jsonl"
"$PY" - "$T/acked" "$T/jobs.json" "$T/holds.jsonl" "$HOLDS" "$ROUNDS" <<'EOF'
import json, sys
import re
# Ids are appended by concurrent submitters: read them by shape, not by line.
acked = re.findall(r"j-[0-9a-f]+", open(sys.argv[1]).read())
jobs = json.load(open(sys.argv[2]))["jobs"]
holds = {}
for l in open(sys.argv[3]):
    try:
        h = json.loads(l)
        if "job" in h:
            holds[h["job"]] = h
    except ValueError:
        pass
use_holds, rounds = sys.argv[4] == "1", int(sys.argv[5])
ids = [j["id"] for j in jobs]
fails = []
def check(name, cond, why):
    print(("PASS %s" % name) if cond else ("FAIL %s: %s" % (name, why)))
    if not cond:
        fails.append(name)
lost = [a for a in acked if a not in ids]
check("crash_dispatch_no_lost_job", not lost and len(acked) > 0,
      "%d acknowledged, lost: %s" % (len(acked), lost[:5]))
check("crash_dispatch_no_duplicate", len(ids) == len(set(ids)) and len(ids) <= 3 * rounds,
      "%d rows for at most %d submissions" % (len(ids), 3 * rounds))
twice = [j["id"] for j in jobs if (j["attempt"] or 0) > 1]
check("crash_dispatch_placed_once", not twice, "placed more than once: %s" % twice[:5])
left = [(j["id"], j["state"]) for j in jobs if j["state"] != "succeeded"]
check("crash_dispatch_all_ran", not left, "not succeeded: %s" % left[:5])
if use_holds:
    bad = [(j["id"], j["estimate"]["amount_micro"], holds.get(j["id"], {}).get("reserved_micro"))
           for j in jobs if holds.get(j["id"], {}).get("reserved_micro") != j["estimate"]["amount_micro"]]
    check("crash_dispatch_held_once", not bad, "hold != estimate: %s" % bad[:5])
    open_ = [j["id"] for j in jobs if holds.get(j["id"], {}).get("state") != "released"
             or j["hold"]["state"] != "released"]
    check("crash_dispatch_holds_released", not open_, "still held: %s" % open_[:5])
else:
    print("SKIP crash_dispatch_held_once: ledgerd in this tree does not serve /v1/holds")
sys.exit(1 if fails else 0)
EOF
