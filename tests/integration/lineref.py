"""A reference parser for one line of InfluxDB line protocol, version 1, as
docs/spec/LINE_PROTOCOL.md takes it: written from the rules, independently of
src/proto/line.c, for test_line_parse.py to compare line_dump with.

parse_line(raw) takes the bytes of one line (no '\\n') and returns the dict
line_dump prints for it:
  {"skip": True}                          a blank or comment line
  {"error": NAME}                         a line that does not parse
  {"measurement": M, "tags": [[k, v], ...], "fields": [[key, type, value], ...],
   "time": T or None, "names": [canonical name of each field, in field order]}
Strings are the unescaped bytes decoded as latin-1 (so json.dumps writes every
byte >= 0x80 as \\u00XX, as line_dump does); a float's value is the bit
pattern of the nearest f32 (round half to even, overflow to infinity),
computed exactly with fractions.Fraction; int and uint values are exact.

The rules, as this parser reads them:
- one trailing '\\r' is removed; then leading spaces are skipped; an empty
  rest is blank, a rest starting with '#' is a comment;
- sections are separated by one or more spaces (0x20 only: a tab is an
  ordinary byte);
- a backslash and the byte after it are one unit: the pair stands for that
  byte when it is escapable where it stands (measurement: ',' ' '; tag keys,
  tag values, field keys: ',' '=' ' '; string values: '"' '\\\\'), and is kept
  as both bytes otherwise. A backslash that is the line's last byte is
  bad_escape in a measurement, tag key, tag value or field key, and
  unterminated_string in a string value (outside those, a backslash is an
  ordinary byte of a value or timestamp and makes it bad);
- the measurement ends at an unescaped ',' or ' ' ('=' is ordinary); a tag
  key at an unescaped '=', ',' or ' '; a tag value at an unescaped ',' or ' '
  (an unescaped '=' in a tag value is kept: the rules do not make it an
  error); a field key at an unescaped '=', ',' or ' '; a non-string field
  value at ',' or ' '; a string value at its closing '"', which must be
  followed by ',', ' ' or the end (else bad_value); the timestamp at ' ';
- errors are found left to right; the first one names the line;
- a canonical name longer than 1,024 bytes (LINE_PROTOCOL.md's limit) is
  None (line_dump prints null): the gateway rejects it as name_too_long.

Run as a program, it reads bytes on stdin, splits them on '\\n' (nothing after
a last '\\n' is a line) and prints one JSON object a line, as line_dump does:
    python3 tests/integration/lineref.py < lines.txt
"""
import json
import re
import sys
from fractions import Fraction

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)  # float mantissas and exponents of any length

MAX_TAGS = 256
MAX_FIELDS = 256
NAME_MAX = 1024  # bytes of a canonical name (LINE_PROTOCOL.md); line_dump prints a longer one as null
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

SPACE, COMMA, EQUALS, QUOTE, BACKSLASH, HASH = b" ,=\"\\#"
MEASUREMENT_ESCAPES = b", "    # what a backslash escapes in a measurement (and what its name escapes)
KEY_ESCAPES = b",= "           # in tag keys, tag values and field keys
STRING_ESCAPES = b"\"\\"       # in string field values

BOOLS = {b"t": True, b"T": True, b"true": True, b"True": True, b"TRUE": True,
         b"f": False, b"F": False, b"false": False, b"False": False, b"FALSE": False}
FLOAT_RE = re.compile(rb"[-+]?(?:([0-9]+)(?:\.([0-9]*))?|\.([0-9]+))(?:[eE]([-+]?[0-9]+))?")
INT_RE = re.compile(rb"[-+]?[0-9]+")
DIGITS_RE = re.compile(rb"[0-9]+")
TIME_RE = re.compile(rb"-?[0-9]+")

F32_INF = 0x7F800000
F32_SIGN = 0x80000000


class LineError(Exception):
    def __init__(self, name):
        Exception.__init__(self, name)
        self.name = name


# ---- floats ---------------------------------------------------------------------------------

def f32_round(x):
    """The bit pattern of the f32 nearest the non-negative Fraction x (ties to even; past the
    largest finite f32 by half an ulp or more: infinity)."""
    if x == 0:
        return 0
    num, den = x.numerator, x.denominator
    e = num.bit_length() - den.bit_length()  # 2^(e-1) < x < 2^(e+1)
    if (num << max(0, -e)) < (den << max(0, e)):  # x < 2^e
        e -= 1
    # now 2^e <= x < 2^(e+1); below the normal range the ulp stays 2^-149
    e = max(e, -126)
    shift = 23 - e                      # x * 2^shift is the significand in ulps
    if shift >= 0:
        q, r = divmod(num << shift, den)
        rden = den
    else:
        q, r = divmod(num, den << -shift)
        rden = den << -shift
    if 2 * r > rden or (2 * r == rden and q & 1):
        q += 1
    if q == 1 << 24:                    # rounded up to the next binade
        q >>= 1
        e += 1
    if e > 127:
        return F32_INF
    if q < 1 << 23:                     # subnormal (e == -126): the bits are the ulps
        return q
    return ((e + 127) << 23) | (q - (1 << 23))


def f32_bits(text):
    """The f32 bit pattern of a float field value (bytes matching FLOAT_RE)."""
    m = FLOAT_RE.fullmatch(text)
    if not m:
        raise ValueError(text)
    whole, frac1, frac2, exp = m.groups()
    frac = frac1 if frac1 is not None else (frac2 or b"")
    digits = ((whole or b"") + frac).lstrip(b"0")
    sign = F32_SIGN if text[:1] == b"-" else 0
    if not digits:
        return sign
    e10 = int(exp or b"0") - len(frac)      # value = int(digits) * 10^e10
    top = e10 + len(digits) - 1             # 10^top <= value < 10^(top+1)
    if top >= 39:                           # >= 1e39 > FLT_MAX + half an ulp
        return sign | F32_INF
    if top <= -47:                          # < 1e-46 < 2^-150 (half the least subnormal)
        return sign
    if e10 >= 0:
        x = Fraction(int(digits) * 10 ** e10)
    else:
        x = Fraction(int(digits), 10 ** -e10)
    return sign | f32_round(x)


# ---- values ---------------------------------------------------------------------------------

def field_value(tok):
    """(type, value) of a non-string field value token."""
    if tok in BOOLS:
        return "bool", BOOLS[tok]
    if tok.endswith(b"i") and INT_RE.fullmatch(tok[:-1]):
        v = int(tok[:-1])
        if INT64_MIN <= v <= INT64_MAX:
            return "int", v
        raise LineError("bad_value")
    if tok.endswith(b"u") and DIGITS_RE.fullmatch(tok[:-1]):
        v = int(tok[:-1])
        if v <= UINT64_MAX:
            return "uint", v
        raise LineError("bad_value")
    if FLOAT_RE.fullmatch(tok):
        return "float", f32_bits(tok)
    raise LineError("bad_value")


def timestamp(tok):
    if TIME_RE.fullmatch(tok):
        v = int(tok)
        if INT64_MIN <= v <= INT64_MAX:
            return v
    raise LineError("bad_timestamp")


# ---- the line -------------------------------------------------------------------------------

def scan(line, i, stops, escapes, dangling="bad_escape"):
    """Unescape a measurement, tag key, tag value, field key or string value from i up to the
    first unescaped byte of `stops` (or the end): (the bytes, the index of the stop). A
    backslash that is the line's last byte is the error `dangling`."""
    out = bytearray()
    n = len(line)
    while i < n:
        c = line[i]
        if c == BACKSLASH:
            if i + 1 == n:
                raise LineError(dangling)
            d = line[i + 1]
            if d in escapes:
                out.append(d)
            else:
                out += bytes((c, d))
            i += 2
        elif c in stops:
            break
        else:
            out.append(c)
            i += 1
    return bytes(out), i


def skip_spaces(line, i):
    while i < len(line) and line[i] == SPACE:
        i += 1
    return i


def parse_parts(line, i):
    """(measurement, tags, fields, time) of a line that is not blank or a comment, from its first
    byte after the leading spaces; fields are (key, type, value)."""
    n = len(line)
    measurement, i = scan(line, i, MEASUREMENT_ESCAPES, MEASUREMENT_ESCAPES)
    if not measurement:
        raise LineError("missing_measurement")
    tags = []
    while i < n and line[i] == COMMA:
        key, i = scan(line, i + 1, KEY_ESCAPES, KEY_ESCAPES)
        if i == n or line[i] != EQUALS or not key:
            raise LineError("bad_tag")
        value, i = scan(line, i + 1, b", ", KEY_ESCAPES)
        if not value:
            raise LineError("bad_tag")
        tags.append((key, value))
        if len(tags) > MAX_TAGS:
            raise LineError("too_many_tags")
    i = skip_spaces(line, i)
    if i == n:
        raise LineError("missing_fields")
    fields = []
    while True:
        key, i = scan(line, i, KEY_ESCAPES, KEY_ESCAPES)
        if i == n or line[i] != EQUALS or not key:
            raise LineError("bad_field")
        i += 1
        if i < n and line[i] == QUOTE:
            value, i = scan(line, i + 1, b'"', STRING_ESCAPES, "unterminated_string")
            if i == n:
                raise LineError("unterminated_string")
            i += 1
            if i < n and line[i] not in b", ":
                raise LineError("bad_value")
            fields.append((key, "string", value))
        else:
            j = i
            while j < n and line[j] not in b", ":
                j += 1
            fields.append((key,) + field_value(line[i:j]))
            i = j
        if len(fields) > MAX_FIELDS:
            raise LineError("too_many_fields")
        if i < n and line[i] == COMMA:
            i += 1
            continue
        break
    time = None
    i = skip_spaces(line, i)
    if i < n:
        j = i
        while j < n and line[j] != SPACE:
            j += 1
        time = timestamp(line[i:j])
        if skip_spaces(line, j) < n:
            raise LineError("trailing_garbage")
    return measurement, tags, fields, time


# ---- canonical names ------------------------------------------------------------------------

def escape(b, specials):
    out = bytearray()
    for c in b:
        if c in specials:
            out.append(BACKSLASH)
        out.append(c)
    return bytes(out)


def canonical_names(measurement, tags, field_keys):
    """The canonical name (bytes) of each field: the measurement, the tags stably sorted by
    their unescaped key bytewise, a space and the field key, each escaped minimally."""
    series = escape(measurement, MEASUREMENT_ESCAPES) + b"".join(
        b"," + escape(k, KEY_ESCAPES) + b"=" + escape(v, KEY_ESCAPES)
        for k, v in sorted(tags, key=lambda kv: kv[0]))
    return [series + b" " + escape(f, KEY_ESCAPES) for f in field_keys]


def text(b):
    return b.decode("latin-1")


def result(measurement, tags, fields, time):
    """The dict line_dump prints for a parsed line (parts as bytes; fields (key, type, value))."""
    names = canonical_names(measurement, tags, [k for k, _, _ in fields])
    return {"measurement": text(measurement),
            "tags": [[text(k), text(v)] for k, v in tags],
            "fields": [[text(k), t, text(v) if t == "string" else v] for k, t, v in fields],
            "time": time,
            "names": [text(n) if len(n) <= NAME_MAX else None for n in names]}


def parse_line(raw):
    """The dict line_dump prints for one line of bytes (without its '\\n')."""
    line = raw[:-1] if raw.endswith(b"\r") else raw
    i = skip_spaces(line, 0)
    if i == len(line) or line[i] == HASH:
        return {"skip": True}
    try:
        return result(*parse_parts(line, i))
    except LineError as e:
        return {"error": e.name}


def main():
    data = sys.stdin.buffer.read()
    out = sys.stdout
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the piece after the last '\n' is no line
        lines.pop()
    for raw in lines:
        out.write(json.dumps(parse_line(raw)) + "\n")


if __name__ == "__main__":
    main()
