"""TCP under hostile or broken peers, against the real daemon.

Proves: a stalled client (half a frame, then silence) delays no one and is
closed by the idle timeout; a client that never reads its acks delays no
one; a client that reads its acks late is paused, then resumed, and every
batch is answered once, in order; at a full table a newcomer evicts the
connection idle longest (counted), and the others keep working.
"""
import socket
import threading
import time

from harness import OK, Checks, Daemon, batch, is_closed, parse_ack, recv_exact, wait_until

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
hog_sent = [0]


def flood():
    seq = 1
    deadline = time.time() + 30
    while not stop.is_set() and time.time() < deadline:
        try:
            hog.send(batch(3, seq, T0 + seq, [(3, 0, 1.0)]))
            seq += 1
            hog_sent[0] += 1
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break


t = threading.Thread(target=flood)
t.start()
c.check(wait_until(lambda: hog_sent[0] >= 200, 10), "the hog is flooding")
c.check(all(roundtrip(worker, 2, seq) for seq in range(51, 101)), "others served while one never reads acks")
c.check(roundtrip(worker, 2, 101), "and after")
stop.set()
t.join()
hog.close()
worker.close()
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")

# A client that leaves its acks unread for a while, then reads them all, on a gateway
# with the default idle timeout (on a busy machine the reader may begin seconds after
# the pause, and the 2 s timeout above would rightly close a peer that reads nothing
# for that long). Its small
# receive buffer fills, then the gateway's send buffer, then the connection's ack queue:
# the gateway stops reading it (a pause, counted), and reads it again once the acks
# drain. Every batch is answered OK exactly once, in order, and stored.
d = Daemon()
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
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")

# A full table, on a gateway whose idle timeout cannot interfere: 3 idle connections
# opened in turn, then an active worker (4 open), then a 5th. The newcomer is taken and
# the connection idle longest (the first idle one) is evicted, counted by reason; the
# others keep working.
d = Daemon("--max-tcp-connections", "4")
gauge = 'sluice_connections{transport="tcp"}'
extra = []
for i in range(3):
    extra.append(d.tcp())
    c.check(wait_until(lambda: d.metrics().get(gauge) == 1.0 + i, 10), "idle connection %d open" % i)
worker = d.tcp()
c.check(roundtrip(worker, 2, 1), "the worker is served")
evicted = 'sluice_tcp_connections_evicted_total{reason="idle"}'
newcomer = d.tcp()
c.check(is_closed(extra[0], timeout_s=10), "the connection idle longest is evicted for the newcomer")
c.check(roundtrip(newcomer, 20, 1), "the newcomer is served")
c.eq(d.wait_metric(evicted, 1), 1.0, "the eviction is counted by reason")
c.check(roundtrip(worker, 2, 2), "open connections keep working at the limit")
c.check(all(roundtrip(s, 10 + i, 1) for i, s in enumerate(extra[1:])), "every other open connection works")
c.eq(d.metrics().get(gauge), 4.0, "open connections gauge")
for s in extra + [newcomer]:
    s.close()
worker.close()
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
c.finish()
