"""sluice.Client over acknowledged TCP against a real sluiced: the report's counts are exact
and agree with the gateway; every input type the spec names is sent, in place or converted;
bad arguments raise and send nothing; NaN is counted as rejected, not raised; a restarted
sender with the same stream_id is not answered DUPLICATE (and one that reuses old seqs is,
so the check can fail)."""
import array

import pytest

import sluice
from conftest import np, readings, stored, wait_until


def test_acks_and_exact_counts(gateway):
    before = stored(gateway)
    ids, values, times = readings(250_000, sensors=50)
    with gateway.client(stream_id=101, batch_readings=1000) as c:
        assert c.send(ids, values, times) == 250_000
        report = c.flush(timeout=60)
    assert report["batches"] == 250 and report["readings"] == 250_000
    assert report["acked"] == 250 and report["accepted"] == 250_000
    assert report["rejected"] == 0 and report["duplicate"] == 0 and report["pending"] == 0
    assert report["sent"] >= 250 and report["reconnects"] == 0
    for key in ("batches", "readings", "acked", "duplicate", "accepted", "rejected", "resent", "reconnects",
                "sent", "sent_readings", "sockets", "overloaded", "connect_failures", "ack_timeouts", "refused",
                "refused_seq", "refused_status", "udp_errors", "pending", "buffered", "next_seq"):
        assert key in report
    assert stored(gateway) - before == 250_000
    # The last reading of a sensor is what was sent last for it.
    with gateway.query() as q:
        info = q.sensor(int(ids[-1]))
    assert info["last"]["t_us"] == int(times[-1]) and info["last"]["value"] == float(values[-1])


def test_every_input_type(gateway):
    base = readings(1, start_us=None)[2][0]
    sent = 0
    with gateway.client(stream_id=102) as c:
        # In place: numpy of the right dtypes, array.array, memoryview, times omitted.
        ids, values, times = readings(1000, sensors=10, start_us=base, id_base=1000)
        sent += c.send(ids, values, times)
        sent += c.send(array.array("I", [1010, 1011]), array.array("f", [1.5, 2.5]),
                       array.array("q", [base + 2000, base + 2001]))
        sent += c.send(memoryview(np.array([1012], dtype=np.uint32)), memoryview(np.array([3.5], dtype=np.float32)))
        # Converted: lists, other dtypes, a strided view, a 2-D array.
        sent += c.send([1013, 1014], [4.5, 5.5], [base + 3000, base + 3001])
        sent += c.send(np.array([1015], dtype=np.int64), np.array([6.5], dtype=np.float64),
                       np.array([base + 4000], dtype=np.float64))
        wide = np.arange(20, dtype=np.uint32) + 1020
        sent += c.send(wide[::2], np.ones(10, dtype=np.float32), None)
        sent += c.send(np.array([[1030, 1031]], dtype=np.uint32), np.array([[7.0, 8.0]], dtype=np.float32))
        sent += c.append(1033, 9.0, base + 5000)
        report = c.flush(timeout=60)
    assert sent == 1000 + 2 + 1 + 2 + 1 + 10 + 2 + 1
    assert report["readings"] == sent and report["accepted"] == sent and report["rejected"] == 0
    with gateway.query() as q:
        assert q.sensor(1014)["last"]["value"] == 5.5
        assert q.sensor(1015)["last"] == {"t_us": int(base + 4000), "value": 6.5}
        assert q.sensor(1033)["last"] == {"t_us": int(base + 5000), "value": 9.0}
        assert q.sensor(1028)["readings_total"] == 1  # wide[::2] took 1020, 1022, ..., 1038


def test_more_than_one_chunk_converted(gateway):
    """A list longer than the conversion chunk is sent whole, in order."""
    n = sluice._client.CHUNK * 2 + 17
    ids, values, times = readings(n, sensors=7, id_base=2000)
    with gateway.client(stream_id=103) as c:
        assert c.send(ids.tolist(), values.astype(np.float64), times.tolist()) == n
        report = c.flush(timeout=60)
    assert report["accepted"] == n
    with gateway.query() as q:
        t_us, v = q.readings(int(ids[-1]), limit=1_000_000)
    assert t_us[-1] == times[-1] and v[-1] == values[-1]


def test_bad_arguments_send_nothing(gateway):
    with gateway.client(stream_id=104) as c:
        for args in ((np.zeros(3, np.uint32), np.zeros(2, np.float32)),
                     (np.zeros(3, np.uint32), np.zeros(3, np.float32), np.zeros(4, np.int64)),
                     ([1, 2, 3], [1.0, 2.0]),
                     ([1, 2], [1.0, 2.0], [5])):
            with pytest.raises(sluice.ArgumentError, match="lengths differ"):
                c.send(*args)
        with pytest.raises(ValueError):  # ArgumentError is a ValueError too
            c.send([-1], [1.0])
        with pytest.raises(sluice.ArgumentError, match="lie in"):
            c.send(np.array([2**32], dtype=np.int64), np.array([1.0]))
        with pytest.raises(sluice.ArgumentError, match="whole numbers"):
            c.send([1.5], [1.0])
        with pytest.raises(sluice.ArgumentError):
            c.send(["a"], [1.0])
        with pytest.raises(sluice.ArgumentError):
            c.send(5, [1.0])
        assert c.counts()["readings"] == 0 and c.counts()["buffered"] == 0
        assert c.send([], []) == 0
        assert c.flush(timeout=10)["batches"] == 0
    for bad in (dict(stream_id=-1), dict(stream_id=2**32), dict(stream_id=1, batch_readings=70000),
                dict(stream_id=1, first_seq=0), dict(stream_id=1, window=-1)):
        with pytest.raises(sluice.ArgumentError):
            gateway.client(**bad)
    with pytest.raises(sluice.ArgumentError):
        sluice.Client("http://127.0.0.1:1", 1)
    with pytest.raises(sluice.Error):
        sluice.Client("tcp://no-such-host.invalid:7400", 1)


def test_nan_is_counted_as_rejected(gateway):
    ids, values, times = readings(1000, sensors=10, id_base=3000)
    values[::100] = np.nan
    values[5] = np.inf
    with gateway.client(stream_id=105) as c:
        c.send(ids, values, times)
        report = c.flush(timeout=60)
    assert report["rejected"] == 11 and report["accepted"] == 989 and report["acked"] == 1
    m = gateway.metrics()
    assert m['sluice_readings_rejected_total{reason="nonfinite"}'] >= 11


def test_restarted_sender_is_not_answered_duplicate(gateway):
    """A second client with the same stream_id (a restarted process) starts above the first's
    seqs by default; one that starts at seq 1 again is answered DUPLICATE (the trap the
    default avoids)."""
    first = readings(5000, sensors=5, id_base=4000)
    with gateway.client(stream_id=106) as c:
        c.send(*first)
        r1 = c.flush(timeout=60)
    assert r1["accepted"] == 5000
    second = readings(5000, sensors=5, id_base=4000, start_us=int(first[2][-1]) + 1)
    with gateway.client(stream_id=106) as c:
        c.send(*second)
        r2 = c.flush(timeout=60)
    assert r2["duplicate"] == 0 and r2["accepted"] == 5000
    third = readings(1000, sensors=5, id_base=4000, start_us=int(second[2][-1]) + 1)
    with gateway.client(stream_id=106, first_seq=1) as c:
        c.send(*third)
        r3 = c.flush(timeout=60)
    assert r3["duplicate"] == r3["batches"] == 1 and r3["accepted"] == 0


def test_close_and_context_manager(gateway):
    c = gateway.client(stream_id=107)
    c.send(*readings(10, id_base=5000))
    report = c.close()
    assert report["accepted"] == 10 and c.closed
    assert c.close() is None
    with pytest.raises(sluice.Error, match="closed"):
        c.send([1], [1.0])
    with pytest.raises(sluice.Error, match="closed"):
        c.counts()
    # Leaving a with-block on an exception closes without hiding it.
    with pytest.raises(KeyError):
        with gateway.client(stream_id=108) as c2:
            c2.send(*readings(10, id_base=5100))
            raise KeyError("mine")
    assert c2.closed
    assert c2.memory_bytes > 0


def test_without_acks(gateway):
    """ack=False: frames without ACK_REQUESTED; close() waits for the gateway's end of stream,
    after which every reading is stored."""
    before = stored(gateway)
    c = gateway.client(stream_id=109, ack=False)
    c.send(*readings(50_000, sensors=10, id_base=5200))
    report = c.close(timeout=60)
    assert report["acked"] == 0 and report["readings"] == 50_000 and report["pending"] == 0
    # Read, not yet applied, perhaps: without acks nothing waits for the store.
    assert wait_until(lambda: stored(gateway) - before == 50_000)


def test_many_dimensions_and_strides(gateway):
    """A 2-D or non-contiguous input is read in C order, however many chunks it takes."""
    n = sluice._client.CHUNK + 1000
    flat_ids = (np.arange(2 * n) % 10 + 5300).astype(np.int64)
    ids = flat_ids.reshape(2, n)[:, ::2]  # non-contiguous, 2-D: n readings, C order
    values = np.arange(n, dtype=np.float64)
    times = readings(n)[2]
    with gateway.client(stream_id=110) as c:
        assert c.send(ids, values, times) == n
        assert c.flush(timeout=60)["accepted"] == n
    with pytest.raises(sluice.ArgumentError, match="lengths differ"):
        with gateway.client(stream_id=111) as c:
            c.send(np.zeros((2, 3), np.uint32), np.zeros(5, np.float32))
