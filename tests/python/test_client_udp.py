"""sluice.Client over UDP against a real sluiced: frames fit one datagram, every reading sent
is counted, and the gateway stores them (loopback at a paced size does not drop; the wait is a
condition with a deadline, never a sleep)."""
import pytest

import sluice
from conftest import readings, wait_until


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
def test_udp_readings_arrive(gateway, gso):
    m0 = gateway.metrics()
    accepted0 = m0["sluice_readings_accepted_total"]
    udp_ok0 = m0['sluice_batches_total{transport="udp",status="OK"}']
    n = 20_000
    with gateway.client(stream_id=301 + gso, transport="udp", gso=gso) as c:
        assert c.target == gateway.udp
        c.send(*readings(n, sensors=20, id_base=6000 + 100 * gso))
        report = c.flush(timeout=30)
    # 1,472-byte datagrams: (1472 - 36) / 12 = 119 readings a frame.
    assert report["readings"] == n and report["batches"] == -(-n // 119)
    assert report["sent"] == report["batches"] and report["pending"] == 0 and report["udp_errors"] == 0
    assert report["acked"] == 0  # UDP has no acks
    got = wait_until(lambda: gateway.metrics()["sluice_readings_accepted_total"] - accepted0 >= n)
    assert got
    m = gateway.metrics()
    assert m["sluice_readings_accepted_total"] - accepted0 == n
    assert m['sluice_batches_total{transport="udp",status="OK"}'] - udp_ok0 == report["batches"]
    assert m["sluice_udp_lost_batches_total"] == 0


def test_udp_frame_size_option(gateway):
    with gateway.client(stream_id=310, transport="udp", frame_bytes_max=36 + 12 * 10) as c:
        c.send(*readings(100, sensors=10, id_base=6500))
        assert c.flush(timeout=30)["batches"] == 10
    with pytest.raises(sluice.ArgumentError):
        gateway.client(stream_id=311, transport="udp", frame_bytes_max=70000)
