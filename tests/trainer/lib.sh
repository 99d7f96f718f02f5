# tests/trainer/lib.sh — what the bursar-train test scripts share (sourced
# after they cd to the repo root, with NAME set): TRAIN, PY, a temp dir $tmp
# removed on exit with every pid in pids() killed, pass/fail lines, and a
# FAIL when bursar-train is not built. Collectives get a 10 s deadline.
BUILD=${BUILD:-build}
TRAIN=$BUILD/bin/bursar-train
PY=/usr/bin/python3
tmp=$(mktemp -d "/tmp/test-$NAME-XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

if [ ! -x "$TRAIN" ]; then
	fail build "$TRAIN is missing (run make)"
	exit 1
fi
export BCOLL_TIMEOUT_MS=10000
