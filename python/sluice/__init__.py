"""sluice: send readings to a Sluice gateway, read them back, and run one (docs/spec/CLIENT.md).

    import numpy as np, sluice

    with sluice.Gateway(max_sensors=10000, ring_readings=1024) as g:
        with g.client(stream_id=42) as c:          # or sluice.Client("tcp://HOST:PORT", stream_id=42)
            c.send(ids, values, times_us)          # uint32, float32, int64 arrays, read in place
            report = c.flush(timeout=10.0)         # every batch acked: {"acked": ..., "accepted": ...}
        t_us, v = g.query().readings(17)           # numpy views over the response body

Client   a sender over libsluice (the C extension sluice._sluice): arrays with the
         buffer protocol are read in place with the GIL released; batches are cut,
         checksummed, pipelined, acknowledged, resent and counted by the library.
Query    the HTTP API: readings (zero copy), sensor, stats, sensors, metrics; named
         series (line protocol): lookup, series, and a name wherever an id goes; write.
Gateway  a sluiced of this process's own, on free loopback ports.

Errors, all derived from sluice.Error (which carries .code, the library's
negative code, where there is one):

    Error
     +-- ArgumentError (also a ValueError)   lengths that differ, a value out of range,
     |                                       a bad target or option; nothing was sent
     +-- Timeout (also a TimeoutError)       flush() or send() waited too long:
     |                                       .counts, .last_error, .taken
     +-- RefusedError                        the gateway answered BAD_CRC, MALFORMED or
     |                                       UNAUTHORIZED: .status, .batch_seq, .counts
     +-- HTTPError                           an HTTP error: .status, .error (the gateway's
     |    |                                  "error" text), .url
     |    +-- UnknownSeries (also a          no series of that name (Query.lookup, or a
     |        LookupError)                   name given for a sensor id): .name
     +-- GatewayError                        sluiced not found, not ready in time, or exited
                                             early: .returncode, .stderr

A reading whose value is not finite is not an error: the gateway rejects and
counts it (the report's "rejected").
"""
from ._errors import ArgumentError, Error, GatewayError, HTTPError, RefusedError, Timeout, UnknownSeries
from ._client import Client
from ._query import Query, parse_metrics
from ._gateway import Gateway, find_binary

__version__ = "0.1.0"
__all__ = ["Client", "Query", "Gateway", "Error", "ArgumentError", "Timeout", "RefusedError", "HTTPError",
           "UnknownSeries", "GatewayError", "parse_metrics", "find_binary"]
