"""The line-protocol parser (src/proto/line.c, through build/tests/line_dump) against
lineref.py, a reference written from the rules (docs/spec/LINE_PROTOCOL.md):

- a fixed table of hand-written edge cases, each with its result written out (the
  reference is held to it too), and canonical names checked literally;
- a few thousand lines from a seeded RNG, each built together with what it must parse
  to (the reference is held to that construction as well): valid lines of every shape
  (escapes everywhere, many and unsorted tags, every value type and boolean spelling,
  floats of every form with huge and tiny exponents and f32 halfway points, signed
  timestamps, CRLF, runs of spaces), comments, blank lines, and invalid lines of every
  error class, one defect each;
- all of it fed to line_dump in one run and compared line by line with the reference;
  the first disagreements are printed with the input and the first differing part;
- a few lines the rules leave open are compared too, and a difference there is printed
  as a NOTE, not counted as a failure.

    python3 tests/integration/test_line_parse.py [--seed N] [--lines N] [--show N]
        [--dump COMMAND] [--write FILE]

--dump runs another command as line_dump (e.g. "python3 tests/integration/lineref.py");
--write saves the input lines (line_dump < FILE reproduces the run).
"""
import argparse
import decimal
import json
import os
import random
import re
import shlex
import struct
import subprocess
import sys
from fractions import Fraction

import lineref
from harness import BUILD, Checks

INT64_MIN, INT64_MAX, UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
INF, NEG = 0x7F800000, 0x80000000
SKIP = {"skip": True}


def err(name):
    return {"error": name}


def ok(measurement, tags, fields, time, names):
    """An expected parse, written out: tags (k, v), fields (key, type, value), names."""
    return {"measurement": measurement, "tags": [list(t) for t in tags],
            "fields": [list(f) for f in fields], "time": time, "names": names}


def m_f(value_raw, typ, value):
    """`m f=<value_raw>`: one field on measurement m."""
    return b"m f=" + value_raw, ok("m", [], [("f", typ, value)], None, ["m f"])


# ---- the fixed table --------------------------------------------------------------------------

FLOATS = [  # token, f32 bits
    (b"1", 0x3F800000), (b"-1", 0xBF800000), (b"+1", 0x3F800000), (b"1.", 0x3F800000),
    (b"1.5", 0x3FC00000), (b".5", 0x3F000000), (b"-.5", 0xBF000000), (b"+.5", 0x3F000000),
    (b"0.5e1", 0x40A00000), (b"5E-1", 0x3F000000), (b"2e+0", 0x40000000), (b"1.e1", 0x41200000),
    (b"0", 0), (b"-0", NEG), (b"-0.0e-0", NEG), (b"000", 0), (b"0e999999999999", 0),
    (b"0.1", 0x3DCCCCCD), (b"82", 0x42A40000), (b"7", 0x40E00000), (b"1e38", 0x7E967699),
    (b"16777216", 0x4B800000), (b"16777217", 0x4B800000),            # a tie: to even
    (b"16777217.000000000000000000001", 0x4B800001), (b"16777219", 0x4B800002),
    (b"3.4028234663852886e38", 0x7F7FFFFF),
    (b"340282346638528859811704183484516925440", 0x7F7FFFFF),       # FLT_MAX exactly
    (b"340282356779733661637539395458142568447", 0x7F7FFFFF),       # 2^128 - 2^103 - 1
    (b"340282356779733661637539395458142568448", INF),              # 2^128 - 2^103: a tie, to even
    (b"-340282356779733661637539395458142568448", NEG | INF),
    (b"3.4028236e38", INF), (b"1e39", INF), (b"1e999999999", INF), (b"-1e999999999", NEG | INF),
    (b"1e-999999999", 0), (b"-1e-999999999", NEG), (b"1e-46", 0), (b"-1e-46", NEG),
    (b"1.1754943508222875e-38", 0x00800000), (b"1.1754942e-38", 0x007FFFFF),
    (b"1.401298464324817e-45", 1), (b"1e-45", 1), (b"-1e-45", NEG | 1),
    # 2^-150, half the least subnormal: a tie (to 0), and a hair above it
    (b"700649232162408535461864791644958065640130970938257885878534141944895541342930300743319094181060791015625e-150", 0),
    (b"7006492321624085354618647916449580656401309709382578858785341419448955413429303007433190941810607910156251e-151", 1),
    # 1 + 2^-24 and 1 + 3 * 2^-24: ties; a hair off them decides (a double in between rounds twice)
    (b"1.000000059604644775390625", 0x3F800000), (b"1.0000000596046447753906250000000001", 0x3F800001),
    (b"1.0000000596046447753906249999999999", 0x3F800000),
    (b"1.000000178813934326171875", 0x3F800002), (b"1.0000001788139343261718749999999999", 0x3F800001),
    (b"0.0000000000000000000000000000000000000000000000000000001e55", 0x3F800000),
    (b"100000000000000000000000000000000000000000000000e-47", 0x3F800000),
    (b"1" + b"0" * 400 + b"e-400", 0x3F800000), (b"0." + b"0" * 400 + b"1e401", 0x3F800000),
    (b"1.5" + b"0" * 300, 0x3FC00000), (b"00000000000000000000000000000000001.5", 0x3FC00000),
    (b"1e0000000000000000000000000000000001", 0x41200000),
]
INTS = [(b"1i", 1), (b"-1i", -1), (b"+1i", 1), (b"0i", 0), (b"-0i", 0),
        (b"9223372036854775807i", INT64_MAX), (b"-9223372036854775808i", INT64_MIN),
        (b"+9223372036854775807i", INT64_MAX), (b"00000000000000000000000000001i", 1),
        (b"-000000000000000000000009223372036854775808i", INT64_MIN)]
UINTS = [(b"0u", 0), (b"1u", 1), (b"18446744073709551615u", UINT64_MAX),
         (b"0000000000000000000000018446744073709551615u", UINT64_MAX),
         (b"9223372036854775808u", 1 << 63)]
BOOL_SPELLINGS = [(b"t", True), (b"T", True), (b"true", True), (b"True", True), (b"TRUE", True),
                  (b"f", False), (b"F", False), (b"false", False), (b"False", False), (b"FALSE", False)]
STRINGS = [(b'""', ""), (b'"hello"', "hello"), (b'"a b,c=d"', "a b,c=d"),
           (b'"say \\"hi\\""', 'say "hi"'), (b'"back\\\\slash"', "back\\slash"), (b'"\\\\"', "\\"),
           (b'"lit\\n\\t\\,\\= kept"', "lit\\n\\t\\,\\= kept"), (b'"\\\\\\""', '\\"'),
           (b'"#x"', "#x"), (b'"\xff\x00\x01"', "\xff\x00\x01"), (b'"f=1 2"', "f=1 2"),
           (b'"\\x"', "\\x"), (b'"a\\\\\\\\b"', "a\\\\b")]

ERRORS = {  # one line each, every class of error
    "missing_measurement": [b",t=1 f=1", b",f=1", b"  ,t=1 f=1 5", b","],
    "bad_tag": [b"m,t f=1", b"m,t", b"m,t=", b"m,=v f=1", b"m,t= f=1", b"m,t=,u=1 f=1",
                b"m,t=1, f=1", b"m,,t=1 f=1", b"m, f=1", b"m,", b"m,t=1,u f=1", b"m,t=\r"],
    "missing_fields": [b"m", b"m ", b"m    ", b"m,t=1", b"m,t=1   ", b"m=1", b"m\\ ", b"m\r",
                       b"m,t=1\r", b"m\\,", b"m\tf=1", b"  m  \r"],
    "bad_field": [b"m f", b"m f 1", b"m f,g=1", b"m =1", b"m f=1,", b"m f=1, g=2", b"m f=1,,g=2",
                  b"m f=1,g", b"m ,f=1", b"m f=1,=2 5", b"m f\\==1,g"],
    "bad_value": [b"m f=", b"m f= 1", b"m f=,g=1", b"m f=1.2.3", b"m f=1e", b"m f=1e+", b"m f=e5",
                  b"m f=.", b"m f=+", b"m f=-", b"m f=.e1", b"m f=inf", b"m f=-inf", b"m f=NaN",
                  b"m f=nan", b"m f=Infinity", b"m f=0x10", b"m f=1_000", b"m f=1.5i", b"m f=1e3i",
                  b"m f=1.5u", b"m f=-1u", b"m f=+1u", b"m f=-0u", b"m f=1iu", b"m f=1ii", b"m f=i",
                  b"m f=1I", b"m f=1U", b"m f=9223372036854775808i", b"m f=-9223372036854775809i",
                  b"m f=18446744073709551616u", b"m f=99999999999999999999999i", b"m f=tRUE",
                  b"m f=truE", b"m f=yes", b"m f=tru", b"m f=1=2", b"m f==1", b"m f=1\\",
                  b"m f=1\t5", b"m f=1\r\r", b"m f=1i,g=x", b"m f=--1", b"m f=1e5e5", b"m f='x'",
                  b"m f=1,g=t1"],
    "unterminated_string": [b'm f="abc', b'm f="abc\\"', b'm f="abc\\', b'm f="a,g=1 5', b'm f="',
                            b'm f="abc\\"\r', b'm f="abc\r', b'm f=1,g="x\\\\\\"'],
    "bad_timestamp": [b"m f=1 x", b"m f=1 1.5", b"m f=1 +1", b"m f=1 -", b"m f=1 --1",
                      b"m f=1 9223372036854775808", b"m f=1 -9223372036854775809", b"m f=1 1i",
                      b"m f=1 1e9", b"m f=1 12\\", b"m f=1 5\t", b"m f=1 0x10", b'm f=1 "1"',
                      b"m f=1 1,2", b"m f=1 99999999999999999999", b"m f=1 5\r\r"],
    "trailing_garbage": [b"m f=1 1 2", b"m f=1 1 x", b"m f=1 1  2  ", b"m f=1 -5 \\",
                         b"m f=1 1 2\r", b"m f=1 1 #"],
    "bad_escape": [b"m\\", b"\\", b"  \\", b"m,t\\", b"m,t=v\\", b"m,t=\\", b"m f\\", b"m f=1,g\\",
                   b"m\\\r", b"m,t=v\\\r", b"m,a=1,b\\", b"m\\ \\", b"m\\\\\\"],
}


def many_tags(n):
    tags = [("t%03d" % i, "v%d" % i) for i in range(n)]
    return b"m," + ",".join("%s=%s" % kv for kv in tags).encode() + b" f=1", tags


def many_fields(n):
    return b"m " + ",".join("f%03d=%di" % (i, i) for i in range(n)).encode()


def fixed_cases():
    """(raw, expected) written out by hand."""
    cases = [m_f(t, "float", b) for t, b in FLOATS]
    cases += [m_f(t, "int", v) for t, v in INTS]
    cases += [m_f(t, "uint", v) for t, v in UINTS]
    cases += [m_f(t, "bool", v) for t, v in BOOL_SPELLINGS]
    cases += [m_f(t, "string", v) for t, v in STRINGS]
    cases += [(raw, err(name)) for name, raws in ERRORS.items() for raw in raws]
    cases += [(raw, SKIP) for raw in (b"", b" ", b"    ", b"\r", b"  \r", b"#", b"#\r", b"   #x",
                                      b'# comment, with = "stuff" \\', b"#m f=1")]
    one = 0x3F800000
    cases += [
        (b"weather,location=us-midwest temperature=82 1465839830100400200",
         ok("weather", [("location", "us-midwest")], [("temperature", "float", 0x42A40000)],
            1465839830100400200, ["weather,location=us-midwest temperature"])),
        (b"  m   f=1   -5   ", ok("m", [], [("f", "float", one)], -5, ["m f"])),
        (b"m,t=1   f=1", ok("m", [("t", "1")], [("f", "float", one)], None, ["m,t=1 f"])),
        (b"m f=1 0000123", ok("m", [], [("f", "float", one)], 123, ["m f"])),
        (b"m f=1 -0", ok("m", [], [("f", "float", one)], 0, ["m f"])),
        (b"m f=1 -9223372036854775808", ok("m", [], [("f", "float", one)], INT64_MIN, ["m f"])),
        (b"m f=1 9223372036854775807", ok("m", [], [("f", "float", one)], INT64_MAX, ["m f"])),
        (b"m f=1 -0000000000000000000009223372036854775808",
         ok("m", [], [("f", "float", one)], INT64_MIN, ["m f"])),
        (b"m f=1 5\r", ok("m", [], [("f", "float", one)], 5, ["m f"])),
        (b"m f=1 5 \r", ok("m", [], [("f", "float", one)], 5, ["m f"])),
        (b'm f="a"\r', ok("m", [], [("f", "string", "a")], None, ["m f"])),
        (b'm f="a\r"', ok("m", [], [("f", "string", "a\r")], None, ["m f"])),
        (b"m\rx f=1", ok("m\rx", [], [("f", "float", one)], None, ["m\rx f"])),
        (b"my\\ meas\\,x=1,t=v f=1",
         ok("my meas,x=1", [("t", "v")], [("f", "float", one)], None, ["my\\ meas\\,x=1,t=v f"])),
        (b"m\\=x f=1", ok("m\\=x", [], [("f", "float", one)], None, ["m\\=x f"])),
        (b"m\\\\x f=1", ok("m\\\\x", [], [("f", "float", one)], None, ["m\\\\x f"])),
        (b'm\\"x f=1', ok('m\\"x', [], [("f", "float", one)], None, ['m\\"x f'])),
        (b"\\#m f=1", ok("\\#m", [], [("f", "float", one)], None, ["\\#m f"])),
        (b"m#x f=1", ok("m#x", [], [("f", "float", one)], None, ["m#x f"])),
        (b"m,k\\ 1\\,\\==v\\ 1\\,\\= f\\ 1\\,\\==1",
         ok("m", [("k 1,=", "v 1,=")], [("f 1,=", "float", one)], None,
            ["m,k\\ 1\\,\\==v\\ 1\\,\\= f\\ 1\\,\\="])),
        (b"m,k\\x=v\\y f\\z=1",
         ok("m", [("k\\x", "v\\y")], [("f\\z", "float", one)], None, ["m,k\\x=v\\y f\\z"])),
        (b"m\tx,t\tk=v\tv f\tk=1",
         ok("m\tx", [("t\tk", "v\tv")], [("f\tk", "float", one)], None, ["m\tx,t\tk=v\tv f\tk"])),
        (b"\tm f=1", ok("\tm", [], [("f", "float", one)], None, ["\tm f"])),
        (b'm\x00x,t=\x00 f="\x00"',
         ok("m\x00x", [("t", "\x00")], [("f", "string", "\x00")], None, ["m\x00x,t=\x00 f"])),
        (b"m\xe9,\xff=\xc3\xa9 f\x80=1",
         ok("m\xe9", [("\xff", "\xc3\xa9")], [("f\x80", "float", one)], None,
            ["m\xe9,\xff=\xc3\xa9 f\x80"])),
        (b"m f=1,f=2i", ok("m", [], [("f", "float", one), ("f", "int", 2)], None, ["m f", "m f"])),
        (b'm,t=1 a=1,b=2i,c=3u,d=t,e="s" 1',
         ok("m", [("t", "1")], [("a", "float", one), ("b", "int", 2), ("c", "uint", 3),
                                ("d", "bool", True), ("e", "string", "s")], 1,
            ["m,t=1 a", "m,t=1 b", "m,t=1 c", "m,t=1 d", "m,t=1 e"])),
        (b"a=b,k=v f=1", ok("a=b", [("k", "v")], [("f", "float", one)], None, ["a=b,k=v f"])),
        (b"m,#=# #=1", ok("m", [("#", "#")], [("#", "float", one)], None, ["m,#=# #"])),
        (b'm,"k"="v" "f"=1',
         ok("m", [('"k"', '"v"')], [('"f"', "float", one)], None, ['m,"k"="v" "f"'])),
        (b'm f="x",g="y" 7', ok("m", [], [("f", "string", "x"), ("g", "string", "y")], 7, ["m f", "m g"])),
        (b"m f=1\\ 5", err("bad_value")),  # no escapes in a value: "1\" then the timestamp "5"
    ]
    raw, tags = many_tags(256)
    cases.append((raw, ok("m", tags, [("f", "float", one)], None, [None])))  # a name of 2,456 bytes
    raw, tags = many_tags(100)
    series = "m," + ",".join("%s=%s" % kv for kv in tags)  # a name of 893 bytes
    cases.append((raw, ok("m", tags, [("f", "float", one)], None, [series + " f"])))
    cases.append((many_tags(257)[0], err("too_many_tags")))
    cases.append((many_fields(256), ok("m", [], [("f%03d" % i, "int", i) for i in range(256)], None,
                                       ["m f%03d" % i for i in range(256)])))
    cases.append((many_fields(257), err("too_many_fields")))
    # names up to 1,024 bytes (LINE_PROTOCOL.md), escapes counted; a longer one is null
    cases.append((b"m" * 1000 + b" " + b"f" * 23 + b"=1",
                  ok("m" * 1000, [], [("f" * 23, "float", one)], None, ["m" * 1000 + " " + "f" * 23])))
    cases.append((b"m" * 1000 + b" " + b"f" * 23 + b"=1," + b"f" * 24 + b"=2",
                  ok("m" * 1000, [], [("f" * 23, "float", one), ("f" * 24, "float", 0x40000000)], None,
                     ["m" * 1000 + " " + "f" * 23, None])))
    cases.append((b"\\," * 400 + b",k=" + b"v" * 200 + b" " + b"f" * 20 + b"=1,g" + b"f" * 20 + b"=1",
                  ok("," * 400, [("k", "v" * 200)], [("f" * 20, "float", one), ("g" + "f" * 20, "float", one)],
                     None, ["\\," * 400 + ",k=" + "v" * 200 + " " + "f" * 20, None])))
    cases.append((b"\\ " * 600 + b" f=1", ok(" " * 600, [], [("f", "float", one)], None, [None])))
    # a float literal of 321 bytes
    cases.append(m_f(b"1." + b"0" * 318 + b"1", "float", one))
    return cases


NAMES = [  # canonical names, literally
    (b"boiler,site=north,room=a temp=1", ["boiler,room=a,site=north temp"]),
    (b"boiler,room=a,site=north temp=1,hum=2",
     ["boiler,room=a,site=north temp", "boiler,room=a,site=north hum"]),
    (b"m,b=2,a=1,b=1 f=1", ["m,a=1,b=2,b=1 f"]),                 # stable: equal keys keep their order
    (b"m,k=3,k=1,k=2,a=0 f=1", ["m,a=0,k=3,k=1,k=2 f"]),
    (b"m,a-=2,a=1 f=1", ["m,a=1,a-=2 f"]),                       # by key, not by "key=value"
    (b"m,a!=1,a\\ b=2,a\\,=3 f=1", ["m,a\\ b=2,a!=1,a\\,=3 f"]),  # by the unescaped key
    (b"m,a-=1,a\\,=2 f=1", ["m,a\\,=2,a-=1 f"]),
    (b"m,\xff=1,a=2 f=1", ["m,a=2,\xff=1 f"]),                   # bytewise, unsigned
    (b"m,ab=1,a=2 f=1", ["m,a=2,ab=1 f"]),
    (b"m,B=1,a=2 f=1", ["m,B=1,a=2 f"]),
    (b"m,z=1,y=2,x=3,w=4 f=1", ["m,w=4,x=3,y=2,z=1 f"]),
    (b"m,a\\==1,a=2 f=1", ["m,a=2,a\\==1 f"]),
    (b"a=b,k=a\\=b f\\ x=1", ["a=b,k=a\\=b f\\ x"]),              # '=' is not escaped in a measurement
    (b"a\\,b\\ c,k\\ k=v\\,v f\\,g\\=h=1", ["a\\,b\\ c,k\\ k=v\\,v f\\,g\\=h"]),
    (b"m\\=x,k\\x=v f=1", ["m\\=x,k\\x=v f"]),                    # nothing else is escaped
    (b'm\\"q,k="v" f="s"', ['m\\"q,k="v" f']),
]


def unspecified_cases():
    """(raw, what the rules leave open): compared, a difference printed as a NOTE."""
    bad_257th = many_tags(256)[0].replace(b" f=1", b",x f=1")
    return [
        (b"m,t=a=b f=1", "an unescaped '=' in a tag value: the rules name no error for it (lineref "
         "keeps it); InfluxDB 1.x rejects it ('invalid tag format')"),
        (b"m\\\\ x=1", "'\\\\' before a space: lineref reads backslash and byte as one unit, so the "
         "space ends the measurement; InfluxDB 1.x looks only at the byte before a space"),
        (b"m,t=v\\\\,u=1 f=1", "'\\\\' before a comma in a tag value (as above)"),
        (b'm f="a"b', "bytes after a string's closing quote (lineref: bad_value)"),
        (b'm f="a""b"', "a second string right after a string (lineref: bad_value)"),
        (bad_257th, "a bad 257th tag: bad_tag or too_many_tags (lineref: the first error from the left)"),
        (b"m,t f", "a bad tag and no fields: bad_tag or missing_fields (lineref: bad_tag)"),
        (many_fields(256) + b",x=1.2.3", "a bad 257th field value: bad_value or too_many_fields "
         "(lineref: the first error from the left)"),
    ]


# ---- random lines ---------------------------------------------------------------------------

ASCII_PLAIN = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@!$%&'()*+;<>?[]^`{|}~"
RARE_PLAIN = b'"#\x01\x1f\x7f' + bytes(range(0x80, 0x100))


def f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def exact_decimal(q):
    """(D, E) with the non-negative dyadic Fraction q == D * 10^E."""
    k = q.denominator.bit_length() - 1  # the denominator is 2^k
    return q.numerator * 5 ** k, -k


def raw_of(units):
    return b"".join(u[0] for u in units)


def value_of(units):
    return b"".join(u[1] for u in units)


class Gen:
    """Random lines, each with what it must parse to."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def plain(self):
        r = self.r
        return bytes([r.choice(RARE_PLAIN if r.random() < 0.1 else ASCII_PLAIN)])

    def unit(self, where):
        """One unit of a name or string value: (raw, value); where is measurement, key or string."""
        r = self.r
        x = r.random()
        if where == "string":
            if x < 0.12:
                return r.choice([(b'\\"', b'"'), (b"\\\\", b"\\")])
            d = bytes([r.choice(b" ,=#")]) if x < 0.3 else self.plain().replace(b'"', b"'")
            return (b"\\" + d, b"\\" + d) if x < 0.2 else (d, d)
        if x < 0.1:
            d = bytes([r.choice(b", " if where == "measurement" else b",= ")])
            return b"\\" + d, d
        if x < 0.17:  # a backslash before a byte it does not escape: both kept
            d = b"=" if where == "measurement" and r.random() < 0.3 else self.plain()
            return b"\\" + d, b"\\" + d
        if where == "measurement" and x < 0.2:
            return b"=", b"="
        d = self.plain()
        return d, d

    def units(self, where, lo=1, hi=8):
        r = self.r
        n = r.randint(lo, hi) if r.random() < 0.95 else r.randint(hi, 40)
        return [self.unit(where) for _ in range(n)]

    def measurement(self):
        units = self.units("measurement")
        while units[0][0] == b"#":
            units[0] = self.unit("measurement")
        return units

    def spaces(self, lo, hi):
        return b" " * (self.r.randint(lo, hi) if self.r.random() < 0.25 else lo)

    # -- values

    def render(self, neg, D, E):
        """A float token for (-1)^neg * D * 10^E, in a random form."""
        r = self.r
        ds = str(D) if D or r.random() < 0.5 else "0" * r.randint(1, 3)
        if r.random() < 0.15:
            z = r.randint(1, 30)
            ds, E = ds + "0" * z, E - z
        p = r.randint(0, len(ds))
        ip, fp = ds[:p], ds[p:]
        x = E + len(fp)
        if r.random() < 0.1:
            ip = "0" * r.randint(1, 5) + ip
        if not fp:
            mant = ip + ("." if r.random() < 0.2 else "")
        elif not ip:
            mant = ("0" if r.random() < 0.3 else "") + "." + fp
        else:
            mant = ip + "." + fp
        exp = ""
        if x != 0 or r.random() < 0.3:
            sign = "-" if x < 0 else ("+" if r.random() < 0.3 else "")
            exp = r.choice("eE") + sign + "0" * (r.randint(1, 3) if r.random() < 0.2 else 0) + str(abs(x))
        return (("-" if neg else ("+" if r.random() < 0.1 else "")) + mant + exp).encode()

    def f32_any(self, finite_below=0x7F800000):
        r = self.r
        bits = (r.randint(0, 254) << 23) | r.randrange(1 << 23)
        return min(bits, finite_below - 1)

    def float_value(self):
        """(token, f32 bits)."""
        r = self.r
        neg = r.random() < 0.4
        sign = NEG if neg else 0
        x = r.random()
        if x < 0.45:  # a random f32, written exactly, to 9 or to 17 significant digits
            bits = self.f32_any()
            v = f32(bits)
            form = r.random()
            if form < 0.3:
                D, E = exact_decimal(Fraction(v))
            else:
                t = decimal.Decimal(("%.8e" if form < 0.65 else "%.16e") % v).as_tuple()
                D, E = int("".join(map(str, t.digits))), t.exponent
            return self.render(neg, D, E), sign | bits
        if x < 0.55:  # an integer up to 2^24: exact
            n = r.randint(0, 1 << 24) if r.random() < 0.5 else r.randint(0, 1000)
            return self.render(neg, n, 0), sign | struct.unpack("<I", struct.pack("<f", float(n)))[0]
        if x < 0.65:  # far out of range: infinity or zero; zero with any exponent
            D = r.randint(1, 10 ** r.randint(1, 6))
            kind = r.randrange(3)
            if kind == 0:
                top = r.choice([39, 40, 45, 100, 1000, 10 ** 6, 10 ** 15])
                return self.render(neg, D, top - len(str(D)) + 1), sign | INF
            if kind == 1:
                top = r.choice([-47, -48, -60, -400, -10 ** 6, -10 ** 15])
                return self.render(neg, D, top - len(str(D)) + 1), sign
            return self.render(neg, 0, r.choice([-1, 1]) * r.choice([5, 50, 500, 10 ** 9])), sign
        if x < 0.85:  # an f32 halfway point: exactly (to even), a hair above, a hair below
            b = self.f32_any(0x7F7FFFFF)
            D, E = exact_decimal((Fraction(f32(b)) + Fraction(f32(b + 1))) / 2)
            t = r.randint(1, 30)
            kind = r.randrange(3)
            if kind == 0:
                return self.render(neg, D, E), sign | (b + (b & 1))
            if kind == 1:
                return self.render(neg, D * 10 ** t + 1, E - t), sign | (b + 1)
            return self.render(neg, D * 10 ** t - 1, E - t), sign | b
        # a random f32's exact value and a hair more or less: long mantissas
        bits = self.f32_any()
        while bits == 0:
            bits = self.f32_any()
        D, E = exact_decimal(Fraction(f32(bits)))
        t = r.randint(5, 40)
        return self.render(neg, D * 10 ** t + r.choice([-1, 1]), E - t), sign | bits

    def int64(self, lo, hi):
        r = self.r
        x = r.random()
        if x < 0.2:
            return r.choice([lo, hi, 0, 1, min(hi, max(lo, -1))])
        if x < 0.6:
            return max(lo, min(hi, r.randint(-1000, 1000)))
        return r.randint(lo, hi)

    def digits(self, v, plus=True):
        r = self.r
        s = "0" * r.randint(1, 20) if r.random() < 0.1 else ""
        sign = "-" if v < 0 or (v == 0 and plus and r.random() < 0.1) else ""
        if not sign and plus and r.random() < 0.1:
            sign = "+"
        return (sign + s + str(abs(v))).encode()

    def value(self):
        """(raw, type, value) of a field value."""
        r = self.r
        x = r.random()
        if x < 0.4:
            raw, bits = self.float_value()
            return raw, "float", bits
        if x < 0.55:
            v = self.int64(INT64_MIN, INT64_MAX)
            return self.digits(v) + b"i", "int", v
        if x < 0.65:
            v = self.int64(0, UINT64_MAX)
            return self.digits(v, plus=False) + b"u", "uint", v
        if x < 0.8:
            raw, v = r.choice(BOOL_SPELLINGS)
            return raw, "bool", v
        units = self.units("string", 0, 12)
        return b'"' + raw_of(units) + b'"', "string", value_of(units)

    def timestamp(self):
        """(raw, value) or None."""
        if self.r.random() < 0.35:
            return None
        v = self.int64(INT64_MIN, INT64_MAX)
        return self.digits(v, plus=False), v

    # -- lines

    def valid(self, many=None):
        """A valid line's parts (a dict)."""
        r = self.r
        if many == "tags":
            ntags, nfields = r.randint(200, 256), r.randint(1, 3)
        elif many == "fields":
            ntags, nfields = r.randint(0, 3), r.randint(200, 256)
        else:
            x = r.random()
            ntags = 0 if x < 0.3 else (r.randint(1, 5) if x < 0.9 else r.randint(6, 40))
            nfields = r.randint(1, 4) if r.random() < 0.85 else r.randint(5, 30)
        tags = []
        for _ in range(ntags):
            key = r.choice(tags)[0] if tags and r.random() < 0.05 else self.units("key")
            tags.append((key, self.units("key")))
        fields = []
        for _ in range(nfields):
            key = r.choice(fields)[0] if fields and r.random() < 0.05 else self.units("key")
            fields.append((key,) + self.value())
        return {"lead": self.spaces(0, 3) if r.random() < 0.2 else b"",
                "measurement": self.measurement(), "tags": tags, "sep1": self.spaces(1, 4),
                "fields": fields, "sep2": self.spaces(1, 4), "time": self.timestamp(),
                "trail": self.spaces(1, 3) if r.random() < 0.15 else b"", "cr": r.random() < 0.2}

    @staticmethod
    def pieces(p):
        """The raw pieces of parts p: measurement, tags, fields (each bytes or a list of bytes)."""
        return (raw_of(p["measurement"]),
                [raw_of(k) + b"=" + raw_of(v) for k, v in p["tags"]],
                [raw_of(k) + b"=" + v for k, v, _, _ in p["fields"]])

    @staticmethod
    def assemble(p, meas, tags, fields, time):
        """The line from raw pieces (fields None: no field section, time None: no timestamp)."""
        out = p["lead"] + meas + b"".join(b"," + t for t in tags)
        if fields is not None:
            out += p["sep1"] + b",".join(fields)
            if time is not None:
                out += p["sep2"] + time
        return out + p["trail"] + (b"\r" if p["cr"] else b"")

    def line(self, cls):
        """(raw, expected) of a line of class cls."""
        r = self.r
        if cls == "skip":
            lead = self.spaces(0, 4)
            body = b"" if r.random() < 0.3 else b"#" + b"".join(
                self.plain() if r.random() < 0.8 else bytes([r.choice(b" ,=\\\"")])
                for _ in range(r.randint(0, 30)))
            return lead + body + (b"\r" if r.random() < 0.2 else b""), SKIP
        many = {"valid_many_tags": "tags", "valid_many_fields": "fields",
                "too_many_tags": "tags", "too_many_fields": "fields"}.get(cls)
        p = self.valid(many)
        if cls == "too_many_tags":
            p["tags"] += [(self.units("key"), self.units("key"))
                          for _ in range(r.randint(lineref.MAX_TAGS + 1, 300) - len(p["tags"]))]
        if cls == "too_many_fields":
            p["fields"] += [(self.units("key"),) + self.value()
                            for _ in range(r.randint(lineref.MAX_FIELDS + 1, 300) - len(p["fields"]))]
        meas, tags, fields = self.pieces(p)
        time = p["time"][0] if p["time"] else None
        if cls.startswith("valid"):
            want = lineref.result(value_of(p["measurement"]),
                                  [(value_of(k), value_of(v)) for k, v in p["tags"]],
                                  [(value_of(k), t, v) for k, _, t, v in p["fields"]],
                                  p["time"][1] if p["time"] else None)
            return self.assemble(p, meas, tags, fields, time), want
        if cls == "missing_measurement":
            meas = b""
            tags = tags or [b"k=v"]
        elif cls == "bad_tag":
            tags = tags or [b"k=v"]
            j = r.randrange(len(tags))
            k, v = p["tags"][j] if j < len(p["tags"]) else ([(b"k", b"k")], [(b"v", b"v")])
            tags[j] = r.choice([raw_of(k), b"=" + raw_of(v), raw_of(k) + b"=", b""])
            if r.random() < 0.2:  # the line ends in the bad tag
                tags, fields = tags[:j + 1], None
                p["trail"] = b""
        elif cls == "missing_fields":
            fields = None
        elif cls == "bad_field":
            j = r.randrange(len(fields))
            k, v = p["fields"][j][0], p["fields"][j][1]
            choices = [raw_of(k), b"=" + v] + ([b""] if len(fields) > 1 else [])
            fields[j] = r.choice(choices)
        elif cls == "bad_value":
            j = r.randrange(len(fields))
            fields[j] = raw_of(p["fields"][j][0]) + b"=" + self.bad_value()
        elif cls == "unterminated_string":
            units = self.units("string", 0, 12)
            fields[-1] = raw_of(p["fields"][-1][0]) + b'="' + raw_of(units) + r.choice([b"", b'\\"', b"\\"])
        elif cls == "bad_timestamp":
            time = r.choice(BAD_TIMES)
        elif cls == "trailing_garbage":
            time = time or b"1"
            garbage = b"".join(self.plain() if r.random() < 0.85 else bytes([r.choice(b" \\,=")])
                               for _ in range(r.randint(1, 12)))
            p["trail"] = self.spaces(1, 3) + self.plain() + garbage.rstrip(b" ") + p["trail"]
        elif cls == "bad_escape":
            return self.bad_escape(p, meas, tags, fields), err(cls)
        elif cls not in ("too_many_tags", "too_many_fields"):
            raise ValueError(cls)
        return self.assemble(p, meas, tags, fields, time), err(cls)

    def bad_value(self):
        r = self.r
        if r.random() < 0.7:
            return r.choice(BAD_VALUES)
        x = r.randrange(3)
        if x == 0:  # out of int64's range
            v = r.randint(INT64_MAX + 1, 1 << 70)
            return self.digits(v if r.random() < 0.5 else -v - 1) + b"i"
        if x == 1:
            return self.digits(r.randint(UINT64_MAX + 1, 1 << 80), plus=False) + b"u"
        return self.float_value()[0] + r.choice([b"x", b"e", b"ee", b"=", b"-", b"_", b"\xff"])

    def bad_escape(self, p, meas, tags, fields):
        """A line that ends in a lone backslash inside a measurement, tag key, tag value or field key."""
        r = self.r
        where = r.randrange(4) if p["tags"] else r.choice([0, 3])

        def cut(units):
            return raw_of(units[:r.randint(0, len(units))])
        if where == 0:
            line = cut(p["measurement"])
        elif where in (1, 2):
            j = r.randrange(len(tags))
            k, v = p["tags"][j]
            last = cut(k) if where == 1 else raw_of(k) + b"=" + cut(v)
            line = meas + b"".join(b"," + t for t in tags[:j]) + b"," + last
        else:
            j = r.randrange(len(fields))
            line = meas + b"".join(b"," + t for t in tags) + p["sep1"] + b"".join(
                f + b"," for f in fields[:j]) + cut(p["fields"][j][0])
        return p["lead"] + line + b"\\" + (b"\r" if p["cr"] else b"")


BAD_VALUES = [b"", b"1.2.3", b"1e", b"1e+", b"e5", b".", b"+", b"-", b".e1", b"1.5i", b"1e3i",
              b"1.5u", b"-1u", b"+1u", b"-0u", b"1iu", b"1ii", b"0x10", b"1_000", b"inf", b"-inf",
              b"Infinity", b"nan", b"NaN", b"tRUE", b"truE", b"yes", b"tru", b"falsey", b"T1", b"1t",
              b"12abc", b"=1", b"1=2", b"abc", b"'x'", b"1\\", b"\\1", b"--1", b"+-1", b"1e5e5",
              b"1.e.5", b"1f", b"0b101", b"i", b"u", b"-i", b"1I", b"1U", b"9223372036854775808i",
              b"-9223372036854775809i", b"18446744073709551616u", b"\xff", b"1\xff", b"t\"",
              b"1\"a\""]
BAD_TIMES = [b"x", b"1.5", b"+1", b"-", b"--1", b"1e9", b"1i", b"12a", b"0x10", b"9223372036854775808",
             b"-9223372036854775809", b"99999999999999999999", b"1,2", b'"1"', b"1\\", b"\\", b"t",
             b"1u", b"=1", b"0b1", b"1_0", b"1-", b"\xff", b"-0x1", b"1\t"]

CLASSES = [("valid", 40), ("valid_many_tags", 3), ("valid_many_fields", 3), ("skip", 5),
           ("missing_measurement", 4), ("bad_tag", 5), ("missing_fields", 4), ("bad_field", 5),
           ("bad_value", 6), ("unterminated_string", 4), ("bad_timestamp", 4), ("too_many_tags", 2),
           ("too_many_fields", 2), ("trailing_garbage", 4), ("bad_escape", 5)]


def random_cases(seed, count):
    g = Gen(seed)
    names = [c for c, _ in CLASSES]
    weights = [w for _, w in CLASSES]
    out = []
    for cls in g.r.choices(names, weights, k=count):
        raw, want = g.line(cls)
        out.append((cls, raw, want))
    return out


# ---- comparing ------------------------------------------------------------------------------

def same(a, b):
    """Equal in value and in JSON type (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def first_difference(want, got, path=""):
    """(path, want part, got part) of the first place where got differs from want."""
    if isinstance(want, dict) and isinstance(got, dict) and want.keys() == got.keys():
        for k in want:
            if not same(want[k], got[k]):
                return first_difference(want[k], got[k], "%s.%s" % (path, k) if path else k)
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (x, y) in enumerate(zip(want, got)):
            if not same(x, y):
                return first_difference(x, y, "%s[%d]" % (path, i))
    return path or "(the whole line)", want, got


def where_label(want, got, path):
    """A short name for what differs, to count disagreements by."""
    if "error" in want or "error" in got or "skip" in want or "skip" in got:
        return "%s -> %s" % (want.get("error", "skip" if "skip" in want else "parsed"),
                             got.get("error", "skip" if "skip" in got else "parsed"))
    m = re.fullmatch(r"fields\[(\d+)\]\[2\]", path)
    if m:
        return "%s value" % want["fields"][int(m.group(1))][1]
    return re.split(r"[\[.]", path)[0]


def short(x, limit=300):
    s = repr(x) if isinstance(x, bytes) else json.dumps(x)
    return s if len(s) <= limit else s[:limit] + "... (%d chars)" % len(s)


def run_dump(cmd, data):
    """line_dump's output lines (bytes) for data, its exit status and stderr."""
    p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    out = p.stdout.split(b"\n")
    if out and out[-1] == b"":
        out.pop()
    return out, p.returncode, p.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--lines", type=int, default=4000)
    ap.add_argument("--show", type=int, default=20)
    ap.add_argument("--dump", help="command to run as line_dump (default build/tests/line_dump)")
    ap.add_argument("--write", help="write the input lines to this file")
    args = ap.parse_args()
    c = Checks("test_line_parse")

    # The reference, held to the hand-written table and to the random lines' construction.
    fixed = fixed_cases()
    for raw, want in fixed:
        got = lineref.parse_line(raw)
        c.check(same(got, want), "lineref on %s: %s, want %s" % (short(raw), short(got), short(want)))
    for raw, names in NAMES:
        got = lineref.parse_line(raw)
        c.eq(got.get("names"), names, "lineref's canonical names of %s" % short(raw))
    rand = random_cases(args.seed, args.lines)
    wrong = [(cls, raw, want) for cls, raw, want in rand if not same(lineref.parse_line(raw), want)]
    for cls, raw, want in wrong[:args.show]:
        print("lineref disagrees with the construction [%s] %s\n  built: %s\n  lineref: %s"
              % (cls, short(raw), short(want), short(lineref.parse_line(raw))), file=sys.stderr)
    c.eq(len(wrong), 0, "random lines where lineref disagrees with how they were built (seed %d)" % args.seed)

    # line_dump against the reference, every line in one run.
    cases = ([("fixed", raw) for raw, _ in fixed] + [("names", raw) for raw, _ in NAMES]
             + [("unspecified", raw) for raw, _ in unspecified_cases()] + [(cls, raw) for cls, raw, _ in rand])
    notes = dict(unspecified_cases())
    data = b"".join(raw + b"\n" for _, raw in cases)
    if args.write:
        with open(args.write, "wb") as f:
            f.write(data)
    cmd = shlex.split(args.dump) if args.dump else [os.path.join(BUILD, "tests", "line_dump")]
    if not args.dump and not os.path.exists(cmd[0]):
        c.check(False, "%s is not built (cmake --build build --target line_dump)" % cmd[0])
        c.finish()
    out, rc, stderr = run_dump(cmd, data)
    c.eq(rc, 0, "line_dump's exit status")
    c.eq(stderr.decode("latin-1")[:2000], "", "line_dump's stderr (a sanitizer's report would be there)")
    c.eq(len(out), len(cases), "line_dump's output lines, one an input line")
    non_ascii = [i for i, o in enumerate(out) if not o.isascii()]
    c.check(not non_ascii, "line_dump writes every byte >= 0x80 as \\u00XX (raw bytes on %d lines, "
            "the first: output line %d)" % (len(non_ascii), non_ascii[0] + 1 if non_ascii else 0))
    per_class = {}
    labels = {}
    shown = 0
    for i, (cls, raw) in enumerate(cases):
        total, bad = per_class.get(cls, (0, 0))
        want = lineref.parse_line(raw)
        if i < len(out):
            try:
                got = json.loads(out[i].decode("latin-1"))
            except ValueError:
                got = {"unparsable output": out[i].decode("latin-1")}
        else:
            got = {"missing output": True}
        agree = same(want, got)
        if cls == "unspecified":
            if not agree:
                print("NOTE (the rules leave it open: %s): %s\n  lineref:   %s\n  line_dump: %s"
                      % (notes[raw], short(raw), short(want), short(got)))
            continue
        per_class[cls] = (total + 1, bad + (not agree))
        if agree:
            continue
        path, w, g = first_difference(want, got)
        label = where_label(want, got, path)
        labels[label] = labels.get(label, 0) + 1
        if shown < args.show:
            shown += 1
            print("DISAGREE [%s] input line %d: %s\n  at %s: lineref %s, line_dump %s\n  lineref:   %s\n"
                  "  line_dump: %s" % (cls, i + 1, short(raw), path, short(w, 120), short(g, 120),
                                       short(want), short(got)), file=sys.stderr)
    for cls, (total, bad) in sorted(per_class.items()):
        c.check(bad == 0, "%s: line_dump disagrees with lineref on %d of %d lines" % (cls, bad, total))
    if labels:
        print("disagreements by what differs: " + ", ".join(
            "%s: %d" % kv for kv in sorted(labels.items(), key=lambda kv: -kv[1])), file=sys.stderr)
    print("test_line_parse: %d lines (%d fixed, %d names, %d random, seed %d) through %s"
          % (len(cases), len(fixed), len(NAMES), len(rand), args.seed, " ".join(cmd)))
    c.finish()


if __name__ == "__main__":
    main()
