#!/usr/bin/python3
"""The ingest loop of the Python service in the incident (the post-mortem).

Every reading (8 bytes on the sensor: a time and an f32 value) became a dict
appended to one list that only grew; the rolling average was computed by
iterating over that list. This is that code, fed the same readings as
with_sluice.py. Run it with --readings 1000000 and 10000000 and watch the
peak RSS: about 300 to 400 bytes a reading, so a busy day did not fit.

    /usr/bin/python3 python/examples/incident.py --readings 1000000
"""
import time

from feed import SENSOR, WINDOW_S, chunks, mib, parse, peak_rss_bytes


def main():
    n = parse(__doc__.splitlines()[0])
    started, baseline = time.monotonic(), peak_rss_bytes()

    readings = []                                    # every reading, for ever
    for ids, values, times in chunks(n):             # each batch off the wire
        for sensor_id, value, t_us in zip(ids.tolist(), values.tolist(), times.tolist()):
            readings.append({"sensor_id": sensor_id, "t_us": t_us, "value": value})

    mine = [r for r in readings if r["sensor_id"] == SENSOR]   # the rolling average: iterate
    last_us = mine[-1]["t_us"]
    window = [r["value"] for r in mine if r["t_us"] > last_us - WINDOW_S * 1_000_000]
    average = sum(window) / len(window)

    seconds, peak = time.monotonic() - started, peak_rss_bytes()
    print("incident: %d readings in %.1f s; rolling %d s average of sensor %d: %.6f (%d readings)" %
          (n, seconds, WINDOW_S, SENSOR, average, len(window)))
    print("peak RSS: this process %s (+%s for the readings), %.1f bytes a reading" %
          (mib(peak), mib(peak - baseline), (peak - baseline) / n))


if __name__ == "__main__":
    main()
