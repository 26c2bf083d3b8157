"""libsluice (the C client library) against a real sluiced, through tests/client/client_check.

- the API checks that need no gateway (targets, options, errors, blocking and
  non-blocking waits on a full window, flush timing out with nothing listening);
- acks and exact counts: frames cut by count, by size and by the 71.6-minute
  span, each counted once, OK-acked, every reading stored; NaN counted as
  rejected; no heap allocation between open and the end of the flush;
- a restarted sender with the same stream_id (time-seeded first seq) is not
  answered DUPLICATE;
- OVERLOADED: a small log that waits for checkpoints refuses a flood; the
  client resends in order and the gateway stores every reading exactly once;
- a gateway SIGKILLed and restarted (same ports, same data) in the middle of a
  send: the client reconnects and resends; the gateway ends with every reading
  once, none lost, none doubled;
- UDP, one datagram a frame and rounds of frames (GSO);
- a scripted fake gateway for what a real one never does on demand: a
  MALFORMED answer stops the client with the batch named; an ack out of order
  makes it reconnect and resend.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import threading

from harness import BUILD, Checks, Daemon, crc32c, wait_until

CHECK = os.path.join(BUILD, "tests", "client_check")
c = Checks("test_client_c")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def send(target, timeout_s=120, **params):
    args = [CHECK, "send", target] + ["%s=%d" % (k, v) for k, v in params.items()]
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError("client_check failed: %s %s" % (p.stdout, p.stderr))
    return json.loads(p.stdout)


def start_send(target, **params):
    args = [CHECK, "send", target] + ["%s=%d" % (k, v) for k, v in params.items()]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stored(d, sensors):
    status, body = d.json("/api/v1/sensors?limit=%d" % max(sensors, 1))
    return sum(s["readings_total"] for s in body["sensors"])


# --- the API, no gateway -------------------------------------------------------------------
p = subprocess.run([CHECK, "api", "tcp://127.0.0.1:%d" % closed_port()], capture_output=True, text=True,
                   timeout=60)
c.eq(p.returncode, 0, "client_check api: %s%s" % (p.stdout.strip(), p.stderr.strip()))

# --- acks and exact counts -------------------------------------------------------------------
d = Daemon(sensors=1024, ring=256)
tcp = "tcp://127.0.0.1:%d" % d.tcp_port
r = send(tcp, stream=1, readings=100000, sensors=100, batch=100)
c.eq((r["flush_rc"], r["batches"], r["acked"], r["accepted"], r["rejected"], r["resent"], r["duplicate"]),
     (0, 1000, 1000, 100000, 0, 0, 0), "by count: 1,000 frames of 100, each acked once, all accepted")
c.eq((r["sent"], r["sent_readings"], r["pending"], r["buffered"]), (1000, 100000, 0, 0),
     "every frame written once, nothing pending")
if r["counting"]:
    c.eq(r["allocations"], 0, "no heap allocation between open and the end of the flush")
else:
    print("test_client_c: this build cannot count allocations; the GCC build checks them")
r = send(tcp, stream=2, readings=5000, sensors=50, sensor_base=101, frame_bytes=36 + 12 * 10, single=1)
c.eq((r["flush_rc"], r["batches"], r["accepted"]), (0, 500, 5000), "by size: 156-byte frames hold 10 readings")
# One sensor, readings 2^31 us apart: a frame spans at most 2^32 - 1 us, so two readings a frame.
r = send(tcp, stream=3, readings=40, sensors=1, sensor_base=200, step_us=1 << 31, chunk=7)
c.eq((r["flush_rc"], r["batches"], r["accepted"] + r["rejected"]), (0, 20, 40),
     "by span: 40 readings 35.8 minutes apart make 20 frames, every reading answered")
r = send(tcp, stream=4, readings=10000, sensors=10, sensor_base=300, nan_every=10)
c.eq((r["accepted"], r["rejected"]), (9000, 1000), "every tenth reading NaN: rejected, counted")
m = d.metrics()
c.eq(m.get('sluice_readings_rejected_total{reason="nonfinite"}'), 1000.0, "the gateway counted the NaNs")
c.eq(m.get('sluice_batches_total{transport="tcp",status="OK"}'), float(1000 + 500 + 20 + 10),
     "the gateway saw each batch once")

# --- a restarted sender keeps its stream and is not DUPLICATE -----------------------------------------
first = send(tcp, stream=77, readings=2000, sensors=2, sensor_base=400)
again = send(tcp, stream=77, readings=2000, sensors=2, sensor_base=402)
c.eq((again["duplicate"], again["acked"], again["batches"]), (0, 2, 2),
     "the same stream_id again: time-seeded seq, no DUPLICATE")
c.check(again["next_seq"] > first["next_seq"], "the second run's seqs are above the first's")
seq = send(tcp, stream=78, readings=1000, sensors=1, sensor_base=404, first_seq=5)
old = send(tcp, stream=78, readings=1000, sensors=1, sensor_base=405, first_seq=5)
c.eq((seq["acked"], old["duplicate"], old["acked"]), (1, 1, 0),
     "a caller-given seq that repeats is DUPLICATE, as PROTOCOL.md says")
d.stop()

# --- OVERLOADED: resent in order, stored once ------------------------------------------------------
# Failed log syncs (injected) are never acked OK: the batches of the failed commit and every later
# batch of the stream are answered OVERLOADED until the failed one is resent.
d = Daemon("--sync", "always", "--io-faults", "fdatasync:EIO:20,fdatasync:EIO:60", sensors=1024, ring=4096)
N = 200000
r = send("tcp://127.0.0.1:%d" % d.tcp_port, stream=5, readings=N, sensors=100, batch=100, window=16,
         flush_ms=120000)
c.eq((r["flush_rc"], r["accepted"], r["acked"], r["batches"]), (0, N, N // 100, N // 100),
     "under OVERLOADED every batch acked once, every reading accepted")
c.check(r["overloaded"] > 0 and r["resent"] > 0, "the gateway did refuse (%d OVERLOADED, %d resent)" %
        (r["overloaded"], r["resent"]))
m = d.metrics()
c.eq(m.get("sluice_log_sync_errors_total"), 2.0, "both injected sync failures happened")
c.eq(m.get("sluice_readings_accepted_total"), float(N), "the gateway stored each reading once")
d.stop()

# --- the gateway killed and restarted mid-send --------------------------------------------------------
d = Daemon(sensors=1024, ring=4096)
ports = (d.tcp_port, d.udp_port, d.http_port)
data_dir = d.data_dir
N = 400000
proc = start_send("tcp://127.0.0.1:%d" % d.tcp_port, stream=6, readings=N, sensors=100, batch=500, chunk=1000,
                  pace_us=5000, flush_ms=120000)
c.check(wait_until(lambda: d.metrics().get("sluice_readings_accepted_total", 0) >= N // 4, 60),
        "a quarter went in before the kill")
d.proc.send_signal(signal.SIGKILL)
d.proc.wait()
d.kill_keep_data()
d = Daemon("--tcp", "127.0.0.1:%d" % ports[0], "--udp", "127.0.0.1:%d" % ports[1],
           "--http", "127.0.0.1:%d" % ports[2], sensors=1024, ring=4096, data_dir=data_dir)
out, err = proc.communicate(timeout=180)
r = json.loads(out)
c.eq(r["flush_rc"], 0, "the send completed across the restart (%s)" % r["flush_error"])
c.check(r["reconnects"] >= 1, "the client reconnected (%d)" % r["reconnects"])
c.eq(r["acked"] + r["duplicate"], r["batches"], "every batch answered OK or DUPLICATE")
c.eq(stored(d, 100), N, "the gateway holds every reading once: none lost, none doubled")
d.stop()

# --- UDP ---------------------------------------------------------------------------------------------
d = Daemon(sensors=1024, ring=256)
udp = "udp://127.0.0.1:%d" % d.udp_port
r = send(udp, stream=8, readings=20000, sensors=20, pace_us=1000)
c.eq((r["flush_rc"], r["sent_readings"], r["pending"]), (0, 20000, 0), "UDP: every frame handed to the kernel")
c.eq(r["batches"], -(-20000 // 119), "UDP: 1,472-byte frames of 119 readings")
c.check(wait_until(lambda: d.metrics().get("sluice_readings_accepted_total") == 20000.0, 20),
        "UDP: the gateway stored them all")
r = send(udp, stream=9, readings=20000, sensors=20, sensor_base=21, batch=1000, frame_bytes=36 + 12 * 1000, window=16,
         pace_us=2000)
c.eq((r["flush_rc"], r["batches"], r["sent"]), (0, 20, 20), "UDP rounds of 16 frames (GSO where it works)")
c.check(wait_until(lambda: d.metrics().get("sluice_readings_accepted_total") == 40000.0, 20),
        "UDP rounds: the gateway stored them all")
d.stop()


# --- a scripted fake gateway -----------------------------------------------------------------------------
def ack(status, stream, seq, accepted, rejected=0):
    head = b"SLA1" + bytes([1, status, 0, 0]) + struct.pack("<IIQI", stream, accepted, seq, rejected)
    return head + struct.pack("<I", crc32c(head))


def read_frame(conn):
    head = b""
    while len(head) < 32:
        more = conn.recv(32 - len(head))
        if not more:
            return None
        head += more
    count = struct.unpack_from("<H", head, 6)[0]
    rest = 12 * count + 4
    body = b""
    while len(body) < rest:
        more = conn.recv(rest - len(body))
        if not more:
            return None
        body += more
    stream, _key, seq = struct.unpack_from("<IIQ", head, 8)
    return stream, seq, count


def fake_gateway(behaviour):
    """Listen; per connection, answer each frame as behaviour(conn_index, frame_index, stream, seq, count) says."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(30)
    seen = []

    def run():
        for conn_index in range(4):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.settimeout(30)
            with conn:
                frame_index = 0
                while True:
                    frame = read_frame(conn)
                    if frame is None:
                        break
                    seen.append((conn_index,) + frame)
                    reply = behaviour(conn_index, frame_index, *frame)
                    frame_index += 1
                    if reply is None:
                        break
                    conn.sendall(reply)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv, t, seen


srv, t, seen = fake_gateway(lambda ci, fi, stream, seq, count:
                            ack(3, stream, seq, 0, count) if fi == 2 else ack(0, stream, seq, count))
r = send("tcp://127.0.0.1:%d" % srv.getsockname()[1], stream=11, readings=1000, sensors=1, batch=100, window=1,
         first_seq=100, flush_ms=20000)
c.eq((r["append_rc"] < 0, r["refused"], r["refused_seq"], r["refused_status"]), (True, 1, 102, 3),
     "MALFORMED stops the client and names the batch")
c.check("refused" in r["append_error"], "the error says the gateway refused: %r" % r["append_error"])
srv.close()

srv, t, seen = fake_gateway(lambda ci, fi, stream, seq, count:
                            ack(0, stream, seq + 1, count) if (ci, fi) == (0, 3) else ack(0, stream, seq, count))
r = send("tcp://127.0.0.1:%d" % srv.getsockname()[1], stream=12, readings=1000, sensors=1, batch=100, window=1,
         first_seq=200, flush_ms=20000)
c.eq((r["flush_rc"], r["reconnects"], r["acked"]), (0, 1, 10),
     "an ack out of order: reconnect, resend, all acked")
c.eq([s for (ci, st, s, n) in seen if ci == 1][:1], [203], "the resend starts at the unanswered batch, same seq")
srv.close()

c.finish()
