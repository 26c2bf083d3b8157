"""The native protocol over UDP, against the real daemon.

Proves: valid datagrams are applied; each malformed class (bad magic,
version, flags, key_id, count, length, CRC, garbage, empty) is counted by
status and by exact reason and applies nothing; batch_seq gaps are counted
as lost datagrams, but a jump further ahead than any honest loss (a forged
datagram, a sender restarted at a new seq) is a resync, not 9.2e18 losses;
the ACK_REQUESTED flag is ignored (no reply on UDP).
"""
import socket
import time

from harness import Checks, Daemon, batch

T0 = 1700000000000000
c = Checks("test_native_udp")
d = Daemon()

good = batch(10, 1, T0, [(1, 0, 1.5), (2, 0, 2.5)])
bad = {
    "bad_magic": b"XLB1" + good[4:],
    "bad_version": batch(10, 2, T0, [(3, 0, 1.0)], version=9),
    "bad_flags": batch(10, 2, T0, [(3, 0, 1.0)], flags=2),
    "bad_key_id": batch(10, 2, T0, [(3, 0, 1.0)], key_id=1),
    "bad_count": batch(10, 2, T0, [], count=0),
    "bad_length": batch(10, 2, T0, [(3, 0, 1.0)]) + b"\x00",
    "bad_crc": good[:-1] + bytes([good[-1] ^ 1]),
    "truncated": good[:20],
}
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.sendto(good, ("127.0.0.1", d.udp_port))
for frame in bad.values():
    sock.sendto(frame, ("127.0.0.1", d.udp_port))
sock.sendto(b"", ("127.0.0.1", d.udp_port))  # an empty datagram is truncated too
# seq 2 missing, 3..4 lost: seq 5 after seq 1 counts 3 lost datagrams
sock.sendto(batch(10, 5, T0 + 1000, [(1, 0, 3.5)]), ("127.0.0.1", d.udp_port))

got = d.wait_metric('sluice_batches_total{transport="udp",status="MALFORMED"}', 8)
c.eq(got, 8.0, "MALFORMED datagrams counted")
# Datagrams are served in order, but the OK count moves only when their group is applied.
d.wait_metric('sluice_batches_total{transport="udp",status="OK"}', 2)
m = d.metrics()
c.eq(m.get('sluice_batches_total{transport="udp",status="BAD_CRC"}'), 1.0, "BAD_CRC datagram counted")
c.eq(m.get('sluice_batches_total{transport="udp",status="OK"}'), 2.0, "good datagrams counted")
for reason in bad:
    want = 2.0 if reason == "truncated" else 1.0
    c.eq(m.get('sluice_frames_refused_total{transport="udp",reason="%s"}' % reason), want, reason)
c.eq(m.get("sluice_udp_lost_batches_total"), 3.0, "gap of seq 2..4 counted as lost")
c.eq(m.get("sluice_readings_accepted_total"), 3.0, "only the good datagrams' readings stored")
status, s3 = d.json("/api/v1/sensors/3")
c.eq(status, 404, "nothing from a malformed datagram was applied")
status, s1 = d.json("/api/v1/sensors/1")
c.eq((s1["readings_total"], s1["last"]["value"]), (2, 3.5), "sensor 1 after two datagrams")
sock.settimeout(0.3)
try:
    sock.recvfrom(100)
    c.check(False, "UDP never replies")
except socket.timeout:
    c.check(True, "UDP never replies")

# One forged datagram with a seq near 2^63 moves no counter by more than it stands for.
sock.sendto(batch(10, 1 << 63, T0 + 2000, [(1, 0, 4.5)]), ("127.0.0.1", d.udp_port))
c.eq(d.wait_metric("sluice_udp_resyncs_total", 1), 1.0, "a jump far ahead is counted as one resync")
# The sender goes on from where it was: below the forged seq, out of sequence once, then in order.
sock.sendto(batch(10, 6, T0 + 3000, [(1, 0, 5.5)]), ("127.0.0.1", d.udp_port))
sock.sendto(batch(10, 8, T0 + 4000, [(1, 0, 6.5)]), ("127.0.0.1", d.udp_port))
d.wait_metric('sluice_batches_total{transport="udp",status="OK"}', 5)
m = d.metrics()
c.eq(m.get("sluice_udp_lost_batches_total"), 4.0, "losses: the 3 before, and seq 7; none for the forged jump")
c.eq(m.get("sluice_udp_out_of_sequence_batches_total"), 1.0, "back below the forged seq: one resync down")
sock.close()
rc, secs = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
c.finish()
