"""Sending 20 million readings from numpy keeps the Python process's RSS flat: the client's
buffers are sized at open and the arrays are read in place, so VmRSS after the run is the
VmRSS before it plus a small constant (never a timing assertion). A control run that keeps a
Python object per reading grows by far more than the allowance, so the check can fail."""
import sluice
from conftest import np, now_us

ALLOWANCE = 8 << 20  # bytes: allocator noise, the report dicts, interpreter caches


def vm_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


START_US = now_us() - 24 * 3600 * 10**6  # a day ago: every run's times follow the last's


def send_many(c, total, n=100_000, sensors=1000, keep=None):
    global START_US
    ids = (np.arange(n) % sensors).astype(np.uint32)
    values = np.linspace(0, 1, n, dtype=np.float32)
    times = START_US + np.arange(n, dtype=np.int64)
    START_US += total
    sent = 0
    while sent < total:  # bounded: total / n passes
        sent += c.send(ids, values, times)
        if keep is not None:
            keep.extend(values.tolist())  # the control: an object per reading
        times += n  # in place: the same arrays every pass
    return sent


def test_twenty_million_readings_keep_rss_flat():
    with sluice.Gateway(max_sensors=1024, ring_readings=1024, sync="never") as g:
        with g.client(stream_id=601, batch_readings=1000) as c:
            send_many(c, 1_000_000)  # warm-up: the client, the arrays, numpy's caches
            c.flush(timeout=120)
            before = vm_rss()
            sent = send_many(c, 20_000_000)
            report = c.flush(timeout=300)
            after = vm_rss()
        print("VmRSS %d -> %d bytes over 20M readings" % (before, after))
        assert sent == 20_000_000 and report["accepted"] == 21_000_000
        assert after - before < ALLOWANCE, "RSS grew by %d bytes over 20M readings" % (after - before)
        # The control: the same check sees a per-reading object (2M readings, ~50 MB).
        with g.client(stream_id=602) as c:
            keep = []
            before = vm_rss()
            send_many(c, 2_000_000, keep=keep)
            c.flush(timeout=120)
            print("control: VmRSS grew %d bytes over 2M readings kept as objects" % (vm_rss() - before))
            assert vm_rss() - before > ALLOWANCE
            del keep
