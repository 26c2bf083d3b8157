"""TCP under hostile or broken peers, against the real daemon.

Proves: a stalled client (half a frame, then silence) delays no one and is
closed by the idle timeout; a client that never reads its acks delays no
one; a client that reads its acks late is paused, then resumed, and every
batch is answered once, in order; over the connection limit a connection is refused and counted, and the
connections already open keep working; half-open connections are reaped.
"""
import socket
import threading
import time

from harness import OK, Checks, Daemon, batch, is_closed, parse_ack, recv_exact

T0 = 1700000000000000
c = Checks("test_tcp_limits")
d = Daemon("--max-tcp-connections", "4", "--tcp-idle-timeout", "2s")


def roundtrip(sock, stream, seq):
    sock.sendall(batch(stream, seq, T0 + seq, [(stream, 0, 1.0)]))
    raw = recv_exact(sock, 32)
    return len(raw) == 32 and parse_ack(raw)["status"] == OK


# A stalled client: 20 bytes of a header, then nothing.
stalled = d.tcp()
stalled.sendall(batch(1, 1, T0, [(1, 0, 1.0)])[:20])
worker = d.tcp()
c.check(all(roundtrip(worker, 2, seq) for seq in range(1, 51)), "others served while one stalls")
c.check(is_closed(stalled, timeout_s=8), "the stalled client is closed by the idle timeout")
stalled.close()
worker.close()  # idle itself by now: the same timeout closed it too
worker = d.tcp()
c.check(d.wait_metric("sluice_tcp_connections_timed_out_total", 1) >= 1.0, "idle close counted")

# A client that pipelines forever and never reads its acks.
hog = d.tcp()
hog.setblocking(False)
stop = threading.Event()
frame = batch(3, 1, T0, [(3, 0, 1.0)])


def flood():
    seq = 1
    deadline = time.time() + 3
    while not stop.is_set() and time.time() < deadline:
        try:
            hog.send(batch(3, seq, T0 + seq, [(3, 0, 1.0)]))
            seq += 1
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break


t = threading.Thread(target=flood)
t.start()
time.sleep(1.0)
c.check(all(roundtrip(worker, 2, seq) for seq in range(51, 101)), "others served while one never reads acks")
c.check(roundtrip(worker, 2, 101), "and after")
stop.set()
t.join()
hog.close()

# A client that leaves its acks unread for a while, then reads them all. Its small
# receive buffer fills, then the gateway's send buffer, then the connection's ack queue:
# the gateway stops reading it (a pause, counted), and reads it again once the acks
# drain. Every batch is answered OK exactly once, in order, and stored.
LATE_FRAMES = 150000
late = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
late.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
late.settimeout(30)
late.connect(("127.0.0.1", d.tcp_port))
frames = b"".join(batch(4, seq, T0 + seq, [(4, 0, float(seq))]) for seq in range(1, LATE_FRAMES + 1))
accepted_before = d.metrics().get("sluice_readings_accepted_total", 0.0)
pauses_before = d.metrics().get("sluice_tcp_pauses_total", 0.0)
sent = threading.Event()
sender = threading.Thread(target=lambda: (late.sendall(frames), sent.set()))
sender.start()
c.check(d.wait_metric("sluice_tcp_pauses_total", pauses_before + 1, timeout_s=30) >= pauses_before + 1,
        "a peer that leaves its acks unread is paused (counted)")
acks = bytearray()
while len(acks) < 32 * LATE_FRAMES:
    chunk = late.recv(1 << 16)  # the socket's 30 s timeout bounds each wait
    if not chunk:
        break
    acks += chunk
sender.join(timeout=60)
c.check(sent.is_set(), "its sender finished: the gateway read it again")
c.eq(len(acks), 32 * LATE_FRAMES, "every batch answered")
bad = 0
for i in range(len(acks) // 32):
    a = parse_ack(acks[32 * i:32 * i + 32])
    bad += 0 if a["status"] == OK and a["seq"] == i + 1 and a["accepted"] == 1 else 1
c.eq(bad, 0, "each ack OK, once, in order, one reading accepted")
c.eq(d.metrics().get("sluice_readings_accepted_total", 0.0) - accepted_before, float(LATE_FRAMES),
     "every reading stored")
late.close()

# The connection limit: 4 open (worker + 3), the 5th is refused. First wait until the
# gateway has seen the hog go: until then it still holds a slot (its close is read at
# the gateway's pace, which under a sanitizer can be behind this client).
deadline = time.time() + 10
while d.metrics().get('sluice_connections{transport="tcp"}') != 1.0 and time.time() < deadline:
    time.sleep(0.05)
c.eq(d.metrics().get('sluice_connections{transport="tcp"}'), 1.0, "the hog's close seen: only the worker open")
extra = [d.tcp() for _ in range(3)]
time.sleep(0.2)
refused = d.tcp()
c.check(is_closed(refused, timeout_s=5), "a connection over the limit is closed at once")
refused.close()
c.check(d.wait_metric("sluice_tcp_connections_refused_total", 1) >= 1.0, "refusal counted")
c.check(roundtrip(worker, 2, 102), "open connections keep working at the limit")
c.check(all(roundtrip(s, 10 + i, 1) for i, s in enumerate(extra)), "every open connection works")
m = d.metrics()
c.eq(m.get('sluice_connections{transport="tcp"}'), 4.0, "open connections gauge")
for s in extra:
    s.close()
worker.close()
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
c.finish()
