"""Two gateways chained through a real broker, the edge-to-site topology (MQTT.md, issue 14):
gateway A takes native batches over acked TCP and forwards them with
`--uplink up=mqtt://.../site/a?format=native&qos=1`; gateway B subscribes `site/a=native`.

Proves exactly-once end to end through a SIGKILL: A is SIGKILLed mid-stream (the sender pipelining,
the uplink publishing), restarted on its data directory, and the sender resends what it had no ack
for (PROTOCOL.md); B ends holding exactly A's readings, every acked batch once, in order, with its
values (durability.Sender.verify), and so does A. Redeliveries through the broker are B's
duplicates, never stored twice.
"""
import tempfile

from durability import Sender
from engines import Mosquitto
from harness import Checks, Daemon, _tmp_dirs, wait_until

c = Checks("test_mqtt_chain")
tmp = tempfile.mkdtemp(prefix="sluice-chain-")
_tmp_dirs.append(tmp)
broker = Mosquitto(tmp)

b = Daemon("--mqtt-broker", broker.url, "--mqtt-subscribe", "site/a=native",
           "--mqtt-client-id", "chain-site", sensors=64, ring=65536)
c.check(wait_until(lambda: b.json("/api/v1/mqtt")[1]["connected"], 30), "B connected")

UPLINK = ("--uplink", "up=mqtt://127.0.0.1:%d/site/a?format=native&qos=1" % broker.port,
          "--uplink-stream-id", "up=4242", "--uplink-flush-interval", "20ms",
          "--uplink-batch-bytes", "16K")
a = Daemon(*UPLINK, sensors=64, ring=65536)
sender = Sender(streams=(1, 2), sensors_per_stream=4, window=16, max_seq=60000)
sender.run(a.tcp_port, seconds=1.5)
acked_before = dict(sender.acked)
c.check(all(v > 0 for v in acked_before.values()), "A acked batches before the kill: %r" % acked_before)
c.check(wait_until(lambda: b.json("/api/v1/mqtt")[1]["readings_accepted"] > 0, 30),
        "B received some of A's readings before the kill")
up = a.json("/api/v1/uplinks")[1]["uplinks"][0]
print("at the kill: A's uplink sent %d readings, backlog %d bytes" % (up["sent_readings"], up["backlog_bytes"]))
a.kill_keep_data()  # mid-stream: the sender's window in flight, the uplink publishing
a2 = Daemon(*UPLINK, sensors=64, ring=65536, data_dir=a.data_dir)
sender.run(a2.tcp_port, seconds=2)
c.check(sender.run(a2.tcp_port, seconds=60, new_batches=False, until_all_acked=True),
        "every batch acked after A's restart")
want = sum(sender.acked.values()) * sender.k
c.check(wait_until(lambda: b.json("/api/v1/mqtt")[1]["readings_accepted"] >= want, 90),
        "B took all %d readings: %r" % (want, b.json("/api/v1/mqtt")[1]))
c.check(wait_until(lambda: a2.json("/api/v1/uplinks")[1]["uplinks"][0]["backlog_bytes"] == 0, 30),
        "A's uplink caught up")
sender.verify(a2, c, "A")
sender.verify(b, c, "B, through the broker")
st = b.json("/api/v1/mqtt")[1]
c.eq(st["readings_accepted"], want, "B stored each reading once (redeliveries were duplicates)")
c.eq(st["messages"]["bad"], 0, "no bad message at B")
print("chain: %d batches, A's SIGKILL after %r acked; B: %r" % (sum(sender.acked.values()), acked_before,
                                                               st["messages"]))
a2.stop()
b.stop()
broker.stop()
c.finish()
