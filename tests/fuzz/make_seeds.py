#!/usr/bin/env python3
"""Write the hand-made seed corpus of fuzz_batch into seeds/fuzz_batch/.

Each seed sits at an edge the fuzzer should start from; the spec vectors are
added to the corpus separately by run_smoke.sh. Run from anywhere:
    python3 tests/fuzz/make_seeds.py
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


def batch(readings, flags=1, stream=7, key=0, seq=1, base=1700000000000000, count=None,
          version=1, magic=b"SLB1"):
    """readings: (sensor_id, offset_us, value bits as u32)."""
    n = len(readings) if count is None else count
    body = magic + struct.pack("<BBHIIQq", version, flags, n, stream, key, seq, base)
    for sensor, offset, bits in readings:
        body += struct.pack("<III", sensor, offset, bits)
    return body + struct.pack("<I", crc32c(body))


def ack(status, stream=7, accepted=0, seq=1, rejected=0):
    body = b"SLA1" + struct.pack("<BBHIIQI", 1, status, 0, stream, accepted, seq, rejected)
    return body + struct.pack("<I", crc32c(body))


def f32(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


SEEDS = {
    # The smallest valid frame, without and with ACK_REQUESTED.
    "count1.bin": batch([(1, 0, f32(20.0))], flags=0),
    "count1_ack.bin": batch([(0xFFFFFFFF, 0xFFFFFFFF, f32(-0.0))], stream=0xFFFFFFFF,
                            seq=2**64 - 1, base=-1),
    # Non-finite values must survive decode and re-encode bit for bit (signalling NaN too).
    "nonfinite.bin": batch([(1, 0, 0x7F800000), (2, 1, 0xFF800000), (3, 2, 0x7F800001),
                            (4, 3, 0xFFC00000)]),
    # 100 readings: 1,236 bytes, past the CRC's three-stream threshold of 768.
    "count100.bin": batch([(i, i * 1000, f32(i / 4.0)) for i in range(100)]),
    # The header of the largest UDP frame (5,455 readings), without its body.
    "udp_max_header.bin": batch([], count=5455)[:32],
    # The header of the largest TCP frame (65,535 readings), with two readings.
    "count_max_header.bin": batch([(1, 0, f32(1.0)), (2, 0, f32(2.0))], count=65535),
    # Whole frames with a good CRC that the header checks must still refuse.
    "bad_flags.bin": batch([(1, 0, f32(1.0))], flags=0x03),
    "bad_key_id.bin": batch([(1, 0, f32(1.0))], key=1),
    "bad_version.bin": batch([(1, 0, f32(1.0))], version=2),
    "count0.bin": batch([], count=0),
    # Acks with the other statuses.
    "ack_duplicate.bin": ack(1, accepted=0, seq=5),
    "ack_malformed.bin": ack(3, stream=0xFFFFFFFF, seq=2**64 - 1),
    "ack_overloaded.bin": ack(4, accepted=0, rejected=0, seq=9),
}


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "fuzz_batch")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
