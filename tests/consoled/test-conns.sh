#!/usr/bin/env bash
# tests/consoled/test-conns.sh — one client cannot take the console's
# connections: 300 connections from 127.0.0.2 that send half a request line
# and then trickle a byte now and then (slowloris) hold at most a quarter of
# consoled's 256, and a user on 127.0.0.1 still gets answers meanwhile.
set -u
cd "$(dirname "$0")/../.."
. tests/lib.sh
stack_cases conns
[ -x "$BIN/bursar-consoled" ] || { echo "FAIL conns_built: bursar-consoled is missing"; exit 1; }
STATE=$(mktemp -d "${TMPDIR:-/tmp}/test-conns.XXXXXX")
export STATE
SLOW=
trap '[ -n "$SLOW" ] && kill "$SLOW" 2>/dev/null; stack_stop' EXIT
stack_start_daemon consoled || { echo "FAIL conns_start: consoled did not start"; exit 1; }
ALICE=$(stack_adduser acme alice)
PORT=${URL##*:}

# the slow client: its connections from 127.0.0.2, kept open (a byte every
# 2 s), counting how many consoled left open
/usr/bin/python3 - "$PORT" "$STATE/slow.count" <<'EOF' &
import socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(300):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    try:
        s.connect(("127.0.0.1", port))
        s.send(b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    except OSError:
        s.close()
time.sleep(1)
for _ in range(30):
    alive = []
    for s in socks:
        try:
            s.send(b"X")
            s.settimeout(0.001)
            try:
                if s.recv(1) == b"":
                    raise OSError("closed")
            except socket.timeout:
                pass
            alive.append(s)
        except OSError:
            s.close()
    socks = alive
    open(out, "w").write(str(len(socks)))
    time.sleep(2)
EOF
SLOW=$!
for _ in $(seq 100); do [ -s "$STATE/slow.count" ] && break; sleep 0.1; done
code=$(curl -s -m 5 --interface 127.0.0.1 -o /dev/null -w '%{http_code}' \
	-H "Authorization: Bearer $ALICE" "$URL/api/v1/whoami")
[ "$code" = 200 ] && pass user_answered_during_slowloris || fail user_answered_during_slowloris "got '$code'"
held=$(cat "$STATE/slow.count" 2>/dev/null)
[ -n "$held" ] && [ "$held" -le 64 ] && pass one_address_holds_at_most_a_quarter ||
	fail one_address_holds_at_most_a_quarter "the slow client holds '${held:-?}' connections"
exit $FAILED
