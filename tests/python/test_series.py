"""sluice.Query and named series (docs/spec/LINE_PROTOCOL.md) against a real sluiced: lines
written over POST /write (Query.write, and once with urllib), then lookup(name), readings,
sensor and stats by name, sensors() carrying names, series(prefix) paged across more than one
page (more than 1,000 names, and names long enough that a page holds a few dozen), an unknown
name raising UnknownSeries, the name cache's bound, and write's errors."""
import urllib.parse
import urllib.request

import pytest

import sluice
import sluice._query
from conftest import np, now_us

BASE = 2**31          # --series-id-base's default: the first id a name gets
PUMPS = 1500          # more names than one page of /api/v1/series (1,000) holds
LONG = 60             # names of 1,000 bytes: about two dozen to a page
PER = 5               # readings of each boiler series


def pump(i):
    return "pump,n=%04d flow" % i


def long_name(i):
    return "long,k=%s%03d v" % ("x" * 984, i)


@pytest.fixture(scope="module")
def gw():
    with sluice.Gateway(max_sensors=4096, ring_readings=64) as g:
        yield g


@pytest.fixture(scope="module")
def written(gw):
    """Readings written once for the module: {name: (times_us, values)}."""
    t0 = now_us() - 600 * 10**6
    want = {}
    lines = []
    for k in range(PER):
        t = t0 + k * 10**6
        # Tags out of order on the wire: the name is canonical (sorted by key).
        lines.append("boiler,site=north,room=a temp=%s,hum=%di %d" % (20 + 0.5 * k, 40 + k, t * 1000))
        lines.append("boiler,room=b temp=%s %d" % (30 - k, t * 1000))
        want.setdefault("boiler,room=a,site=north temp", ([], []))
        want["boiler,room=a,site=north temp"][0].append(t)
        want["boiler,room=a,site=north temp"][1].append(20 + 0.5 * k)
        want.setdefault("boiler,room=a,site=north hum", ([], []))
        want["boiler,room=a,site=north hum"][0].append(t)
        want["boiler,room=a,site=north hum"][1].append(40 + k)
        want.setdefault("boiler,room=b temp", ([], []))
        want["boiler,room=b temp"][0].append(t)
        want["boiler,room=b temp"][1].append(30 - k)
    with gw.query() as q:
        assert q.write(lines) == (3 * PER, 0)
        # More names than a page holds, at ms precision, as one str.
        t_ms = (t0 + PER * 10**6) // 1000
        body = "".join("%s=%d %d\n" % (pump(i), i, t_ms) for i in range(PUMPS))
        assert q.write(body, precision="ms") == (PUMPS, 0)
        for i in range(PUMPS):
            want[pump(i)] = ([t_ms * 1000], [float(i)])
        assert q.write([("%s=%d" % (long_name(i), i)).encode() for i in range(LONG)]) == (LONG, 0)
        for i in range(LONG):
            want[long_name(i)] = (None, [float(i)])  # at the gateway's receive time
        # A measurement named "17"; a string field is refused, the line's other field kept.
        assert q.write('17 v=3,state="on"') == (1, 1)
    # The same endpoint without the package: urllib, as any script would.
    req = urllib.request.Request(gw.http + "/write?precision=s", data=b"urllib,via=plain v=1.25 %d\n" % (t0 // 10**6),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204 and r.headers["X-Sluice-Accepted"] == "1" and r.headers["X-Sluice-Rejected"] == "0"
    want["urllib,via=plain v"] = ([t0 // 10**6 * 10**6], [1.25])
    # And a native sensor, id 17: a bare id, no name.
    with gw.client(stream_id=501) as c:
        c.send(np.array([17], dtype=np.uint32), np.array([7.5], dtype=np.float32),
               np.array([t0], dtype=np.int64))
        c.flush(timeout=30)
    return want


def count_requests(q):
    """The paths `q` requests from now on, appended to the list returned."""
    asked = []
    real = q._request

    def counting(path, read_body):
        asked.append(path)
        return real(path, read_body)

    q._request = counting
    return asked


def test_lookup_gives_named_ids(gw, written):
    with gw.query() as q:
        ids = {name: q.lookup(name) for name in written}
        assert len(set(ids.values())) == len(ids)  # one id a name
        assert all(BASE <= i < 2**32 for i in ids.values())
        # Ids are given in the order names first arrive: the first line's temp, then its hum.
        assert ids["boiler,room=a,site=north temp"] == BASE
        assert ids["boiler,room=a,site=north hum"] == BASE + 1
        assert ids["boiler,room=b temp"] == BASE + 2
        assert q.lookup(long_name(7)) == ids[long_name(7)]
        assert q.lookup("17 v") >= BASE


def test_unknown_names_raise(gw, written):
    with gw.query() as q:
        for name in ("boiler,site=north,room=a temp",  # not canonical: tags out of order
                     "boiler,room=a temp", "nothing here", "", "17"):
            with pytest.raises(sluice.UnknownSeries) as e:
                q.lookup(name)
            assert e.value.name == name and repr(name) in str(e.value)
            assert isinstance(e.value, LookupError) and isinstance(e.value, sluice.HTTPError)
            assert isinstance(e.value, sluice.Error)
            assert e.value.status == 404 and e.value.error == "unknown series"
        with pytest.raises(sluice.UnknownSeries):
            q.readings("no such series")
        with pytest.raises(sluice.UnknownSeries):
            q.stats("no such series", window_s=60)
        # An unknown name is not kept: once written, it is found.
        with pytest.raises(sluice.UnknownSeries):
            q.lookup("late v")
        assert q.write("late v=1") == (1, 0)
        assert q.lookup("late v") >= BASE
        # Names that cannot be asked for are bad arguments, not unknown series.
        for bad in (b"boiler,room=b temp", None, 17.0, "a\x00b v", "\ud800 v", "m v" + "x" * 1024):
            with pytest.raises(sluice.ArgumentError):
                q.lookup(bad)


def test_readings_sensor_stats_by_name(gw, written):
    with gw.query() as q:
        sample = [n for n in written if not n.startswith("pump,") or n.endswith("00 flow")]
        for name in sample:
            times, values = written[name]
            t_us, v = q.readings(name)
            assert v.tolist() == values and (times is None or t_us.tolist() == times)
            i = q.lookup(name)
            t2, v2 = q.readings(i)  # the id gives the same readings
            assert np.array_equal(t_us, t2) and np.array_equal(v, v2)
        name = "boiler,room=a,site=north temp"
        t_us, v = q.readings(name, from_us=written[name][0][1], to_us=written[name][0][3], limit=2)
        assert t_us.tolist() == written[name][0][1:3]
        info = q.sensor(name)
        assert info["id"] == BASE and info["name"] == name and info["readings_total"] == PER
        assert q.sensor(BASE) == info
        w = q.stats(name, window_s=3600)
        assert w["count"] == PER and w["max"] == 22.0 and w == q.stats(BASE, window_s=3600)
        # Ints work as before; a str of digits is a name, never an id; a bool is not an id.
        assert q.readings(17)[1].tolist() == [7.5] and "name" not in q.sensor(17)
        with pytest.raises(sluice.UnknownSeries):
            q.readings("17")
        with pytest.raises(sluice.UnknownSeries):
            q.sensor("17")
        for bad in (True, False, -1, 2**32, 1.0, None, b"17"):
            with pytest.raises(sluice.ArgumentError):
                q.readings(bad)
            with pytest.raises(sluice.ArgumentError):
                q.sensor(bad)
        with pytest.raises(sluice.ArgumentError):
            q.stats(name, window_s=0)  # arguments are checked before a name is looked up
        with pytest.raises(sluice.ArgumentError):
            q.readings("no such series", limit=0)


def test_names_are_looked_up_once(gw, written):
    with gw.query() as q:
        asked = count_requests(q)
        name = "boiler,room=b temp"
        for _ in range(3):
            q.readings(name)
            q.sensor(name)
            q.stats(name, window_s=60)
        lookups = [p for p in asked if p.startswith("/api/v1/series")]
        assert len(lookups) == 1 and len(asked) == 1 + 9


def test_the_name_cache_is_bounded(gw, written, monkeypatch):
    monkeypatch.setattr(sluice._query, "NAME_CACHE", 8)
    names = [pump(i) for i in range(50)]
    with gw.query() as q:
        first = [q.lookup(n) for n in names]
        assert len(q._names) == 8
        assert list(q._names) == names[-8:]  # the oldest forgotten first
        assert [q.lookup(n) for n in names] == first  # forgotten answers are asked again, the same
        assert len(q._names) == 8


def test_sensors_carry_names(gw, written):
    with gw.query() as q:
        got = q.sensors()
        by_id = {s["id"]: s for s in got}
        assert [s["id"] for s in got] == sorted(by_id)
        for name in written:
            s = by_id[q.lookup(name)]
            assert s["name"] == name and s["readings_total"] == len(written[name][1])
        assert "name" not in by_id[17] and by_id[17]["last_value"] == 7.5
        named = [s for s in got if "name" in s]
        assert len(named) == len(q.series())


def test_series_pages_through_the_prefix(gw, written):
    with gw.query() as q:
        asked = count_requests(q)
        pumps = q.series("pump,")
        assert [n for _, n in pumps] == [pump(i) for i in range(PUMPS)]  # sorted by name
        assert [i for i, _ in pumps] == [q.lookup(pump(i)) for i in range(PUMPS)]
        assert len([p for p in asked if "prefix=" in p]) >= 2  # more than a page
        asked.clear()
        longs = q.series("long,")
        assert [n for _, n in longs] == [long_name(i) for i in range(LONG)]
        # A page holds as many long names as fit the gateway's 32 KiB answer, not `limit`.
        assert len([p for p in asked if "prefix=" in p]) >= 2
        everything = q.series()
        assert [n for _, n in everything] == sorted(n for _, n in everything)
        assert len(everything) == len(set(everything)) >= PUMPS + LONG + 5
        assert q.series("pump,", limit=7) == pumps[:7]
        assert q.series("pump,", limit=1234) == pumps[:1234]
        assert q.series("pump,", limit=0) == []
        assert q.series("pump,n=0999") == [pumps[999]]
        assert q.series("nothing with this prefix") == []
        assert q.series("boiler,room=a,") == [(BASE + 1, "boiler,room=a,site=north hum"),
                                              (BASE, "boiler,room=a,site=north temp")]
        for bad in (dict(prefix=None), dict(prefix=b"pump"), dict(limit=-1), dict(limit=True)):
            with pytest.raises(sluice.ArgumentError):
                q.series(**bad)


def test_series_over_the_raw_api(gw, written):
    """What series() relies on, asked directly: total stays the count of matches whatever the
    page, and a page of long names stops short of `limit`."""
    with gw.query() as q:
        page = q._json("/api/v1/series?prefix=long%2C&offset=0&limit=1000")
        assert page["total"] == LONG and 0 < len(page["series"]) < LONG
        page = q._json("/api/v1/series?prefix=pump%2C&offset=1490&limit=1000")
        assert page["total"] == PUMPS and [s["name"] for s in page["series"]] == [pump(i) for i in range(1490, PUMPS)]
        page = q._json("/api/v1/series?prefix=pump%2C&offset=99999&limit=10")
        assert page == {"total": PUMPS, "series": []}
        name = "boiler,room=a,site=north temp"
        assert q._json("/api/v1/series?name=" + urllib.parse.quote(name, safe="")) == {"id": BASE, "name": name}


def test_write_errors():
    with sluice.Gateway(max_sensors=256, ring_readings=16, http_max_body=4096) as g:
        with g.query() as q:
            with pytest.raises(sluice.HTTPError) as e:  # line 2 does not parse; lines 1 and 3 are kept
                q.write(["w v=1", "not line protocol", "w,t=b v=2"])
            assert e.value.status == 400 and "line 2" in e.value.error
            assert (e.value.accepted, e.value.rejected) == (2, 0)
            assert q.readings("w v")[1].tolist() == [1.0] and q.readings("w,t=b v")[1].tolist() == [2.0]
            with pytest.raises(sluice.HTTPError) as e:
                q.write("w v=1\n" * 1000)  # 6,000 bytes over a 4,096-byte bound: nothing stored
            assert e.value.status == 413 and "http-max-body" in e.value.error
            assert q.sensor("w v")["readings_total"] == 1
            for bad in (dict(lines=17), dict(lines=[1.5]), dict(lines="w v=1", precision="ps"),
                        dict(lines="w v=1", precision=None)):
                with pytest.raises(sluice.ArgumentError):
                    q.write(**bad)
            assert q.write("") == (0, 0) and q.write([]) == (0, 0)
            assert q.write(bytearray(b"w v=3 %d\n" % (now_us() * 1000))) == (1, 0)
            assert q.write((b"w,t=b v=%d %d" % (k, now_us() + k) for k in range(3)), precision="us") == (3, 0)
