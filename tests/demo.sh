#!/usr/bin/env bash
# make demo — the whole job path on loopback: start the four daemons in a
# fresh state directory, make a sample bundle, submit it over HTTP, follow its
# progress, print the bill and verify the ledger. Stops everything it started,
# also on Ctrl-C and on failure (the state directory is then kept for a look).
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
failed=1
finish() {
	if [ $failed -ne 0 ]; then
		KEEP_STATE=1
		echo "demo failed; daemon logs are in $STATE/logs" >&2
		for f in "$STATE"/logs/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -8 "$f" >&2; }; done
	fi
	stack_stop
}
trap finish EXIT
trap 'exit 130' INT TERM

say "starting ledgerd, admitd, noded and consoled on loopback"
stack_start || exit 1
echo "state directory: $STATE"
echo "web console:     $URL/  (token $TOKEN)"

say "making a sample bundle (GPT-2, 2 layers, byte-level, Debian's licence texts)"
make_sample_bundle "$STATE/sample" "${DEMO_STEPS:-150}"
ls -l "$STATE/sample" "$STATE/sample/data"

say "bursarctl submit: upload, price, admit"
out=$("$BIN/bursarctl" submit "$STATE/sample" --name demo) || exit 1
echo "$out"
job=$(echo "$out" | sed -n 's/^job \(j-[0-9a-z]*\):.*/\1/p')
[ -n "$job" ] || exit 1

say "bursarctl watch $job: training on two ranks"
"$BIN/bursarctl" watch "$job" || exit 1

say "bursarctl bill $job"
# The last meter records reach the ledger within a couple of seconds.
sleep 3
"$BIN/bursarctl" bill "$job" || exit 1

say "bursarctl ledger verify"
"$BIN/bursarctl" ledger verify || exit 1

say "outputs"
ls -l "$STATE/noded/jobs/$job/out"
failed=0
