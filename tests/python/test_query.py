"""sluice.Query against a real sluiced: readings come back as numpy arrays over the response
body (zero copy: they do not own their memory) and equal what was sent; from/to/limit select
as the API says; sensors() follows the paging past one page; sensor(), stats() and metrics()
parse; an HTTP error raises HTTPError with the gateway's text."""
import pytest

import sluice
from conftest import np, readings, stored


@pytest.fixture(scope="module")
def filled(gateway):
    ids, values, times = readings(30_000, sensors=3, id_base=7000)
    values = (np.arange(30_000) * 0.5).astype(np.float32)
    with gateway.client(stream_id=401) as c:
        c.send(ids, values, times)
        c.flush(timeout=60)
    return ids, values, times


def test_readings_are_zero_copy_views(gateway, filled):
    ids, values, times = filled
    with gateway.query() as q:
        t_us, v = q.readings(7001, limit=1_000_000)
    assert t_us.dtype == np.int64 and v.dtype == np.float32
    assert not t_us.flags.owndata and not v.flags.owndata
    assert t_us.base is not None and v.base is not None
    # Both are views of one bytearray: the body, read once, 12 bytes a reading.
    assert isinstance(t_us.base, memoryview) and t_us.base.obj is v.base.obj
    assert isinstance(t_us.base.obj, bytearray) and len(t_us.base.obj) == 12 * len(t_us)
    want = ids == 7001
    assert len(t_us) == 1024  # the ring keeps the newest 1,024 of the sensor's 10,000
    assert np.array_equal(t_us, times[want][-1024:]) and np.array_equal(v, values[want][-1024:])


def test_readings_select(gateway, filled):
    ids, values, times = filled
    mine = times[ids == 7002][-1024:]
    with gateway.query() as q:
        t_us, v = q.readings(7002, from_us=int(mine[100]), to_us=int(mine[199]))
        assert np.array_equal(t_us, mine[100:200]) and len(v) == 100
        t_us, _ = q.readings(7002, limit=5)
        assert np.array_equal(t_us, mine[:5])  # the oldest N
        t_us, v = q.readings(7002, from_us=int(mine[-1]) + 1)
        assert len(t_us) == 0 and len(v) == 0
        for bad in (dict(limit=0), dict(limit=1_000_001), dict(from_us="x")):
            with pytest.raises(sluice.ArgumentError):
                q.readings(7002, **bad)


def test_sensor_stats_metrics(gateway, filled):
    ids, values, times = filled
    with gateway.query() as q:
        info = q.sensor(7000)
        assert info["id"] == 7000 and info["readings_total"] == 10_000
        assert info["last"]["t_us"] == int(times[ids == 7000][-1])
        w = q.stats(7000, window_s=60)
        assert w["count"] == 10_000 and w["exact"] in (True, False)
        assert w["max"] == float(values[ids == 7000].max())
        m = q.metrics()
        assert m["sluice_readings_accepted_total"] >= 30_000
        assert 'sluice_batches_total{transport="tcp",status="OK"}' in m
        assert m["sluice_heap_allocations_after_start_total"] == 0
        assert q.healthz() is True


def test_http_errors_carry_the_gateway_text(gateway):
    with gateway.query() as q:
        with pytest.raises(sluice.HTTPError) as e:
            q.sensor(999_999)
        assert e.value.status == 404 and e.value.error == "unknown sensor"
        with pytest.raises(sluice.HTTPError) as e:
            q.readings(999_999)
        assert e.value.status == 404
        with pytest.raises(sluice.HTTPError) as e:
            q.stats(7000, window_s=10**9)
        assert e.value.status == 400 and "window" in e.value.error
        assert q.sensor(7000)["id"] == 7000  # the connection is still good
    with pytest.raises(sluice.ArgumentError):
        sluice.Query("tcp://127.0.0.1:1")
    with pytest.raises(sluice.Error):
        sluice.Query("http://127.0.0.1:1").sensor(1)  # nothing listening


def test_sensors_follow_the_paging():
    n = 10_000 + 345  # more than one page of the API
    with sluice.Gateway(max_sensors=16384, ring_readings=16) as g:
        ids = np.arange(n, dtype=np.uint32)[::-1].copy()
        with g.client(stream_id=402) as c:
            c.send(ids, np.ones(n, dtype=np.float32))
            c.flush(timeout=60)
        with g.query() as q:
            got = q.sensors()
        assert [s["id"] for s in got] == list(range(n))
        assert stored(g) == n


def test_one_query_many_requests(gateway):
    """One Query serves request after request (the gateway answers Connection: close today, so
    http.client opens a connection a request; a kept-alive one is reused)."""
    with gateway.query() as q:
        for _ in range(50):
            assert q.healthz() is True
            assert q.sensor(7000)["id"] == 7000


def test_parse_metrics():
    text = ('# HELP a x\n# TYPE a counter\na 1\nb{l="v"} 2.5\nc{l="a b",m="}{"} 3 1700000000\n'
            'd NaN\ne{l="q\\"x"} +Inf\n\n')
    m = sluice.parse_metrics(text)
    assert m["a"] == 1 and m['b{l="v"}'] == 2.5 and m['c{l="a b",m="}{"}'] == 3
    assert m["d"] != m["d"] and m['e{l="q\\"x"}'] == float("inf")
