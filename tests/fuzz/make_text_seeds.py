#!/usr/bin/env python3
"""Write the seed corpora of fuzz_config, fuzz_mqtt_value and fuzz_say into seeds/fuzz_config/,
seeds/fuzz_mqtt_value/ and seeds/fuzz_say/.

fuzz_config: the first line is command-line words (split at spaces), the
rest the config file. fuzz_say: byte 0 is the format (bit 0: JSON), the
level (bits 1..3), the suffix (bit 4) and the subsystem (bits 5..7); bytes
1..8 the time in microseconds (little-endian int64); the rest the message.
fuzz_mqtt_value: byte 0 is the topic's length, then the topic, then the payload.
Each seed sits at an edge test_config or test_say covers. Run from anywhere:
    python3 tests/fuzz/make_text_seeds.py
"""
import os
import struct

# Every key a file may hold, each with a good value.
GOOD = """# every key a config file may hold
udp = 127.0.0.1:17400
tcp = [::1]:17400
http = off
data-dir = /var/lib/sluice
max-sensors = 65536
ring-readings = 4096
windows = 10s, 1m ,1h
ewma-half-life = 60s
future-skew = 300s
coarse-buckets = 60
max-streams = 4096
max-tcp-connections = 128
max-tcp-connections-per-ip = 32
tcp-idle-timeout = 60s
tcp-frame-timeout = 5s
udp-batch = 64
udp-rcvbuf = 33554432
max-http-connections = 64
max-http-connections-per-ip = 16
http-threads = 4
http-timeout = 10s
http-header-timeout = 5s
sync = batch
sync-interval = 100ms
log-bytes-max = 1G
log-segment-bytes = 64M
log-buffer-bytes = 32M
checkpoint-every = 256M
apply-thread = off
log-format = json
log-level = debug
io-faults = fdatasync:EIO:5-8
"""

FLAGS = ("--udp off --tcp=127.0.0.1:0 --http 127.0.0.1:0 --max-sensors 5 --ring-readings=32 "
         "--windows 1s,2s --tcp-idle-timeout 1500ms --quiet --allow-overcommit "
         "--print-memory-plan --log-level warn --sync never")


def long_line(n):
    return ("max-sensors = 5" + " " * (n - 15)).encode()


CONFIG = {
    "good_all_keys": b"\n" + GOOD.encode(),
    "flags_only": FLAGS.encode() + b"\n",
    "flag_overrides_file": b"--max-sensors 9\nmax-sensors = 77\n",
    "crlf_comments_no_final_newline": b"\n# c\r\n\r\n  max-sensors = 7 # trailing\r\nring-readings=8",
    "nul_byte": b"\nmax-sensors = 77\nring-readings = 32\0 junk\n",
    "line_1024": b"\n" + long_line(1024) + b"\n",
    "line_1040": b"\n" + long_line(1024) + b"ring-readings=4\n",
    "key_twice": b"\nmax-sensors = 77\n# a comment\n\nring-readings = 32\nmax-sensors = 78\n",
    "flag_twice": b"--max-sensors 5 --max-sensors=6\n",
    "windows_empty_end": b"\nwindows = 10s,\n",
    "windows_empty_start": b"--windows ,10s\n",
    "windows_empty_middle": b"\nwindows = 10s,,1m\n",
    "windows_no_unit": b"\nwindows = 10\n",
    "windows_nine": b"\nwindows = 1s,2s,3s,4s,5s,6s,7s,8s,9s\n",
    "windows_ms": b"\nwindows = 1s, 1500ms\n",
    "windows_descending": b"--windows 1m,10s\n",
    "duration_no_unit": b"\ntcp-idle-timeout = 5\n",
    "duration_too_long": b"--tcp-frame-timeout 2h\n",
    "addr_no_port": b"\ntcp = 127.0.0.1\n",
    "addr_port_too_big": b"--http=127.0.0.1:99999\n",
    "addr_v6_unclosed": b"\nudp = [::1:17400\n",
    "log_words_bad": b"--log-format xml\nlog-level = loud\n",
    "per_ip_over_table": b"--max-tcp-connections 16\nmax-tcp-connections-per-ip = 17\n",
    "per_ip_default": b"--max-tcp-connections 3 --max-http-connections 40\n",
    "unknown_key": b"\nbogus = 1\n",
    "flag_only_key": b"\n quiet = on\n",
    "config_key": b"\nconfig = /etc/x\n",
    "empty_key_and_value": b"\n = \nmax-sensors =\n",
    "no_equals": b"\njust words here\n",
    "segment_not_4k": b"\nlog-segment-bytes = 2100000\n",
    "log_under_two_segments": b"--log-bytes-max 4M\nlog-segment-bytes = 4M\n",
    "sizes_with_units": b"\nlog-bytes-max = 2g\nlog-segment-bytes = 4096k\nlog-buffer-bytes = 2M\n"
                        b"checkpoint-every = 0\n",
    "unexpected_argument": b"stray --http-threads 65\n",
    "empty": b"",
    "uplinks_every_kind": b"--uplink a=influx://127.0.0.1:8428/write --uplink b=promrw://[::1]:9090/api/v1/write"
                          b" --uplink-mode b=aggregate:10s --uplink-tag site=plant-3\n"
                          b"uplink = c=influx2://h:8086/api/v2/write?org=o&bucket=b\nuplink-timeout = 5s\n"
                          b"uplink-when-full = block\nuplink-max-rate = 1000\nuplink-batch-bytes = 64K\n",
    "uplink_bad_names": b"--uplink UP=influx://h:1/w --uplink a=mqtt://h:1/t --uplink-mode zz=raw\n",
    "uplink_tag_escapes": b"--uplink a=influx://h:1/w --uplink-tag k\\,=v\\\\ --uplink-tag =x --uplink-tag a=\n",
}


def say(msg, json=False, level=2, suffix=False, subsystem=0, t_us=1798761600 * 1000000 - 1):
    flags = (1 if json else 0) | (level << 1) | (0x10 if suffix else 0) | (subsystem << 5)
    return bytes([flags]) + struct.pack("<q", t_us) + msg


SAY = {
    "text_plain": say(b"evicted 10.0.0.7:51234 (idle 12.0 s)", level=1),
    "json_plain": say(b"evicted 10.0.0.7:51234 (idle 12.0 s)", json=True, subsystem=2),
    "text_controls": say(b"two\nlines\x1b[31m \xff\x7f\r\t"),
    "json_escapes": say(b'a "quote", a \\ and a\ttab; caf\xc3\xa9; bad \xff\xc3 end', json=True,
                        level=3),
    "c1_controls": say(b"\xc2\x9b31m \xc2\x85 \xc2\x80\xc2\x9f \xc2\xa0"),
    "c1_controls_json": say(b"\xc2\x9b31m \xc2\x85 \xc2\xa0", json=True),
    "not_utf8": say(b"\xc0\xaf \xe0\x80\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xf5\x80 \x80 \xe2\x82"),
    "not_utf8_json": say(b"\xc1\xbf \xf0\x8f\xbf\xbf \xed\xbf\xbf \xe2\x82", json=True),
    "utf8_all_lengths": say(b"A \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xee\x80\x80",
                            json=True),
    "long_e_acute": say(b"\xc3\xa9" * 700),
    "long_quotes_json": say(b'"x' * 700, json=True),
    "long_controls_suffix": say(b"\x01" * 600, suffix=True, subsystem=7),
    "long_controls_suffix_json": say(b"\x01" * 600, json=True, suffix=True),
    "cut_inside_character": say(b"a" * 1022 + b"\xc3\xa9bc"),
    "time_before_epoch": say(b"early", t_us=-5),
    "time_year_9999": say(b"late", t_us=253402300800 * 1000000 - 1),
    "time_max": say(b"latest", json=True, t_us=2**63 - 1),
    "level_out_of_range": say(b"?", level=4),
    "level_word": say(b"warn"),
}


def write(subdir, seeds):
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", subdir)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(seeds), out))


def mqtt(topic, payload):
    return bytes([len(topic)]) + topic + payload


MQTT_VALUE = {
    "plain": mqtt(b"plant/1/temp", b"21.5"),
    "with_time": mqtt(b"plant/1/temp", b"-3e2 1700000000000001"),
    "line_end": mqtt(b"t", b"7\r\n"),
    "negative_time_edge": mqtt(b"t", b"1 -9223372036854775"),
    "time_too_big": mqtt(b"t", b"1 9223372036854776"),
    "escaped_topic": mqtt(b"a,b=c d/#/+", b".5e-3"),
    "backslash_topic": mqtt(b"a\\b", b"1"),
    "long_mantissa": mqtt(b"t", b"0." + b"1" * 300 + b"e-30"),
    "garbage_after": mqtt(b"t", b"0x10"),
    "empty_topic": mqtt(b"", b"1"),
    "nan": mqtt(b"t", b"nan"),
}

write("fuzz_config", CONFIG)
write("fuzz_mqtt_value", MQTT_VALUE)
write("fuzz_say", SAY)
