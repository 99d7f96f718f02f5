# tests/admitd/harness.sh — a real ledgerd, and an admitd that uses it, on
# Unix sockets in a fresh temp dir, for the admitd test scripts (sourced
# after they cd to the repo root, with NAME set; optional: NODE_TIMEOUT
# (default 30 s), ADMITD_ARGS (added to every start), LEDGERD=0 (no ledgerd:
# the script starts one itself, or none). Gives start [ADMITD ARGS...] and
# crash (kill -9) for admitd, api/lapi METHOD PATH [BODY] (status in
# CODE/LCODE, body in $T/resp, $T/lresp), j/lj EXPR (a Python expression over
# the reply `d`), settle, and the case bookkeeping of cases.sh. Everything
# started is killed on exit.
BUILD=${BUILD:-build}
BIN=$BUILD/bin/bursar-admitd
LBIN=$BUILD/bin/bursar-ledgerd
PY=/usr/bin/python3
for b in "$BIN" $([ "${LEDGERD:-1}" = 0 ] || echo "$LBIN"); do
	[ -x "$b" ] || { echo "FAIL ${NAME}_built: $b is missing (run make all)"; exit 1; }
done
T=$(mktemp -d "/tmp/bursar-$NAME-test.XXXXXX")
SOCK=$T/run/admitd.sock
LSOCK=$T/l/run/ledgerd.sock
PID=
LPID=
cleanup() {
	[ -n "$PID" ] && { kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
	[ -n "$LPID" ] && { kill -9 "$LPID" 2>/dev/null; wait "$LPID" 2>/dev/null; }
	rm -rf "$T"
}
trap cleanup EXIT

if [ "${LEDGERD:-1}" != 0 ]; then
	mkdir -p "$T/l"
	"$LBIN" --state "$T/l" --listen "unix:$LSOCK" >>"$T/ledgerd.log" 2>&1 &
	LPID=$!
	for _ in $(seq 100); do
		curl -s -m 1 --unix-socket "$LSOCK" http://l/v1/health >/dev/null 2>&1 && break
		sleep 0.05
	done
fi

start() { # [ADMITD ARGS...]
	local ledger=()
	[ "${LEDGERD:-1}" = 0 ] || ledger=(--ledgerd "unix:$LSOCK")
	# shellcheck disable=SC2086 # ADMITD_ARGS: words on purpose
	"$BIN" --state "$T" --listen "unix:$SOCK" --node-timeout "${NODE_TIMEOUT:-30}" \
		"${ledger[@]}" ${ADMITD_ARGS:-} "$@" >>"$T/admitd.log" 2>&1 &
	PID=$!
	for _ in $(seq 200); do
		curl -s -m 1 --unix-socket "$SOCK" http://admitd/v1/health >/dev/null 2>&1 && return 0
		sleep 0.025
	done
	echo "FAIL ${NAME}_start: admitd did not answer within 5 s"; tail -20 "$T/admitd.log"
	exit 1
}
crash() { kill -9 "$PID"; wait "$PID" 2>/dev/null; PID=; }

api() {
	local args=(-s -m 10 --unix-socket "$SOCK" -o "$T/resp" -w '%{http_code}' -X "$1")
	[ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
	CODE=$(curl "${args[@]}" "http://admitd$2")
}
lapi() {
	local args=(-s -m 10 --unix-socket "$LSOCK" -o "$T/lresp" -w '%{http_code}' -X "$1")
	[ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
	LCODE=$(curl "${args[@]}" "http://l$2")
}
j() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/resp" "$1"; }
lj() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/lresp" "$1"; }

# settle: after a 201 from POST /v1/jobs, waits for the coalesced scheduling
# pass (at most every 50 ms) to start the job or say where it stands, and
# leaves that view of the job in $T/resp (CODE stays 201).
settle() {
	local id
	[ "$CODE" = 201 ] || return 0
	id=$(j 'd["id"]')
	for _ in $(seq 100); do
		[ "$(j 'd["reason"]')" = "queued: waiting for its turn" ] || break
		sleep 0.05
		api GET "/v1/jobs/$id"
	done
	CODE=201
}

. tests/admitd/cases.sh
