"""The readings both examples ingest, and how they report memory.

The feed: N readings of SENSORS sensors, each sensor once a second of event
time (the last one now), values a slow sine plus a ripple, produced in numpy
chunks of CHUNK readings so the feed itself takes no memory to speak of.
Both examples then answer the same question: the rolling 60-second average
of sensor 17.
"""
import argparse
import resource
import time

import numpy as np

SENSORS = 1000
SENSOR = 17     # the sensor whose rolling average is asked for
WINDOW_S = 60
CHUNK = 100_000


def parse(what):
    p = argparse.ArgumentParser(description=what)
    p.add_argument("--readings", type=int, default=1_000_000, help="readings to ingest (default 1,000,000)")
    n = p.parse_args().readings
    if n < SENSORS * WINDOW_S:
        p.error("--readings: at least %d (a window of every sensor)" % (SENSORS * WINDOW_S))
    return n


def chunks(n):
    """(ids uint32, values float32, times_us int64) arrays of at most CHUNK readings."""
    step_us = 1_000_000 // SENSORS  # every sensor once a second
    start_us = int(time.time() * 1e6) - n * step_us
    for first in range(0, n, CHUNK):
        i = np.arange(first, min(first + CHUNK, n), dtype=np.int64)
        ids = (i % SENSORS).astype(np.uint32)
        values = (20.0 + 5.0 * np.sin(i / 7e5) + 0.25 * np.sin(i * 0.37)).astype(np.float32)
        yield ids, values, start_us + i * step_us


def peak_rss_bytes():
    """This process's peak RSS (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(n):
    return "%.1f MiB" % (n / 2**20)
