#!/usr/bin/env python3
"""Write the seed corpus of fuzz_log_segment into seeds/fuzz_log_segment/.

Small, valid log segments in the format of docs/STORAGE.md, each at an edge
the fuzzer should start from: empty, a few records, a torn tail, a corrupt
middle record, a recycled file with stale records, an lsn going backwards,
a larger record. Run from anywhere:
    python3 tests/fuzz/make_log_seeds.py
"""
import os
import struct

POLY = 0x82F63B78


def crc32c(data):
    reg = 0xFFFFFFFF
    for byte in data:
        reg ^= byte
        for _ in range(8):
            reg = (reg >> 1) ^ (POLY if reg & 1 else 0)
    return reg ^ 0xFFFFFFFF


def segment_header(seq, first_lsn, segment_bytes, created_us=1800000000000000):
    body = b"SLUICELG" + struct.pack("<IIQQQq", 1, 0, seq, first_lsn, segment_bytes, created_us)
    body += b"\0" * 12
    return body + struct.pack("<I", crc32c(body))


def record(lsn, seq, count, stream=7, batch_seq=None, transport=1, flags=1,
           now_us=1800000000000000, base_us=1799999999000000):
    readings = b"".join(struct.pack("<IIf", 100 + i, i * 1000, 20.0 + i / 4) for i in range(count))
    head = b"SLR1" + struct.pack("<IQQqQqIHBB", 64 + 12 * count, lsn, seq, now_us,
                                  batch_seq if batch_seq is not None else lsn, base_us, stream,
                                  count, transport, flags)
    head += struct.pack("<I", crc32c(readings))
    head += struct.pack("<I", crc32c(head))
    body = head + readings
    return body + b"\0" * ((-len(body)) % 8)


def segment(seq, records, size=4096, first_lsn=1, tail=b""):
    data = segment_header(seq, first_lsn, size) + b"".join(records) + tail
    return data + b"\0" * max(0, size - len(data))


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "fuzz_log_segment")
    os.makedirs(out, exist_ok=True)
    three = [record(1, 3, 1), record(2, 3, 5, transport=0, flags=0), record(3, 3, 2)]
    seeds = {
        "empty.seg": segment(1, [], size=256),
        "three.seg": segment(3, three),
        # The last record cut halfway, then zeros.
        "torn.seg": segment(3, three[:2] + [record(3, 3, 10)[:80]]),
        # A bit flip in the middle record's readings.
        "corrupt_middle.seg": segment(3, [three[0], three[1][:70] + bytes([three[1][70] ^ 4]) +
                                          three[1][71:], three[2], record(4, 3, 3)]),
        # A recycled file: two records of segment 6, the end marker, then segment 5's stale ones.
        "stale.seg": segment(6, [record(10, 6, 2), record(11, 6, 1)], first_lsn=10,
                             tail=b"\0" * 64 + b"".join(record(i, 5, 3) for i in range(1, 6))),
        # lsns 1, 2, 1, 3: the copy is skipped.
        "backwards.seg": segment(4, [record(1, 4, 1), record(2, 4, 2), record(1, 4, 1), record(3, 4, 1)]),
        # A record of 300 readings.
        "large.seg": segment(2, [record(1, 2, 300), record(2, 2, 1)], size=8192),
        # Exactly full: no room for an end marker.
        "full.seg": segment_header(9, 1, 64 + 80 + 88) + record(1, 9, 1) + record(2, 9, 2),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
