"""The native protocol over TCP, against the real daemon.

Proves: the spec's vectors give exactly the vector acks, byte for byte;
per-stream dedup (a resend, on the same or a new connection, is DUPLICATE
and changes nothing); every malformed class gets its status, the connection
is closed, nothing is applied, and other connections are unaffected; acks
only when asked; pipelined batches are acked in order.
"""
import struct

from harness import (BAD_CRC, DUPLICATE, MALFORMED, OK, Checks, Daemon, batch, is_closed, parse_ack,
                     recv_exact, vector)

T0 = 1700000000000000
c = Checks("test_native_tcp")
d = Daemon()


def send_ack(sock, frame):
    sock.sendall(frame)
    return recv_exact(sock, 32)


# --- the spec's vectors, on a fresh gateway ---
s = d.tcp()
c.eq(send_ack(s, vector("batch_ok.bin")), vector("ack_ok.bin"), "ack of batch_ok.bin")
c.eq(send_ack(s, vector("batch_nan.bin")), vector("ack_nan.bin"), "ack of batch_nan.bin")
raw = send_ack(s, vector("batch_badcrc.bin"))
ack = parse_ack(raw)
c.eq((ack["status"], ack["stream"], ack["seq"]), (BAD_CRC, 7, 1), "batch_badcrc.bin answered BAD_CRC")
c.check(is_closed(s), "connection closed after BAD_CRC")
s.close()

status, sensor = d.json("/api/v1/sensors/1")
c.eq(status, 200, "sensor 1 exists")
c.eq(sensor["readings_total"], 2, "sensor 1 holds its two readings, nothing from the bad frame")
c.eq(sensor["last"], {"t_us": T0 + 2000, "value": 22.0}, "sensor 1 last reading")
status, sensor2 = d.json("/api/v1/sensors/2")
c.eq((sensor2["readings_total"], sensor2["last"]["value"]), (2, 1.0), "sensor 2 after batch_nan")
m = d.metrics()
c.eq(m.get('sluice_readings_rejected_total{reason="nonfinite"}'), 1.0, "nonfinite counted")
c.eq(m.get('sluice_batches_total{transport="tcp",status="BAD_CRC"}'), 1.0, "BAD_CRC counted")
c.eq(m.get('sluice_batches_total{transport="tcp",status="OK"}'), 2.0, "OK batches counted")

# --- dedup: same connection, then a new one ---
s = d.tcp()
for seq in (1, 2, 3):
    a = parse_ack(send_ack(s, batch(100, seq, T0 + seq * 1000000, [(500, 0, float(seq))])))
    c.eq((a["status"], a["accepted"], a["rejected"], a["seq"]), (OK, 1, 0, seq), "stream 100 seq %d" % seq)
a = parse_ack(send_ack(s, batch(100, 2, T0 + 9000000, [(500, 0, 99.0)])))
c.eq((a["status"], a["seq"]), (DUPLICATE, 2), "resend of seq 2 is DUPLICATE")
s.close()
s = d.tcp()
a = parse_ack(send_ack(s, batch(100, 3, T0 + 9000000, [(500, 0, 99.0)])))
c.eq(a["status"], DUPLICATE, "resend on a new connection is DUPLICATE")
a = parse_ack(send_ack(s, batch(100, 10, T0 + 10000000, [(500, 0, 10.0)])))
c.eq(a["status"], OK, "a later seq (gaps allowed) is OK")
a = parse_ack(send_ack(s, batch(101, 1, T0 + 10000000, [(501, 0, 1.0)])))
c.eq(a["status"], OK, "seq 1 of another stream is OK")
status, s500 = d.json("/api/v1/sensors/500")
c.eq(s500["readings_total"], 4, "duplicates applied nothing")
c.eq(s500["last"]["value"], 10.0, "sensor 500 last value")

# --- pipelining: 200 batches back to back, acks in order; no ack when not asked ---
frames = b"".join(batch(102, seq, T0 + seq * 1000, [(502, 0, 1.0), (503, 0, 2.0)]) for seq in range(1, 201))
frames += batch(102, 201, T0 + 201 * 1000, [(502, 0, 1.0)], flags=0)  # no ack requested
frames += batch(102, 202, T0 + 202 * 1000, [(502, 0, 1.0)])
s.sendall(frames)
acks = [parse_ack(recv_exact(s, 32)) for _ in range(201)]
c.eq([a["seq"] for a in acks], list(range(1, 201)) + [202], "pipelined acks in order, none for seq 201")
c.check(all(a["status"] == OK and a["accepted"] == 2 for a in acks[:200]), "pipelined batches OK")
s.close()


# --- each malformed class: status, closed, nothing applied, others unaffected ---
def corrupt(frame, offset, value):
    return frame[:offset] + value + frame[offset + len(value):]


good = batch(200, 1, T0, [(900, 0, 5.0)])
classes = {
    "bad magic": (corrupt(good, 0, b"XLB1"), MALFORMED),
    "bad version": (batch(200, 1, T0, [(900, 0, 5.0)], version=2), MALFORMED),
    "bad flags": (batch(200, 1, T0, [(900, 0, 5.0)], flags=0x81), MALFORMED),
    "bad key_id": (batch(200, 1, T0, [(900, 0, 5.0)], key_id=7), MALFORMED),
    "count 0": (batch(200, 1, T0, [], count=0), MALFORMED),
    "bad crc": (corrupt(good, 40, b"\xff"), BAD_CRC),
    "garbage": (b"\x00" * 64, MALFORMED),
}
bystander = d.tcp()
for index, (name, (frame, want)) in enumerate(classes.items()):
    s = d.tcp()
    s.sendall(frame)
    raw = recv_exact(s, 32)
    ok = c.check(len(raw) == 32, "%s: an ack before the close" % name)
    if ok:
        a = parse_ack(raw)
        c.eq(a["status"], want, "%s: status" % name)
    c.check(is_closed(s), "%s: connection closed" % name)
    s.close()
    a = parse_ack(send_ack(bystander, batch(201, index + 1, T0 + index, [(901, 0, 1.0)])))
    c.eq(a["status"], OK, "%s: another connection still served" % name)
status, _ = d.json("/api/v1/sensors/900")
c.eq(status, 404, "no malformed frame applied anything")
m = d.metrics()
c.eq(m.get('sluice_batches_total{transport="tcp",status="MALFORMED"}'), 6.0, "MALFORMED counted")
c.eq(m.get('sluice_batches_total{transport="tcp",status="BAD_CRC"}'), 2.0, "BAD_CRC counted")
c.check(m.get('sluice_frames_refused_total{transport="tcp",reason="bad_key_id"}') == 1.0,
        "refusals counted by exact class")

# --- a frame split into single bytes still arrives whole ---
s = d.tcp()
frame = batch(300, 1, T0, [(950, i, float(i)) for i in range(50)])
for i in range(len(frame)):
    s.send(frame[i:i + 1])
a = parse_ack(recv_exact(s, 32))
c.eq((a["status"], a["accepted"]), (OK, 50), "a frame dribbled byte by byte")
s.close()

bystander.close()
rc, secs = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
c.finish()
