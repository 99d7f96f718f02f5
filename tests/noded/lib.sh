# tests/noded/lib.sh — what the bursar-noded test scripts share (sourced after
# they cd to the repo root and set BIN, PY, T, LED_SOCK, ADM_SOCK, ND_SOCK and
# nd_pid adm_pid led_pid; TROOT, when set, is the directory removed on exit):
# pass/fail lines counted in $fails, cleanup on exit, the ranks of this
# test's jobs, waits on sockets, job states and the spool, a job submitted
# straight to admitd, and a small deterministic corpus.
fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }

# Pids of bursar-train processes of this test (BURSAR_RDV names our admitd),
# optionally only those with BURSAR_JOB=$1 and BURSAR_RANK=$2.
rank_pids() {
	local p env
	for p in /proc/[0-9]*; do
		env=$(tr '\0' '\n' 2>/dev/null <"$p/environ") || continue
		grep -qx "BURSAR_RDV=unix:$ADM_SOCK" <<<"$env" || continue
		[ -n "${1:-}" ] && ! grep -qx "BURSAR_JOB=$1" <<<"$env" && continue
		[ -n "${2:-}" ] && ! grep -qx "BURSAR_RANK=$2" <<<"$env" && continue
		echo "${p#/proc/}"
	done
}

cleanup() {
	for p in $nd_pid $adm_pid $led_pid; do kill "$p" 2>/dev/null; done
	sleep 0.3
	for p in $nd_pid $adm_pid $led_pid; do kill -9 "$p" 2>/dev/null; done
	# ranks, should any outlive noded: only those of this test's jobs
	for p in $(rank_pids ""); do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "${TROOT:-$T}"
}
trap cleanup EXIT

wait_sock() { # path, seconds
	local i
	for ((i = 0; i < $2 * 20; i++)); do [ -S "$1" ] && return 0; sleep 0.05; done
	return 1
}

# json FILTER: reads JSON on stdin, prints the Python expression over it (j).
json() { $PY -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

job_get() { curl -s --max-time 5 --unix-socket "$ADM_SOCK" "http://x/v1/jobs/$1"; }
job_field() { job_get "$1" | json "j.get('$2')" 2>/dev/null; }
spool_pending() { curl -s --max-time 5 --unix-socket "$ND_SOCK" http://x/v1/health | json "j['spool_pending']" 2>/dev/null; }

# submit BUNDLE_DIR: its config.json and bursar.json sent to admitd as a job;
# prints the job id.
submit() {
	local body
	body=$($PY -c "
import json, sys
d = sys.argv[1]
print(json.dumps({'tenant': 'acme', 'user': 'alice', 'bundle_id': 'b-test', 'bundle_dir': d,
  'name': 'noded-test', 'model': json.load(open(d + '/config.json')),
  'params': json.load(open(d + '/bursar.json'))}))" "$1")
	curl -s --max-time 5 --unix-socket "$ADM_SOCK" -X POST -d "$body" http://x/v1/jobs | json "j['id']"
}

# wait_state JOB STATE|any-final SECONDS: 0 when reached.
wait_state() {
	local i s
	for ((i = 0; i < $3 * 10; i++)); do
		s=$(job_field "$1" state)
		case "$2:$s" in
		"$s:$s" | any-final:succeeded | any-final:failed | any-final:cancelled) return 0 ;;
		esac
		sleep 0.1
	done
	return 1
}

wait_spool_empty() { # seconds
	local i
	for ((i = 0; i < $1 * 10; i++)); do
		[ "$(spool_pending)" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}

# corpus FILE: 2,000 lines of seeded words, the same bytes every run.
corpus() {
	$PY -c "
import random
random.seed(7)
w = 'the quick brown fox jumps over a lazy dog while the cat sleeps on the warm mat'.split()
print('\n'.join(' '.join(random.choice(w) for _ in range(12)) for _ in range(2000)))" >"$1"
}
