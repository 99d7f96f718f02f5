#!/usr/bin/env bash
# tests/consoled/test-bundles.sh — a tenant's bundles on disk: each upload
# counts against the tenant's storage (--max-tenant-bytes; a bundle may take
# what is left, an archive that expands past it is refused with a sentence
# that says so), `bursarctl bundles` lists them, and a bundle is deleted
# (DELETE /api/v1/bundles/{id}, `bursarctl bundles rm`) only when no
# unfinished job uses it; another tenant cannot see or delete it. Real
# ledgerd, admitd and consoled; no node, so a submitted job stays waiting.
set -u
cd "$(dirname "$0")/../.."
. tests/lib.sh
stack_cases bundles
for b in bursar-ledgerd bursar-admitd bursar-consoled bursarctl; do
	[ -x "$BIN/$b" ] || { echo "FAIL bundles_built: $BIN/$b is missing"; exit 1; }
done
STATE=$(mktemp -d "${TMPDIR:-/tmp}/test-bundles.XXXXXX")
export STATE
export CONSOLED_ARGS="--max-tenant-bytes 250K"
trap stack_stop EXIT
for d in ledgerd admitd consoled; do
	stack_start_daemon "$d" || { echo "FAIL bundles_stack: $d did not start"; exit 1; }
done
ALICE=$(stack_adduser acme alice) && BOB=$(stack_adduser other bob) || { echo "FAIL bundles_adduser"; exit 1; }
ctl() { "$BIN/bursarctl" --url "$URL" --token "$1" "${@:2}"; }
up() { # NAME DIR -> id in $ID, status in $ST
	tar -C "$2" -czf "$STATE/$1.tgz" .
	OUT=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $ALICE" \
		--data-binary "@$STATE/$1.tgz" "$URL/api/v1/bundles?name=$1")
	ST=${OUT##*$'\n'}
	OUT=${OUT%$'\n'*}
	ID=$(jq -r '.id // empty' <<<"$OUT")
}
mkb() { # DIR KB: a bundle whose data is KB KiB of text
	mkdir -p "$1/data"
	echo '{"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 256, "n_positions": 64}' >"$1/config.json"
	echo '{"steps": 5, "batch": 2, "seq_len": 16}' >"$1/bursar.json"
	yes "the quick brown fox jumps over the lazy dog." | head -c $(($2 * 1024)) >"$1/data/a.txt"
}
mkb "$STATE/a" 100
mkb "$STATE/c" 100

up a "$STATE/a"
A=$ID
[ "$ST" = 201 ] && [ "$(jq -r '.bytes > 100000' <<<"$OUT")" = true ] && pass upload_counts_bytes ||
	fail upload_counts_bytes "$ST $OUT"
up b "$STATE/a"
B=$ID
[ "$ST" = 201 ] && pass second_fits || fail second_fits "$ST $OUT"
up c "$STATE/c"
[ "$ST" = 400 ] && jq -e '.error | test("left of tenant .acme..s storage \\([0-9.]+ KiB of 250.0 KiB used; delete bundles")' <<<"$OUT" >/dev/null &&
	pass over_quota_refused || fail over_quota_refused "$ST $OUT"
[ -z "$(ls -A "$STATE/consoled/bundles" | grep -v "^$A$" | grep -v "^$B$")" ] &&
	pass refused_leaves_nothing || fail refused_leaves_nothing "$(ls -A "$STATE/consoled/bundles")"
out=$(ctl "$ALICE" bundles 2>&1)
grep -Eq "^$A +[0-9.]+ KiB +[0-9]+  a$" <<<"$out" && grep -q "^$B " <<<"$out" &&
	pass cli_lists || fail cli_lists "$out"

# a job uses A (no node: it waits) -> A cannot go; B can
J=$(curl -s -H "Authorization: Bearer $ALICE" -X POST "$URL/api/v1/jobs" -d "{\"bundle\":\"$A\"}" | jq -r .id)
code=$(curl -s -o "$STATE/d.json" -w '%{http_code}' -X DELETE -H "Authorization: Bearer $ALICE" "$URL/api/v1/bundles/$A")
[ "$code" = 409 ] && jq -e ".error | test(\"in use by job $J\")" "$STATE/d.json" >/dev/null &&
	[ -d "$STATE/consoled/bundles/$A" ] && pass in_use_kept || fail in_use_kept "$code $(cat "$STATE/d.json")"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $BOB" "$URL/api/v1/bundles/$B")
[ "$code" = 404 ] && [ -d "$STATE/consoled/bundles/$B" ] && pass other_tenant_404 || fail other_tenant_404 "$code"
out=$(ctl "$ALICE" bundles rm "$B" 2>&1)
[ "$out" = "bundle $B deleted" ] && [ ! -e "$STATE/consoled/bundles/$B" ] &&
	! ctl "$ALICE" bundles | grep -q "^$B " && pass cli_rm || fail cli_rm "$out"
ctl "$ALICE" cancel "$J" >/dev/null 2>&1
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $ALICE" "$URL/api/v1/bundles/$A")
[ "$code" = 200 ] && [ ! -e "$STATE/consoled/bundles/$A" ] && pass deleted_after_cancel || fail deleted_after_cancel "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H "Authorization: Bearer $ALICE" "$URL/api/v1/bundles/$A")
[ "$code" = 404 ] && pass gone_404 || fail gone_404 "$code"
up c "$STATE/c"
[ "$ST" = 201 ] && pass room_again || fail room_again "$ST $OUT"
exit $FAILED
