# tests/lib.sh — start and stop a whole bursar stack on loopback for the demo
# and the end-to-end tests. Sourced, not run. Every process it starts is
# stopped by stack_stop (called from an EXIT trap), also on Ctrl-C and on
# failure; trainer ranks left behind by a killed noded are found by their
# state-directory paths and killed too.
#
#   stack_start           fresh state dir in $STATE; sets URL, TOKEN, BIN
#   stack_start_daemon N  (re)start one daemon: ledgerd admitd noded consoled
#   stack_kill N [SIG]    signal one daemon
#   stack_stop            stop everything; keeps $STATE when KEEP_STATE=1
#   stack_cases [PREFIX]  pass/fail case lines and FAILED
#   make_sample_bundle D  a small GPT-2 bundle trained on text the machine has

BUILD=${BUILD:-build}
BIN=${BIN:-$PWD/$BUILD/bin}
ROOT=${BURSAR_ROOT:-$PWD}
declare -A STACK_PID=()

stack_log() { printf '%s\n' "$*" >&2; }

# Waits up to $2 seconds for command $1 to succeed.
stack_wait() {
	local cmd=$1 t=${2:-20} i
	for ((i = 0; i < t * 10; i++)); do
		eval "$cmd" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

stack_start_daemon() {
	local name=$1 run=$STATE/run
	mkdir -p "$STATE/$name" "$STATE/logs" "$run"
	case $name in
	ledgerd)
		"$BIN/bursar-ledgerd" --state "$STATE/ledgerd" --listen "unix:$run/ledgerd.sock" \
			${LEDGERD_ARGS:-} >>"$STATE/logs/ledgerd.log" 2>&1 &
		STACK_PID[ledgerd]=$!
		stack_wait "curl -sf --unix-socket $run/ledgerd.sock http://l/v1/health" 20 ;;
	admitd)
		"$BIN/bursar-admitd" --state "$STATE/admitd" --listen "unix:$run/admitd.sock" \
			--ledgerd "unix:$run/ledgerd.sock" ${ADMITD_ARGS:-} \
			>>"$STATE/logs/admitd.log" 2>&1 &
		STACK_PID[admitd]=$!
		stack_wait "curl -sf --unix-socket $run/admitd.sock http://l/v1/health" 20 ;;
	noded)
		"$BIN/bursar-noded" --state "$STATE/noded" --admitd "unix:$run/admitd.sock" \
			--ledgerd "unix:$run/ledgerd.sock" --trainer "$BIN/bursar-train" \
			--slots "${SLOTS:-2}" --node-id node-local ${NODED_ARGS:-} \
			>>"$STATE/logs/noded.log" 2>&1 &
		STACK_PID[noded]=$!
		# Ready once admitd lists it (after its throughput probe): jobs are
		# priced against it from then on.
		stack_wait "curl -sf --unix-socket $run/admitd.sock http://l/v1/nodes |
			jq -e '.nodes[] | select(.id == \"node-local\" and .down == false)'" 60 ;;
	consoled)
		rm -f "$run/consoled.port"
		"$BIN/bursar-consoled" --state "$STATE/consoled" --listen 127.0.0.1:0 \
			--port-file "$run/consoled.port" --admitd "unix:$run/admitd.sock" \
			--ledgerd "unix:$run/ledgerd.sock" --www "$ROOT/services/consoled/www" ${CONSOLED_ARGS:-} \
			>>"$STATE/logs/consoled.log" 2>&1 &
		STACK_PID[consoled]=$!
		stack_wait "test -s $run/consoled.port" 20 || return 1
		URL=http://127.0.0.1:$(cat "$run/consoled.port")
		stack_wait "curl -sf $URL/" 20 ;;
	*)
		stack_log "unknown daemon $name"; return 1 ;;
	esac
	local rc=$?
	if [ $rc -ne 0 ]; then
		stack_log "$name did not become ready; its log:"
		tail -20 "$STATE/logs/$name.log" >&2
	fi
	return $rc
}

stack_kill() {
	local name=$1 sig=${2:-TERM} pid=${STACK_PID[$1]:-}
	[ -n "$pid" ] || return 0
	kill -"$sig" "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	unset "STACK_PID[$name]"
	return 0
}

# stack_cases [PREFIX]: the case lines of a stack test. pass NAME and
# fail NAME WHY print "PASS PREFIX_NAME" / "FAIL PREFIX_NAME: WHY" (no
# PREFIX: just NAME); fail sets FAILED=1, which the script exits with.
stack_cases() {
	CASE_PREFIX=${1:+${1}_}
	FAILED=0
	pass() { echo "PASS $CASE_PREFIX$1"; }
	fail() { echo "FAIL $CASE_PREFIX$1: $2"; FAILED=1; }
}

# Adds a user and prints its token.
stack_adduser() {
	"$BIN/bursar-consoled" adduser --state "$STATE/consoled" --tenant "$1" --user "$2" \
		${3:+--role "$3"} | tail -1
}

stack_start() {
	STATE=$(mktemp -d "${TMPDIR:-/tmp}/bursar.XXXXXX")
	export STATE
	local d
	for d in ledgerd admitd noded consoled; do
		stack_start_daemon "$d" || return 1
	done
	TOKEN=$(stack_adduser "${TENANT:-demo}" "${USERNAME:-alice}") || return 1
	export URL TOKEN
	export BURSAR_URL=$URL BURSAR_TOKEN=$TOKEN
}

stack_stop() {
	local name pid i
	for name in consoled noded admitd ledgerd; do
		pid=${STACK_PID[$name]:-}
		[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
	done
	for ((i = 0; i < 50; i++)); do
		local alive=0
		for pid in "${STACK_PID[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ $alive -eq 0 ] && break
		sleep 0.1
	done
	for pid in "${STACK_PID[@]}"; do kill -KILL "$pid" 2>/dev/null; done
	STACK_PID=()
	# Ranks orphaned by a noded that was killed with -9 name the state dir.
	[ -n "${STATE:-}" ] && pkill -KILL -f -- "$STATE/" 2>/dev/null
	wait 2>/dev/null
	if [ -n "${STATE:-}" ] && [ "${KEEP_STATE:-0}" != 1 ]; then
		rm -rf "$STATE"
	fi
	return 0
}

# A small GPT-2 bundle. Its text is what every Debian machine already has:
# the licence texts under /usr/share/common-licenses (real English prose).
make_sample_bundle() {
	local dir=$1 steps=${2:-150}
	mkdir -p "$dir/data"
	cat >"$dir/config.json" <<-EOF
	{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_head": 4,
	 "n_embd": 128, "n_positions": 128, "vocab_size": 256, "layer_norm_epsilon": 1e-5,
	 "activation_function": "gelu_new"}
	EOF
	cat >"$dir/bursar.json" <<-EOF
	{"steps": $steps, "batch": 16, "seq_len": 64, "lr": 0.003, "warmup": 10,
	 "schedule": "cosine", "ranks": 2, "seed": 42}
	EOF
	local f
	for f in GPL-3 Apache-2.0 LGPL-3 MPL-2.0 Artistic GFDL-1.3; do
		[ -f "/usr/share/common-licenses/$f" ] && cat "/usr/share/common-licenses/$f"
	done >"$dir/data/licenses.txt"
	[ -s "$dir/data/licenses.txt" ] || yes "the quick brown fox jumps over the lazy dog." |
		head -4000 >"$dir/data/licenses.txt"
}
