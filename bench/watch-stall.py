# bench/watch-stall.py <coordinate binary> <watchers> <keys>: one node, <keys> writes, then <watchers>
# watches from revision 1 (a quarter read, the rest stall) opened at once, and the latency of
# 100 writes meanwhile. The node it starts is stopped by pid (p.kill) at the end.
# Max write latency on one node while W watchers from revision 1 are open (stalled or reading).
import http.client, os, socket, subprocess, sys, tempfile, time, threading
binary, watchers, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
peer, port = free(), free()
d = tempfile.mkdtemp(prefix="stall-")
log = open(d + "/node.log", "w")
p = subprocess.Popen([binary, "--id", "1", "--cluster", f"http://127.0.0.1:{peer}", "--port", str(port),
                      "--data-dir", d + "/data"] + os.environ.get("FLAGS", "").split(), stdout=log, stderr=log)
def req(c, method, path, body=None):
    c.request(method, path, body=body); r = c.getresponse(); r.read(); return r.status
for _ in range(200):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if req(c, "GET", "/health") == 200: break
    except OSError: pass
    time.sleep(0.05)
def writer(t):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(t, keys, 8): req(c, "PUT", f"/w/{i}", b"v" * 100)
ts = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
socks = []
t0 = time.time()
for i in range(watchers):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /v1/watch/w/?prefix=true&from_revision=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
stop = False
def reader(ss):
    for s in ss: s.setblocking(False)
    while not stop:
        for s in ss:
            try: s.recv(65536)
            except BlockingIOError: pass
        time.sleep(0.001)
rs = [threading.Thread(target=reader, args=(socks[i::16],)) for i in range(0, 16, 4)]  # a quarter read
[r.start() for r in rs]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
lat = []
for i in range(100):
    t = time.time(); st = req(c, "PUT", f"/live/{i}", b"x"); lat.append(time.time() - t)
    assert st == 204, st
stop = True; [r.join() for r in rs]
lat.sort()
print(f"{os.path.basename(binary)} watchers={watchers} keys={keys}: write latency p50={lat[50]*1000:.0f}ms max={lat[-1]*1000:.0f}ms; opening took {time.time()-t0:.1f}s total; alive={p.poll() is None}")
for s in socks: s.close()
p.kill(); p.wait(); subprocess.run(["rm", "-rf", d])
