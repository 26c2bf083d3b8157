"""What a mature client must survive, against a real sluiced: OVERLOADED answers (a log sync
that fails, injected with --io-faults) are resent in order under their own seq until every
reading is stored once; a gateway restarted on the same ports and data directory, by SIGTERM
or SIGKILL, costs no reading and doubles none; a flush that cannot finish raises Timeout with
the counts and the reason; a BAD_CRC answer raises RefusedError naming the batch."""
import gc

import pytest

import sluice
from conftest import SMALL, FakeGateway, readings, stored


def test_overloaded_batches_are_resent():
    # Syncs 3, 4 and 10 fail: the batches of those commits are answered OVERLOADED (nothing
    # acked that was not stored) and the stream's later batches too, until the resend.
    with sluice.Gateway(io_faults="fdatasync:EIO:3-4,fdatasync:EIO:10", **SMALL) as g:
        n = 200_000
        with g.client(stream_id=201, batch_readings=500) as c:
            c.send(*readings(n, sensors=100))
            report = c.flush(timeout=120)
        assert report["overloaded"] >= 1 and report["resent"] >= 1
        assert report["acked"] == report["batches"] == 400
        assert report["accepted"] == n and report["duplicate"] == 0 and report["pending"] == 0
        m = g.metrics()
        assert m["sluice_log_sync_errors_total"] == 3
        assert m['sluice_batches_total{transport="tcp",status="OVERLOADED"}'] == report["overloaded"]
        assert m["sluice_readings_accepted_total"] == n
        assert stored(g) == n


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_reconnect_across_a_gateway_restart(kill):
    """Readings sent before, while and after the gateway is down are all stored exactly once."""
    with sluice.Gateway(**SMALL) as g:
        ports = (g.tcp, g.udp, g.http)
        ids, values, times = readings(60_000, sensors=60)
        with g.client(stream_id=202, batch_readings=1000, window=64, backoff_max=0.2) as c:
            c.send(ids[:20_000], values[:20_000], times[:20_000])
            assert c.flush(timeout=60)["acked"] == 20  # the connection is up
            c.send(ids[20_000:40_000], values[20_000:40_000], times[20_000:40_000])
            c.push()  # written, acks not read: a SIGKILL may lose them, and then the resend is a DUPLICATE
            g.restart(kill=kill, timeout=10)
            assert (g.tcp, g.udp, g.http) == ports
            c.send(ids[40_000:], values[40_000:], times[40_000:])
            report = c.flush(timeout=120)
            assert report["reconnects"] >= 1 and report["pending"] == 0
        assert report["batches"] == 60 and report["acked"] + report["duplicate"] == 60
        assert report["accepted"] + 1000 * report["duplicate"] == 60_000
        assert stored(g) == 60_000  # recovered from the log: nothing lost, nothing doubled
        with g.query() as q:
            t_us, v = q.readings(7, limit=10_000)
        assert list(t_us) == list(times[7::60]) and list(v) == list(values[7::60])


def test_flush_timeout_raises_with_counts_and_reason():
    silent = FakeGateway(status=None)  # accepts (the kernel's backlog) but never reads nor acks
    try:
        c = sluice.Client(silent.target, 203, batch_readings=100)
        c.send(*readings(1000))
        with pytest.raises(sluice.Timeout) as e:
            c.flush(timeout=0.3)
        assert isinstance(e.value, TimeoutError) and isinstance(e.value, sluice.Error)
        assert e.value.counts["pending"] == 10 and e.value.counts["acked"] == 0
        assert "10 batches not acknowledged" in str(e.value)
        with pytest.raises(sluice.Timeout):
            c.close(timeout=0.1)
        assert c.closed
    finally:
        silent.close()
    # A gateway that stopped: the reason is the library's text for the refused connection.
    g = sluice.Gateway(**SMALL)
    c = g.client(stream_id=204, backoff_max=0.05)
    c.send([1], [1.0])
    assert c.flush(timeout=60)["acked"] == 1
    g.stop()
    c.send([1], [2.0])
    with pytest.raises(sluice.Timeout) as e:
        c.flush(timeout=0.5)
    assert e.value.counts["pending"] == 1 and e.value.counts["acked"] == 1
    assert "refused" in e.value.last_error.lower(), e.value.last_error
    del e  # its traceback holds the client
    with pytest.warns(ResourceWarning, match="1 batches not acknowledged"):
        del c  # dropped unflushed: the loss is said, not silent
        gc.collect()


def test_bad_crc_answer_names_the_batch():
    fake = FakeGateway(status=2)  # BAD_CRC to every frame
    try:
        c = sluice.Client(fake.target, 205, batch_readings=10, first_seq=5000)
        c.send(*readings(10))
        with pytest.raises(sluice.RefusedError) as e:
            c.flush(timeout=30)
        assert e.value.status == "BAD_CRC" and e.value.batch_seq == 5000
        assert "BAD_CRC" in str(e.value) and "5000" in str(e.value)
        assert e.value.counts["refused"] == 1
        with pytest.raises(sluice.RefusedError):  # the client stays stopped
            c.send([1], [1.0])
        c._core.close()
    finally:
        fake.close()
    assert fake.frames[0] == (205, 5000, 10)


def test_blocking_calls_release_the_gil_and_take_signals():
    """While flush waits (with the GIL released, in slices), another thread runs, and a SIGINT
    ends an unbounded flush with KeyboardInterrupt instead of hanging it."""
    import os
    import signal
    import threading

    silent = FakeGateway(status=None)
    try:
        c = sluice.Client(silent.target, 206)
        c.send(*readings(10))
        ticks = [0]
        done = threading.Event()

        def count():
            while not done.is_set():
                ticks[0] += 1
                done.wait(0.001)

        t = threading.Thread(target=count)
        t.start()
        try:
            before = ticks[0]
            with pytest.raises(sluice.Timeout):
                c.flush(timeout=1.0)
            during = ticks[0] - before
        finally:
            done.set()
            t.join()
        # The other thread ran while flush waited: with the GIL held it could not have ticked
        # more than once or twice (a switch interval is 5 ms; a tick waits 1 ms).
        assert during >= 10, during
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                c.flush(timeout=None)
        finally:
            timer.cancel()
        c._core.close()
    finally:
        silent.close()
