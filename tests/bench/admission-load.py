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
t0 = time.perf_counter(); lat = []
for i in range(n):
    a = time.perf_counter(); st, d = submit(i); lat.append(time.perf_counter() - a)
    if st != 201: print("submit failed", st, d[:200], file=sys.stderr); sys.exit(1)
el = time.perf_counter() - t0
lat.sort()
print(json.dumps({"n": n, "per_s": n / el, "p50_ms": 1e3 * lat[len(lat)//2], "p99_ms": 1e3 * lat[int(len(lat)*0.99)]}))
