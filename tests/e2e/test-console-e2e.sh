#!/usr/bin/env bash
# The web console end to end, in a real browser against the whole stack: the
# page uploads a bundle, trains it, shows live progress and then the bill.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh

if [ ! -x /usr/bin/chromium ] || [ ! -d tests/browser/node_modules/playwright-core ]; then
	echo "SKIP console-e2e: chromium or playwright-core missing (make deps installs them)"
	exit 0
fi
FAILED=0
trap '[ $FAILED -ne 0 ] && KEEP_STATE=1; stack_stop' EXIT
stack_start || { echo "FAIL console-e2e-start: the stack did not start"; exit 1; }
make_sample_bundle "$STATE/sample" 80
tar -czf "$STATE/sample.tar.gz" -C "$STATE/sample" .
URL=$URL TOKEN=$TOKEN BUNDLE=$STATE/sample.tar.gz BUILD=$BUILD node tests/e2e/console-e2e.js
FAILED=$?
exit $FAILED
