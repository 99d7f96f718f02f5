#!/usr/bin/env bash
# test-admission — bursar-admitd's queue policy and budgets end to end on a
# real Unix socket and SQLite file: per-tenant quotas through PUT
# /v1/tenants/{T} (operators only when consoled names the caller's role), priorities, EASY backfill (a short job passes a blocked
# head, a long one may not), every waiting job told its place and estimated
# start, preemption of a lower-priority job (never an equal one, never one
# that cannot checkpoint yet) and its return to the queue, no start without a ledger hold when ledgerd is unreachable, and —
# when the ledgerd in the tree serves /v1/holds — holds at admission, the
# ledger's rejection sentence, release at the end, and no double hold across
# kill -9 of admitd.
set -u
cd "$(dirname "$0")/../.."
NAME=admission
LEDGERD=0
. tests/admitd/harness.sh
skip() { echo "SKIP $1: $2"; }

MODEL='{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256}'
submit() { # PARAMS [TENANT] [PRIORITY]
	api POST /v1/jobs "{\"tenant\":\"${2:-acme}\",\"user\":\"alice\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/b-1\",\"model\":$MODEL,\"params\":$1${3:+,\"priority\":$3}}"
	settle
}
hb() { # NODE SLOTS REPORTS
	api POST /v1/nodes/heartbeat "{\"node\":\"$1\",\"addr\":\"127.0.0.1\",\"slots\":$2,\"flops_per_slot\":2e10,\"jobs\":[${3:-}]}"
}
rep() { echo "{\"job\":\"$1\",\"state\":\"$2\"}"; }
state() { api GET "/v1/jobs/$1"; j 'd["state"]'; }
reason() { api GET "/v1/jobs/$1"; j 'd["reason"]'; }

start
hb node-a 4

begin tenant_quota_api
api PUT /v1/tenants/acme '{"max_jobs":1,"max_ranks":4,"share":2}'
want status "$CODE" 200
want quota "$(j '(d["max_jobs"], d["max_ranks"], d["share"])')" "(1, 4, 2.0)"
api PUT /v1/tenants/acme '{"max_jobs":-1}'
want "negative" "$CODE" 400
api PUT /v1/tenants/acme '{"colour":"red"}'
want "unknown key" "$CODE" 400
wantgrep "unknown key message" "$(j 'd["error"]')" "unknown key 'colour'"
api PUT '/v1/tenants/a%20b' '{}'
want "bad name" "$CODE" 400
api GET /v1/tenants
want "listed" "$(j '[t["tenant"] for t in d["tenants"]]')" "['acme']"
end

begin tenant_api_needs_the_operator_role
roled() { # ROLE TENANT METHOD PATH [JSON]: as consoled forwards a caller
	local args=(-s -m 10 --unix-socket "$SOCK" -o "$T/resp" -w '%{http_code}' -X "$3"
		-H "X-Bursar-Role: $1" -H "X-Bursar-Tenant: $2")
	[ $# -ge 5 ] && args+=(-H 'Content-Type: application/json' --data-binary "$5")
	CODE=$(curl "${args[@]}" "http://admitd$4")
}
roled user acme PUT /v1/tenants/acme '{"max_jobs":9}'
want "user may not set a quota" "$CODE $(j 'd["error"]')" "403 setting a tenant's quota needs the operator role (the caller has role 'user')"
api GET /v1/tenants/acme
want "quota unchanged" "$(j 'd["max_jobs"]')" 1
roled user acme GET /v1/tenants/acme
want "user reads its own tenant" "$CODE" 200
roled user beta GET /v1/tenants/acme
want "not another's" "$CODE $(j 'd["error"]')" "403 reading another tenant's quota needs the operator role (the caller has role 'user')"
roled user acme GET /v1/tenants
want "nor the list" "$CODE" 403
roled operator ops PUT /v1/tenants/acme '{"max_jobs":1}'
want "operator sets it" "$CODE" 200
end

begin quota_max_jobs_holds_second_job
submit '{"steps":100000,"batch":8,"ranks":1}'
A1=$(j 'd["id"]')
want "first runs" "$(j 'd["state"]')" running
submit '{"steps":10,"batch":8,"ranks":1}'
A2=$(j 'd["id"]')
want "second queued" "$(j 'd["state"]')" queued
want "quota reason" "$(j 'd["reason"]')" "queued: tenant acme runs 1 job, its quota is 1"
submit '{"steps":10,"batch":8,"ranks":1}' beta
B1=$(j 'd["id"]')
want "other tenant runs" "$(j 'd["state"]')" running
api GET /v1/tenants/acme
want "running counts" "$(j '(d["running"]["jobs"], d["running"]["ranks"], d["running"]["queued"])')" "(1, 1, 1)"
api PUT /v1/tenants/acme '{"max_jobs":0,"max_ranks":0}'
want "lifting the quota starts it" "$(state "$A2")" running
hb node-a 4 "$(rep "$A2" succeeded),$(rep "$B1" succeeded)"
end

begin easy_backfill_passes_blocked_head_only_when_harmless
# node-a: A1 holds 1 rank for a long time; 3 free.
submit '{"steps":100,"batch":8,"ranks":4}' acme 10
H=$(j 'd["id"]')
wantgrep "head waits, told why" "$(j 'd["reason"]')" '^queued: next in line, needs 4 ranks \(3 free of 4\), est\. start [0-9]{2}:[0-9]{2}$'
submit '{"steps":1000000,"batch":8,"ranks":2}' beta
L=$(j 'd["id"]')
want "long job may not pass the head" "$(j 'd["state"]')" queued
wantgrep "long job told its place" "$(j 'd["reason"]')" '^queued: 1 job ahead, est\. start [0-9]{2}:[0-9]{2}$'
submit '{"steps":10,"batch":8,"ranks":1}' beta
S=$(j 'd["id"]')
want "short job backfilled" "$(j 'd["state"]')" running
want "head still queued" "$(state "$H")" queued
api POST "/v1/jobs/$A1/cancel"
hb node-a 4 "$(rep "$A1" cancelled),$(rep "$S" succeeded)"
want "head starts when ranks free" "$(state "$H")" running
want "long waits behind it" "$(state "$L")" queued
end

begin priority_orders_the_queue
hb node-a 4 "$(rep "$H" succeeded)"
# L runs now (2 ranks); fill the rest and queue two more behind it
want "L running" "$(state "$L")" running
submit '{"steps":1000000,"batch":8,"ranks":2}' beta
F=$(j 'd["id"]')
submit '{"steps":100,"batch":8,"ranks":2}' acme -5
LO=$(j 'd["id"]')
submit '{"steps":100,"batch":8,"ranks":2}' acme 5
HI=$(j 'd["id"]')
wantgrep "high priority first" "$(reason "$HI")" '^queued: next in line'
wantgrep "low priority last" "$(reason "$LO")" '^queued: 1 job ahead'
submit '{"steps":1,"batch":1}' acme 1000
want "priority out of range" "$CODE" 400
for x in $L $F $HI $LO; do api POST "/v1/jobs/$x/cancel"; done
hb node-a 4 "$(rep "$L" cancelled),$(rep "$F" cancelled)"
end

begin preemption_by_priority_requeues_with_its_step
submit '{"steps":1000000,"batch":8,"ranks":4}' acme
P0=$(j 'd["id"]')
want "low runs" "$(j 'd["state"]')" running
hb node-a 4 "$(rep "$P0" running)"
submit '{"steps":1000000,"batch":8,"ranks":2}' beta
E=$(j 'd["id"]')
hb node-a 4 "$(rep "$P0" running)"
want "equal priority never preempts" "$(j 'd["preempt"]')" "[]"
submit '{"steps":100,"batch":8,"ranks":2}' beta 5
PH=$(j 'd["id"]')
want "high waits" "$(j 'd["state"]')" queued
hb node-a 4 "$(rep "$P0" running)"
sleep 0.1
hb node-a 4 "$(rep "$P0" running)"
want "no preemption before the low job can checkpoint" "$(j 'd["preempt"]')" "[]"
hb node-a 4 "{\"job\":\"$P0\",\"state\":\"running\",\"progress\":{\"step\":3,\"steps\":1000000}}"
sleep 0.1
hb node-a 4 "$(rep "$P0" running)"
want "node asked to preempt the low job" "$(j 'd["preempt"]')" "['$P0']"
hb node-a 4 "{\"job\":\"$P0\",\"state\":\"preempted\",\"progress\":{\"step\":12,\"steps\":1000000}}"
want "low back in the queue" "$(state "$P0")" queued
# PH is beta's: acme's job is told the priority and the step, not beta's job id
want "reason names the priority and step, not another tenant's job" "$(j '[e["reason"] for e in d["events"] if e["state"] == "queued"][-1]')" "preempted by a higher-priority job of another tenant (priority 5); resumes from step 12"
want "high runs" "$(state "$PH")" running
hb node-a 4 "$(rep "$P0" preempted),$(rep "$PH" running)"
want "a stale report changes nothing" "$(state "$P0")" queued
api POST "/v1/jobs/$E/cancel"
hb node-a 4 "$(rep "$PH" succeeded)"
want "low relaunched" "$(state "$P0")" running
hb node-a 4
want "new rendezvous key" "$(j '[l["rdv_key"] for l in d["launch"]]')" "['$P0.2']"
api POST "/v1/jobs/$P0/cancel"
hb node-a 4 "$(rep "$P0" cancelled)"
end

begin no_start_without_a_hold
crash
start --ledgerd "unix:$T/ledgerd-down.sock"
submit '{"steps":10,"batch":8,"ranks":1}'
X=$(j 'd["id"]')
hb node-a 4
want "stays queued" "$(state "$X")" queued
wantgrep "says why" "$(reason "$X")" '^queued: cannot reserve its cost: ledgerd is unreachable .*no job starts without a hold$'
hb node-a 4
want "no launch" "$(j 'len(d["launch"])')" 0
api POST "/v1/jobs/$X/cancel"
end

# ---- with the real ledgerd, when it serves budgets ----
LSOCK=$T/l/run/ledgerd.sock
if [ -x "$LBIN" ]; then
	mkdir -p "$T/l"
	"$LBIN" --state "$T/l" --listen "unix:$LSOCK" >>"$T/ledgerd.log" 2>&1 &
	LPID=$!
	for _ in $(seq 100); do curl -s -m 1 --unix-socket "$LSOCK" http://l/v1/health >/dev/null 2>&1 && break; sleep 0.05; done
fi
LC=$(curl -s -m 5 --unix-socket "$LSOCK" -o /dev/null -w '%{http_code}' http://l/v1/holds/j-probe 2>/dev/null)
if [ -z "$LPID" ] || [ "$LC" = 404 ] && curl -s -m 5 --unix-socket "$LSOCK" http://l/v1/holds/j-probe | grep -q 'no such endpoint'; then
	skip budget_holds "ledgerd in this tree does not serve /v1/holds yet"
elif [ -z "$LPID" ]; then
	skip budget_holds "$LBIN is missing"
else
	lapi() { LCODE=$(curl -s -m 10 --unix-socket "$LSOCK" -o "$T/lresp" -w '%{http_code}' -X "$1" ${3:+-H 'Content-Type: application/json' --data-binary "$3"} "http://l$2"); }
	crash
	start --ledgerd "unix:$LSOCK"
	begin budget_rejects_with_the_ledger_sentence
	lapi POST /v1/credits '{"source":"admin","seq":1,"tenant":"poor","amount_micro":1,"note":"test"}'
	want "credit" "$LCODE" 200
	submit '{"steps":100,"batch":8,"ranks":1}' poor
	P=$(j 'd["id"]')
	want state "$(state "$P")" failed
	wantgrep reason "$(reason "$P")" '^rejected: tenant poor has \$[0-9.]+ available, job needs \$[0-9.]+$'
	end
	begin hold_taken_once_and_released
	submit '{"steps":100,"batch":8,"ranks":1}' rich
	R=$(j 'd["id"]')
	want state "$(j 'd["state"]')" running
	EST=$(j 'd["estimate"]["amount_micro"]')
	lapi GET "/v1/holds/$R"
	want "hold open" "$(python3 -c 'import json;d=json.load(open("'$T/lresp'"));print(d["state"],d["reserved_micro"])')" "open $EST"
	for _ in 1 2 3; do crash; start --ledgerd "unix:$LSOCK"; hb node-a 4 "$(rep "$R" running)"; done
	lapi GET "/v1/holds/$R"
	want "still one hold" "$(python3 -c 'import json;d=json.load(open("'$T/lresp'"));print(d["reserved_micro"])')" "$EST"
	hb node-a 4 "$(rep "$R" succeeded)"
	sleep 1.5
	lapi GET "/v1/holds/$R"
	want "released" "$(python3 -c 'import json;d=json.load(open("'$T/lresp'"));print(d["state"])')" released
	end
fi


begin users_priority_capped_by_the_tenant
# consoled forwards its caller's role: a user may ask for a priority up to
# the tenant's max_priority (0 until an operator raises it), as it preempts
# other tenants' jobs; an operator (or no role: admitd's own callers) any
body="{\"tenant\":\"gamma\",\"user\":\"carol\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/b-1\",\"model\":$MODEL,\"params\":{\"steps\":10,\"batch\":8}"
as_user() { # BODY-SUFFIX: a submission as gamma's user
	CODE=$(curl -s -m 10 --unix-socket "$SOCK" -o "$T/resp" -w '%{http_code}' -X POST \
		-H 'Content-Type: application/json' -H 'X-Bursar-Role: user' \
		-H 'X-Bursar-Tenant: gamma' --data-binary "$body$1}" http://admitd/v1/jobs)
}
as_user ',"priority":5'
want "refused" "$CODE" 403
want "says why and how" "$(j 'd["error"]')" 'priority 5 is above the 0 tenant gamma may use; an operator raises it (PUT /v1/tenants/gamma {"max_priority": N})'
body="${body%\}}"',"priority":7}'
as_user ''
want "bursar.json's priority counts too" "$CODE" 403
body="${body%,\"priority\":7\}}}"
as_user ''
want "the default priority is fine" "$CODE" 201
api PUT /v1/tenants/gamma '{"max_priority": 5}'
want "an operator raises it" "$CODE $(j 'd["max_priority"]')" "200 5"
as_user ',"priority":5'
want "now allowed" "$CODE" 201
as_user ',"priority":6'
want "still capped" "$CODE" 403
api PUT /v1/tenants/gamma '{"max_priority": 101}'
want "bounded" "$CODE" 400
end

[ "$FAILS" -eq 0 ]
