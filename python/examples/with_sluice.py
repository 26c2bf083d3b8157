#!/usr/bin/python3
"""The same job through sluice: a gateway keeps the readings, the script keeps none.

The readings go to a sluice.Gateway as numpy arrays (read in place, no
object per reading); the rolling average is the gateway's window, asked for
with Query.stats. The gateway's memory is planned at start (1,000 sensors x
4,096 retained readings, and its buffers) and flat from then on, whatever
--readings is; older readings stay on disk in its log.

    PYTHONPATH=build/python /usr/bin/python3 python/examples/with_sluice.py --readings 1000000
"""
import time

import sluice
from feed import SENSOR, SENSORS, WINDOW_S, chunks, mib, parse, peak_rss_bytes

# A small gateway: 4 TCP connections, no UDP, a 4 MiB log buffer (the defaults plan for 128
# connections and a 32 MiB buffer, which a one-sender job does not need).
GATEWAY = dict(max_sensors=SENSORS, ring_readings=4096, max_tcp_connections=4, udp="off",
               max_http_writes=1, http_max_body="64K",  # it writes over TCP, not /write
               log_buffer_bytes="4M", sync="batch")


def main():
    n = parse(__doc__.splitlines()[0])
    started, baseline = time.monotonic(), peak_rss_bytes()

    with sluice.Gateway(**GATEWAY) as g:
        with g.client(stream_id=1) as c:
            for ids, values, times in chunks(n):
                c.send(ids, values, times)
        window = g.query().stats(SENSOR, window_s=WINDOW_S)
        metrics = g.metrics()

    seconds, peak = time.monotonic() - started, peak_rss_bytes()
    gateway_peak = metrics["sluice_resident_peak_bytes"]
    print("with_sluice: %d readings in %.1f s; rolling %d s average of sensor %d: %.6f (%d readings)" %
          (n, seconds, WINDOW_S, SENSOR, window["mean"], window["count"]))
    print("peak RSS: this process %s (+%s while ingesting: the feed's chunks, the client's buffers), "
          "%.2f bytes a reading" % (mib(peak), mib(peak - baseline), (peak - baseline) / n))
    print("          the gateway %s (planned %s, flat), %.1f bytes a reading; it holds the newest %d "
          "readings a sensor in RAM, every one in its log on disk" %
          (mib(gateway_peak), mib(metrics["sluice_memory_planned_bytes"]), gateway_peak / n,
           GATEWAY["ring_readings"]))

if __name__ == "__main__":
    main()
