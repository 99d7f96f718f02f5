#!/usr/bin/env bash
# tests/consoled/test-upload.sh — integration test of bursar-consoled uploads,
# auth and the tenant wall, against the real daemon on a real TCP port with a
# real SQLite file in a fresh temp state dir. Bundles are made with tar, gzip
# and zstd; hostile archives (.., absolute paths, links, truncation) with
# Python's tarfile so the exact entries are under our control. Every bad
# upload must get a 4xx whose message names the problem, and leave nothing
# behind: no marker outside the bundle, no .partial-* dir, no upload body.
# When build/bin/bursar-admitd and bursar-ledgerd exist, a job is submitted
# and read back through the console too.
set -u
BUILD=${BUILD:-build}
CONSOLED=$BUILD/bin/bursar-consoled
PY=/usr/bin/python3

if [ ! -x "$CONSOLED" ]; then
	echo "FAIL consoled_built: $CONSOLED is missing (run make)"
	exit 1
fi

T=$(mktemp -d /tmp/test-consoled.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	# Sanitizer builds: a report in consoled's log is a failure; keep the log.
	if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T/consoled.log" 2>/dev/null; then
		echo "FAIL consoled_sanitizers: $(grep -m1 -E 'ERROR|runtime error' "$T/consoled.log")"
	fi
	mkdir -p "$BUILD/test-logs" && cp "$T/consoled.log" "$BUILD/test-logs/test-upload.consoled.log" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

S=$T/state
W=$T/work
MARK=$T/escape
mkdir -p "$S" "$W"

ALICE=$("$CONSOLED" adduser --state "$S" --tenant acme --user alice) || { echo "FAIL adduser: alice"; exit 1; }
BOB=$("$CONSOLED" adduser --state "$S" --tenant globex --user bob --token bob-token-0123456789) || { echo "FAIL adduser: bob"; exit 1; }
[ "$BOB" = bob-token-0123456789 ] && echo "PASS adduser_prints_token" || echo "FAIL adduser_prints_token: got '$BOB'"
if "$CONSOLED" adduser --state "$S" --tenant acme --user alice >/dev/null 2>"$T/dup.err"; then
	echo "FAIL adduser_duplicate: a second alice was accepted"
else
	grep -q "already exists" "$T/dup.err" && echo "PASS adduser_duplicate" || echo "FAIL adduser_duplicate: $(cat "$T/dup.err")"
fi
if sqlite3 "$S/consoled.db" "SELECT token_sha256 FROM users" | grep -q "$ALICE"; then
	echo "FAIL token_hashed: the plain token is in the database"
else
	echo "PASS token_hashed"
fi

# Optional real peers: admitd and ledgerd, when they are built.
ADMITD=unix:$T/run/admitd.sock
LEDGERD=unix:$T/run/ledgerd.sock
mkdir -p "$T/run"
"$CONSOLED" --state "$S" --listen 127.0.0.1:0 --port-file "$T/port" --max-upload 64K \
	--max-files 20 --admitd "$ADMITD" --ledgerd "$LEDGERD" 2>"$T/consoled.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
if [ ! -s "$T/port" ]; then
	echo "FAIL consoled_start: no port file; log:"; cat "$T/consoled.log"; exit 1
fi
URL=http://127.0.0.1:$(cat "$T/port")

# req NAME TOKEN METHOD PATH [curl args...]: sets CODE and BODY.
req() {
	local tok=$2 method=$3 path=$4
	shift 4
	local auth=()
	[ -n "$tok" ] && auth=(-H "Authorization: Bearer $tok")
	CODE=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 15 -X "$method" "${auth[@]}" "$@" "$URL$path")
	BODY=$(cat "$T/body" 2>/dev/null)
}

# expect NAME WANT_CODE SUBSTRING
expect() {
	if [ "$CODE" != "$2" ]; then
		echo "FAIL $1: got status $CODE, want $2: $BODY"
	elif [ -n "$3" ] && ! grep -qF -- "$3" <<<"$BODY"; then
		echo "FAIL $1: body lacks '$3': $BODY"
	else
		echo "PASS $1"
	fi
}

json() { $PY -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1" <<<"$BODY"; }

# A valid bundle in $W/good/mb.
mkdir -p "$W/good/mb/data"
echo '{"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 256, "n_positions": 64}' >"$W/good/mb/config.json"
echo '{"steps": 5, "batch": 2, "seq_len": 16}' >"$W/good/mb/bursar.json"
head -c 4000 /dev/urandom | base64 >"$W/good/mb/data/a.txt"
# an entry named like the old fixed temporary name of the top-level strip
mkdir -p "$W/good/mb/.strip" && echo x >"$W/good/mb/.strip/x"

tar -C "$W/good" -cf "$W/good.tar" mb
tar -C "$W/good" -czf "$W/good.tar.gz" mb
tar -C "$W/good/mb" -cf - . | zstd -q -o "$W/good.tar.zst"

n_good=0
for f in good.tar good.tar.gz good.tar.zst; do
	req upload "$ALICE" POST "/api/v1/bundles?name=mb" --data-binary "@$W/$f"
	expect "upload_ok_${f//./_}" 201 '"id":"b-'
	if [ "$CODE" = 201 ]; then
		n_good=$((n_good + 1))
		id=$(json 'd["id"]')
		steps=$(json 'd["params"]["steps"]')
		if [ -f "$S/bundles/$id/config.json" ] && [ -f "$S/bundles/$id/data/a.txt" ] && [ "$steps" = 5 ]; then
			echo "PASS upload_extracted_${f//./_}"
		else
			echo "FAIL upload_extracted_${f//./_}: $S/bundles/$id lacks config.json or data/a.txt (steps=$steps)"
		fi
		BUNDLE=$id
	fi
done

# mktar OUT SPEC...: Python tarfile; SPEC is kind:name[:arg]
#   file:NAME[:TEXT]  dir:NAME  sym:NAME:TARGET  hard:NAME:TARGET
mktar() {
	$PY - "$@" <<'EOF'
import io, sys, tarfile
out, specs = sys.argv[1], sys.argv[2:]
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    for s in specs:
        kind, name, arg = (s.split(":", 2) + [None])[:3]
        ti = tarfile.TarInfo(name)
        ti.mode = 0o644
        data = None
        if kind == "file":
            data = (arg if arg is not None else "x").encode()
            ti.size = len(data)
        elif kind == "dir":
            ti.type = tarfile.DIRTYPE
        elif kind == "sym":
            ti.type, ti.linkname = tarfile.SYMTYPE, arg
        elif kind == "hard":
            ti.type, ti.linkname = tarfile.LNKTYPE, arg
        t.addfile(ti, io.BytesIO(data) if data is not None else None)
EOF
}

CFG='{"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 256}'
echo "hello, this is not an archive" >"$W/not-archive"
head -c 100000 /dev/urandom >"$W/too-large"
mktar "$W/trunc-src.tar" "file:config.json:$CFG" "file:data/a.txt:$(head -c 30000 /dev/zero | tr '\0' a)"
head -c 9000 "$W/trunc-src.tar" >"$W/truncated.tar"
gzip -c "$W/trunc-src.tar" | head -c 200 >"$W/truncated.tar.gz"
many=("file:config.json:$CFG"); for i in $(seq 25); do many+=("file:data/$i.txt:t"); done
mktar "$W/too-many.tar" "${many[@]}"
mktar "$W/dotdot.tar" "file:config.json:$CFG" "file:data/a.txt:t" "file:../../../escape:pwned"
mktar "$W/absolute.tar" "file:config.json:$CFG" "file:data/a.txt:t" "file:$MARK:pwned"
mktar "$W/symlink.tar" "file:config.json:$CFG" "sym:data:$T" "file:data/escape:pwned"
mktar "$W/hardlink.tar" "file:config.json:$CFG" "file:data/a.txt:t" "hard:data/h.txt:../../../escape"
mktar "$W/no-config.tar" "file:data/a.txt:t"
mktar "$W/bad-json.tar" "file:config.json:{\"model_type\": " "file:data/a.txt:t"
mktar "$W/bad-model.tar" 'file:config.json:{"model_type": "resnet"}' "file:data/a.txt:t"
mktar "$W/empty-data.tar" "file:config.json:$CFG" "dir:data/" "file:data/a.txt:"
# Two sparse 3 GiB files: a few KiB of archive, 6 GiB on extraction (cap 4 GiB).
mkdir -p "$W/sparse/data"
printf '%s' "$CFG" >"$W/sparse/config.json"
truncate -s 3G "$W/sparse/data/a.txt" "$W/sparse/data/b.txt"
tar --sparse --format=pax -C "$W/sparse" -cf "$W/sparse.tar" config.json data
rm -rf "$W/sparse"

# name file status substring
bad_cases=(
	"not_archive not-archive 415 not a tar archive"
	"truncated truncated.tar 400 truncated"
	"truncated_gzip truncated.tar.gz 400 corrupt or truncated archive"
	"too_large too-large 413 too large"
	"too_many_files too-many.tar 400 too many files"
	"dotdot dotdot.tar 400 '../../../escape': '..' is not allowed"
	"absolute absolute.tar 400 absolute paths are not allowed"
	"symlink symlink.tar 400 'data': symbolic links are not allowed"
	"hardlink hardlink.tar 400 'data/h.txt': hard links are not allowed"
	"missing_config no-config.tar 400 no config.json"
	"malformed_config bad-json.tar 400 config.json is not valid JSON"
	"unknown_model_type bad-model.tar 400 unknown model_type 'resnet'"
	"empty_data empty-data.tar 400 data/ holds no text"
	"sparse_holes sparse.tar 400 bundle too large when extracted"
)
for c in "${bad_cases[@]}"; do
	read -r name file code want <<<"$c"
	req upload "$ALICE" POST "/api/v1/bundles?name=$name" --data-binary "@$W/$file"
	expect "reject_$name" "$code" "$want"
	[ -n "${VERBOSE:-}" ] && echo "  $BODY"
	leftovers=$(find "$S/bundles" "$S/uploads" -mindepth 1 -maxdepth 1 ! -name 'b-*')
	n=$(find "$S/bundles" -mindepth 1 -maxdepth 1 -name 'b-*' | wc -l)
	if [ -e "$MARK" ] || [ -e "$T/data" ] || [ -n "$leftovers" ] || [ "$n" != "$n_good" ]; then
		echo "FAIL clean_$name: marker=$( [ -e "$MARK" ] && echo present || echo absent) leftovers='$leftovers' bundles=$n want $n_good"
		rm -f "$MARK"
	else
		echo "PASS clean_$name"
	fi
done

req bad_name "$ALICE" POST "/api/v1/bundles?name=../x" --data-binary "@$W/good.tar"
expect upload_bad_name 400 "invalid bundle name"

# Authentication.
req noauth "" GET /api/v1/bundles
expect auth_missing 401 "missing or invalid bearer token"
req badauth "wrong-token-0123456789" GET /api/v1/bundles
expect auth_wrong 401 "missing or invalid bearer token"
req noauth_upload "" POST "/api/v1/bundles" --data-binary "@$W/good.tar"
expect auth_upload 401 "missing or invalid bearer token"
req whoami "$ALICE" GET /api/v1/whoami
expect whoami 200 '"tenant":"acme"'

# The tenant wall: bob (globex) never sees acme's bundle.
req list "$ALICE" GET /api/v1/bundles
[ "$(json 'len(d["bundles"])')" = "$n_good" ] && echo "PASS list_own_bundles" || echo "FAIL list_own_bundles: $BODY"
req list "$BOB" GET /api/v1/bundles
expect list_other_tenant 200 '{"bundles":[]}'
req get "$BOB" GET "/api/v1/bundles/$BUNDLE"
expect bundle_other_tenant 404 "no such bundle"
req get "$ALICE" GET "/api/v1/bundles/$BUNDLE"
expect bundle_own 200 "\"id\":\"$BUNDLE\""
req job "$BOB" POST /api/v1/jobs -d "{\"bundle\": \"$BUNDLE\"}"
expect job_other_tenant_bundle 404 "no such bundle"
req job "$ALICE" POST /api/v1/jobs -d "{\"bundle\": \"$BUNDLE\", \"overrides\": {\"steps\": 0}}"
expect job_bad_overrides 400 "'steps'"

# The web page and its allowlist.
req page "" GET /
expect page_index 200 "<html"
req page "" GET /static/app.js
expect page_app_js 200 "api/v1"
req page "" GET /static/consoled.db
expect page_not_allowed 404 "no such file"

# Peers down: 503 naming the service, fast.
start=$(date +%s)
req jobs "$ALICE" GET /api/v1/jobs
expect jobs_admitd_down 503 "admission service unavailable: connection refused"
req jobs "$ALICE" POST /api/v1/jobs -d "{\"bundle\": \"$BUNDLE\"}"
expect submit_admitd_down 503 "admission service unavailable"
req jobs "$ALICE" GET /api/v1/jobs/j-1234
expect job_get_admitd_down 503 "admission service unavailable"
req jobs "$ALICE" POST /api/v1/jobs/j-1234/cancel
expect job_cancel_admitd_down 503 "admission service unavailable"
req ledger "$ALICE" GET /api/v1/ledger
expect ledger_down 503 "ledger service unavailable: connection refused"
[ $(( $(date +%s) - start )) -lt 10 ] && echo "PASS peers_down_fast" || echo "FAIL peers_down_fast: took $(( $(date +%s) - start ))s"

# With the real admitd and ledgerd: submit, read back, tenant wall on jobs.
ADM=$BUILD/bin/bursar-admitd
LED=$BUILD/bin/bursar-ledgerd
if [ ! -x "$ADM" ] || [ ! -x "$LED" ]; then
	echo "SKIP job_roundtrip: $ADM or $LED not built"
	exit 0
fi
mkdir -p "$T/led" "$T/adm"
"$LED" --state "$T/led" --listen "$LEDGERD" 2>"$T/ledgerd.log" &
PIDS+=($!)
"$ADM" --state "$T/adm" --listen "$ADMITD" --ledgerd "$LEDGERD" 2>"$T/admitd.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$T/run/admitd.sock" ] && [ -S "$T/run/ledgerd.sock" ] && break; sleep 0.1; done
if [ ! -S "$T/run/admitd.sock" ]; then
	echo "SKIP job_roundtrip: bursar-admitd did not start with --state/--listen/--ledgerd: $(tail -3 "$T/admitd.log")"
	exit 0
fi
req submit "$ALICE" POST /api/v1/jobs -d "{\"bundle\": \"$BUNDLE\", \"name\": \"t1\", \"overrides\": {\"steps\": 3}}"
expect job_submit 201 '"id":"j-'
JOB=$(json 'd.get("id", "")' 2>/dev/null)
req get "$ALICE" GET "/api/v1/jobs/$JOB"
expect job_read_back 200 "\"id\":\"$JOB\""
req get "$ALICE" GET /api/v1/jobs
expect job_list 200 "\"id\":\"$JOB\""
req get "$BOB" GET "/api/v1/jobs/$JOB"
expect job_other_tenant 404 "no such job"
req get "$BOB" GET "/api/v1/jobs/$JOB/bill"
expect job_bill_other_tenant 404 "no such job"
req get "$BOB" POST "/api/v1/jobs/$JOB/cancel"
expect job_cancel_other_tenant 404 "no such job"
req get "$BOB" GET /api/v1/jobs
if grep -q "$JOB" <<<"$BODY"; then echo "FAIL job_list_other_tenant: $BODY"; else echo "PASS job_list_other_tenant"; fi
req get "$ALICE" GET "/api/v1/jobs/$JOB/files/model.safetensors"
expect job_files_not_ready 404 "not available"
req get "$ALICE" GET "/api/v1/jobs/$JOB/files/admitd.db"
expect job_files_not_allowed 404 "no such file: 'admitd.db'"
# admitd sends its estimate to ledgerd through an outbox: wait for the bill.
for _ in $(seq 15); do
	req bill "$ALICE" GET "/api/v1/jobs/$JOB/bill"
	[ "$CODE" = 200 ] && break
	sleep 0.2
done
# With no nodes admitd may not price the job, so the ledger may know nothing yet.
if [ "$CODE" = 404 ]; then expect job_bill 404 "no bill yet for job $JOB"; else expect job_bill 200 "\"job\":\"$JOB\""; fi
req ledger "$ALICE" GET "/api/v1/ledger?limit=10"
expect ledger_json 200 '"entries"'
req ledger "$ALICE" GET "/api/v1/ledger?format=csv&limit=10" -D "$T/headers"
if [ "$CODE" = 200 ] && grep -qi '^content-type: text/csv' "$T/headers"; then echo "PASS ledger_csv"; else echo "FAIL ledger_csv: status $CODE: $(cat "$T/headers")"; fi
req ledger "$BOB" GET "/api/v1/ledger?tenant=acme&format=csv"
if grep -q acme <<<"$BODY"; then echo "FAIL ledger_tenant_forced: bob sees acme rows: $BODY"; else echo "PASS ledger_tenant_forced"; fi
req ledger "$ALICE" GET "/api/v1/ledger?limit=abc"
expect ledger_bad_limit 400 "limit"
req verify "$ALICE" GET /api/v1/ledger/verify
expect ledger_verify 200 '"ok":true'
req cancel "$ALICE" POST "/api/v1/jobs/$JOB/cancel"
expect job_cancel 200 '"state":"cancelled"'
exit 0
