#!/usr/bin/env bash
# tests/ledgerd/test-ledgerd.sh — integration test of bursar-ledgerd: the real
# daemon on a real Unix socket with a real SQLite file in a fresh temp dir,
# driven with curl. Covers ingest (acks, per-record rejections with reasons,
# idempotent resend, malformed JSON, caps), estimates and the bill (exactly
# the sum of the entries), listings (filters, keyset pages, CSV), verify over
# the API and offline after tampering with the file through the sqlite3 CLI
# (triggers dropped first), and kill -9 during a stream of ingests: every
# acked seq is there exactly once and the chain still verifies.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LEDGERD=$PWD/$BUILD/bin/bursar-ledgerd
PY=/usr/bin/python3

if [ ! -x "$LEDGERD" ]; then
	echo "FAIL ledgerd_built: $LEDGERD is missing (run make)"
	exit 1
fi

T=$(mktemp -d /tmp/test-ledgerd.XXXXXX)
PID=
LOOP_PID=
cleanup() {
	[ -n "$LOOP_PID" ] && kill "$LOOP_PID" 2>/dev/null
	[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

FAILED=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }
# check NAME CMD...: PASS when CMD succeeds.
check() { local n=$1; shift; if "$@"; then pass "$n"; else fail "$n" "$*"; fi; }

S=$T/state
SOCK=$S/run/ledgerd.sock

# start [STATE]: starts the daemon on its default socket and waits for health.
start() {
	local st=${1:-$S}
	"$LEDGERD" --state "$st" >>"$T/ledgerd.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do
		curl -sf --unix-socket "$st/run/ledgerd.sock" http://l/v1/health >/dev/null 2>&1 && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.05
	done
	echo "# ledgerd did not start; log:"; tail -5 "$T/ledgerd.log" | sed 's/^/# /'
	return 1
}
stop() { [ -n "$PID" ] && kill "$PID" && wait "$PID" 2>/dev/null; PID=; }

# req METHOD PATH [BODY-FILE]: sets CODE and BODY.
req() {
	local args=(-s --unix-socket "${SOCKET:-$SOCK}" -X "$1" -o "$T/body" -w '%{http_code}')
	[ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "@$3")
	CODE=$(curl "${args[@]}" "http://l$2")
	BODY=$(cat "$T/body")
}
# js EXPR: evaluates a Python expression over j = json.loads(BODY).
js() { printf '%s' "$BODY" | $PY -c 'import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
sql() { sqlite3 "${DB:-$S/ledgerd.db}" "$1"; }

# records SOURCE FIRST LAST [JOB]: a batch of valid records seq FIRST..LAST.
records() {
	$PY - "$@" <<'EOF'
import json, sys
src, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
job = sys.argv[4] if len(sys.argv) > 4 else "j-1"
kinds = ["compute", "comm_wait", "idle"]
recs = [{"seq": s, "job": job, "tenant": "acme", "user": "alice", "rank": s % 2,
         "kind": kinds[s % 3], "quantity": round(0.37 * (s % 7) + 0.01, 2), "unit": "rank_s",
         "start_us": 1_700_000_000_000_000 + s * 1_000_000,
         "end_us": 1_700_000_000_000_000 + s * 1_000_000 + 999_999} for s in range(a, b + 1)]
print(json.dumps({"source": src, "records": recs}))
EOF
}

mkdir -p "$S"
start || { fail ledgerd_start "the daemon did not answer /v1/health"; exit 1; }
pass ledgerd_start
if "$LEDGERD" --state "$S" --listen "unix:$T/second.sock" 2>"$T/second.err"; then
	fail ledgerd_single_instance "a second daemon started on the same state directory"
else
	check ledgerd_single_instance grep -q "another bursar-ledgerd already runs on state directory" "$T/second.err"
fi

req GET /v1/rates
check rates_default [ "$CODE" = 200 ] && check rates_values [ "$(js '(j["version"], j["rank_hour"], j["currency"])')" = "(1, 0.72, 'USD')" ]

# --- ingest: good records acked, bad ones rejected alone, with reasons ---
$PY - >"$T/mixed.json" <<'EOF'
import json
good = dict(job="j-1", tenant="acme", user="alice", rank=0, kind="compute", quantity=0.93,
            unit="rank_s", start_us=10, end_us=20)
recs = [dict(good, seq=1), dict(good, seq=2, kind="gpu"), dict(good, seq=3, quantity=-1),
        dict(good, seq=4, quantity=86401), dict(good, seq=5, job="x" * 129),
        {k: v for k, v in dict(good, seq=6).items() if k != "user"}, dict(good, seq=0),
        dict(good, seq=7, kind="idle", quantity=2.5), dict(good, seq=8, end_us=5)]
print(json.dumps({"source": "node-a", "records": recs}))
EOF
req POST /v1/ingest "$T/mixed.json"
check ingest_mixed_status [ "$CODE" = 200 ]
check ingest_mixed_acked [ "$(js 'j["acked"]')" = "[1, 7]" ]
got=$(js 'json.dumps([[r["seq"], r["error"]] for r in j["rejected"]])')
want=$($PY - <<'EOF'
import json
print(json.dumps([
    [2, "field 'kind' is 'gpu'; expected compute, comm_wait or idle"],
    [3, "field 'quantity' is out of range (-1 not in 0..86400)"],
    [4, "field 'quantity' is out of range (86401 not in 0..86400)"],
    [5, "field 'job' is too long (129 characters > limit 128)"],
    [6, "missing field 'user'"],
    [None, "field 'seq' is out of range (0 not in 1..9223372036854775807)"],
    [8, "end_us 5 is before start_us 10"]]))
EOF
)
if [ "$got" = "$want" ]; then pass ingest_rejected_reasons; else fail ingest_rejected_reasons "got $got"; fi
check ingest_mixed_stored [ "$(sql 'SELECT group_concat(seq) FROM entries')" = "1,7" ]
check ingest_priced [ "$(sql 'SELECT group_concat(amount_micro) FROM entries')" = "186,500" ]

records node-a 10 209 >"$T/batch.json"
req POST /v1/ingest "$T/batch.json"
check ingest_batch_acked [ "$CODE" = 200 -a "$(js 'len(j["acked"]), len(j["rejected"])')" = "(200, 0)" ]
n1=$(sql 'SELECT count(*) FROM entries')
req POST /v1/ingest "$T/batch.json"
check ingest_resend_acked [ "$CODE" = 200 -a "$(js 'len(j["acked"])')" = 200 ]
check ingest_resend_idempotent [ "$(sql 'SELECT count(*) FROM entries')" = "$n1" -a "$n1" = 202 ]

printf '{"source": "node-a", "records": [' >"$T/bad.json"
req POST /v1/ingest "$T/bad.json"
check ingest_malformed_json [ "$CODE" = 400 -a "$(js '"malformed JSON" in j["error"]')" = True ]
printf '[1, 2]' >"$T/bad.json"
req POST /v1/ingest "$T/bad.json"
check ingest_not_object [ "$CODE" = 400 ]
printf '{"records": []}' >"$T/bad.json"
req POST /v1/ingest "$T/bad.json"
check ingest_no_source [ "$CODE" = 400 -a "$(js 'j["error"]')" = "field 'source' is missing or not a string" ]
records node-b 1 10001 >"$T/big.json"
req POST /v1/ingest "$T/big.json"
check ingest_too_many [ "$CODE" = 413 -a "$(js 'j["error"]')" = "too many records in one request (10001 > limit 10000)" ]
check ingest_too_many_nothing_stored [ "$(sql "SELECT count(*) FROM entries WHERE source = 'node-b'")" = 0 ]
req GET /v1/ingest
check ingest_wrong_method [ "$CODE" = 405 ]

# --- estimates and the bill ---
printf '{"source": "admitd", "records": [{"seq": 1, "job": "j-1", "tenant": "acme", "user": "alice", "ranks": 2, "seconds": 60, "amount": 0.05, "explain": "2 ranks x 60 s"}, {"seq": 2, "job": "j-1", "tenant": "acme", "user": "alice", "ranks": 2, "seconds": 70, "amount": 0.04}, {"seq": 3, "job": "j-est", "tenant": "acme", "user": "bob", "ranks": 1, "seconds": 5, "amount": 0.001}]}' >"$T/est.json"
req POST /v1/estimates "$T/est.json"
check estimates_acked [ "$CODE" = 200 -a "$(js 'j["acked"]')" = "[1, 2, 3]" ]
req POST /v1/estimates "$T/est.json"
check estimates_idempotent [ "$(sql 'SELECT count(*) FROM estimates')" = 3 ]

req GET /v1/jobs/j-1/bill
sum=$(sql "SELECT sum(amount_micro) FROM entries WHERE job = 'j-1'")
check bill_status [ "$CODE" = 200 ]
check bill_equals_sum [ "$(js 'j["metered"]["amount_micro"]')" = "$sum" ]
check bill_entries [ "$(js 'j["metered"]["entries"]')" = 202 ]
check bill_predicted_latest [ "$(js 'j["predicted"]["amount_micro"], j["predicted"]["seconds"], j["predicted"]["ranks"]')" = "(40000, 70.0, 2)" ]
check bill_line_items_sum [ "$(js 'sum(i["amount_micro"] for i in j["line_items"])')" = "$sum" ]
check bill_line_item_kinds [ "$(js '[i["kind"] for i in j["line_items"]]')" = "['compute', 'comm_wait', 'idle']" ]
want_delta=$($PY -c "print(round(100 * ($sum - 40000) / 40000, 6))")
check bill_delta_pct [ "$(js 'round(j["delta_pct"], 6)')" = "$want_delta" ]
check bill_times [ "$(js 'j["first_us"], j["last_us"], j["tenant"], j["user"]')" = "(10, 1700000209999999, 'acme', 'alice')" ]
req GET /v1/jobs/j-est/bill
check bill_estimate_only [ "$CODE" = 200 -a "$(js 'j["metered"]["amount_micro"], j["line_items"], j["first_us"], j["user"]')" = "(0, [], None, 'bob')" ]
req GET /v1/jobs/j-nope/bill
check bill_unknown_404 [ "$CODE" = 404 -a "$(js 'j["error"]')" = "no ledger entries or estimate for job 'j-nope'" ]

# --- listings: filters, keyset pages, CSV, caps ---
records node-c 1 5 j-2 >"$T/j2.json"
req POST /v1/ingest "$T/j2.json"
after=0 seen=0 pages=0
while :; do
	req GET "/v1/entries?job=j-1&limit=50&after=$after"
	[ "$CODE" = 200 ] || break
	seen=$((seen + $(js 'len(j["entries"])')))
	pages=$((pages + 1))
	next=$(js 'j["next_after"]')
	[ "$next" = None ] && break
	after=$next
done
check entries_pages [ "$seen" = 202 -a "$pages" = 5 ]
req GET "/v1/entries?job=j-2"
check entries_filter_job [ "$(js 'len(j["entries"]), set(e["job"] for e in j["entries"]), j["next_after"]')" = "(5, {'j-2'}, None)" ]
req GET "/v1/entries?tenant=nobody"
check entries_filter_tenant [ "$(js 'len(j["entries"])')" = 0 ]
req GET "/v1/entries?limit=1"
check entries_fields [ "$(js 'sorted(j["entries"][0].keys())')" = "['amount', 'amount_micro', 'end_us', 'energy_kwh', 'hash', 'id', 'job', 'kind', 'node_class', 'prev_hash', 'quantity', 'rank', 'rate_version', 'seq', 'source', 'start_us', 'tenant', 'ts_us', 'unit', 'user']" ]
req GET "/v1/entries?limit=10001"
check entries_limit_cap [ "$CODE" = 400 ]
req GET "/v1/entries?after=abc"
check entries_bad_after [ "$CODE" = 400 ]
req GET "/v1/entries?format=xml"
check entries_bad_format [ "$CODE" = 400 ]
curl -s --unix-socket "$SOCK" -D "$T/hdr" -o "$T/e.csv" "http://l/v1/entries?job=j-2&format=csv"
check entries_csv_type grep -qi '^content-type: text/csv' "$T/hdr"
check entries_csv_rows [ "$($PY -c 'import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); print(len(r), r[0]["job"], r[0]["source"], sum(int(x["amount_micro"]) for x in r))' "$T/e.csv")" = "5 j-2 node-c $(sql "SELECT sum(amount_micro) FROM entries WHERE job='j-2'")" ]

# --- verify: API and offline ---
req GET /v1/verify
check verify_ok [ "$(js 'j["ok"], j["entries"]')" = "(True, 207)" ]
check verify_head [ "$(js 'j["head"]')" = "$(sql 'SELECT hash FROM entries ORDER BY id DESC LIMIT 1')" ]
out=$("$LEDGERD" verify --state "$S"); rc=$?
check verify_offline_ok [ "$rc" = 0 ]
case $out in *"verified: 207 entries"*) pass verify_offline_says ;; *) fail verify_offline_says "$out" ;; esac
check triggers_block_update [ -n "$(sql 'UPDATE entries SET amount_micro = 0 WHERE id = 3' 2>&1 | grep 'append-only')" ]
check triggers_block_delete [ -n "$(sql 'DELETE FROM entries WHERE id = 3' 2>&1 | grep 'append-only')" ]

stop
cp "$S/ledgerd.db" "$T/clean.db"
DROP="DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete;"
# tamper NAME SQL WANT_ID WANT_REASON: tampers a copy, checks offline and API verify.
tamper() {
	local name=$1 q=$2 id=$3 why=$4 st=$T/tamper-$1 out rc
	mkdir -p "$st"
	cp "$T/clean.db" "$st/ledgerd.db"
	sqlite3 "$st/ledgerd.db" "$DROP $q" || { fail "tamper_$name" "sqlite3 failed"; return; }
	out=$("$LEDGERD" verify --state "$st"); rc=$?
	if [ "$rc" = 1 ] && [[ $out == *"broken at entry $id: "*"$why"* ]]; then
		pass "tamper_${name}_offline"
	else
		fail "tamper_${name}_offline" "rc=$rc: $out"
	fi
	start "$st" || { fail "tamper_${name}_api" "daemon did not start"; return; }
	SOCKET=$st/run/ledgerd.sock req GET /v1/verify
	if [ "$(js 'j["ok"], j["first_bad_id"]')" = "(False, $id)" ] && [[ $(js 'j["reason"]') == *"$why"* ]]; then
		pass "tamper_${name}_api"
	else
		fail "tamper_${name}_api" "$BODY"
	fi
	stop
}
tamper edit_amount "UPDATE entries SET amount_micro = amount_micro - 1 WHERE id = 42" 42 "entry 42 was edited"
tamper delete_row "DELETE FROM entries WHERE id = 17" 17 "entry 17 is missing"
tamper swap_rows "CREATE TEMP TABLE t AS SELECT * FROM entries WHERE id IN (30, 31);
	UPDATE entries SET seq = -seq WHERE id IN (30, 31);
	UPDATE entries SET (source, seq, job, tenant, user, rank, kind, quantity, unit, rate_version,
	amount_micro, start_us, end_us, ts_us, prev_hash, hash) = (SELECT source, seq, job, tenant, user,
	rank, kind, quantity, unit, rate_version, amount_micro, start_us, end_us, ts_us, prev_hash, hash
	FROM t WHERE t.id = 61 - entries.id) WHERE id IN (30, 31);" 30 "does not link to entry 29"

# Under a running daemon: the tail deleted (only the daemon's head knows), then an edit.
start || exit 1
sqlite3 "$S/ledgerd.db" "$DROP DELETE FROM entries WHERE id > 200;"
req GET /v1/verify
check tamper_live_tail [ "$(js 'j["ok"], j["first_bad_id"], "entries after 200 were deleted" in j["reason"]')" = "(False, 201, True)" ]
sqlite3 "$S/ledgerd.db" "UPDATE entries SET quantity = 9 WHERE id = 5;"
req GET /v1/verify
check tamper_live_edit [ "$(js 'j["ok"], j["first_bad_id"]')" = "(False, 5)" ]
stop

# --- kill -9 during a stream of ingests ---
C=$T/crash
mkdir -p "$C"
cat >"$T/stream.py" <<'EOF'
# Sends batches of 25 records with increasing seqs until the daemon dies;
# appends every acked seq to ACKED as soon as the reply arrives.
import http.client, json, socket, sys
sock, first, acked_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sock)
out = open(acked_path, "a")
seq = first
while True:
    recs = [{"seq": s, "job": "j-crash", "tenant": "acme", "user": "alice", "rank": 0,
             "kind": "compute", "quantity": 1.0, "start_us": s, "end_us": s + 1}
            for s in range(seq, seq + 25)]
    try:
        c = Conn("l", timeout=10)
        c.request("POST", "/v1/ingest", json.dumps({"source": "node-k", "records": recs}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read()
        c.close()
    except Exception:
        break
    if r.status != 200:
        break
    for s in json.loads(body)["acked"]:
        out.write("%d\n" % s)
    out.flush()
    seq += 25
EOF
next=1
ok=1
# ROUNDS short rounds (CI-sized; LEDGER_CRASH_ROUNDS=300 for a long soak).
for ((round = 1; round <= ${LEDGER_CRASH_ROUNDS:-30}; round++)); do
	start "$C" || { ok=0; break; }
	$PY "$T/stream.py" "$C/run/ledgerd.sock" "$next" "$T/acked" &
	LOOP_PID=$!
	sleep "0.$((1 + RANDOM % 4))"
	kill -9 "$PID"; wait "$PID" 2>/dev/null; PID=
	wait "$LOOP_PID"; LOOP_PID=
	last=$(sort -n "$T/acked" | tail -1)
	next=$(( ${last:-0} + 1000 ))
done
check crash_made_progress [ "$ok" = 1 -a "$(wc -l <"$T/acked")" -gt 100 ]
start "$C" || exit 1
DB=$C/ledgerd.db
sql "SELECT seq FROM entries WHERE source = 'node-k' ORDER BY seq" >"$T/stored"
missing=$(comm -23 <(sort -u "$T/acked") <(sort "$T/stored") | wc -l)
check crash_no_acked_lost [ "$missing" = 0 ]
check crash_none_twice [ "$(sql "SELECT count(*) - count(DISTINCT seq) FROM entries WHERE source = 'node-k'")" = 0 ]
check crash_totals_match [ "$(sql "SELECT spent_micro = (SELECT sum(amount_micro) FROM entries WHERE job = 'j-crash') AND entries = (SELECT count(*) FROM entries WHERE job = 'j-crash') FROM job_totals WHERE job = 'j-crash'")" = 1 ]
SOCKET=$C/run/ledgerd.sock req GET /v1/verify
check crash_chain_verifies [ "$(js 'j["ok"]')" = True ]
check crash_offline_verifies eval '"$LEDGERD" verify --state "$C" >/dev/null'
# Resending everything after the crash adds exactly the records not yet stored.
all=$(sort -n "$T/stored" | tail -1)
records node-k 1 200 j-crash >"$T/resend.json"
SOCKET=$C/run/ledgerd.sock req POST /v1/ingest "$T/resend.json"
check crash_resend_idempotent [ "$(sql "SELECT count(DISTINCT seq) = count(*) FROM entries WHERE source = 'node-k'")" = 1 ]
stop
echo "# crash: $(wc -l <"$T/acked") acked, $(wc -l <"$T/stored") stored, max seq $all"
exit $FAILED
