import http.client, json, socket, sys, time
class UConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("admitd", timeout=60); self.path = path
    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(self.path); self.sock = s
sock, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = UConn(sock)
MODEL = {"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256}
def post(path, body):
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse(); d = r.read(); return r.status, d
def submit(i):
    return post("/v1/jobs", {"tenant": "t%d" % (i % 50), "user": "u", "bundle_id": "b-1",
        "bundle_dir": "/srv/b-1", "model": MODEL, "params": {"steps": 100, "batch": 8, "ranks": 1}})
if mode == "passes":
    # one submission, then wait for the coalesced pass it triggers: n passes
    # over the full queue; admitd times them (GET /v1/sched)
    for i in range(n):
        st, d = submit(i)
        if st != 201: print("submit failed", st, d[:200], file=sys.stderr); sys.exit(1)
        time.sleep(0.06)
    c.request("GET", "/v1/sched"); r = c.getresponse(); print(r.read().decode()); sys.exit(0)
# submit: n requests, one at a time, over one keep-alive connection. The
# load generator is lean (request bytes built before the clock starts, the
# reply read by its Content-Length) so that it measures admitd, not
# http.client; every reply must be a 201 carrying a job id.
c.close()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sock)
reqs = []
for i in range(n):
    body = json.dumps({"tenant": "t%d" % (i % 50), "user": "u", "bundle_id": "b-1",
        "bundle_dir": "/srv/b-1", "model": MODEL, "params": {"steps": 100, "batch": 8, "ranks": 1}}).encode()
    reqs.append(b"POST /v1/jobs HTTP/1.1\r\nHost: admitd\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
buf = b""
def reply():
    global buf
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d: raise EOFError("admitd closed the connection")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    clen = next(int(l.split(b":", 1)[1]) for l in lines[1:] if l.lower().startswith(b"content-length:"))
    while len(rest) < clen:
        d = s.recv(65536)
        if not d: raise EOFError("admitd closed the connection")
        rest += d
    buf = rest[clen:]
    return status, rest[:clen]
t0 = time.perf_counter(); lat = []
for i in range(n):
    a = time.perf_counter(); s.sendall(reqs[i]); st, d = reply(); lat.append(time.perf_counter() - a)
    if st != 201 or b'"id": "j-' not in d and b'"id":"j-' not in d:
        print("submit failed", st, d[:200], file=sys.stderr); sys.exit(1)
el = time.perf_counter() - t0
lat.sort()
print(json.dumps({"n": n, "per_s": n / el, "p50_ms": 1e3 * lat[len(lat)//2], "p99_ms": 1e3 * lat[int(len(lat)*0.99)]}))
