#!/usr/bin/env python3
"""Write the seed corpus of fuzz_client into seeds/fuzz_client/: targets and
options (mode 0), and gateway answers (mode 1) that start at the edges of the
ack matcher. Run from anywhere: python3 tests/fuzz/make_client_seeds.py
"""
import os
import struct

from make_seeds import ack

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "fuzz_client")
os.makedirs(OUT, exist_ok=True)


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


opts = struct.pack("<IIII", 0, 0, 0, 0)
for i, t in enumerate([b"tcp://127.0.0.1:7409", b"udp://[::1]:7409", b"tcp://host.example:1",
                       b"udp://127.0.0.1:65535", b"tcp://[fe80::1]:80", b"tcp://a:0"]):
    write("target_%d" % i, b"\x00" + opts + t)
write("options_big", b"\x00" + struct.pack("<IIII", 65535, 786456, 65536, 0) + b"tcp://127.0.0.1:1")
write("options_udp", b"\x00" + struct.pack("<IIII", 5455, 65507, 16, 4) + b"udp://127.0.0.1:1")
S, F = 7, 1000
write("acks_all_ok", b"\x01\x00" + b"".join(ack(0, S, 1, F + i) for i in range(4)))
write("acks_dup_overloaded", b"\x01\x00" + ack(1, S, 0, F) + ack(4, S, 0, F + 1) + ack(4, S, 0, F + 2))
write("acks_out_of_order", b"\x01\x00" + ack(0, S, 1, F + 1) + ack(0, S, 1, F))
write("acks_wrong_stream", b"\x01\x00" + ack(0, S + 1, 1, F))
write("acks_malformed", b"\x01\x00" + ack(0, S, 1, F) + ack(3, S, 0, F + 1, 1))
write("acks_unknown_status", b"\x01\x00" + ack(9, S, 0, F))
write("acks_truncated", b"\x01\x00" + ack(0, S, 1, F)[:20])
write("acks_patched_crc", b"\x01\xff" + ack(0, S, 1, F)[:28] + b"\0\0\0\0" + ack(0, S, 1, F + 1)[:28] + b"\0\0\0\0")
