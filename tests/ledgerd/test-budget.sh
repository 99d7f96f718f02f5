#!/usr/bin/env bash
# tests/ledgerd/test-budget.sh — integration test of ledgerd's money side: the
# real daemon on a real Unix socket and SQLite file, driven with curl. Covers
# credits (idempotent, corrections, chained, tamper-evident), balances, holds
# (chained as hold events: an edited, deleted or forged hold is named)
# (atomic reserve under a race of parallel curl processes, idempotency, the 409
# sentence, extend, release), tenant isolation, strict 4xx on bad input,
# versioned rates by node class and per kWh, queries by user and time, the
# tenant bill (equal to the sum of the entries), and /metrics.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LEDGERD=$PWD/$BUILD/bin/bursar-ledgerd
PY=/usr/bin/python3

if [ ! -x "$LEDGERD" ]; then
	echo "FAIL budget_ledgerd_built: $LEDGERD is missing (run make)"
	exit 1
fi
T=$(mktemp -d /tmp/test-budget.XXXXXX)
PID=
cleanup() {
	[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

FAILED=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }
check() { local n=$1; shift; if "$@"; then pass "$n"; else fail "$n" "$*"; fi; }
# eq NAME GOT WANT
eq() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', want '$3'"; fi; }

S=$T/state
SOCK=$S/run/ledgerd.sock
start() {
	"$LEDGERD" --state "$S" "$@" >>"$T/ledgerd.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do
		curl -sf --unix-socket "$SOCK" http://l/v1/health >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	return 1
}
stop() { [ -n "$PID" ] && kill "$PID" && wait "$PID" 2>/dev/null; PID=; }
# req METHOD PATH [JSON]: sets CODE and BODY.
req() {
	local args=(-s --unix-socket "$SOCK" -X "$1" -o "$T/body" -w '%{http_code}')
	[ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
	CODE=$(curl "${args[@]}" "http://l$2")
	BODY=$(cat "$T/body")
}
js() { printf '%s' "$BODY" | $PY -c 'import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
sql() { sqlite3 "$S/ledgerd.db" "$1"; }
ingest() { # ingest SOURCE JSON-RECORDS
	req POST /v1/ingest "{\"source\": \"$1\", \"records\": $2}"
}
rec() { # rec SEQ JOB TENANT USER QTY [EXTRA-JSON]
	printf '{"seq": %s, "job": "%s", "tenant": "%s", "user": "%s", "rank": 0, "kind": "compute", "quantity": %s, "start_us": %s, "end_us": %s%s}' \
		"$1" "$2" "$3" "$4" "$5" "${START:-1700000000000000}" "${START:-1700000000000000}" "${6:+, $6}"
}

mkdir -p "$S"
start || { fail budget_start "ledgerd did not start"; exit 1; }

# --- unlimited until the first credit ---
req GET /v1/tenants/acme/balance
eq balance_unlimited "$CODE $(js 'j["limited"], j["available_micro"], j["credits_micro"]')" "200 (False, None, 0)"
req POST /v1/holds '{"job": "j-free", "tenant": "acme", "user": "alice", "amount_micro": 999000000}'
eq hold_unlimited "$CODE $(js 'j["ok"], j["hold"]["state"], j["hold"]["reserved_micro"]')" "200 (True, 'open', 999000000)"

# --- credits ---
req POST /v1/credits '{"source": "admin", "seq": 1, "tenant": "acme", "amount_micro": 50000000, "note": "initial"}'
eq credit_acked "$CODE $(js 'j["acked"], j["duplicate"], j["balance"]["limited"], j["balance"]["credits_micro"]')" "200 (True, False, True, 50000000)"
req POST /v1/credits '{"source": "admin", "seq": 1, "tenant": "acme", "amount_micro": 50000000, "note": "initial"}'
eq credit_idempotent "$CODE $(js 'j["duplicate"], j["balance"]["credits_micro"]')" "200 (True, 50000000)"
req POST /v1/credits '{"source": "admin", "seq": 1, "tenant": "acme", "amount_micro": 7}'
eq credit_seq_reused_409 "$CODE $(js '"already recorded" in j["error"]')" "409 True"
req POST /v1/credits '{"source": "admin", "seq": 2, "tenant": "acme", "amount_micro": -10000000, "note": "correction"}'
eq credit_negative_correction "$CODE $(js 'j["balance"]["credits_micro"]')" "200 40000000"
eq credits_stored "$(sql 'SELECT count(*), sum(amount_micro) FROM credits')" "2|40000000"
check credits_append_only [ -n "$(sql 'UPDATE credits SET amount_micro = 1' 2>&1 | grep append-only)" ]

# the free hold of 999 dollars opened while acme was unlimited now counts
req GET /v1/tenants/acme/balance
eq balance_counts_open_holds "$(js 'j["available_micro"], j["reserved_micro"]')" "(-959000000, 999000000)"
req POST /v1/holds/j-free/release
eq hold_release "$CODE $(js 'j["hold"]["state"], j["balance"]["available_micro"]')" "200 ('released', 40000000)"
req POST /v1/holds/j-free/release
eq hold_release_idempotent "$CODE $(js 'j["hold"]["state"]')" "200 released"

# --- holds: 409 wording, idempotency, spend against the hold, extend ---
req POST /v1/holds '{"job": "j-big", "tenant": "acme", "user": "alice", "amount_micro": 40000001}'
eq hold_409_status "$CODE" 409
eq hold_409_sentence "$(js 'j["error"], j["available_micro"]')" "('tenant acme has \$40.00 available, job needs \$40.000001', 40000000)"
req POST /v1/holds '{"job": "j-a", "tenant": "acme", "user": "alice", "amount_micro": 30000000}'
eq hold_ok "$CODE $(js 'j["balance"]["available_micro"]')" "200 10000000"
req POST /v1/holds '{"job": "j-a", "tenant": "acme", "user": "alice", "amount_micro": 5}'
eq hold_idempotent_by_job "$CODE $(js 'j["hold"]["reserved_micro"], j["balance"]["available_micro"]')" "200 (30000000, 10000000)"
eq hold_one_row "$(sql "SELECT count(*) FROM holds WHERE job = 'j-a'")" 1
# 3600 rank-seconds at $0.72/h = $0.72 metered against j-a: inside the hold
ingest node-a "[$(rec 1 j-a acme alice 3600)]"
req GET /v1/holds/j-a
eq hold_spent "$CODE $(js 'j["spent_micro"], j["reserved_micro"], j["state"]')" "200 (720000, 30000000, 'open')"
req GET /v1/tenants/acme/balance
eq balance_spend_inside_hold "$(js 'j["spent_micro"], j["reserved_micro"], j["available_micro"]')" "(720000, 29280000, 10000000)"
req POST /v1/holds/j-a/extend '{"amount_micro": 10000001}'
eq extend_409 "$CODE $(js 'j["error"]')" "409 tenant acme has \$10.00 available, job j-a needs \$10.000001 more"
req POST /v1/holds/j-a/extend '{"amount_micro": 4000000}'
eq extend_ok "$CODE $(js 'j["hold"]["reserved_micro"], j["balance"]["available_micro"]')" "200 (34000000, 6000000)"
req POST /v1/holds/j-a/release
eq release_returns_unspent "$(js 'j["balance"]["available_micro"]')" 39280000
req POST /v1/holds/j-a/extend '{"amount_micro": 1}'
eq extend_released_409 "$CODE" 409
req POST /v1/holds/j-none/release
eq release_unknown_404 "$CODE" 404
req GET /v1/holds/j-none
eq hold_unknown_404 "$CODE" 404
# spend without a hold still counts
ingest node-a "[$(rec 2 j-nohold acme bob 36000)]"
req GET /v1/tenants/acme/balance
eq spend_without_hold "$(js 'j["spent_micro"], j["available_micro"]')" "(7920000, 32080000)"

# --- the race: 40 parallel curl processes, 1,000,000 micro, 30,000 each ---
req POST /v1/credits '{"source": "admin", "seq": 10, "tenant": "race", "amount_micro": 1000000}'
seq 1 40 | xargs -P 40 -I{} curl -s --unix-socket "$SOCK" -o /dev/null -w '%{http_code}\n' \
	-H 'Content-Type: application/json' \
	--data-binary '{"job": "j-race-{}", "tenant": "race", "user": "u", "amount_micro": 30000}' \
	http://l/v1/holds >"$T/race"
eq race_exactly_floor "$(grep -c '^200$' "$T/race") $(grep -c '^409$' "$T/race")" "33 7"
req GET /v1/tenants/race/balance
eq race_never_overspent "$(js 'j["available_micro"], j["reserved_micro"]')" "(10000, 990000)"
# the same job from 20 processes at once: one hold
seq 1 20 | xargs -P 20 -I{} curl -s --unix-socket "$SOCK" -o /dev/null -w '%{http_code}\n' \
	-H 'Content-Type: application/json' \
	--data-binary '{"job": "j-same", "tenant": "race2", "user": "u", "amount_micro": 30000}' \
	http://l/v1/holds >"$T/race2"
eq race_same_job_one_hold "$(grep -c '^200$' "$T/race2") $(sql "SELECT count(*), sum(reserved_micro) FROM holds WHERE job = 'j-same'")" "20 1|30000"

# --- tenant isolation ---
req POST /v1/holds '{"job": "j-a", "tenant": "globex", "user": "mallory", "amount_micro": 1}'
eq isolation_job_of_other_tenant "$CODE $(js '"another tenant" in j["error"]')" "409 True"
req GET /v1/tenants/globex/balance
eq isolation_balance "$(js 'j["limited"], j["spent_micro"], j["reserved_micro"]')" "(False, 0, 0)"
ingest node-g "[$(rec 1 j-g globex gina 100)]"
req GET "/v1/entries?tenant=globex"
eq isolation_entries "$(js 'sorted(set(e["tenant"] for e in j["entries"]))')" "['globex']"
req GET "/v1/tenants/globex/bill"
eq isolation_bill "$(js '[x["job"] for x in j["jobs"]], j["total"]["entries"]')" "(['j-g'], 1)"

# --- strict input: malformed JSON, huge numbers, negative amounts, unknown fields ---
# --- roles: a caller consoled names as a user may not credit or change rates ---
roled() { # roled ROLE PATH JSON: sets CODE and BODY
	CODE=$(curl -s --unix-socket "$SOCK" -X POST -o "$T/body" -w '%{http_code}' \
		-H "X-Bursar-Role: $1" -H 'Content-Type: application/json' --data-binary "$3" "http://l$2")
	BODY=$(cat "$T/body")
}
roled user /v1/credits '{"source": "admin", "seq": 9001, "tenant": "acme", "amount_micro": 5}'
eq role_user_credit_403 "$CODE $(js 'j["error"]')" "403 crediting a tenant needs the operator role (the caller has role 'user')"
roled user /v1/rates '{"rank_hour": 9}'
eq role_user_rates_403 "$CODE $(js 'j["error"]')" "403 changing the rates needs the operator role (the caller has role 'user')"
eq role_user_changed_nothing "$(sql "SELECT count(*) FROM credits WHERE seq = 9001")" 0
roled operator /v1/credits '{"source": "admin", "seq": 9001, "tenant": "acme", "amount_micro": 0}'
eq role_operator_passes_to_validation "$CODE" 400

bad() { # bad NAME PATH BODY WANT-CODE WANT-SUBSTRING
	req POST "$2" "$3"
	if [ "$CODE" = "$4" ] && [[ $(js 'j["error"]') == *"$5"* ]]; then pass "$1"; else fail "$1" "$CODE $BODY"; fi
}
bad strict_malformed /v1/holds '{"job": ' 400 "malformed JSON"
bad strict_not_object /v1/credits '[1]' 400 ""
bad strict_negative_hold /v1/holds '{"job": "j-x", "tenant": "acme", "user": "a", "amount_micro": -5}' 400 "out of range"
bad strict_huge_hold /v1/holds '{"job": "j-x", "tenant": "acme", "user": "a", "amount_micro": 1e300}' 400 "must be an integer"
bad strict_huge_int /v1/credits '{"source": "admin", "seq": 3, "tenant": "acme", "amount_micro": 99999999999999999999}' 400 ""
bad strict_over_cap /v1/credits '{"source": "admin", "seq": 3, "tenant": "acme", "amount_micro": 1000000000000001}' 400 "out of range"
bad strict_zero_credit /v1/credits '{"source": "admin", "seq": 3, "tenant": "acme", "amount_micro": 0}' 400 "out of range"
bad strict_unknown_hold /v1/holds '{"job": "j-x", "tenant": "acme", "user": "a", "amount_micro": 5, "budget": 1}' 400 "unknown field 'budget'"
bad strict_unknown_credit /v1/credits '{"source": "admin", "seq": 3, "tenant": "acme", "amount_micro": 5, "amount": 1}' 400 "unknown field 'amount'"
bad strict_unknown_extend /v1/holds/j-race-1/extend '{"amount_micro": 5, "x": 1}' 400 "unknown field 'x'"
bad strict_bad_tenant /v1/holds '{"job": "j-x", "tenant": "../etc", "user": "a", "amount_micro": 5}' 400 "field 'tenant'"
bad strict_string_amount /v1/holds '{"job": "j-x", "tenant": "acme", "user": "a", "amount_micro": "5"}' 400 "must be an integer"
req GET "/v1/tenants/$(printf 'x%.0s' $(seq 200))/balance"
eq strict_long_tenant "$CODE" 400
ingest node-s "[$(rec 1 j-s acme a 1 '"gpus": 8')]"
eq strict_unknown_record_field "$(js 'j["rejected"][0]["error"]')" "unknown field 'gpus'"
ingest node-s "[$(rec 2 j-s acme a 1 '"energy_kwh": -1')]"
eq strict_negative_energy "$(js 'j["rejected"][0]["error"]')" "field 'energy_kwh' is out of range (-1 not in 0..1000)"
req GET "/v1/entries?from_us=abc"
eq strict_bad_from "$CODE" 400

# --- versioned rates: node classes and kWh, future entries only ---
req POST /v1/rates '{"rank_hour": {"cpu": 0.72, "h100": 3.6}, "kwh": 0.25}'
eq rates_post "$CODE $(js 'j["version"], j["classes"]["h100"]["rank_hour_micro"], j["kwh_micro"], len(j["history"])')" "200 (2, 3600000, 250000, 2)"
before=$(sql "SELECT group_concat(amount_micro || ':' || rate_version) FROM entries ORDER BY id")
ingest node-r "[$(rec 1 j-gpu acme alice 3600 '"node_class": "h100", "energy_kwh": 2'), $(rec 2 j-gpu acme alice 3600), $(rec 3 j-gpu acme alice 1 '"node_class": "tpu"')]"
eq rates_class_and_energy "$(sql "SELECT group_concat(amount_micro || ':' || rate_version || ':' || node_class) FROM entries WHERE source = 'node-r'")" "4100000:2:h100,720000:2:cpu"
eq rates_unknown_class "$(js 'j["rejected"][0]["error"]')" "node class 'tpu' has no rate in rate version 2"
req GET /v1/jobs/j-gpu/bill
eq bill_classes_and_energy "$(js '[(c["node_class"], c["rank_seconds"], c["energy_kwh"], c["amount_micro"]) for c in j["classes"]], j["energy"]["kwh"], j["energy"]["amount_micro"], j["metered"]["energy_kwh"], j["metered"]["energy_rank_seconds"]')" "([('cpu', 3600.0, 0.0, 720000), ('h100', 3600.0, 2.0, 4100000)], 2.0, 500000, 2.0, 3600.0)"
req POST /v1/rates '{"rank_hour": {"cpu": 1.44}}'
eq rates_carry_over "$(js 'j["version"], j["classes"]["h100"]["rank_hour"], j["kwh"], j["history"][1]["classes"]["cpu"]["rank_hour"]')" "(3, 3.6, 0.25, 0.72)"
eq rates_old_entries_unchanged "$(sql "SELECT group_concat(amount_micro || ':' || rate_version) FROM entries WHERE source != 'node-r' AND source != 'node-n' ORDER BY id")" "$before"
ingest node-n "[$(rec 1 j-gpu acme alice 3600)]"
eq rates_new_version_applies "$(sql "SELECT amount_micro, rate_version FROM entries WHERE source = 'node-n'")" "1440000|3"
req POST /v1/rates '{"rank_hour": {"cpu": -1}}'
eq rates_negative_400 "$CODE" 400
# what admission could not use is refused here, not accepted as the new version
req POST /v1/rates '{"rank_hour": {"cpu": 0}}'
eq rates_zero_400 "$CODE $(js '"must be above 0" in j["error"]')" "400 True"
req POST /v1/rates '{"rank_hour": {"H100": 1}}'
eq rates_class_name_400 "$CODE $(js '"[a-z0-9_.-]" in j["error"]')" "400 True"
req POST /v1/rates '{"cpu": 1}'
eq rates_unknown_field_400 "$CODE $(js '"unknown field" in j["error"]')" "400 True"
eq rates_triggers "$(sql 'DELETE FROM rate_classes' 2>&1 | grep -c 'never edited')" 1
stop
start || exit 1
req GET /v1/rates
eq rates_survive_restart "$(js 'j["version"], j["rank_hour"]')" "(3, 1.44)"

# --- queries by user and time range; the tenant bill ---
START=1700086400000000
ingest node-t "[$(rec 1 j-t acme carol 10)]"
unset START
req GET "/v1/entries?user=carol"
eq query_user "$(js '[e["job"] for e in j["entries"]]')" "['j-t']"
req GET "/v1/entries?tenant=acme&from_us=1700086400000000"
eq query_from "$(js '[e["job"] for e in j["entries"]]')" "['j-t']"
req GET "/v1/entries?tenant=acme&to_us=1700086400000000&limit=2"
eq query_to_paged "$(js 'len(j["entries"]), j["next_after"] is not None, "j-t" in [e["job"] for e in j["entries"]]')" "(2, True, False)"
req GET /v1/tenants/acme/bill
want=$(sql "SELECT sum(amount_micro), count(*) FROM entries WHERE tenant = 'acme'")
eq tenant_bill_equals_entries "$(js 'j["total"]["amount_micro"], j["total"]["entries"]' | tr -d '() ' | tr , '|')" "$want"
eq tenant_bill_jobs_sum "$(js 'sum(x["amount_micro"] for x in j["jobs"])')" "${want%|*}"
eq tenant_bill_classes "$(js 'sorted(x["node_class"] for x in j["node_classes"])')" "['cpu', 'h100']"
req GET "/v1/tenants/acme/bill?from_us=1700086400000000&to_us=1700090000000000"
eq tenant_bill_day_range "$(js 'j["total"]["amount_micro"], j["from_us"], j["to_us"], [x["user"] for x in j["users"]]')" "(4000, 1700006400000000, 1700092800000000, ['carol'])"
req GET "/v1/tenants/acme/bill?from_us=5&to_us=4"
eq tenant_bill_bad_range "$CODE" 400
eq totals_match_entries "$(sql "SELECT count(*) FROM job_totals jt WHERE spent_micro != (SELECT sum(amount_micro) FROM entries e WHERE e.job = jt.job)")" 0

# --- /metrics ---
ingest node-s "[$(rec 9 j-s acme a 1 '"node_class": "nope"')]"
curl -s --unix-socket "$SOCK" -D "$T/hdr" -o "$T/metrics" http://l/metrics
check metrics_type grep -qi '^content-type: text/plain; version=0.0.4' "$T/hdr"
eq metrics_entries "$(grep '^bursar_ledger_entries_total ' "$T/metrics")" "bursar_ledger_entries_total $(sql 'SELECT count(*) FROM entries')"
eq metrics_spend "$(grep '^bursar_ledger_spend_micro_total{tenant="acme"}' "$T/metrics" | cut -d' ' -f2)" "${want%|*}"
check metrics_errors grep -q '^bursar_ledger_ingest_errors_total{reason="rejected"} [1-9]' "$T/metrics"
check metrics_usage grep -q '^bursar_ledger_usage_rank_seconds_total{tenant="globex"} 100' "$T/metrics"

# --- verify covers credits; tampering with a credit is named ---
req GET /v1/verify
eq verify_credits_ok "$(js 'j["ok"], j["credits"]')" "(True, 3)"
stop
cp "$S/ledgerd.db" "$T/clean.db"
sqlite3 "$S/ledgerd.db" "DROP TRIGGER credits_no_update; UPDATE credits SET amount_micro = 90000000 WHERE id = 1;"
out=$("$LEDGERD" verify --state "$S"); rc=$?
eq tamper_credit_offline "$rc ${out#*broken at }" "1 credit 1: credit 1 was edited: its stored hash ${out##*stored hash }"
start || exit 1
req GET /v1/verify
eq tamper_credit_api "$(js 'j["ok"], j["chain"], j["first_bad_id"]')" "(False, 'credits', 1)"
stop
cp "$T/clean.db" "$S/ledgerd.db"; rm -f "$S/ledgerd.db-wal" "$S/ledgerd.db-shm"
sqlite3 "$S/ledgerd.db" "DROP TRIGGER credits_no_delete; DELETE FROM credits WHERE id = 2;"
out=$("$LEDGERD" verify --state "$S")
eq tamper_credit_delete "${out#*broken at }" "credit 2: credit 2 is missing (credit 3 follows credit 1): it was deleted"

# --- holds are chained (hold events); an edited, deleted or forged hold is named ---
restore() { cp "$T/clean.db" "$S/ledgerd.db"; rm -f "$S/ledgerd.db-wal" "$S/ledgerd.db-shm"; }
restore
n_ev=$(sql "SELECT count(*) FROM hold_events")
out=$("$LEDGERD" verify --state "$S"); rc=$?
eq verify_holds_ok "$rc $(grep -o '[0-9]* hold events' <<<"$out")" "0 $n_ev hold events"
eq hold_events_replay "$(sql "SELECT group_concat(op) FROM (SELECT op FROM hold_events WHERE job = 'j-free' ORDER BY id)")" "open,release"
sql "UPDATE holds SET reserved_micro = 1 WHERE job = 'j-a'"
out=$("$LEDGERD" verify --state "$S"); rc=$?
eq tamper_hold_amount "$rc ${out#*: }" "1 the hold of job j-a does not match its hold events: it was edited, deleted or added behind the ledger's back"
restore
sql "UPDATE holds SET state = 'open' WHERE job = 'j-free'"
out=$("$LEDGERD" verify --state "$S")
check tamper_hold_state grep -q "the hold of job j-free does not match" <<<"$out"
restore
sql "DELETE FROM holds WHERE job = 'j-a'"
out=$("$LEDGERD" verify --state "$S")
check tamper_hold_delete grep -q "the hold of job j-a does not match" <<<"$out"
restore
sql "INSERT INTO holds VALUES ('j-forged', 'acme', 'alice', 5, 'open', 1, 1)"
out=$("$LEDGERD" verify --state "$S")
check tamper_hold_forged grep -q "the hold of job j-forged does not match" <<<"$out"
restore
sql "DROP TRIGGER hold_events_no_update; UPDATE hold_events SET amount_micro = 7 WHERE id = 1"
out=$("$LEDGERD" verify --state "$S")
eq tamper_hold_event "${out#*broken at }" "hold event 1: hold event 1 (job j-free) was edited: its stored hash does not match its contents"
restore
start || exit 1
sql "UPDATE holds SET reserved_micro = reserved_micro + 1 WHERE job = 'j-a'"
req GET /v1/verify
eq tamper_hold_api "$(js 'j["ok"], j["chain"]')" "(False, 'holds')"
stop
exit $FAILED
