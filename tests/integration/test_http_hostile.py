"""The HTTP side under hostile and heavy clients (HTTP_API.md: concurrent
service, bounded memory, 414/431/400, HEAD).

Proves, against the real daemon:
- large dumps served at once all complete, byte-correct (json and csv
  against bin), while /healthz is answered; they are slow but steady
  readers with a 2 s --http-timeout, so a server that counts its own busy
  time as the client's idleness cuts them; one that stops reading is closed;
- clients that request a large dump and never read it do not take RSS past
  the memory plan (sluice_resident_peak_bytes <= sluice_memory_planned_bytes
  + SLACK_BYTES, libc's and Python-independent start-up heap);
- silent connections from many addresses and slowloris connections from the
  client's own address, more than the table holds, do not keep a new /healthz
  from being answered, and the evictions are counted;
- a paused dump whose readings the ring drops before they are sent is cut
  (never finished with readings it does not have) and counted;
- a connection that trickles its headers forever is closed at the header
  deadline and counted;
- HEAD on every GET route: the GET's status and headers, no body;
- 1,200 query parameters get 400 "too many query parameters"; a 100 KB
  request line 414; 120 KB of headers 431.
Every wait has a deadline; nothing asserts a latency.
"""
import http.client
import json
import socket
import struct
import subprocess
import sys
import threading
import time

from harness import LOAD, Checks, Daemon, recv_exact

SLACK_BYTES = 32 << 20  # libc arenas, thread stacks, the binary: outside the arena, stated in DESIGN.md
DUMP_READINGS = 1000000

c = Checks("test_http_hostile")


def fill(d, sensor, n):
    """n readings for one sensor over TCP (its own stream), one per event-second, ending in the past."""
    before = d.metrics().get("sluice_readings_accepted_total", 0)
    subprocess.run([LOAD, "--target", "tcp://127.0.0.1:%d" % d.tcp_port, "--sensors", "1",
                    "--sensor-id-base", str(sensor), "--stream-id-base", str(sensor),
                    "--readings", str(n), "--batch", "5000",
                    "--start-time-us", "-%ds" % (2 * n), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    got = d.wait_metric("sluice_readings_accepted_total", before + n, timeout_s=60)
    c.check(got is not None and got >= before + n, "sensor %d's %d readings stored" % (sensor, n))


def raw(port, data, timeout_s=10.0, source="127.0.0.1"):
    """Send bytes, read to EOF: the response bytes (b"" when the server closed without one)."""
    s = socket.socket()
    s.settimeout(timeout_s)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    s.close()
    return out


def metrics_or_empty(d):
    """/metrics, or {} (a failed check) when the gateway does not answer it."""
    try:
        return d.metrics()
    except OSError as e:
        c.check(False, "/metrics answered (%r)" % e)
        return {}


def status_of(response):
    try:
        return int(response.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def healthz_until(d, deadline_s):
    """/healthz until one 200 or the deadline (connection errors retried): True when answered."""
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            status, _, body = d.get("/healthz", timeout_s=max(0.5, deadline - time.time()))
            if status == 200 and body == b"ok":
                return True
        except OSError:
            pass
    return False


def slow_get(port, path, results, key, chunk_bytes=256 * 1024, pause_s=0.05):
    """GET read slowly but steadily (a chunk, a short pause): results[key] = (status, body) or the error."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", path)
        r = conn.getresponse()
        parts = []
        while True:
            part = r.read(chunk_bytes)
            if not part:
                break
            parts.append(part)
            time.sleep(pause_s)
        results[key] = (r.status, b"".join(parts))
        conn.close()
    except Exception as e:  # a cut response: IncompleteRead, reset
        results[key] = ("error", repr(e)[:200])


def test_concurrent_dumps():
    d = Daemon("--http-timeout", "2s", "--max-http-connections", "64", sensors=16, ring=DUMP_READINGS)
    fill(d, 7, DUMP_READINGS)
    status, _, binary = d.get("/api/v1/sensors/7/readings?format=bin&limit=1000000", timeout_s=60)
    c.eq((status, len(binary)), (200, DUMP_READINGS * 12), "the bin dump: status and length")
    times = list(struct.unpack("<%dq" % DUMP_READINGS, binary[:8 * DUMP_READINGS]))
    values = struct.unpack("<%df" % DUMP_READINGS, binary[8 * DUMP_READINGS:])
    results = {}
    threads = []
    for i in range(8):
        fmt = "csv" if i % 4 == 3 else "json"
        path = "/api/v1/sensors/7/readings?limit=1000000&format=%s" % fmt
        t = threading.Thread(target=slow_get, args=(d.http_port, path, results, (i, fmt)))
        t.start()
        threads.append(t)
    c.check(healthz_until(d, 30), "/healthz answered while 8 large dumps are served")
    for t in threads:
        t.join(timeout=300)
    for (i, fmt), got in sorted(results.items()):
        if not c.check(got[0] == 200, "dump %d (%s) completed: %r" % (i, fmt, got if got[0] != 200 else 200)):
            continue
        if fmt == "json":
            try:
                js = json.loads(got[1])
            except ValueError as e:
                c.check(False, "dump %d: the json parses (%d bytes: %s)" % (i, len(got[1]), e))
                continue
            c.check(js["t_us"] == times, "dump %d: json times equal the bin times" % i)
            c.check(len(js["value"]) == DUMP_READINGS and
                    all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(js["value"][::9973], values[::9973])),
                    "dump %d: json values equal the bin values" % i)
        else:
            lines = got[1].decode().splitlines()
            c.check(lines[0] == "t_us,value" and len(lines) == DUMP_READINGS + 1 and
                    [int(x.split(",")[0]) for x in lines[1::9973]] == times[::9973],
                    "dump %d: csv rows equal the bin times" % i)
    c.eq(len(results), 8, "every dump finished")
    m = d.metrics()
    c.eq(m.get('sluice_http_responses_cut_total{reason="overwritten"}'), 0.0, "no dump was cut")
    # One that stops reading is closed after --http-timeout (2 s) of no progress.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", d.http_port))
    s.sendall(b"GET /api/v1/sensors/7/readings?limit=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    head = recv_exact(s, 1000, timeout_s=30)
    c.check(head.startswith(b"HTTP/1.1 200"), "the stalled reader's dump began")
    deadline = time.time() + 60
    open_now = None
    while time.time() < deadline:  # only the /metrics poll itself left open
        open_now = d.metrics().get('sluice_connections{transport="http"}')
        if open_now is not None and open_now <= 1:
            break
    c.check(open_now is not None and open_now <= 1, "a reader that stopped is closed (%r open)" % open_now)
    rest = 0
    s.settimeout(30)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += len(chunk)
    except OSError:
        pass
    c.check(len(head) + rest < 20 * DUMP_READINGS, "the stalled reader got only part of the dump (%d B)"
            % (len(head) + rest))
    s.close()
    d.stop()


def test_cut_when_overwritten():
    d = Daemon("--http-timeout", "60s", sensors=16, ring=DUMP_READINGS)
    fill(d, 7, DUMP_READINGS)
    fill(d, 8, 1)
    s = socket.socket()
    s.connect(("127.0.0.1", d.http_port))
    s.sendall(b"GET /api/v1/sensors/7/readings?limit=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    head = recv_exact(s, 1000, timeout_s=30)
    c.check(head.startswith(b"HTTP/1.1 200"), "the dump began")
    # The reader pauses (the socket buffers fill, the server waits); the ring turns over under it: a million newer readings of sensor 7.
    subprocess.run([LOAD, "--target", "tcp://127.0.0.1:%d" % d.tcp_port, "--sensors", "1",
                    "--sensor-id-base", "7", "--stream-id-base", "70", "--readings", str(DUMP_READINGS),
                    "--batch", "5000",
                    "--start-time-us", "-%ds" % (DUMP_READINGS - 100000), "--interval-us", "500000",
                    "--quiet"], check=True, stdout=subprocess.DEVNULL, timeout=120)
    got = d.wait_metric("sluice_readings_accepted_total", 2 * DUMP_READINGS + 1, timeout_s=60)
    c.check(got is not None and got >= 2 * DUMP_READINGS + 1, "a million newer readings stored")
    d.get("/api/v1/sensors/8")  # another sensor's snapshot takes the views the dump's pieces held
    body = head
    s.settimeout(30)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    except OSError:
        pass
    s.close()
    c.check(not body.endswith(b"]}\r\n0\r\n\r\n"), "the dump was cut, not finished (%d B)" % len(body))
    m = d.metrics()
    c.check(m.get('sluice_http_responses_cut_total{reason="overwritten"}', 0) >= 1,
            "the cut is counted as overwritten")
    d.stop()


def test_non_reading_clients():
    d = Daemon("--max-http-connections", "128", sensors=16, ring=DUMP_READINGS)
    fill(d, 3, DUMP_READINGS)
    socks = []
    for _ in range(24):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", d.http_port))
        s.sendall(b"GET /api/v1/sensors/3/readings?limit=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    # Each is answered (its status line arrives); then none reads another byte.
    answered = 0
    for s in socks:
        s.settimeout(60)
        try:
            answered += recv_exact(s, 12, timeout_s=60) == b"HTTP/1.1 200"
        except OSError:
            pass
    c.eq(answered, 24, "every non-reading client's dump was answered")
    m = metrics_or_empty(d)
    peak = m.get("sluice_resident_peak_bytes", float("inf"))
    plan = m.get("sluice_memory_planned_bytes", 0)
    print("non-reading dumps: RSS peak %.1f MiB, plan %.1f MiB" % (peak / 2**20, plan / 2**20))
    c.check(peak <= plan + SLACK_BYTES,
            "RSS peak %.1f MiB within the plan %.1f MiB + %d MiB with 24 non-reading 1M dumps"
            % (peak / 2**20, plan / 2**20, SLACK_BYTES >> 20))
    c.check(m.get('sluice_memory_planned_part_bytes{part="http_connections"}', 0) > 0,
            "the HTTP connections are a named part of the plan")
    for s in socks:
        s.close()
    d.stop()


def test_slowloris_and_silent():
    d = Daemon("--max-http-connections", "16", "--http-timeout", "60s")
    hostile = []
    # Silent connections from 40 other loopback addresses: more than the table holds.
    for k in range(40):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (2 + k), 0))
        s.connect(("127.0.0.1", d.http_port))
        hostile.append(s)
    # Slowloris from the client's own address: a request line, then a header byte now and then.
    for _ in range(40):
        s = socket.socket()
        s.connect(("127.0.0.1", d.http_port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-a: ")
        hostile.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.5):
            for s in hostile[40:]:
                try:
                    s.send(b"a")
                except OSError:
                    pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    c.check(healthz_until(d, 20), "/healthz answered with 80 hostile connections against a table of 16")
    m = metrics_or_empty(d)
    evicted = m.get('sluice_http_connections_evicted_total{reason="incomplete"}', 0)
    c.check(evicted >= 40, "incomplete connections evicted to make room (%r)" % evicted)
    stop.set()
    t.join()
    for s in hostile:
        s.close()
    d.stop()


def test_header_deadline():
    d = Daemon("--http-timeout", "60s")
    s = socket.create_connection(("127.0.0.1", d.http_port))
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    closed = False
    deadline = time.time() + 30  # the default header timeout is 5 s
    s.settimeout(0.5)
    while time.time() < deadline and not closed:
        try:
            s.send(b"X-a: b\r\n")
            closed = s.recv(1) == b""
        except socket.timeout:
            continue
        except OSError:
            closed = True
    c.check(closed, "a connection trickling headers forever is closed at the header deadline")
    s.close()
    m = d.metrics()
    c.check(m.get("sluice_http_header_timeouts_total", 0) >= 1, "the header timeout is counted")
    d.stop()


def test_head_and_limits():
    d = Daemon()
    fill(d, 5, 100)
    for path in ["/healthz", "/metrics", "/api/v1/sensors", "/api/v1/sensors/5",
                 "/api/v1/sensors/5/stats?window_s=10", "/api/v1/sensors/5/readings",
                 "/api/v1/sensors/5/readings?format=csv", "/api/v1/sensors/5/readings?format=bin",
                 "/api/v1/sensors/999"]:
        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=10)
        conn.request("GET", path)
        g = conn.getresponse()
        g.read()
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=10)
        conn.request("HEAD", path)
        h = conn.getresponse()
        body = h.read()
        conn.close()
        c.eq(h.status, g.status, "HEAD %s: the GET's status" % path)
        c.eq(body, b"", "HEAD %s: no body" % path)
        for name in ["Content-Type", "X-Count"]:
            c.eq(h.getheader(name), g.getheader(name), "HEAD %s: the GET's %s" % (path, name))
    query = "&".join("p%d=%d" % (i, i) for i in range(1200))
    r = raw(d.http_port, ("GET /api/v1/sensors?%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % query).encode())
    c.eq(status_of(r), 400, "1,200 query parameters")
    c.check(r.endswith(b'{"error": "too many query parameters"}'), "the 400's reason: %r" % r[-80:])
    r = raw(d.http_port, ("GET /api/v1/sensors?limit=2&%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % "&".join("p%d=1" % i for i in range(60))).encode())
    c.eq(status_of(r), 200, "61 query parameters are fine")
    r = raw(d.http_port, b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    c.eq(status_of(r), 414, "a 100 KB request line")
    flood = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 50) for i in range(2000))
    r = raw(d.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + flood + b"Connection: close\r\n\r\n")
    c.eq(status_of(r), 431, "120 KB of headers")
    c.check(healthz_until(d, 10), "/healthz after the hostile requests")
    d.stop()


TESTS = [test_head_and_limits, test_header_deadline, test_slowloris_and_silent, test_non_reading_clients,
         test_concurrent_dumps, test_cut_when_overwritten]
# Arguments name the tests to run (all by default), e.g. to see one fail against an older build.
for test in TESTS:
    if len(sys.argv) < 2 or test.__name__ in sys.argv[1:]:
        test()
c.finish()
