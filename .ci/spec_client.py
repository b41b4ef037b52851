#!/usr/bin/env python3
"""A client of the chat protocol written from chat-proto/PROTOCOL.md alone, and a
conformance run of a server against that document.

    python3 .ci/spec_client.py HOST:PORT   golden vectors, then live checks against a server
    python3 .ci/spec_client.py --golden    golden vectors and codec checks only (no server)
    python3 .ci/spec_client.py --timers HOST:PORT PID HS IDLE FRAME ROOM_MEMBERS
        flood control, room limit, retention, timers and shutdown of a server started with
        --handshake-timeout HS --idle-timeout IDLE --frame-timeout FRAME (seconds)
        --room-members ROOM_MEMBERS whose process id is PID: the run ends it with SIGTERM
    python3 .ci/spec_client.py --presence-race HOST:PORT
        rounds of 481 clients named at once: each must learn every other (Roster or Entered)
    python3 .ci/spec_client.py --no-guests HOST:PORT IP_LIMIT REG_LIMIT
        a server started with --no-guests --login-rate-ip IP_LIMIT --register-rate REG_LIMIT:
        no client without AUTH, AuthRequired, and the limits on failed login attempts and on
        registrations per address (section 10)

Python 3 standard library only. Connects only to loopback addresses. Every read has a
timeout and the whole run is bounded (RUN_SECONDS); nothing sleeps blindly: a check that
something did NOT arrive waits for a later message that the server must send after it
(a "barrier"). Exit status 0 if every check passed, 1 otherwise (failures listed last).
Section numbers in messages refer to PROTOCOL.md.
"""

import ipaddress
import json
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import time
import traceback
import unicodedata
from collections import namedtuple

SPEC = os.environ.get(
    "SPEC_PATH",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chat-proto", "PROTOCOL.md"),
)
RUN_SECONDS = 55  # hard bound of the whole run (the brief: < 60 s)
READ_TIMEOUT = 5.0
VERBOSE = bool(os.environ.get("VERBOSE"))  # print every check  # default for one awaited message
ROOMS = 0x1
HISTORY = 0x2
AUTH = 0x4
MIN_FRAME_LEN = 64
MAX_FRAME_LEN_CEILING = 16 * 1024 * 1024
RELAY_OVERHEAD = 20
ROOMS_OVERHEAD = 300
HISTORY_OVERHEAD = 320

# ---------------------------------------------------------------------------
# Codec (sections 2, 3, 8.1)
# ---------------------------------------------------------------------------


class DecodeError(Exception):
    """A frame that does not decode; `kind` is the section 6 name."""

    def __init__(self, kind, detail=""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


MAXV = {16: 0xFFFF, 32: 0xFFFFFFFF, 64: 2**64 - 1}


def varint(n, bits=64):
    """Shortest varint of n (section 3.1)."""
    if not 0 <= n <= MAXV[bits]:
        raise ValueError(f"{n} does not fit a u{bits}")
    if n <= 250:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfb" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfc" + struct.pack("<I", n)
    return b"\xfd" + struct.pack("<Q", n)


class Reader:
    def __init__(self, data):
        self.d = bytes(data)
        self.p = 0

    def left(self):
        return len(self.d) - self.p

    def take(self, n):
        if n > self.left():
            raise DecodeError("Malformed", f"needs {n} byte(s), {self.left()} left")
        b = self.d[self.p : self.p + n]
        self.p += n
        return b

    def varint(self, bits):
        b = self.take(1)[0]
        if b <= 250:
            return b
        if b == 0xFB:
            return struct.unpack("<H", self.take(2))[0]
        if b == 0xFC and bits >= 32:
            return struct.unpack("<I", self.take(4))[0]
        if b == 0xFD and bits >= 64:
            return struct.unpack("<Q", self.take(8))[0]
        raise DecodeError("Malformed", f"varint marker {b:#04x} where a u{bits} is expected")


Member = namedtuple("Member", "name ip port")
RoomInfo = namedtuple("RoomInfo", "name members")
Entry = namedtuple("Entry", "id prev at sender text")  # `from` on the wire (section 9.2)
Conv = namedtuple("Conv", "tag name")  # Conversation: 0 Room, 1 Direct (section 9.2)
CONV_TAGS = ("Room", "Direct")


def enc(t, v):
    if t == "str":
        b = v.encode("utf-8")
        return varint(len(b)) + b
    if t in ("u16", "u32", "u64"):
        return varint(v, int(t[1:]))
    if t == "bool":
        return b"\x01" if v else b"\x00"
    if t == "ip":
        return (b"\x00" if v.version == 4 else b"\x01") + v.packed
    if t == "member":
        return enc("str", v.name) + enc("ip", v.ip) + enc("u16", v.port)
    if t == "roominfo":
        return enc("str", v.name) + enc("u32", v.members)
    if t == "entry":
        return b"".join(enc("u64", x) for x in v[:3]) + enc("member", v.sender) + enc("str", v.text)
    if t == "conv":
        return varint(v.tag, 32) + enc("str", v.name)
    if t.startswith("vec:"):
        return varint(len(v)) + b"".join(enc(t[4:], x) for x in v)
    raise ValueError(t)


def dec(t, r):
    if t == "str":
        n = r.varint(64)
        if n > r.left():  # checked before anything is reserved, whatever n claims
            raise DecodeError("Malformed", f"string of {n} bytes, {r.left()} left")
        b = r.take(n)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError("InvalidUtf8", f"valid up to byte {e.start}") from None
    if t in ("u16", "u32", "u64"):
        return r.varint(int(t[1:]))
    if t == "bool":
        b = r.take(1)[0]
        if b > 1:
            raise DecodeError("Malformed", f"bool {b:#04x}")
        return b == 1
    if t == "ip":
        tag = r.varint(32)
        if tag == 0:
            return ipaddress.IPv4Address(r.take(4))
        if tag == 1:
            return ipaddress.IPv6Address(r.take(16))
        raise DecodeError("Malformed", f"IpAddr tag {tag}")
    if t == "member":
        return Member(dec("str", r), dec("ip", r), dec("u16", r))
    if t == "roominfo":
        return RoomInfo(dec("str", r), dec("u32", r))
    if t == "entry":
        return Entry(dec("u64", r), dec("u64", r), dec("u64", r), dec("member", r), dec("str", r))
    if t == "conv":
        tag = r.varint(32)
        if tag > 1:
            raise DecodeError("Malformed", f"Conversation tag {tag}")
        return Conv(tag, dec("str", r))
    if t.startswith("vec:"):
        n = r.varint(64)
        out = []
        for _ in range(n):  # one element at a time: a huge count fails at the first missing one
            out.append(dec(t[4:], r))
        return out
    raise ValueError(t)


# (name, [(field, type)], sent by: "C" client, "S" server, "B" both), by tag (section 3.4, 8.2)
SCHEMA = [
    ("Send", [("text", "str")], "C"),
    ("Exit", [], "B"),
    ("Relay", [("ip", "ip"), ("port", "u16"), ("text", "str")], "S"),
    ("Hello", [("version", "u16"), ("features", "u64")], "C"),
    ("Welcome", [("version", "u16"), ("features", "u64"), ("max_frame", "u32"), ("ip", "ip"), ("port", "u16")], "S"),
    ("Error", [("reason", "str")], "B"),
    ("Joined", [("ip", "ip"), ("port", "u16")], "S"),
    ("Left", [("ip", "ip"), ("port", "u16")], "S"),
    ("Ping", [("nonce", "u64")], "B"),
    ("Pong", [("nonce", "u64")], "B"),
    ("Nick", [("name", "str")], "C"),
    ("Join", [("room", "str")], "C"),
    ("Part", [("room", "str")], "C"),
    ("Say", [("room", "str"), ("text", "str")], "C"),
    ("Tell", [("name", "str"), ("text", "str")], "C"),
    ("Who", [("room", "str")], "C"),
    ("ListRooms", [], "C"),
    ("Named", [("name", "str")], "S"),
    ("Said", [("room", "str"), ("from", "member"), ("text", "str")], "S"),
    ("Told", [("from", "member"), ("text", "str")], "S"),
    ("Entered", [("room", "str"), ("member", "member")], "S"),
    ("Departed", [("room", "str"), ("member", "member")], "S"),
    ("Renamed", [("old", "str"), ("member", "member")], "S"),
    ("Roster", [("room", "str"), ("members", "vec:member"), ("more", "bool")], "S"),
    ("Rooms", [("rooms", "vec:roominfo"), ("more", "bool")], "S"),
    ("Refused", [("code", "u16"), ("subject", "str"), ("detail", "str")], "S"),
    ("Posted", [("room", "str"), ("entry", "entry")], "S"),
    ("Direct", [("entry", "entry")], "S"),
    ("Stored", [("seq", "u64"), ("id", "u64"), ("at", "u64")], "S"),
    ("Unstored", [("seq", "u64"), ("code", "u16"), ("detail", "str")], "S"),
    ("Resume", [("conversation", "conv"), ("after", "u64"), ("limit", "u32")], "C"),
    ("Recent", [("conversation", "conv"), ("count", "u32")], "C"),
    ("Page", [("conversation", "conv"), ("entries", "vec:entry"), ("missing", "bool"), ("more", "bool")], "S"),
    ("Register", [("name", "str"), ("password", "str")], "C"),
    ("Login", [("name", "str"), ("password", "str")], "C"),
    ("LoginToken", [("token", "str")], "C"),
    ("LoggedIn", [("name", "str"), ("token", "str"), ("expires", "u64")], "S"),
    ("Logout", [], "C"),
]
TAG = {s[0]: i for i, s in enumerate(SCHEMA)}
ROOMS_TAGS = range(10, 26)
HISTORY_TAGS = range(26, 33)
AUTH_TAGS = range(33, 38)
REFUSAL = {
    1: "NameTaken", 2: "NameInvalid", 3: "RoomInvalid", 4: "NotInRoom", 5: "NoSuchRoom",
    6: "NoSuchName", 7: "TooManyRooms", 8: "RoomFull", 9: "CannotReceive", 10: "RateLimited",
    11: "Unavailable", 12: "AuthFailed", 13: "AuthRequired", 14: "NameReserved", 15: "Insecure",
    16: "Throttled", 17: "BadPassword",
}
CODE = {v: k for k, v in REFUSAL.items()}


class Msg:
    """One message: its kind (variant name) and its fields by name."""

    __slots__ = ("kind", "f", "size")

    def __init__(self, kind, *args):
        fields = SCHEMA[TAG[kind]][1]
        if len(args) != len(fields):
            raise TypeError(f"{kind} takes {len(fields)} field(s)")
        self.kind = kind
        self.f = {name: v for (name, _), v in zip(fields, args)}
        self.size = None  # payload length, for a received message

    def __getitem__(self, k):
        return self.f[k]

    def __eq__(self, o):
        return isinstance(o, Msg) and self.kind == o.kind and self.f == o.f

    def __repr__(self):
        if not self.f:
            return self.kind
        def show(v):
            if isinstance(v, str):
                return repr(v) if len(v) <= 40 else repr(v[:37]) + f"...({len(v)} chars)"
            if isinstance(v, Member):
                return f"{{{show(v.name)} {fmt_addr(v.ip, v.port)}}}"
            if isinstance(v, list):
                return "[" + ", ".join(show(x) for x in v[:4]) + (f", ... {len(v)} in all]" if len(v) > 4 else "]")
            return str(v)
        return self.kind + " { " + ", ".join(f"{k}: {show(v)}" for k, v in self.f.items()) + " }"


def fmt_addr(ip, port):
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def encode(m):
    return varint(TAG[m.kind], 32) + b"".join(enc(t, m.f[n]) for n, t in SCHEMA[TAG[m.kind]][1])


def frame(m):
    p = encode(m)
    return struct.pack(">I", len(p)) + p


def decode(payload):
    """One payload to a Msg (section 3), or DecodeError."""
    if not payload:
        raise DecodeError("EmptyFrame", "empty frame (length prefix 0)")
    r = Reader(payload)
    tag = r.varint(32)
    if tag >= len(SCHEMA):
        raise DecodeError("UnknownVariant", f"unknown message variant {tag}")
    name, fields, _ = SCHEMA[tag]
    m = Msg(name, *[dec(t, r) for _, t in fields])
    if r.left():
        raise DecodeError("TrailingBytes", f"{r.left()} trailing byte(s)")
    m.size = len(payload)
    return m


def key(name):
    """Sameness of names and rooms (section 8.4 item 4)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def longest_text(max_frame, before=1):
    """Largest n with before + varint(n) + n <= max_frame (section 2.1, 8.10)."""
    n = max_frame - before - 1
    while n > 0 and before + len(varint(n)) + n > max_frame:
        n -= 1
    return max(n, 0)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


class Fail(Exception):
    """A check that cannot go on (timeout, unexpected close, ...)."""


class Results:
    def __init__(self):
        self.failures = []
        self.notes = []
        self.passed = 0
        self.awaited = 0  # messages awaited and received, each an implicit check
        self.section = "?"

    def check(self, cond, what, detail=""):
        if VERBOSE:
            print(f"  {'ok  ' if cond else 'FAIL'} {what}", flush=True)
        if cond:
            self.passed += 1
        else:
            self.failures.append(f"[{self.section}] {what}" + (f": {detail}" if detail else ""))
            if not VERBOSE:
                print(f"  FAIL {what}" + (f": {detail}" if detail else ""), flush=True)
            else:
                print(f"       {detail}", flush=True)
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, what, f"got {got!r}, want {want!r}")

    def note(self, text):
        self.notes.append(f"[{self.section}] {text}")
        print(f"  NOTE {text}", flush=True)


R = Results()
DEADLINE = time.monotonic() + RUN_SECONDS

# ---------------------------------------------------------------------------
# Golden vectors, parsed out of PROTOCOL.md (section 4)
# ---------------------------------------------------------------------------

TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([{}\[\],=()])|([^\s{}\[\],"()=]+))')


def tokenize(s):
    out, i = [], 0
    while i < len(s):
        m = TOKEN.match(s, i)
        if not m or m.end() == i:
            if s[i:].strip() == "":
                break
            raise ValueError(f"cannot tokenize {s[i:]!r}")
        i = m.end()
        if m.group(1):
            out.append(("S", m.group(1)[1:-1]))  # the spec's strings use no escapes
        elif m.group(2):
            out.append(("P", m.group(2)))
        elif m.group(3):
            out.append(("W", m.group(3)))
    return out


class ValueParser:
    """Reads the spec's message notation: `Name { field: value, ... }`, strings, lists,
    records, and words (numbers, addresses, `true`), with `= Name` or `(note)` after a number."""

    def __init__(self, text):
        self.t = tokenize(text)
        self.i = 0

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else (None, None)

    def next(self):
        tok = self.peek()
        self.i += 1
        return tok

    def want(self, p):
        tok = self.next()
        if tok != ("P", p):
            raise ValueError(f"expected {p!r}, got {tok}")

    def fields(self):
        out = {}
        while self.peek() != ("P", "}"):
            k = self.next()
            if k[0] != "W" or not k[1].endswith(":"):
                raise ValueError(f"expected a field name, got {k}")
            out[k[1][:-1]] = self.value()
            if self.peek() == ("P", ","):
                self.next()
        self.want("}")
        return out

    def value(self):
        kind, v = self.next()
        if kind == "S":
            return ("S", v)
        if (kind, v) == ("P", "["):
            items = []
            while self.peek() != ("P", "]"):
                items.append(self.value())
                if self.peek() == ("P", ","):
                    self.next()
            self.want("]")
            return items
        if (kind, v) == ("P", "{"):
            return self.fields()
        if kind == "W":
            if self.peek() == ("P", "="):
                self.next()
                self.next()  # `= NameTaken`: the code's name, for the reader
            elif self.peek() == ("P", "("):
                self.next()
                if self.peek()[0] == "S":  # `Room("大厅")`: a tagged value
                    inner = self.next()[1]
                    self.want(")")
                    return ("T", v, inner)
                while self.next() != ("P", ")"):  # `999 (unknown)`: a note
                    pass
            return ("W", v)
        raise ValueError(f"unexpected {kind} {v!r}")

    def message(self):
        kind, name = self.next()
        if kind != "W" or name not in TAG:
            raise ValueError(f"unknown message {name!r}")
        f = {}
        if self.peek() == ("P", "{"):
            self.next()
            f = self.fields()
        if self.i != len(self.t):
            raise ValueError(f"text after the message: {self.t[self.i:]}")
        return name, f


def convert(t, v):
    """A parsed notation value to the Python value of type t."""
    if t == "str":
        assert v[0] == "S", v
        return v[1]
    if t in ("u16", "u32", "u64"):
        assert v[0] == "W", v
        return CODE[v[1]] if v[1] in CODE else int(v[1])  # `code: NameTaken` in a heading
    if t == "bool":
        assert v[1] in ("true", "false"), v
        return v[1] == "true"
    if t == "ip":
        return ipaddress.ip_address(v[1])
    if t == "member":
        return Member(convert("str", v["name"]), convert("ip", v["ip"]), convert("u16", v["port"]))
    if t == "roominfo":
        return RoomInfo(convert("str", v["name"]), convert("u32", v["members"]))
    if t == "entry":
        return Entry(*(convert("u64", v[k]) for k in ("id", "prev", "at")),
                     convert("member", v["from"]), convert("str", v["text"]))
    if t == "conv":
        assert v[0] == "T" and v[1] in CONV_TAGS, v
        return Conv(CONV_TAGS.index(v[1]), v[2])
    if t.startswith("vec:"):
        return [convert(t[4:], x) for x in v]
    raise ValueError(t)


def parse_message(text):
    name, f = ValueParser(text).message()
    fields = SCHEMA[TAG[name]][1]
    if set(f) != {n for n, _ in fields}:
        raise ValueError(f"{name} fields {sorted(f)} != {[n for n, _ in fields]}")
    return Msg(name, *[convert(t, f[n]) for n, t in fields])


ROW = re.compile(r"^\|\s*`([\w-]+)`\s*\|\s*`([^`]*)`[^|]*\|\s*`([0-9a-fA-F]{8})`\s*`([0-9a-fA-F]*)`\s*\|\s*$")


def check_golden(spec):
    R.section = "golden vectors (section 4)"
    print(f"== {R.section}", flush=True)
    vectors = {}
    for line in spec.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        name, text, header, payload = m.groups()
        try:
            msg = parse_message(text)
        except Exception as e:  # noqa: BLE001 - reported as a spec defect
            R.check(False, f"vector {name}: its message notation parses", f"{text!r}: {e}")
            continue
        want = bytes.fromhex(header + payload)
        vectors[name] = (msg, want)
        got = frame(msg)
        R.check(got == want, f"vector {name}: encode", f"got {got.hex()}, want {want.hex()}")
        R.eq(int(header, 16), len(payload) // 2, f"vector {name}: header = payload length")
        try:
            back = decode(want[4:])
            R.check(back == msg, f"vector {name}: decode", f"got {back!r}, want {msg!r}")
        except DecodeError as e:
            R.check(False, f"vector {name}: decode", str(e))
    R.check(vectors, "the section 4 tables hold the vectors")
    print(f"  ({len(vectors)} vectors)")
    kinds = {m.kind for m, _ in vectors.values()}
    missing = [s[0] for s in SCHEMA if s[0] not in kinds]
    R.check(not missing, "every message type has a golden vector", f"none for {missing}")
    names = list(vectors)
    if "register-chinese" in names:
        auth_vectors = names[names.index("register-chinese"):]
        R.eq(len(auth_vectors), 6, "section 7: AUTH added the 6 vectors from register-chinese on")
        R.check(all(TAG[vectors[n][0].kind] in AUTH_TAGS for n in auth_vectors),
                "the AUTH vectors are of tags 33-37")
    else:
        R.check(False, "section 10: the AUTH vectors (from register-chinese on) are in section 4")
    if "nick-chinese" in names:
        rooms_vectors = names[names.index("nick-chinese"):]
        if "posted-chinese" in names:
            rooms_vectors = names[names.index("nick-chinese"):names.index("posted-chinese")]
            history_vectors = names[names.index("posted-chinese"):names.index("register-chinese")
                                    if "register-chinese" in names else None]
            R.eq(len(history_vectors), 11, "section 7: HISTORY added the 11 vectors from posted-chinese on")
            R.check(all(TAG[vectors[n][0].kind] in HISTORY_TAGS for n in history_vectors),
                    "the HISTORY vectors are of tags 26-32")
        R.eq(len(rooms_vectors), 20, "section 7: ROOMS added the 20 vectors from nick-chinese on")

    # The "byte by byte" blocks must show the same bytes as the table.
    for block in re.findall(r"```text\n(.*?)```", spec, re.S):
        first, _, rest = block.partition("\n")
        m = re.match(r"([\w-]+): ", first)
        if not m or m.group(1) not in vectors:
            continue
        hexes = []
        for line in rest.splitlines():
            hm = re.match(r"\s*((?:[0-9a-f]{2} )*[0-9a-f]{2})(?=\s{2,}|\s*$)", line)
            if hm:
                hexes.append(hm.group(1).replace(" ", ""))
        R.eq("".join(hexes), vectors[m.group(1)][1].hex(), f"byte-by-byte block {m.group(1)} matches its table row")
        shown = first[len(m.group(0)):]
        try:
            R.check(parse_message(shown) == vectors[m.group(1)][0], f"byte-by-byte block {m.group(1)}: same message as the table")
        except Exception as e:  # noqa: BLE001
            R.note(f"byte-by-byte block {m.group(1)}: its heading uses a shorthand, not the table's notation"
                   f" ({shown!r}); its bytes were checked")
    check_golden_json(vectors)
    return vectors


def from_json(kind, fields):
    """A message of chat-proto/tests/golden.json (serde's JSON of `Message`) to a Msg."""
    def conv(t, v):
        if t == "ip":
            return ipaddress.ip_address(v)
        if t == "member":
            return Member(v["name"], ipaddress.ip_address(v["ip"]), v["port"])
        if t == "roominfo":
            return RoomInfo(v["name"], v["members"])
        if t == "entry":
            return Entry(v["id"], v["prev"], v["at"], conv("member", v["from"]), v["text"])
        if t == "conv":
            (tag, name), = v.items()
            return Conv(CONV_TAGS.index(tag), name)
        if t.startswith("vec:"):
            return [conv(t[4:], x) for x in v]
        if isinstance(v, dict):  # a Refusal code written by name or as Other(n)
            (k, n), = v.items()
            return n
        if t in ("u16",) and isinstance(v, str):
            return CODE[v]
        return v
    return Msg(kind, *[conv(t, fields[n]) for n, t in SCHEMA[TAG[kind]][1]])


def check_golden_json(vectors):
    """chat-proto/tests/golden.json (the crate's own vectors) against section 4 and this codec."""
    path = os.path.join(os.path.dirname(SPEC), "tests", "golden.json")
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    except (OSError, ValueError) as e:
        R.check(False, "chat-proto/tests/golden.json reads", str(e))
        return
    R.eq([r["name"] for r in rows], list(vectors), "golden.json holds the section 4 vectors, in order")
    for r in rows:
        name, want = r["name"], bytes.fromhex(r["hex"])
        if name in vectors:
            R.eq(want.hex(), vectors[name][1].hex(), f"golden.json {name}: the same bytes as section 4")
        try:
            m = r["message"]
            msg = Msg(m, *[]) if isinstance(m, str) else from_json(*next(iter(m.items())))
        except Exception as e:  # noqa: BLE001 - reported
            R.check(False, f"golden.json {name}: its message reads", f"{r['message']!r}: {e}")
            continue
        R.check(frame(msg) == want, f"golden.json {name}: encode", f"got {frame(msg).hex()}, want {want.hex()}")
        try:
            R.check(decode(want[4:]) == msg, f"golden.json {name}: decode", repr(decode(want[4:])))
        except DecodeError as e:
            R.check(False, f"golden.json {name}: decode", str(e))


def size_range(t):
    """(min, max) encoded size of a field type, strings and lists counted without their content."""
    return {
        "str": (1, 9), "u16": (1, 3), "u32": (1, 5), "u64": (1, 9), "bool": (1, 1), "ip": (5, 17),
        "member": (7, 29), "roominfo": (2, 14), "entry": (11, 65), "conv": (2, 10),
    }.get(t, (1, 9))  # vec: the count


def check_tables(spec):
    """Payload-size column of section 3.4 and the arithmetic quoted in sections 2 and 8.10."""
    R.section = "spec tables and arithmetic"
    print(f"== {R.section}", flush=True)
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (.*?) \| (.*?) \| (.*?) \|$", spec, re.M)
    seen = set()
    for tag, name, fields, by, size in rows:
        if name not in TAG or int(tag) != TAG[name] or not any(w in by for w in ("client", "server", "both")):
            continue  # section 3.4's table only (section 8.2's says C/S)
        seen.add(name)
        nums = [int(x) for x in re.findall(r"(?:^|\.\. )(\d+)", size)]
        lo = 1 + sum(size_range(t)[0] for _, t in SCHEMA[TAG[name]][1])
        hi = 1 + sum(size_range(t)[1] for _, t in SCHEMA[TAG[name]][1])
        want = [lo] if lo == hi else [lo, hi]
        R.eq(nums, want, f"section 3.4 size column of {name}")
        listed = [f.split(":")[0].strip(" `") for f in fields.split(",")] if fields != "none" else []
        R.eq(listed, [n for n, _ in SCHEMA[TAG[name]][1]], f"section 3.4 fields of {name}")
    R.eq(len(seen), len(SCHEMA), f"section 3.4 lists every tag 0-{len(SCHEMA) - 1}")
    # Section 2: the largest message without text, a Welcome with IPv6 and maximal integers, is 38 bytes.
    w = Msg("Welcome", 0xFFFF, 2**64 - 1, 2**32 - 1, ipaddress.ip_address("2001:db8::1"), 0xFFFF)
    R.eq(len(encode(w)), 38, "section 2: the largest Welcome is 38 bytes")
    # Section 2.1 arithmetic.
    R.eq(longest_text(65516), 65512, "section 2.1: longest text for max_frame 65516")
    R.eq(longest_text(253), 250, "section 2.1: longest text for max_frame 253")
    text = "x" * 65512
    R.eq(len(encode(Msg("Relay", ipaddress.ip_address("2001:db8::1"), 50000, text))), 65536,
         "section 2.1/3.4: Relay of the longest text from IPv6")
    R.eq(len(encode(Msg("Relay", ipaddress.ip_address("127.0.0.1"), 3075, text))), 65524,
         "section 3.4: Relay of the longest text from 127.0.0.1:3075")
    # Section 8.10 worked number.
    four = "\U00020000" * 32
    said = Msg("Said", four, Member(four, ipaddress.ip_address("2001:db8::1"), 65535), text)
    R.eq(len(encode(said)), 65794, "section 8.10: the largest Said of the longest Send")
    R.check(len(encode(said)) <= 65516 + ROOMS_OVERHEAD, "section 8.10: it fits max_frame + 300")


def check_decoder(spec):
    """The decoding errors section 6 names, on the spec's own examples."""
    R.section = "decoder (sections 3, 6, 8.1)"
    print(f"== {R.section}", flush=True)

    def err(payload, kind, what):
        try:
            m = decode(payload)
            R.check(False, what, f"decoded as {m!r}, want {kind}")
        except DecodeError as e:
            R.eq(e.kind, kind, what)

    err(b"", "EmptyFrame", "empty payload")
    err(b"\x26", "UnknownVariant", "tag 38")
    err(b"\x25\x00", "TrailingBytes", "Logout with a trailing byte")
    err(b"\x24\x00\x00", "Malformed", "LoggedIn cut short before expires")
    err(b"\x21\x01a\x02\xc3\x28", "InvalidUtf8", "Register with a password that is not UTF-8")
    m = re.search(r"^\| `UnknownVariant` \| Message tag ≥ (\d+)\. \"unknown message variant (\d+)\"", spec, re.M)
    R.check(m and int(m.group(1)) == int(m.group(2)) == len(SCHEMA),
            f"section 6: UnknownVariant is a tag ≥ {len(SCHEMA)} (section 3.4: tags 0-{len(SCHEMA) - 1} are known)",
            f"section 6 says {m.group(0)[2:] if m else 'nothing found'}")
    err(b"\x1e\x02\x00\x00\x00", "Malformed", "Conversation tag 2")
    err(b"\xfd" + b"\x00" * 8, "Malformed", "tag with the fd marker")
    err(b"\x01\x00", "TrailingBytes", "Exit with a trailing byte")
    err(b"\x00\x02\xc3", "Malformed", "string length beyond the payload")
    err(b"\x00\xfd" + b"\xff" * 8, "Malformed", "string length 2^64-1")
    err(b"\x00\x02\xc3\x28", "InvalidUtf8", "invalid UTF-8")
    err(b"\x00\x02\xe4\xbd", "InvalidUtf8", "a character missing its last byte")
    err(b"\x06\x00\x7f\x00\x00\x01\xfc\x00\x00\x01\x00", "Malformed", "port with fc marker (65536)")
    err(b"\x06\x02\x7f\x00\x00\x01\x01", "Malformed", "IpAddr tag 2")
    err(b"\x08\xfe", "Malformed", "fe marker")
    err(b"\x08\xff", "Malformed", "ff marker")
    err(b"\x17\x00\x00\x02", "Malformed", "bool 02")
    err(b"\x17\x00\xfd" + b"\xff" * 8 + b"\x00", "Malformed", "Vec count 2^64-1 in a short payload")
    err(b"\x19\xfc\x00\x00\x01\x00\x00\x00", "Malformed", "Refusal code with fc marker")
    try:
        R.eq(decode(b"\x08\xfb\x05\x00"), Msg("Ping", 5), "a longer-than-needed varint is accepted")
    except DecodeError as e:
        R.check(False, "a longer-than-needed varint is accepted", str(e))
    for n, want in ((1, "01"), (250, "fa"), (3075, "fb030c"), (65536, "fc00000100"), (2**64 - 1, "fd" + "ff" * 8)):
        R.eq(varint(n).hex(), want, f"varint {n} (section 3.1 table)")


# ---------------------------------------------------------------------------
# A client (sections 2.1, 5, 8.3, 8.13)
# ---------------------------------------------------------------------------

ALL_CLIENTS = []


def remaining(timeout):
    return max(0.0, min(timeout, DEADLINE - time.monotonic()))


class Client:
    """One connection. Received messages go to `inbox`; `expect` takes the first that
    matches, waiting for more as needed. Ping is answered with Pong on arrival."""

    def __init__(self, label, addr):
        self.label = label
        self.sock = socket.create_connection(addr, timeout=READ_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = self.sock.getsockname()[:2]
        ip = ipaddress.ip_address(host)
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        self.addr = (ip, port)
        self.buf = bytearray()
        self.inbox = []
        self.limit = 65536  # section 2.1: before Welcome, at least 65 536
        self.welcome = None
        self.rooms = False
        self.eof = False
        self.name = None
        self.nonce = 0
        self.drop = ()  # kinds not kept (for the crowd of the long-answer test)
        self.pings = 0
        self.answer_pings = True
        self.entered = []  # lobby Entered of dropped messages
        self.seq = 0  # Say/Tell/Send sent in a HISTORY session (section 9.4)
        self.conv_of = {}  # request number -> its conversation, ("R"|"D", key)
        self.answered = {}  # request number -> Stored/Unstored received for it
        self.last_live = {}  # conversation -> highest id received live (section 9.6, order)
        ALL_CLIENTS.append(self)

    def history(self):
        return self.welcome is not None and bool(self.welcome["features"] & HISTORY)

    def member(self, name=None):
        return Member(name if name is not None else self.name, self.addr[0], self.addr[1])

    # -- sending
    def send(self, m):
        """Send m; in a HISTORY session a Say, Tell or Send returns its number (section 9.4)."""
        f = frame(m)
        if self.welcome is not None and len(f) - 4 > self.welcome["max_frame"]:  # section 2.1: MUST NOT
            raise Fail(f"{self.label}: {m!r} is {len(f) - 4} bytes, over Welcome.max_frame "
                       f"{self.welcome['max_frame']}: this check needs a larger server limit")
        seq = None
        if self.history() and m.kind in ("Say", "Tell", "Send"):
            self.seq += 1
            seq = self.seq
            self.conv_of[seq] = ("D", key(m["name"])) if m.kind == "Tell" else ("R", key(m.f.get("room", "lobby")))
        self.sock.sendall(f)
        return seq

    def raw(self, b):
        self.sock.sendall(b)

    # -- receiving
    def _parse(self):
        while len(self.buf) >= 4:
            n = struct.unpack(">I", self.buf[:4])[0]
            if n > self.limit:  # from the header alone (section 2)
                raise Fail(f"{self.label}: server sent a frame of {n} bytes, over this client's limit {self.limit}"
                           f" (section {'8.10' if self.rooms else '2.1'})")
            if len(self.buf) < 4 + n:
                return None
            payload = bytes(self.buf[4 : 4 + n])
            del self.buf[: 4 + n]
            try:
                m = decode(payload)
            except DecodeError as e:
                R.check(False, f"{self.label}: every frame from the server decodes", f"{e} in {payload[:40].hex()}")
                continue
            self._police(m)
            if m.kind == "Ping" and self.welcome is not None:
                self.pings += 1
                if self.answer_pings:
                    self.send(Msg("Pong", m["nonce"]))  # section 5.4
                continue
            if m.kind in self.drop:
                if m.kind == "Entered" and m["room"] == "lobby":
                    self.entered.append(m["member"])  # kept for the no-doubles check only
                continue
            self.inbox.append(m)
            return m
        return None

    def _police(self, m):
        """What a server may send this client at all (sections 3.4, 5.1, 7, 8.10)."""
        if SCHEMA[TAG[m.kind]][2] == "C":
            R.check(False, f"{self.label}: the server sends no client-only message", repr(m))
        if TAG[m.kind] in ROOMS_TAGS and not self.rooms:
            R.check(False, f"{self.label}: no ROOMS message to a session without ROOMS (section 7)", repr(m))
        if TAG[m.kind] in HISTORY_TAGS and not (self.welcome and self.welcome["features"] & HISTORY):
            R.check(False, f"{self.label}: no HISTORY message to a session without HISTORY (section 9.3)", repr(m))
        if TAG[m.kind] in AUTH_TAGS and not (self.welcome and self.welcome["features"] & AUTH):
            R.check(False, f"{self.label}: no AUTH message to a session without AUTH (section 10.2)", repr(m))
        if m.kind == "LoggedIn" and self.name is not None:
            R.check(False, f"{self.label}: LoggedIn only answers an attempt before Named (10.3)", repr(m))
        if self.welcome is None and m.kind not in ("Welcome", "Error"):
            R.check(False, f"{self.label}: nothing but Welcome/Error before Welcome (section 5.1)", repr(m))
        if not self.history():
            return
        if m.kind in ("Said", "Told"):
            R.check(False, f"{self.label}: no Said or Told to a HISTORY client, which gets Posted/Direct (9.6)", repr(m))
        if m.kind in ("Stored", "Unstored"):
            s = m["seq"]
            if not 1 <= s <= self.seq:
                R.check(False, f"{self.label}: a Stored/Unstored answers a request sent (9.4)",
                        f"{m!r}, but the client numbered {self.seq}")
            self.answered[s] = self.answered.get(s, 0) + 1
            if self.answered[s] > 1:
                R.check(False, f"{self.label}: exactly one Stored/Unstored per request (9.4)", f"another {m!r}")
            if m.kind == "Stored" and s in self.conv_of:
                self._live(self.conv_of[s], m["id"], m)
        elif m.kind == "Posted":
            self._live(("R", key(m["room"])), m["entry"].id, m)
        elif m.kind == "Direct":
            self._live(("D", key(m["entry"].sender.name)), m["entry"].id, m)

    def _live(self, conv, id_, m):
        """Section 9.6, order: what a client gets live of one conversation comes in increasing
        id (a Tell to oneself comes twice with one id: its Stored and its Direct)."""
        last = self.last_live.get(conv, 0)
        if not (id_ > last or id_ == last and conv == ("D", key(self.name or ""))):
            R.check(False, f"{self.label}: live messages of a conversation come in increasing id (9.6)",
                    f"{m!r} after id {last} in {conv}")
        self.last_live[conv] = max(last, id_)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            if self.buf:
                R.check(False, f"{self.label}: the connection ends between frames",
                        f"closed mid-frame ({len(self.buf)} bytes buffered)")
                self.buf.clear()
            self.eof = True
        self.buf += data
        return True

    def _next(self, deadline):
        """The next message kept, None at end of stream; Fail at the deadline."""
        while True:
            m = self._parse()
            if m is not None:
                return m
            if self.eof:
                return None
            if not self._fill(deadline):
                raise TimeoutError

    def pump(self):
        """Take in whatever has arrived, without waiting: first what an earlier read left
        unparsed in `buf` (no select() will report it), then the socket."""
        while self._parse() is not None:
            pass
        while not self.eof and select.select([self.sock], [], [], 0)[0]:
            self._fill(time.monotonic() + 1)
            while self._parse() is not None:
                pass

    def expect(self, pred, what, timeout=READ_TIMEOUT):
        for i, m in enumerate(self.inbox):
            if pred(m):
                return self.inbox.pop(i)
        deadline = time.monotonic() + remaining(timeout)
        while True:
            try:
                m = self._next(deadline)
            except TimeoutError:
                raise Fail(f"{self.label}: no {what} within {timeout:g}s; waiting: {self.inbox[-6:]}") from None
            if m is None:
                raise Fail(f"{self.label}: connection closed while waiting for {what}; waiting: {self.inbox[-6:]}")
            if pred(m):
                self.inbox.pop()
                R.awaited += 1
                return m

    def next_msg(self, what, timeout=READ_TIMEOUT):
        return self.expect(lambda m: True, what, timeout)

    def expect_close(self, what, timeout=READ_TIMEOUT):
        """Read to end of stream; True if it came in time."""
        deadline = time.monotonic() + remaining(timeout)
        try:
            while self._next(deadline) is not None:
                pass
            return True
        except TimeoutError:
            R.check(False, f"{self.label}: {what}", f"connection still open after {timeout:g}s")
            return False

    def sync(self):
        """Everything the server queued for this client before it read our Ping has arrived."""
        self.nonce += 1
        n = self.nonce
        self.send(Msg("Ping", n))
        self.expect(lambda m: m.kind == "Pong" and m["nonce"] == n, f"Pong {n}")

    def find(self, pred):
        return [m for m in self.inbox if pred(m)]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def is_(kind, **fields):
    fields = {k.rstrip("_"): v for k, v in fields.items()}
    return lambda m: m.kind == kind and all(m.f.get(k) == v for k, v in fields.items())


class Server:
    def __init__(self, addr):
        self.addr = addr
        self.tag = f"{random.randrange(10000):04d}"


def hello(srv, label, features=0, version=1):
    """Connect and complete Hello/Welcome (section 5.1), checking Welcome."""
    c = Client(label, srv.addr)
    c.send(Msg("Hello", version, features))
    w = c.next_msg("Welcome")
    if w.kind != "Welcome":
        raise Fail(f"{label}: first message {w!r}, want Welcome")
    c.welcome = w
    R.eq(w["version"], 1, f"{label}: Welcome.version = min(offered, 1)")
    R.check(w["features"] & ~features == 0, f"{label}: Welcome.features within the bits asked", hex(w["features"]))
    R.check(MIN_FRAME_LEN <= w["max_frame"] <= MAX_FRAME_LEN_CEILING, f"{label}: max_frame in 64..=16 MiB", w["max_frame"])
    R.eq((w["ip"], w["port"]), c.addr, f"{label}: Welcome ip:port = the client's address")
    c.rooms = bool(w["features"] & ROOMS)
    if w["features"] & AUTH:
        R.check(c.rooms, f"{label}: AUTH is granted only with ROOMS (10.1)", hex(w["features"]))
    overhead = HISTORY_OVERHEAD if w["features"] & HISTORY else ROOMS_OVERHEAD if c.rooms else RELAY_OVERHEAD
    c.limit = min(w["max_frame"] + overhead, MAX_FRAME_LEN_CEILING)
    return c


def reason_is(m, want, what):
    """An Error with the reason the spec quotes. A reason cut short (to fit a small frame limit)
    is noted, not failed: reasons are for humans (section 5.6)."""
    if m.kind != "Error":
        return R.check(False, what, f"got {m!r}, want Error {{ reason: {want!r} }}")
    got = m["reason"]
    if got != want and len(got) >= 16 and want.startswith(got):
        R.note(f"{what}: reason cut to {len(got)} bytes: {got!r}")
        return True
    return R.eq(got, want, what)


def assemble(c, kind, room=None, what=None):
    """Collect a Roster/Rooms answer until more = false (section 8.9). Returns (items, frames)."""
    items, frames = [], []
    field = "members" if kind == "Roster" else "rooms"
    while True:
        m = c.expect(lambda m: m.kind == kind and (room is None or key(m["room"]) == key(room)),
                     what or f"{kind} {room or ''}".strip())
        frames.append(m)
        items.extend(m[field])
        if not m["more"]:
            return items, frames


def named(srv, label, nick, features=ROOMS):
    """A ROOMS client through Nick/Named and the lobby Roster (section 8.3).
    Returns (client, refusal or None, lobby roster)."""
    c = hello(srv, label, features)
    if not c.rooms:
        raise Fail(f"{label}: the server did not grant ROOMS (Welcome.features {c.welcome['features']:#x})")
    c.send(Msg("Nick", nick))
    m = c.next_msg("Named or Refused")
    refused = None
    if m.kind == "Refused":
        refused = m
        m = c.next_msg("Named")
    if m.kind != "Named":
        raise Fail(f"{label}: answer to Nick is {m!r}, want Named (after an optional Refused)")
    c.name = m["name"]
    roster, _ = assemble(c, "Roster", "lobby", "the lobby Roster after Named")
    R.check(roster and roster[-1] == c.member(), f"{label}: the client itself is last in its lobby Roster",
            f"last {roster[-1] if roster else None}, want {c.member()}")
    return c, refused, roster


GUEST = re.compile(r"^guest-[0-9]+$")


def bye(c):
    """Exit and wait for Exit then the close (section 5.5)."""
    if c.eof:
        return
    try:
        c.send(Msg("Exit"))
        c.expect(is_("Exit"), "Exit answering Exit")
        c.expect_close("the server closes after Exit")
    except (OSError, Fail) as e:
        R.check(False, f"{c.label}: Exit answered by Exit and a close", str(e))
    c.close()


# ---------------------------------------------------------------------------
# Live checks
# ---------------------------------------------------------------------------


def t_v1_chat(srv):
    a = hello(srv, "v1-a")
    b = hello(srv, "v1-b")
    R.eq(a.welcome["features"], 0, "v1-a: features 0 asked, 0 granted")
    b.expect(is_("Joined", ip=a.addr[0], port=a.addr[1]), "Joined of v1-a (who is already there)")
    a.expect(is_("Joined", ip=b.addr[0], port=b.addr[1]), "Joined of v1-b")
    for text in ("hello 你好 👍", "", "是的你是对的，我是中国人"):
        a.send(Msg("Send", text))
        b.expect(is_("Relay", ip=a.addr[0], port=a.addr[1], text=text), f"Relay of {text!r} from v1-a")
    b.send(Msg("Send", "back"))
    a.expect(is_("Relay", ip=b.addr[0], port=b.addr[1], text="back"), "Relay from v1-b")
    a.sync()
    R.check(not a.find(lambda m: m.kind == "Relay" and (m["ip"], m["port"]) == a.addr),
            "v1-a: the sender gets no copy of its Send (section 5.2)")
    a.send(Msg("Ping", 2**64 - 1))
    a.expect(is_("Pong", nonce=2**64 - 1), "Pong with the same nonce")
    # The longest text (section 2.1) is relayed whole.
    mf = a.welcome["max_frame"]
    n = longest_text(mf)
    long = "字" * (n // 3) + "x" * (n % 3)
    a.send(Msg("Send", long))
    r = b.expect(is_("Relay", ip=a.addr[0], port=a.addr[1]), "Relay of the longest text", 15)
    R.check(r["text"] == long, f"the longest text ({n} bytes for max_frame {mf}) is relayed unchanged")
    R.check(r.size <= mf + RELAY_OVERHEAD, "the relay fits max_frame + 20", r.size)
    # Exit, then Left to the other.
    bye(a)
    b.expect(is_("Left", ip=a.addr[0], port=a.addr[1]), "Left of v1-a after its Exit")
    # Dropping without Exit is leaving too.
    c = hello(srv, "v1-c")
    b.expect(is_("Joined", ip=c.addr[0], port=c.addr[1]), "Joined of v1-c")
    c.close()
    b.expect(is_("Left", ip=c.addr[0], port=c.addr[1]), "Left of v1-c after it dropped the connection")
    bye(b)


def t_handshake(srv):
    c = Client("hello-v0", srv.addr)
    c.send(Msg("Hello", 0, 0))
    m = c.next_msg("Error for version 0")
    R.eq(m.kind, "Error", "Hello version 0 is answered with Error (section 5.1)")
    c.expect_close("the server closes after the version-0 Error")
    c.close()

    c = hello(srv, "hello-v7", 0, version=7)  # Welcome.version = min(7, 1) checked in hello()
    bye(c)

    c = hello(srv, "hello-all-bits", 2**64 - 1)
    R.eq(c.welcome["features"], ROOMS | HISTORY | AUTH,
         "features = asked AND server's: unknown bits dropped, ROOMS, HISTORY and AUTH kept (sections 7, 9.1, 10.1)")
    bye(c)  # Exit is allowed before Nick (section 8.3)

    c = hello(srv, "oversize")
    mf = c.welcome["max_frame"]
    c.raw(struct.pack(">I", mf + 1))  # the header alone (section 2.1)
    m = c.next_msg("Error for an oversized frame")
    reason_is(m, f"invalid frame: frame of {mf + 1} bytes exceeds the {mf}-byte limit",
              "a payload over max_frame: Error from the header alone (section 2.1)")
    c.expect_close("close after the oversized frame")
    c.close()

    c = hello(srv, "second-hello")
    c.send(Msg("Hello", 1, 0))
    m = c.next_msg("Error for a second Hello")
    R.eq(m.kind, "Error", "a second Hello is a protocol error (section 5.1)")
    c.expect_close("close after the second Hello")
    c.close()

    c = hello(srv, "v1-join")
    c.send(Msg("Join", "rust"))
    m = c.next_msg("Error for Join without ROOMS")
    reason_is(m, "protocol violation: Join belongs to a capability not negotiated in the handshake",
              "Join in a version 1 session (section 8.10)")
    c.expect_close("close after Join without ROOMS")
    c.close()

    c = hello(srv, "join-before-nick", ROOMS)
    c.send(Msg("Join", "rust"))
    m = c.next_msg("Error for Join before Nick")
    reason_is(m, "expected Nick first, got Join", "Join before Nick (section 8.3)")
    c.expect_close("close after Join before Nick")
    c.close()

    c = hello(srv, "send-before-nick", ROOMS)
    c.send(Msg("Send", "hi"))
    m = c.next_msg("Error for Send before Nick")
    reason_is(m, "expected Nick first, got Send", "Send before Nick (section 8.3)")
    c.expect_close("close after Send before Nick")
    c.close()

    c = hello(srv, "ping-before-nick", ROOMS)
    c.send(Msg("Ping", 77))
    c.expect(is_("Pong", nonce=77), "Pong before Nick")
    c.send(Msg("Nick", ""))
    m = c.next_msg("Named after Ping")
    R.check(m.kind == "Named" and GUEST.match(m["name"]), "Nick after Ping: Named guest-N", repr(m))
    bye(c)

    # Frames that do not decode (section 6): the server SHOULD answer Error, then close (5.6).
    for label, payload in (("empty frame", b""), ("tag 38", b"\x26"), ("fe marker", b"\x08\xfe"),
                           ("invalid UTF-8", b"\x00\x01\xff"), ("trailing byte", b"\x01\x00"),
                           ("IpAddr tag 2", b"\x05\x01\x41\x00")):
        c = hello(srv, f"bad-{label}")
        c.raw(struct.pack(">I", len(payload)) + payload)
        m = c.next_msg(f"Error for {label}")
        R.check(m.kind == "Error" and m["reason"].startswith("invalid frame: "),
                f"a frame with {label} is answered with Error \"invalid frame: ...\" (5.6)", repr(m))
        c.expect_close(f"close after {label}")
        c.close()
    c = hello(srv, "client-error")
    c.send(Msg("Error", "bye"))
    ok = c.expect_close("an Error from the client ends the connection (5.6)")
    R.check(ok and not c.inbox, "nothing is sent back to a client's Error (5.6 SHOULD)", repr(c.inbox))
    c.close()

    c = hello(srv, "v1-sends-relay")
    c.send(Msg("Relay", ipaddress.ip_address("127.0.0.1"), 1, "x"))
    m = c.next_msg("Error for a server-only message")
    R.eq(m.kind, "Error", "a client sending Relay is answered with Error (section 3.4, SHOULD)")
    c.expect_close("close after a server-only message")
    c.close()

    c = hello(srv, "rooms-sends-said", ROOMS)
    c.send(Msg("Nick", ""))
    c.expect(is_("Named"), "Named")
    c.send(Msg("Said", "lobby", Member("x", ipaddress.ip_address("127.0.0.1"), 1), "x"))
    c.expect(lambda m: m.kind == "Error", "Error for a client sending Said")
    c.expect_close("close after a client sent Said")
    c.close()


def t_names(srv, st):
    tag = srv.tag
    al, ref, roster = named(srv, "alice", "alice" + tag)
    R.eq(ref, None, "alice: a free name is not refused")
    R.eq(al.name, "alice" + tag, "alice: Named with the name asked")
    zs, ref, roster = named(srv, "zhangsan", "张三" + tag)
    R.eq(ref, None, "张三: a free Chinese name is not refused")
    R.eq(zs.name, "张三" + tag, "张三: Named with the Chinese name")
    R.check(al.member() in roster[:-1], "张三's lobby Roster lists alice before it", repr(roster))
    al.expect(is_("Entered", room="lobby", member=zs.member()), "Entered lobby of 张三")

    ta, ref, _ = named(srv, "taken", "ALICE" + tag)
    R.check(ref is not None and ref["code"] == CODE["NameTaken"] and ref["subject"] == "ALICE" + tag,
            "a taken name (other case) is refused with NameTaken, subject the name sent (section 8.3)", repr(ref))
    R.check(GUEST.match(ta.name or ""), "after NameTaken the client is Named guest-N", ta.name)
    al.expect(is_("Entered", room="lobby", member=ta.member()), "Entered lobby of the guest")
    zs.expect(is_("Entered", room="lobby", member=ta.member()), "Entered lobby of the guest")

    em, ref, _ = named(srv, "empty", "")
    R.eq(ref, None, "an empty Nick is not refused")
    R.check(GUEST.match(em.name or "") and em.name != ta.name, "an empty Nick: Named guest-N (a fresh one)", em.name)

    bad, ref, _ = named(srv, "badname", "bad name!")
    R.check(ref is not None and ref["code"] == CODE["NameInvalid"] and ref["subject"] == "bad name!",
            "an invalid name is refused with NameInvalid (section 8.3)", repr(ref))
    R.check(GUEST.match(bad.name or ""), "after NameInvalid: Named guest-N", bad.name)

    nf, ref, _ = named(srv, "nfc", "Rene\u0301" + tag)
    R.eq(nf.name, "Ren\u00e9" + tag, "Named carries the NFC form of the name (section 8.3)")

    st1, ref, _ = named(srv, "strasse", "Straße" + tag)
    R.eq((ref, st1.name), (None, "Straße" + tag), "Straße is a valid name")
    st2, ref, _ = named(srv, "STRASSE", "STRASSE" + tag)
    R.check(ref is not None and ref["code"] == CODE["NameTaken"],
            "STRASSE is the same name as Straße (full case folding, section 8.4)", repr(ref))
    extra = []
    if al.welcome["max_frame"] >= 2 + 99:
        long = "名" * 33
        lg, ref, _ = named(srv, "toolong", long)
        R.check(ref is not None and ref["code"] == CODE["NameInvalid"], "a 33-character name is NameInvalid", repr(ref))
        ok32, ref, _ = named(srv, "len32", "名" * 28 + tag)
        R.eq(ref, None, "a 32-character Chinese name (96+ bytes) is valid")
        extra = [lg, ok32]
    else:
        R.note("max_frame too small for a 33-character Nick: name-length checks skipped")
    # After the handshake a taken name is still refused case-insensitively.
    zs.send(Msg("Nick", "ALICE" + tag))
    m = zs.expect(lambda m: m.kind in ("Refused", "Renamed"), "answer to Nick ALICE")
    R.check(m.kind == "Refused" and m["code"] == CODE["NameTaken"] and m["subject"] == "ALICE" + tag,
            "Nick ALICE while alice is connected is NameTaken (section 8.4)", repr(m))
    for c in [bad, nf, em, st1, st2] + extra:
        bye(c)
    st.update(al=al, zs=zs, ta=ta)


def t_rooms(srv, st):
    tag = srv.tag
    al, zs, ta = st["al"], st["zs"], st["ta"]
    v = hello(srv, "v1-rooms")
    st["v"] = v
    for c in (al, zs, ta):
        e = c.expect(lambda m: m.kind == "Entered" and m["room"] == "lobby" and m["member"][1:] == v.addr,
                     "Entered lobby of the version 1 client")
        R.check(GUEST.match(e["member"].name), f"{c.label}: a version 1 client enters as guest-N (section 8.11)", repr(e))
        st["v_name"] = e["member"].name
    room = "大厅" + tag
    al.send(Msg("Join", room))
    members, frames = assemble(al, "Roster", room)
    R.eq((members, frames[0]["room"]), ([al.member()], room), "Join of a new room: Roster [joiner], the room's spelling")
    zs.send(Msg("Join", room))
    members, _ = assemble(zs, "Roster", room)
    R.eq(members, [al.member(), zs.member()], "Join of an existing room: Roster in entry order, joiner last")
    al.expect(is_("Entered", room=room, member=zs.member()), f"Entered {room} of 张三")

    al.send(Msg("Say", room, "大家好"))
    zs.expect(is_("Said", room=room, from_=al.member(), text="大家好"), "Said in the room")
    al.send(Msg("Say", "lobby", "sync-1"))
    zs.expect(is_("Said", room="lobby", from_=al.member(), text="sync-1"), "Said in the lobby")
    ta.expect(is_("Said", room="lobby", from_=al.member(), text="sync-1"), "Said in the lobby")
    v.expect(is_("Relay", ip=al.addr[0], port=al.addr[1], text="sync-1"), "Relay of a lobby Say")
    R.check(not ta.find(lambda m: m.f.get("room") == room), "a non-member gets nothing of the room",
            repr(ta.find(lambda m: m.f.get("room") == room)))
    R.check(not v.find(lambda m: m.kind == "Relay" and m["text"] == "大家好"), "a version 1 client gets no other room's text")
    al.sync()
    R.check(not al.find(lambda m: m.kind == "Said" and m["from"] == al.member()), "the sayer gets no copy of its Say")

    # A room keeps its creator's spelling (section 8.4 item 6).
    rr = "Rust" + tag
    al.send(Msg("Join", rr))
    assemble(al, "Roster", rr)
    zs.send(Msg("Join", "RUST" + tag))
    members, frames = assemble(zs, "Roster", rr)
    R.eq(frames[0]["room"], rr, "Join RUST enters the room created as Rust and shows it as Rust")
    al.expect(is_("Entered", room=rr, member=zs.member()), "Entered of 张三 into Rust (creator's spelling)")
    zs.send(Msg("Say", "rust" + tag, "hi"))
    m = al.expect(is_("Said", from_=zs.member(), text="hi"), "Said in Rust")
    R.eq(m["room"], rr, "Said names the room as the server shows it")

    # Join again: the Roster again, nobody gets Entered.
    zs.send(Msg("Join", room))
    members, _ = assemble(zs, "Roster", room, "the Roster again on a second Join")
    R.eq(members, [al.member(), zs.member()], "a second Join: the same Roster")
    zs.send(Msg("Say", room, "sync-2"))
    al.expect(is_("Said", room=room, text="sync-2"), "Said after the second Join")
    R.check(not al.find(lambda m: m.kind == "Entered" and m["room"] == room), "a second Join: nobody gets Entered")

    # Who, as a non-member, and ListRooms.
    ta.send(Msg("Who", room))
    members, _ = assemble(ta, "Roster", room, "Who by a non-member")
    R.eq(members, [al.member(), zs.member()], "Who of a room one is not in")
    ta.send(Msg("ListRooms"))
    rooms, frames = assemble(ta, "Rooms")
    got = {key(r.name): r for r in rooms}
    R.check(key("lobby") in got, "ListRooms lists the lobby", repr(rooms))
    R.eq(got.get(key(room)), RoomInfo(room, 2), "ListRooms: the room with its member count")
    R.eq(got.get(key(rr)), RoomInfo(rr, 2), "ListRooms: Rust with its creator's spelling")
    R.eq([key(r.name) for r in rooms], sorted(key(r.name) for r in rooms), "ListRooms is sorted by key")

    # Part: Departed to every member including the leaver.
    zs.send(Msg("Part", room))
    zs.expect(is_("Departed", room=room, member=zs.member()), "Departed confirming its own Part")
    al.expect(is_("Departed", room=room, member=zs.member()), "Departed of 张三")
    zs.send(Msg("Say", room, "after"))
    m = zs.expect(is_("Refused"), "Refused for Say after Part")
    R.eq((m["code"], m["subject"]), (CODE["NotInRoom"], room), "Say in a room one parted: NotInRoom")
    for what, req, code in (
        ("Part of a room one is not in", Msg("Part", room), "NotInRoom"),
        ("Part of no such room", Msg("Part", "nosuch" + tag), "NotInRoom"),
        ("Part of an invalid name", Msg("Part", "bad room"), "NotInRoom"),
        ("Join of an invalid room name", Msg("Join", "bad room"), "RoomInvalid"),
        ("Join of an empty room name", Msg("Join", ""), "RoomInvalid"),
        ("Who of an invalid room name", Msg("Who", "#rust"), "RoomInvalid"),
        ("Who of no such room", Msg("Who", "nosuch" + tag), "NoSuchRoom"),
    ):
        zs.send(req)
        subject = req.f.get("room")
        m = zs.expect(lambda m: m.kind == "Refused" or m.kind in ("Roster", "Departed") and key(m["room"]) == key(subject),
                      f"answer to {req!r}")
        R.eq((m.kind, m.f.get("code"), m.f.get("subject")), ("Refused", CODE[code], subject), what)
    # A room goes when its last member leaves.
    for c in (al, zs):
        c.send(Msg("Part", rr))
        c.expect(is_("Departed", room=rr, member=c.member()), "Departed from Rust")
    al.send(Msg("Who", rr))
    m = al.expect(lambda m: m.kind in ("Refused", "Roster"), "answer to Who of an emptied room")
    R.eq((m.kind, m.f.get("code")), ("Refused", CODE["NoSuchRoom"]), "an emptied room is removed (section 8.4 item 6)")
    al.send(Msg("Part", room))
    al.expect(is_("Departed", room=room, member=al.member()), "alice parts the room")


def t_tell(srv, st):
    tag = srv.tag
    al, zs, ta = st["al"], st["zs"], st["ta"]
    zs.send(Msg("Tell", "ALICE" + tag, "你好"))
    al.expect(is_("Told", from_=zs.member(), text="你好"), "Told from 张三 (name matched by key)")
    zs.sync()
    R.check(not zs.find(lambda m: m.kind in ("Told", "Refused")), "the teller gets nothing back",
            repr(zs.find(lambda m: m.kind in ("Told", "Refused"))))
    ta.sync()
    R.check(not ta.find(is_("Told")), "only the recipient sees a direct message")
    zs.send(Msg("Tell", "nobody" + tag, "x"))
    m = zs.expect(is_("Refused"), "Refused for a Tell to nobody")
    R.eq((m["code"], m["subject"]), (CODE["NoSuchName"], "nobody" + tag), "Tell to nobody: NoSuchName")
    zs.send(Msg("Tell", st["v_name"].upper(), "x"))
    m = zs.expect(is_("Refused"), "Refused for a Tell to a version 1 client")
    R.eq((m["code"], m["subject"]), (CODE["CannotReceive"], st["v_name"].upper()),
         "Tell to a version 1 client: CannotReceive")
    al.send(Msg("Tell", al.name, "note to self"))
    al.expect(is_("Told", from_=al.member(), text="note to self"), "a Tell to oneself is delivered to oneself")
    st["v"].sync()
    R.check(not st["v"].find(lambda m: m.kind == "Relay" and m["text"] in ("你好", "x", "note to self")),
            "a version 1 client sees no direct message")
    # RateLimited (section 8.5): a burst well over the reference's 20 is partly refused, the rest delivered.
    burst = 40
    for i in range(burst):
        ta.send(Msg("Tell", al.name, f"burst-{i}"))
    ta.send(Msg("Say", "lobby", "sync-burst"))
    al.expect(is_("Said", text="sync-burst"), "Said after the Tell burst")
    told = al.find(lambda m: m.kind == "Told" and m["text"].startswith("burst-"))
    ta.sync()
    refused = ta.find(lambda m: m.kind == "Refused")
    al.inbox = [m for m in al.inbox if m not in told]
    ta.inbox = [m for m in ta.inbox if m not in refused]
    R.check(all(m["code"] == CODE["RateLimited"] and m["subject"] == al.name for m in refused),
            "refusals of a Tell burst are RateLimited, subject the recipient", repr(refused[:2]))
    R.eq(len(told) + len(refused), burst, "every Tell of a burst is delivered or refused, not both")
    R.check(refused, f"a burst of {burst} Tells is rate-limited (reference: bursts of 20)",
            f"{len(told)} delivered")
    R.check(not ta.eof, "RateLimited leaves the connection open")


def t_rename(srv, st):
    tag = srv.tag
    al, zs, ta, v = st["al"], st["zs"], st["ta"], st["v"]
    both = "both" + tag
    for c in (al, zs):
        c.send(Msg("Join", both))
        assemble(c, "Roster", both)
    al.expect(is_("Entered", room=both, member=zs.member()), "Entered of 张三 in the shared room")
    # x shares no room with 张三: in its own room only.
    x, _, _ = named(srv, "loner", "loner" + tag)
    for c in (al, zs, ta):
        c.expect(is_("Entered", room="lobby", member=x.member()), "Entered lobby of loner")
    x.send(Msg("Join", "solo" + tag))
    assemble(x, "Roster", "solo" + tag)
    x.send(Msg("Part", "lobby"))
    x.expect(is_("Departed", room="lobby", member=x.member()), "loner parts the lobby")
    for c in (al, zs, ta):
        c.expect(is_("Departed", room="lobby", member=x.member()), "Departed lobby of loner")
    v.expect(is_("Left", ip=x.addr[0], port=x.addr[1]), "Left of loner when it parts the lobby")

    v2 = hello(srv, "v1-late")
    al.send(Msg("Say", "lobby", "sync-late"))
    v2.expect(is_("Relay", ip=al.addr[0], port=al.addr[1], text="sync-late"), "Relay to a late version 1 client")
    R.check(v2.find(is_("Joined", ip=al.addr[0], port=al.addr[1])), "a late version 1 client got Joined of alice first")
    R.check(not v2.find(is_("Joined", ip=x.addr[0], port=x.addr[1])),
            "a late version 1 client gets no Joined for a client outside the lobby (section 8.6)")
    bye(v2)
    old = zs.member()
    new = "李四" + tag
    zs.send(Msg("Nick", new))
    zs.name = new
    want = Msg("Renamed", old.name, zs.member())
    R.eq(zs.expect(is_("Renamed"), "Renamed to the renamer"), want, "Renamed to the renamer")
    R.eq(al.expect(is_("Renamed"), "Renamed to a room-mate"), want, "Renamed to a client sharing two rooms")
    R.eq(ta.expect(is_("Renamed"), "Renamed to a lobby member"), want, "Renamed to a lobby member")
    zs.send(Msg("Say", "lobby", "sync-3"))
    al.expect(is_("Said", room="lobby", from_=zs.member(), text="sync-3"), "Said with the new name")
    ta.expect(is_("Said", room="lobby", from_=zs.member(), text="sync-3"), "Said with the new name")
    v.expect(is_("Relay", ip=zs.addr[0], port=zs.addr[1], text="sync-3"), "Relay after a rename")
    R.check(not al.find(is_("Renamed")), "Renamed once each, however many rooms shared (section 8.6)")
    zs.send(Msg("Tell", x.name, "sync-4"))
    x.expect(is_("Told", text="sync-4"), "Told to loner")
    R.check(not x.find(is_("Renamed")), "no Renamed to a client sharing no room")
    al.send(Msg("Tell", old.name, "to old"))
    m = al.expect(is_("Refused"), "Refused for a Tell to the old name")
    R.eq((m["code"], m["subject"]), (CODE["NoSuchName"], old.name), "Tell to the old name: NoSuchName")
    al.send(Msg("Tell", new, "to new"))
    zs.expect(is_("Told", from_=al.member(), text="to new"), "Told under the new name")
    # Same name again: Renamed with old == new, to the client only.
    zs.send(Msg("Nick", new))
    R.eq(zs.expect(is_("Renamed"), "Renamed for the same name"), Msg("Renamed", new, zs.member()),
         "Nick with one's own name: Renamed old == new")
    zs.send(Msg("Say", both, "sync-5"))
    al.expect(is_("Said", room=both, text="sync-5"), "Said after a same-name Nick")
    R.check(not al.find(is_("Renamed")), "a same-name Nick reaches the client only")
    # A case-only change is a rename.
    al.send(Msg("Nick", "Alice" + tag))
    oldal = al.member()
    al.name = "Alice" + tag
    want = Msg("Renamed", oldal.name, al.member())
    R.eq(al.expect(is_("Renamed"), "Renamed (case change)"), want, "a case-only change is a rename (to itself)")
    R.eq(zs.expect(is_("Renamed"), "Renamed (case change)"), want, "a case-only change is a rename (to others)")
    # An empty Nick after the handshake is invalid.
    zs.send(Msg("Nick", ""))
    m = zs.expect(lambda m: m.kind in ("Refused", "Renamed", "Named"), "answer to Nick \"\" after the handshake")
    R.eq((m.kind, m.f.get("code"), m.f.get("subject")), ("Refused", CODE["NameInvalid"], ""),
         "Nick \"\" after the handshake: NameInvalid")
    # The version 1 client saw none of it.
    v.sync()
    bye(x)
    al.send(Msg("Part", both))
    al.expect(is_("Departed", room=both, member=al.member()), "alice parts the shared room")
    zs.expect(is_("Departed", room=both, member=al.member()), "Departed of alice")
    zs.send(Msg("Part", both))
    zs.expect(is_("Departed", room=both), "李四 parts the shared room")


def t_mixed(srv, st):
    """Section 8.11, one row at a time."""
    tag = srv.tag
    w = hello(srv, "v1-w")
    r, _, roster = named(srv, "mixed", "mixed" + tag)
    guest = [mb for mb in roster if mb[1:] == w.addr]
    R.check(len(guest) == 1 and GUEST.match(guest[0].name), "a version 1 client is in the lobby Roster as guest-N",
            repr(roster))
    w.expect(is_("Joined", ip=r.addr[0], port=r.addr[1]), "Joined when a ROOMS client is named")
    # v1 connects while the ROOMS client is there.
    w2 = hello(srv, "v1-w2")
    e = r.expect(lambda m: m.kind == "Entered" and m["room"] == "lobby" and m["member"][1:] == w2.addr,
                 "Entered lobby of a version 1 client")
    R.check(GUEST.match(e["member"].name), "a version 1 client enters as guest-N", repr(e))
    w2.expect(is_("Joined", ip=r.addr[0], port=r.addr[1]), "Joined of the ROOMS client already there")
    gw = guest[0] if guest else None
    w.send(Msg("Send", "from v1"))
    R.eq(r.expect(is_("Said", text="from v1"), "Said of a version 1 Send"), Msg("Said", "lobby", gw, "from v1"),
         "a version 1 Send reaches ROOMS clients as Said lobby from guest-N")
    r.send(Msg("Say", "lobby", "from rooms"))
    w.expect(is_("Relay", ip=r.addr[0], port=r.addr[1], text="from rooms"), "Relay of a lobby Say")
    r.send(Msg("Send", "send from rooms"))
    w.expect(is_("Relay", ip=r.addr[0], port=r.addr[1], text="send from rooms"), "Relay of a ROOMS client's Send")
    st["al"].expect(is_("Said", room="lobby", from_=r.member(), text="send from rooms"),
                    "a ROOMS client's Send is Said in the lobby")
    # Parting the lobby: Left to version 1 clients; back in: Joined.
    r.send(Msg("Part", "lobby"))
    r.expect(is_("Departed", room="lobby", member=r.member()), "Departed confirming Part lobby")
    w.expect(is_("Left", ip=r.addr[0], port=r.addr[1]), "Left when a ROOMS client parts the lobby")
    st["al"].expect(is_("Departed", room="lobby", member=r.member()), "Departed lobby")
    w.send(Msg("Send", "while parted"))
    st["al"].expect(is_("Said", text="while parted"), "Said of the version 1 client")
    r.sync()
    R.check(not r.find(lambda m: m.f.get("text") == "while parted"), "a client that parted the lobby gets no lobby text")
    r.send(Msg("Send", "parted send"))
    m = r.expect(is_("Refused"), "Refused for Send after parting the lobby")
    R.eq((m["code"], m["subject"]), (CODE["NotInRoom"], "lobby"), "Send after Part lobby: NotInRoom, subject lobby")
    w.sync()
    R.check(not w.find(lambda m: m.f.get("text") == "parted send"), "a refused Send is not relayed")
    r.send(Msg("Join", "lobby"))
    members, _ = assemble(r, "Roster", "lobby", "the lobby Roster on joining it again")
    R.check(members and members[-1] == r.member(), "back in the lobby: joiner last")
    w.expect(is_("Joined", ip=r.addr[0], port=r.addr[1]), "Joined when a ROOMS client joins the lobby again")
    # Order (5.3, 8.6): presence before the first message, and after the last, even pipelined.
    q = hello(srv, "pipeliner", ROOMS)
    q.raw(frame(Msg("Nick", "")) + frame(Msg("Say", "lobby", "early")))
    q.expect(is_("Named"), "Named")
    w.expect(is_("Relay", ip=q.addr[0], port=q.addr[1], text="early"), "Relay of a Say pipelined behind Nick")
    R.check(w.find(is_("Joined", ip=q.addr[0], port=q.addr[1])), "a peer's Joined reaches a version 1 client before its first Relay (5.3)")
    m = st["al"].expect(lambda m: m.kind == "Said" and m["text"] == "early", "Said of a Say pipelined behind Nick")
    R.check(st["al"].find(lambda m: m.kind == "Entered" and m["room"] == "lobby" and m["member"][1:] == q.addr),
            "a member's Entered reaches a client before its first Said (8.6)")
    q.raw(frame(Msg("Say", "lobby", "late")) + frame(Msg("Exit")))
    w.expect(is_("Left", ip=q.addr[0], port=q.addr[1]), "Left of a client that said something and exited")
    R.check(w.find(is_("Relay", ip=q.addr[0], port=q.addr[1], text="late")), "a peer's last Relay reaches a version 1 client before its Left (5.3)")
    st["al"].expect(lambda m: m.kind == "Departed" and m["room"] == "lobby" and m["member"][1:] == q.addr, "Departed of the pipeliner")
    R.check(st["al"].find(lambda m: m.kind == "Said" and m["text"] == "late"), "a member's last Said reaches a client before its Departed (8.6)")
    q.expect_close("close after Exit")

    # The longest Say in the lobby (section 8.10) reaches both kinds of client.
    n = longest_text(r.welcome["max_frame"], 1 + len(enc("str", "lobby")))
    r.send(Msg("Say", "lobby", "y" * n))
    m = w.expect(is_("Relay", ip=r.addr[0], port=r.addr[1]), "Relay of the longest lobby Say")
    R.check(m["text"] == "y" * n and m.size <= w.welcome["max_frame"] + RELAY_OVERHEAD,
            f"the longest lobby Say ({n} bytes) reaches a version 1 client within max_frame + 20", m.size)
    m = st["al"].expect(is_("Said", from_=r.member(), room="lobby", text="y" * n), "Said of the longest lobby Say")
    R.check(m.size <= st["al"].welcome["max_frame"] + ROOMS_OVERHEAD,
            "... and a ROOMS client within max_frame + 300", m.size)
    # A rename is nothing to a version 1 client.
    r.send(Msg("Nick", "mixed2" + tag))
    r.name = "mixed2" + tag
    r.expect(is_("Renamed"), "Renamed")
    r.send(Msg("Say", "lobby", "sync-6"))
    w.expect(is_("Relay", ip=r.addr[0], port=r.addr[1], text="sync-6"), "Relay after a rename")
    # Leaving: Left and Departed.
    bye(r)
    w.expect(is_("Left", ip=r.addr[0], port=r.addr[1]), "Left when a ROOMS client exits")
    st["al"].expect(is_("Departed", room="lobby", member=r.member()), "Departed lobby of an exiting ROOMS client")
    bye(w2)
    st["al"].expect(is_("Departed", room="lobby", member=Member(e["member"].name, *w2.addr)),
                    "Departed lobby of a version 1 client leaving")
    bye(w)


# ---------------------------------------------------------------------------
# History (section 9)
# ---------------------------------------------------------------------------


def hnamed(srv, label, nick):
    """A HISTORY client through Nick/Named and the lobby Roster (sections 9.1, 8.3)."""
    c, _, roster = named(srv, label, nick, ROOMS | HISTORY)
    R.eq(c.welcome["features"], ROOMS | HISTORY, f"{label}: features 3 asked, 3 granted (9.1)")
    if not c.history():
        raise Fail(f"{label}: the server did not grant HISTORY: the server under test must keep history")
    return c, roster


def answer(c, seq, what=None):
    """The Stored or Unstored for request `seq` (section 9.4), matched by number."""
    return c.expect(lambda m: m.kind in ("Stored", "Unstored") and m["seq"] == seq, what or f"answer to request {seq}")


def stored(c, seq, what):
    """Request `seq` answered Stored (section 9.4); returns the Stored."""
    m = answer(c, seq, f"Stored for {what}")
    if not R.eq(m.kind, "Stored", f"{c.label}: {what} is answered Stored (9.4)"):
        raise Fail(f"{c.label}: {what}: {m!r}")
    return m


def plausible(at):
    """Section 9.2: ms since the Unix epoch; the server runs on this machine."""
    return abs(at - time.time() * 1000) <= 120_000


def page_of(c, conv, what):
    """The next Page or Refused, in the order answers come (section 9.7)."""
    return c.expect(lambda m: m.kind == "Refused" or m.kind == "Page" and m["conversation"] == conv, what)


def read_all(c, conv, after, limit, what):
    """Resume from `after` until more = false (section 9.7). Returns (entries, pages)."""
    entries, pages = [], []
    c.send(Msg("Resume", conv, after, limit))
    while True:
        p = page_of(c, conv, what)
        if p.kind != "Page":
            raise Fail(f"{c.label}: {what}: {p!r}, want a Page")
        pages.append(p)
        entries += p["entries"]
        if not p["more"]:
            return entries, pages
        if not R.check(p["entries"], "a Page with more = true holds at least one entry (9.7)", repr(p)):
            raise Fail(f"{c.label}: {what}: an empty Page with more = true")
        c.send(Msg("Resume", conv, p["entries"][-1].id, limit))


def chain(entries, prev, what):
    """Section 9.5/9.7: ids strictly increasing, each prev the id before (nothing skipped), `at`
    never decreasing and plausible."""
    bad = []
    at = 0
    for e in entries:
        if e.prev != prev or e.id <= prev or e.at < at or not plausible(e.at):
            bad.append(e)
        prev, at = e.id, e.at
    return R.check(not bad, what, f"{len(bad)} wrong, first {bad[:1]}")


def th_negotiation(srv, st):
    """Sections 9.1 and 9.3: the bits granted, and HISTORY requests outside a HISTORY session."""
    c = hello(srv, "h-features-2", HISTORY)
    R.eq(c.welcome["features"], 0, "HISTORY asked without ROOMS: neither granted (9.1)")
    c.send(Msg("Resume", Conv(0, "lobby"), 0, 0))
    reason_is(c.next_msg("Error for Resume without HISTORY"),
              "protocol violation: Resume belongs to a capability not negotiated in the handshake",
              "Resume in a version 1 session (9.3)")
    c.expect_close("close after Resume without HISTORY")
    c.close()

    c, _, _ = named(srv, "h-features-1", "", ROOMS)
    R.eq(c.welcome["features"], ROOMS, "ROOMS asked alone: ROOMS granted, no HISTORY (9.1)")
    c.send(Msg("Recent", Conv(0, "lobby"), 1))
    reason_is(c.next_msg("Error for Recent without HISTORY"),
              "protocol violation: Recent belongs to a capability not negotiated in the handshake",
              "Recent in a ROOMS-only session (9.3)")
    c.expect_close("close after Recent without HISTORY")
    c.close()

    c = hello(srv, "h-features-11", 0x8 | ROOMS | HISTORY)
    R.eq(c.welcome["features"], ROOMS | HISTORY, "features 11: ROOMS and HISTORY granted, the unknown bit dropped (9.1)")
    c.send(Msg("Resume", Conv(0, "lobby"), 0, 0))
    reason_is(c.next_msg("Error for Resume before Nick"), "expected Nick first, got Resume",
              "Resume before Nick (9.3, 8.3)")
    c.expect_close("close after Resume before Nick")
    c.close()

    c = hello(srv, "h-features-7", ROOMS | HISTORY | AUTH)
    R.eq(c.welcome["features"], ROOMS | HISTORY | AUTH, "features 7: ROOMS, HISTORY and AUTH granted (9.1, 10.1)")
    c.send(Msg("Resume", Conv(0, "lobby"), 0, 0))
    reason_is(c.next_msg("Error for Resume before the name"), "expected Nick, Register, Login or LoginToken first, got Resume",
              "Resume before the name with AUTH (9.3, 10.3 item 1)")
    c.expect_close("close after Resume before the name")
    c.close()


def th_delivery(srv, st):
    """Sections 9.4 to 9.6 and 9.9: numbering, Stored/Unstored, Posted/Direct beside Said/Told/Relay."""
    tag = srv.tag
    v = hello(srv, "h-v1")
    a, roster = hnamed(srv, "h-alice", "hA" + tag)
    vm = next((mb for mb in roster if mb[1:] == v.addr), None)
    if not vm:
        raise Fail(f"h-alice: the version 1 client is not in the lobby Roster {roster}")
    b, _ = hnamed(srv, "h-bob", "hB" + tag)
    c, _, _ = named(srv, "h-carol", "hC" + tag)
    for x in (b, c):
        a.expect(is_("Entered", room="lobby", member=x.member()), f"Entered lobby of {x.label}")
    room = "历史" + tag
    for x in (a, b, c):
        x.send(Msg("Join", room))
        assemble(x, "Roster", room)
    conv = Conv(0, room)
    a.send(Msg("Recent", conv, 1))
    p = page_of(a, conv, "Page of a new room")
    R.eq(p, Msg("Page", conv, [], False, False), "Recent of a room with nothing stored: an empty Page (9.7)")

    # Section 9.4: a Say, answered Stored { 1, id, at }; Posted to HISTORY, Said to ROOMS members.
    s1 = stored(a, a.send(Msg("Say", room, "m1")), "the first Say")
    R.eq(s1["seq"], 1, "the first Say is request 1 (9.4)")
    R.check(s1["id"] >= 1 and plausible(s1["at"]), "Stored: id at least 1, at in ms since the epoch (9.2, 9.5)", repr(s1))
    e = b.expect(is_("Posted", room=room), "Posted of m1")["entry"]
    R.eq(e, Entry(s1["id"], 0, s1["at"], a.member(), "m1"),
         "Posted to another HISTORY member: the sender's id and at, prev 0 in a new room, from, text (9.5, 9.6)")
    c.expect(is_("Said", room=room, from_=a.member(), text="m1"), "Said to a ROOMS-only member for the same message (9.6)")

    # A ROOMS client's Send is a Say to the lobby, numbered likewise (9.4); a version 1 client gets Relay.
    text = "h-lobby-" + tag
    s2 = stored(a, a.send(Msg("Send", text)), "a Send")
    R.eq(s2["seq"], 2, "a Send is numbered in the same count (9.4)")
    e = b.expect(is_("Posted", room="lobby"), "Posted of the Send")["entry"]
    R.eq((e.id, e.at, e.sender, e.text), (s2["id"], s2["at"], a.member(), text),
         "a Send reaches HISTORY members as Posted lobby (9.6)")
    c.expect(is_("Said", room="lobby", from_=a.member(), text=text), "Said lobby of the Send")
    v.expect(is_("Relay", ip=a.addr[0], port=a.addr[1], text=text), "Relay of a HISTORY client's Send (9.6)")

    # Refusals become Unstored with the same code; every request gets exactly one answer.
    for what, req, code in (
        ("a Say to a room it is not in", Msg("Say", "nosuch" + tag, "x"), "NotInRoom"),
        ("a Tell to a name nobody has", Msg("Tell", "nobody" + tag, "x"), "NoSuchName"),
        ("a Tell to a version 1 client", Msg("Tell", vm.name, "x"), "CannotReceive"),
    ):
        seq = a.send(req)
        m = answer(a, seq, f"answer to {what}")
        R.eq((m.kind, m["seq"], m.f.get("code")), ("Unstored", seq, CODE[code]),
             f"{what}: Unstored {{ {seq}, {code} }} (9.4)")

    # Direct between two HISTORY clients: Stored to the sender, Direct with the same id (9.6).
    s6 = stored(a, a.send(Msg("Tell", b.name.upper(), "hi b")), "a Tell")
    R.eq(s6["seq"], 6, "requests refused are numbered too (9.4)")
    e = b.expect(is_("Direct"), "Direct of the Tell")["entry"]
    R.eq(e, Entry(s6["id"], 0, s6["at"], a.member(), "hi b"),
         "Direct to the recipient: the Stored id, prev 0, from, text (9.6)")

    s7 = stored(a, a.send(Msg("Say", room, "m2")), "the second Say")
    e = b.expect(is_("Posted", room=room), "Posted of m2")["entry"]
    R.eq((e.id, e.prev, e.text), (s7["id"], s1["id"], "m2"), "Posted: prev is the id of the room's previous message (9.5)")
    R.check(s7["id"] > s1["id"] and s7["at"] >= s1["at"], "ids increase and at never decreases in a room (9.5)",
            f"{s1!r} then {s7!r}")
    c.expect(is_("Said", room=room, text="m2"), "Said of m2")

    # Pipelined, one refused in the middle: answers matched by number.
    seqs = [a.send(Msg("Say", room, "m3")), a.send(Msg("Say", "nosuch2" + tag, "x")), a.send(Msg("Say", room, "m4"))]
    got = [answer(a, s) for s in seqs]
    R.eq([(m.kind, m.f.get("code")) for m in got], [("Stored", None), ("Unstored", CODE["NotInRoom"]), ("Stored", None)],
         "three pipelined requests, the middle one refused: Stored, Unstored, Stored by number (9.4)")
    s8, s10 = got[0], got[2]
    ids = [s1["id"], s7["id"], s8["id"], s10["id"]]
    for want in ("m3", "m4"):
        c.expect(is_("Said", room=room, text=want), f"Said of {want}")
    posted = [b.expect(is_("Posted", room=room), f"Posted of {t}")["entry"] for t in ("m3", "m4")]
    R.eq([(x.id, x.prev, x.text) for x in posted], [(s8["id"], s7["id"], "m3"), (s10["id"], s8["id"], "m4")],
         "Posted of pipelined Says: their ids, each prev the one before (9.5)")

    # The sender gets no Posted of its own: b's reply, with a larger id, is the barrier (9.6 order).
    sb = stored(b, b.send(Msg("Say", room, "reply")), "bob's Say")
    e = a.expect(is_("Posted", room=room), "Posted of bob's reply")["entry"]
    R.eq((e.id, e.prev, e.sender), (sb["id"], s10["id"], b.member()), "Posted of a reply: prev is the sender's own last id (9.5)")
    ids.append(sb["id"])
    R.check(not a.find(lambda m: m.kind == "Posted" and m["entry"].sender == a.member()),
            "the HISTORY sender gets no Posted of its own message (9.4)", repr(a.find(is_("Posted"))[:2]))
    c.expect(is_("Said", room=room, text="reply"), "Said of bob's reply")

    sd = stored(b, b.send(Msg("Tell", a.name, "hi a")), "bob's Tell")
    e = a.expect(is_("Direct"), "Direct of bob's Tell")["entry"]
    R.eq((e.id, e.prev, e.sender, e.text), (sd["id"], s6["id"], b.member(), "hi a"),
         "a Direct reply: prev is the conversation's previous id, whoever sent it (9.5, 9.6)")
    ss = stored(a, a.send(Msg("Tell", a.name, "self")), "a Tell to oneself")
    e = a.expect(is_("Direct"), "Direct of a Tell to oneself")["entry"]
    R.eq((e.id, e.sender, e.text), (ss["id"], a.member(), "self"), "a Tell to oneself: Stored and Direct with the same id (9.4)")

    # ROOMS-only and version 1 clients keep Told, Said and Relay; their messages are stored too (9.6).
    c.send(Msg("Tell", a.name, "from carol"))
    e = a.expect(is_("Direct"), "Direct from a ROOMS-only client")["entry"]
    R.eq((e.prev, e.sender, e.text), (0, c.member(), "from carol"), "a ROOMS-only client's Tell reaches a HISTORY client as Direct (9.6)")
    sc = stored(a, a.send(Msg("Tell", c.name, "to carol")), "a Tell to a ROOMS-only client")
    c.expect(is_("Told", from_=a.member(), text="to carol"), "Told to a ROOMS-only client (9.6)")
    R.check(sc["id"] > e.id, "ids increase in a direct conversation (9.5)", f"{e.id} then {sc['id']}")
    vtext = "from v1 " + tag
    v.send(Msg("Send", vtext))
    got = [x.expect(is_("Posted", room="lobby"), "Posted of a version 1 Send")["entry"] for x in (a, b)]
    R.check(all(e.sender == vm and e.text == vtext and plausible(e.at) for e in got) and got[0] == got[1],
            "a version 1 client's Send is stored and reaches HISTORY members as one Posted lobby entry (9.6)", repr(got))
    vid = got[0].id

    # A Send after parting the lobby: Unstored NotInRoom (9.4's table).
    a.send(Msg("Part", "lobby"))
    a.expect(is_("Departed", room="lobby", member=a.member()), "Departed confirming Part lobby")
    seq = a.send(Msg("Send", "parted"))
    m = answer(a, seq)
    R.eq((m.kind, m.f.get("code")), ("Unstored", CODE["NotInRoom"]), "a Send after parting the lobby: Unstored NotInRoom (9.4)")
    a.send(Msg("Join", "lobby"))
    assemble(a, "Roster", "lobby", "the lobby Roster on joining it again")

    # Section 9.9: the longest Say reaches a HISTORY member within max_frame + 320 (and ROOMS within + 300).
    bigs = []
    for i in range(2):
        n = longest_text(a.welcome["max_frame"], 1 + len(enc("str", room)))
        big = "长短"[i] * (n // 3) + "x" * (n % 3)
        sbig = stored(a, a.send(Msg("Say", room, big)), f"the longest Say ({len(big.encode())} bytes)")
        m = b.expect(is_("Posted", room=room), "Posted of the longest Say", 15)
        R.check(m["entry"].text == big and m.size <= b.welcome["max_frame"] + HISTORY_OVERHEAD,
                "the longest Say reaches a HISTORY member whole within max_frame + 320 (9.9)", m.size)
        m = c.expect(is_("Said", room=room, from_=a.member()), "Said of the longest Say", 15)
        R.check(m["text"] == big and m.size <= c.welcome["max_frame"] + ROOMS_OVERHEAD,
                "... and a ROOMS-only member within max_frame + 300 (9.9)", m.size)
        ids.append(sbig["id"])
        bigs.append(big)

    a.sync()
    R.check(not a.find(is_("Refused")), "no Refused for a Say, Tell or Send in a HISTORY session (9.4)",
            repr(a.find(is_("Refused"))[:2]))
    R.eq(a.answered, {s: 1 for s in range(1, a.seq + 1)}, "every numbered request got exactly one answer (9.4)")
    st["h"] = dict(a=a, b=b, c=c, v=v, vm=vm, room=room, ids=ids, bigs=bigs, vid=vid, vtext=vtext,
                   ab=[s6["id"], sd["id"]], self_id=ss["id"])


def th_pages(srv, st):
    """Section 9.7: Resume, Recent and Page."""
    h = st["h"]
    a, b, c, room, tag = h["a"], h["b"], h["c"], h["room"], srv.tag
    # The room so far, with two texts that cannot share a frame: the page stops early (9.7, fitting).
    conv = Conv(0, room)
    entries, pages = read_all(b, conv, 0, 0, "the whole room")
    R.eq([e.id for e in entries], h["ids"], "Resume after 0: every stored message of the room, in id order (9.7)")
    chain(entries, 0, "pages: prev chain without gaps, at non-decreasing and plausible (9.5, 9.7)")
    R.check(entries and entries[-1].text == h["bigs"][-1], "pages carry the texts unchanged (9.2)")
    R.check(len(pages) >= 2, "two longest texts do not share a page: it stops early with more = true (9.7)",
            f"{len(pages)} page(s) of {[len(p['entries']) for p in pages]}")
    R.check(all(p.size <= b.welcome["max_frame"] + HISTORY_OVERHEAD for p in pages),
            "every Page fits max_frame + 320 (9.9)", [p.size for p in pages])
    R.check(not any(p["missing"] for p in pages), "nothing dropped: missing = false (9.7)")

    # A room of 12 messages, read 5 at a time, the room named in another case.
    pr = "Pages" + tag
    for x in (a, b):
        x.send(Msg("Join", pr))
        assemble(x, "Roster", pr)
    seqs = [a.send(Msg("Say", pr, f"p{i}")) for i in range(12)]
    ids = [stored(a, s, f"Say p{i}")["id"] for i, s in enumerate(seqs)]
    R.eq(ids, sorted(set(ids)), "12 pipelined Says: ids strictly increasing in sending order (9.5, 9.6)")
    for i in range(12):
        b.expect(is_("Posted", room=pr), f"Posted of p{i}")
    asked = Conv(0, pr.upper())
    entries, pages = read_all(b, asked, 0, 5, "pages of 5")
    R.eq([e.id for e in entries], ids, "Resume limit 5: the 12 messages in id order, nothing skipped (9.7)")
    R.eq([e.text for e in entries], [f"p{i}" for i in range(12)], "... with their texts")
    chain(entries, 0, "... prev chain without gaps")
    R.check(len(pages) >= 3 and all(len(p["entries"]) <= 5 for p in pages),
            "each page holds at most limit entries (9.7)", [len(p["entries"]) for p in pages])
    R.check(all(p["more"] for p in pages[:-1]) and not pages[-1]["more"], "more = true on all pages but the last (9.7)")
    R.check(all(p["conversation"] == asked for p in pages), "Page.conversation is the request's, exactly as sent (9.7)",
            repr(pages[0]["conversation"]))
    b.send(Msg("Recent", Conv(0, pr), 3))
    p = page_of(b, Conv(0, pr), "Page for Recent 3")
    R.eq(([e.id for e in p.f.get("entries", [])], p.f.get("missing"), p.f.get("more")), (ids[-3:], False, False),
         "Recent 3: the last 3, oldest first, more = false (9.7)")
    b.send(Msg("Resume", Conv(0, pr), ids[4], 100))
    p = page_of(b, Conv(0, pr), "Page for Resume after the 5th")
    R.eq(([e.id for e in p.f.get("entries", [])], p.f.get("more")), (ids[5:], False), "Resume after an id: the ones above it (9.7)")
    b.send(Msg("Resume", Conv(0, pr), ids[-1], 0))
    p = page_of(b, Conv(0, pr), "Page for Resume after the last")
    R.eq(p, Msg("Page", Conv(0, pr), [], False, False), "Resume after the last id: an empty Page, more = false (9.7)")

    # Requests answered in the order they come, each by one Page or Refused (9.7).
    solo = "solo" + tag
    c.send(Msg("Join", solo))
    assemble(c, "Roster", solo)
    reqs = [
        (Msg("Resume", Conv(0, solo.upper()), 0, 0), ("Refused", CODE["NotInRoom"], solo.upper()), "a room one is not in"),
        (Msg("Resume", Conv(0, "nosuch" + tag), 0, 0), ("Refused", CODE["NotInRoom"], "nosuch" + tag), "no such room"),
        (Msg("Recent", Conv(0, "bad room"), 0), ("Refused", CODE["NotInRoom"], "bad room"), "an invalid room name"),
        (Msg("Resume", Conv(1, "a b"), 0, 0), ("Refused", CODE["NoSuchName"], "a b"), "Direct of an invalid name"),
        (Msg("Recent", Conv(1, "nobody" + tag), 0), ("Page", Conv(1, "nobody" + tag), [], False, False),
         "Direct of a valid name nobody has: an empty Page"),
        (Msg("Recent", Conv(1, a.name.upper()), 0), ("Page", Conv(1, a.name.upper()), h["ab"], False, False),
         "Direct with the other party: their messages, the name as sent"),
    ]
    for req, _, _ in reqs:
        b.send(req)
    for req, want, what in reqs:
        m = b.expect(lambda m: m.kind in ("Page", "Refused"), f"answer to {req!r}")
        got = ((m.kind, m["code"], m["subject"]) if m.kind == "Refused" else
               (m.kind, m["conversation"], [e.id for e in m["entries"]], m["missing"], m["more"]))
        R.eq(got, want, f"{what} (9.7, answered in order)")
    a.send(Msg("Recent", Conv(1, a.name), 0))
    p = page_of(a, Conv(1, a.name), "Page of the direct conversation with oneself")
    R.eq([e.id for e in p.f.get("entries", [])], [h["self_id"]], "Direct with oneself: the Tell to oneself (9.6)")
    a.send(Msg("Recent", Conv(1, c.name), 0))
    p = page_of(a, Conv(1, c.name), "Page of the conversation with a ROOMS-only client")
    got = [(e.sender, e.text) for e in p.f.get("entries", [])]
    R.eq(got, [(c.member(), "from carol"), (a.member(), "to carol")],
         "direct messages with a ROOMS-only client are stored both ways (9.6)")
    b.send(Msg("Recent", Conv(0, "lobby"), 1))
    p = page_of(b, Conv(0, "lobby"), "Page of the lobby")
    got = [(e.id, e.sender, e.text) for e in p.f.get("entries", [])]
    R.eq(got, [(h["vid"], h["vm"], h["vtext"])], "Recent lobby 1: a version 1 client's Send, stored (9.6)")


def th_seam(srv, st):
    """Section 9.8: pages joined to live delivery while another client posts: every id once, in order."""
    tag = srv.tag
    room = "seam" + tag
    conv = Conv(0, room)
    p, _ = hnamed(srv, "seam-poster", "sp" + tag)
    j, _ = hnamed(srv, "seam-joiner", "sj" + tag)
    p.send(Msg("Join", room))
    assemble(p, "Roster", room)
    ids = [stored(p, p.send(Msg("Say", room, f"s{i}")), f"Say s{i}")["id"] for i in range(8)]
    j.send(Msg("Join", room))
    assemble(j, "Roster", room)  # a member from here on (9.8 step 2)
    after = ids[2]
    # Messages are stored while the joiner reads pages: before each Resume, the poster says one
    # and waits for its Stored (so the next page has it and it also comes live: a duplicate),
    # then says another without waiting (it may come either way, or both).
    todo = iter(range(8, 20))
    seqs, acks = [], {}

    def post_one(wait):
        i = next(todo, None)
        if i is not None:
            seqs.append(p.send(Msg("Say", room, f"s{i}")))
            if wait:
                acks[seqs[-1]] = stored(p, seqs[-1], f"Say s{i}")

    post_one(True)
    post_one(False)
    j.send(Msg("Resume", conv, after, 2))
    last, applied, held, npages, dups = after, [], [], 0, 0
    while True:  # steps 3 and 4: hold live messages, apply pages
        m = j.expect(lambda m: m.kind in ("Page", "Refused") or m.kind == "Posted" and key(m["room"]) == key(room),
                     "a Page or a Posted", 10)
        if m.kind == "Posted":
            held.append(m["entry"])
            continue
        if m.kind == "Refused":
            raise Fail(f"seam-joiner: {m!r} for Resume of a room it is in")
        npages += 1
        R.check(len(m["entries"]) <= 2, "seam: a page holds at most limit entries (9.7)", len(m["entries"]))
        for e in m["entries"]:
            if e.id > last:
                applied.append(e)
                last = e.id
        if not m["more"]:
            break
        post_one(True)
        post_one(False)
        j.send(Msg("Resume", conv, last, 2))
    nheld = len(held)
    for e in sorted(held, key=lambda e: e.id):  # step 5
        if e.id > last:
            applied.append(e)
            last = e.id
        else:
            dups += 1
    for i in todo:  # what is left, sent after the pages
        seqs.append(p.send(Msg("Say", room, f"s{i}")))
    ids += [(acks.get(s) or stored(p, s, f"Say s{i}"))["id"] for i, s in zip(range(8, 20), seqs)]
    R.check(dups, "seam: the run made messages come both in a page and live (else it checks little)",
            f"{npages} page(s), {nheld} held")
    while last < ids[-1]:  # step 6
        e = j.expect(lambda m: m.kind == "Posted" and key(m["room"]) == key(room), "a live Posted", 10)["entry"]
        if e.id > last:
            applied.append(e)
            last = e.id
        else:
            dups += 1
    want = [i for i in ids if i > after]
    R.eq([e.id for e in applied], want, "9.8: pages joined to live delivery give every id above `after` once, in order")
    R.eq([e.text for e in applied], [f"s{i}" for i in range(3, 20)], "9.8: ... each with its text")
    chain(applied, after, "9.8: ... their prev chain has no gap")
    R.note(f"seam: {npages} page(s), {nheld} live message(s) held, {dups} duplicate(s) dropped")

    # Section 9.4 with 8.5's direct-message rate: a burst of Tells, each Stored and delivered or
    # Unstored RateLimited and not delivered, exactly one answer each.
    seqs = [p.send(Msg("Tell", j.name, f"t{i}")) for i in range(40)]
    got = [answer(p, s) for s in seqs]
    ok = [m["id"] for m in got if m.kind == "Stored"]
    refused = [m for m in got if m.kind == "Unstored"]
    R.check(all(m["code"] == CODE["RateLimited"] for m in refused), "a Tell burst: the Unstored are RateLimited (9.4)",
            repr(refused[:1]))
    R.check(refused and ok, "a burst of 40 Tells is partly refused (reference: bursts of 20, 8.5)",
            f"{len(ok)} stored, {len(refused)} refused")
    if ok:
        j.expect(lambda m: m.kind == "Direct" and m["entry"].id == ok[-1], "Direct of the last stored Tell")
        seen = [m["entry"].id for m in j.find(is_("Direct"))] + [ok[-1]]
        R.eq(seen, ok, "the recipient gets a Direct for every stored Tell of the burst and no other (9.4, 9.6)")
    for c in (p, j):
        bye(c)


def th_done(srv, st):
    for c in ("a", "b", "c", "v"):
        bye(st["h"][c])


def fits(f, L, field):
    """Section 8.9: a frame fits L, or is a lone entry too big for L, within max_frame + 300."""
    return f.size <= L or (len(f[field]) == 1 and f.size <= L - RELAY_OVERHEAD + ROOMS_OVERHEAD)


def t_long(srv, st):
    """Section 8.9: a Roster and a Rooms answer in several frames, assembled."""
    tag = srv.tag
    obs = st["al"]
    L = obs.welcome["max_frame"] + RELAY_OVERHEAD
    per = max(8, min(32, (obs.welcome["max_frame"] - 3) // 4))  # a Nick/Join must fit max_frame
    tagc = [chr(0x20000 + 1000 + int(d)) for d in tag]

    def big(i, kind):  # `per` four-byte letters (CJK Ext. B, Alphabetic), distinct per i and per run
        idx = [chr(0x21000 + (i // 1000) % 1000), chr(0x22000 + (i // 10) % 100), chr(0x23000 + i % 10)]
        return (chr(0x24000 if kind == "n" else 0x25000) * (per - 3 - 4)) + "".join(tagc) + "".join(idx)

    msize = 1 + 4 * per + 5 + 3
    n = L // msize + 3
    if n > 1500:
        R.note(f"max_frame {L - 20} needs {n} clients for a two-frame Roster; skipped")
        return
    print(f"  (connecting {n} clients with {4 * per}-byte names for a Roster over L = {L})", flush=True)
    crowd = []
    for i in range(n):
        c = Client(f"crowd-{i}", srv.addr)
        c.drop = ("Entered", "Departed", "Joined", "Left", "Said", "Relay")
        c.send(Msg("Hello", 1, ROOMS))
        crowd.append(c)
    for i, c in enumerate(crowd):
        w = c.expect(is_("Welcome"), "Welcome", 15)
        c.welcome = w
        c.rooms = bool(w["features"] & ROOMS)
        c.limit = w["max_frame"] + ROOMS_OVERHEAD
        c.send(Msg("Nick", big(i, "n")))
    def pump_all():  # keep every crowd socket drained, so that none is evicted as a slow consumer
        ready, _, _ = select.select([d.sock for d in crowd if not d.eof], [], [], 0)
        for d in crowd:
            if d.sock in ready:
                d._fill(time.monotonic() + 1)
                while d._parse() is not None:
                    pass

    for i, c in enumerate(crowd):
        # Read the crowd in a sliding window, as one program serving many connections might:
        # a client is read from 50 turns before its own until its Roster is complete, then
        # left unread (queued at the server, well within its outbox) until the check below.
        # Frames read together with the Roster must still be parsed: select() will not report them.
        for d in crowd[i : i + 50]:
            d.pump()
        m = c.expect(is_("Named"), "Named", 15)
        c.name = m["name"]
        c.roster, c.frames = assemble(c, "Roster", "lobby")
        R.check(c.name == big(i, "n"), f"crowd-{i}: Named with its long name", c.name[:8])
        if c.name != big(i, "n"):
            break
    names = {c.name for c in crowd}
    entered = []
    while len(entered) < n:
        m = obs.expect(lambda m: m.kind == "Entered" and m["room"] == "lobby" and m["member"].name in names,
                       "Entered of the crowd", 15)
        entered.append(m["member"])
    # Sections 8.3, 8.6, 8.9: in each handshake Roster the client is last and the others are in
    # the order they entered; live Entered then bring exactly the crowd members the Roster did
    # not list, in order: no doubles, nobody missing.
    order = {mb: k for k, mb in enumerate(entered)}

    def known(c):
        return sum(1 for mb in c.roster if mb in order) + len(c.entered)

    for c in crowd:
        c.pump()  # frames read along with the Roster are still in `buf`, unparsed
    end = time.monotonic() + remaining(15)
    while time.monotonic() < end and any(known(c) < n for c in crowd):
        ready, _, _ = select.select([c.sock for c in crowd if not c.eof], [], [], max(0.0, end - time.monotonic()))
        for c in crowd:
            if c.sock in ready:
                c.pump()
    bad = []
    for c in crowd:
        listed = [order[mb] for mb in c.roster[:-1] if mb in order]
        live = [order[mb] for mb in c.entered]
        if (c.roster[-1:] != [c.member()] or listed != sorted(listed) or live != sorted(live)
                or sorted(listed + live + [order[c.member()]]) != list(range(n))):
            bad.append((c.label, order[c.member()], len(listed), len(live), len(set(listed) & set(live)),
                        "closed" if c.eof else "open", c.inbox[-2:]))
    R.check(not bad, "crowd: each lobby Roster has the client last and the others in entry order, and live "
            "Entered bring exactly the rest, in order, no doubles (8.3, 8.6, 8.9)",
            f"{len(bad)} of {n} wrong; (client, position, listed, entered live, doubles, state, last): {bad[:4]}")
    most = max(crowd, key=lambda c: len(c.frames))
    R.note(f"a handshake Roster of {len(most.roster)} members came in {len(most.frames)} frames of "
           f"{[len(f['members']) for f in most.frames][:4]}... members (legal, 8.9; not full frames)")
    obs.send(Msg("Who", "lobby"))
    members, frames = assemble(obs, "Roster", "lobby", "the long lobby Roster")
    R.check(len(frames) >= 2, f"a lobby of {len(members)} long names comes in several Roster frames",
            f"{len(frames)} frame(s)")
    R.note(f"Who lobby: {len(members)} members in {len(frames)} frames of {[len(f['members']) for f in frames][:6]} members")
    R.check(all(f["more"] for f in frames[:-1]) and not frames[-1]["more"], "more = true on all frames but the last")
    R.check(all(fits(f, L, "members") for f in frames), "every Roster frame fits L (section 8.9)",
            [(f.size, len(f["members"])) for f in frames if not fits(f, L, "members")][:3])
    R.eq([mb for mb in members if mb in entered], entered, "the assembled Roster lists the crowd in entry order")
    R.eq(len(members), len(set(members)), "no member twice in the assembled Roster")
    obs.send(Msg("Who", "lobby"))
    obs.send(Msg("Who", "lobby"))
    one, _ = assemble(obs, "Roster", "lobby", "the first of two long Rosters")
    two, _ = assemble(obs, "Roster", "lobby", "the second of two long Rosters")
    R.check(one == members and two == members, "two Roster answers of one room never interleave (section 8.9)",
            f"{len(one)} and {len(two)} members, want {len(members)}")

    # Rooms: enough 128-byte rooms to exceed L.
    rsize = 1 + 4 * per + 1
    nrooms = max(L // rsize + 5, 99)  # at least 99: crowd-0 then has 100 rooms with the lobby
    made, ci = [], 0
    while len(made) < nrooms and ci < len(crowd):
        c = crowd[ci]
        ci += 1
        batch = [big(len(made) + j, "r") for j in range(min(99, nrooms - len(made)))]
        for room in batch:
            c.send(Msg("Join", room))
        for room in batch:
            m = c.expect(lambda m: m.kind in ("Roster", "Refused") and key(m.f.get("room", m.f.get("subject"))) == key(room),
                         f"answer to Join {room[:3]}", 15)
            if m.kind == "Refused":
                R.check(m["code"] == CODE["TooManyRooms"], "a crowd Join refused only for TooManyRooms", repr(m))
                break
            made.append(room)
    if len(made) >= 99:
        c = crowd[0]
        c.send(Msg("Join", "onemore" + tag))
        m = c.expect(lambda m: m.kind in ("Roster", "Refused"), "answer to a 101st room")
        R.eq((m.kind, m.f.get("code"), m.f.get("subject")), ("Refused", CODE["TooManyRooms"], "onemore" + tag),
             "Join beyond the reference's 100 rooms: TooManyRooms")
    obs.send(Msg("ListRooms"))
    rooms, frames = assemble(obs, "Rooms", None, "the long Rooms answer")
    R.check(len(frames) >= 2, f"{len(rooms)} long room names come in several Rooms frames", f"{len(frames)} frame(s)")
    R.check(all(f["more"] for f in frames[:-1]) and not frames[-1]["more"], "Rooms: more = true on all but the last")
    R.check(all(fits(f, L, "rooms") for f in frames), "every Rooms frame fits L (section 8.9)",
            [(f.size, len(f["rooms"])) for f in frames if not fits(f, L, "rooms")][:3])
    got = {r.name: r.members for r in rooms}
    R.check(all(got.get(r) == 1 for r in made), "every room made is listed with 1 member",
            f"{sum(1 for r in made if got.get(r) != 1)} of {len(made)} wrong")
    R.eq([key(r.name) for r in rooms], sorted(key(r.name) for r in rooms), "the assembled Rooms answer is sorted by key")
    R.check(got.get("lobby", 0) >= n + 1, "the lobby's member count includes the crowd", got.get("lobby"))
    # They all go; the observer sees each one depart the lobby.
    for c in crowd:
        c.close()
    gone = set()
    crowd_names = {c.name for c in crowd}
    while len(gone) < len(crowd_names):
        m = obs.expect(lambda m: m.kind == "Departed" and m["room"] == "lobby" and m["member"].name in crowd_names
                       and m["member"].name not in gone, "Departed of the crowd", 15)
        gone.add(m["member"].name)


def closed_within(c, seconds, what):
    """Read until the server closes; returns (closed, messages seen, seconds taken)."""
    t0 = time.monotonic()
    seen = []
    deadline = t0 + remaining(seconds)
    try:
        while True:
            m = c._next(deadline)
            if m is None:
                return True, seen, time.monotonic() - t0
            seen.append(c.inbox.pop())
    except TimeoutError:
        R.check(False, what, f"still open after {seconds:g}s; got {seen[-4:]}")
        return False, seen, time.monotonic() - t0


def check_retention(srv):
    """Sections 9.5-9.7 under whatever retention the server keeps (spec_client.sh starts this
    run's server keeping 5 messages per conversation): pages hold the newest retained messages
    with nothing skipped, and `missing` says exactly when the request reached dropped ones."""
    a, _ = hnamed(srv, "keeper", "keeper" + srv.tag)
    room = "kept" + srv.tag
    conv = Conv(0, room)
    a.send(Msg("Join", room))
    assemble(a, "Roster", room)
    seqs = [a.send(Msg("Say", room, f"k{i}")) for i in range(8)]
    ids = [stored(a, s, f"Say k{i}")["id"] for i, s in enumerate(seqs)]
    # A server may drop messages some time after storing more (section 9.6 leaves when to it):
    # read again, a few times a second for at most 3 s, until some are dropped.
    end, reads, bad = time.monotonic() + remaining(3), 0, []
    while True:
        entries, pages = read_all(a, conv, 0, 0, "the room from the start")
        reads += 1
        got = [e.id for e in entries]
        k = len(ids) - len(got)
        if k < 0 or got != ids[k:] or pages[0]["missing"] != (k > 0):
            bad.append((got, pages[0]["missing"]))
        if k != 0 or time.monotonic() >= end:
            break
        time.sleep(0.1)  # a bounded poll: the drop is the server's to schedule, and nothing announces it
    R.check(not bad, "a page holds the newest retained messages, nothing skipped, and missing = true exactly "
            "when some were dropped (9.6, 9.7)", f"stored {ids}; got (ids, missing) {bad[:2]}")
    R.note(f"{len(got)} of {len(ids)} messages retained after {reads} read(s)")
    if not 0 < k < len(ids) or bad:
        bye(a)
        return
    R.eq(entries[0].prev, ids[k - 1], "the oldest retained message's prev is the dropped one's id (9.5)")
    for req, want, what in (
        (Msg("Resume", conv, ids[k - 1], 0), (ids[k:], False), "Resume after the newest dropped id: missing = false"),
        (Msg("Resume", conv, ids[k - 2] if k > 1 else 0, 0), (ids[k:], True), "Resume after an older id: missing = true"),
        (Msg("Recent", conv, len(ids)), (ids[k:], True), "Recent of more than are retained: missing = true"),
        (Msg("Recent", conv, len(got)), (ids[k:], False), "Recent of as many as are retained: missing = false"),
    ):
        a.send(req)
        p = page_of(a, conv, f"Page for {req!r}")
        R.eq(([e.id for e in p.f.get("entries", [])], p.f.get("missing")), want, f"{what} (9.7)")
    bye(a)


def run_timers(srv, pid, hs, idle, frame_to, room_members):
    """Against a server started with --handshake-timeout HS --idle-timeout IDLE --frame-timeout FRAME:
    sections 5.1, 5.4 and 8.3's timers, then its shutdown (section 5.5) on SIGTERM to PID."""
    R.section = "flood control (8.5)"
    print(f"== {R.section}", flush=True)
    f = hello(srv, "flooder")
    f.raw(frame(Msg("Send", "f")) * 6000)  # well over the reference's burst of 4000
    ok, seen, _ = closed_within(f, 10, "a flooding client is closed")
    R.check(seen and seen[-1].kind == "Error" and seen[-1]["reason"].startswith("flood: "),
            "flood control closes with Error \"flood: ...\" (8.5, 5.6)", repr(seen[-1:]))
    f.close()

    R.section = f"room limit (8.5, --room-members {room_members:g})"
    print(f"== {R.section}", flush=True)
    room = f"full{srv.tag}"
    members = [named(srv, f"full-{i}", "")[0] for i in range(int(room_members) + 1)]
    for c in members[:-1]:
        c.send(Msg("Join", room))
        assemble(c, "Roster", room)
    last = members[-1]
    last.send(Msg("Join", room.upper()))
    m = last.expect(lambda m: m.kind in ("Refused", "Roster"), "answer to Join of a full room")
    R.eq((m.kind, m.f.get("code"), m.f.get("subject")), ("Refused", CODE["RoomFull"], room.upper()),
         "Join of a full room: RoomFull, subject as sent")
    for c in members:
        bye(c)

    R.section = "retention (9.5-9.7)"
    print(f"== {R.section}", flush=True)
    try:
        check_retention(srv)
    except Fail as e:
        R.check(False, "aborted", str(e))

    R.section = "timers (5.1, 5.4, 8.3)"
    print(f"== {R.section}", flush=True)
    silent = Client("silent", srv.addr)
    nonick = hello(srv, "no-nick", ROOMS)
    unnamed = ahello(srv, "auth-unnamed")
    refused(attempt(unnamed, Msg("Register", "late" + srv.tag, "short")), "BadPassword", "late" + srv.tag,
            "a refused Register leaves the client unnamed")
    ok, seen, t = closed_within(silent, hs + 3, "a client that never says Hello is closed (5.1 MAY)")
    if ok:
        R.check(t <= hs + 3, "closed around the handshake timeout", f"{t:.1f}s")
        R.note(f"silent client closed after {t:.1f}s with {seen or 'no message'}")
    ok, seen, t = closed_within(nonick, hs + 3, "the handshake timeout covers the wait for Nick (8.3)")
    if ok:
        R.note(f"client without Nick closed after {t:.1f}s with {seen or 'no message'}")
    ok, seen, t = closed_within(unnamed, hs + 3, "the handshake deadline covers the whole time until Named (10.3 item 3)")
    if ok:
        R.eq(seen, [Msg("Error", "handshake timeout")], "an AUTH client still unnamed: Error \"handshake timeout\" (10.3 item 3)")

    # A frame once begun must be finished, however slowly bytes trickle in.
    tr = hello(srv, "trickle")
    data = frame(Msg("Send", "x" * 40))
    t0 = time.monotonic()
    got = None
    for i in range(len(data)):
        tr.raw(data[i : i + 1])
        if tr._fill(time.monotonic() + 0.25):  # wait for the server's verdict, briefly, between bytes
            got = tr._parse()
            if got is not None or tr.eof:
                break
    if got is None and not tr.eof:
        got = tr.expect(lambda m: True, "Error frame timeout", frame_to + 2)
    took = time.monotonic() - t0
    R.check(got is not None and got.kind == "Error" and got["reason"] == "frame timeout",
            "a frame trickling in is cut at the frame timeout with Error \"frame timeout\" (5.4)", repr(got))
    R.check(took <= frame_to + 3, "trickling bytes do not extend the frame timeout", f"{took:.1f}s")
    tr.expect_close("close after frame timeout")

    # Idle: the server pings; a client that answers stays, one that does not is closed.
    live = hello(srv, "answers-pings")
    mute = hello(srv, "ignores-pings")
    mute.answer_pings = False
    t0 = time.monotonic()
    closed_at = None
    # Read both as data comes (live answers its Pings on arrival) until mute is closed and
    # 1.5 idle timeouts have passed.
    end = t0 + remaining(idle + 3)
    while time.monotonic() < end and not (mute.eof and time.monotonic() - t0 >= idle * 1.5):
        socks = [c.sock for c in (live, mute) if not c.eof]
        left = end - time.monotonic()
        if mute.eof:
            left = min(left, t0 + idle * 1.5 - time.monotonic())
        ready, _, _ = select.select(socks, [], [], max(0.0, left))
        for c in (live, mute):
            if c.sock in ready:
                c._fill(time.monotonic() + 1)
                while c._parse() is not None:
                    pass
        if mute.eof and closed_at is None:
            closed_at = time.monotonic() - t0
    R.check(mute.pings >= 1, "the server pings an idle client (5.4)", f"{mute.pings} Ping(s)")
    if R.check(closed_at is not None, "a client that sends nothing is closed at the idle timeout (5.4)"):
        R.check(idle - 0.5 <= closed_at <= idle + 3, "closed around the idle timeout", f"{closed_at:.1f}s")
        R.note(f"idle client closed after {closed_at:.1f}s with {mute.inbox or 'no message'}")
    R.check(live.pings >= 1 and not live.eof, "a client answering Pings outlives the idle timeout",
            f"{live.pings} Ping(s), closed: {live.eof}")
    live.inbox.clear()

    R.section = "shutdown (5.5)"
    print(f"== {R.section}", flush=True)
    a = hello(srv, "sd-a")
    b = hello(srv, "sd-b")
    r, _, _ = named(srv, "sd-rooms", "")
    pending = Client("sd-pending", srv.addr)
    a.send(Msg("Send", "last words"))
    b.expect(is_("Relay", text="last words"), "the last Relay before shutdown")
    os.kill(pid, signal.SIGTERM)
    before = list(r.inbox)
    for c in (a, b, r, live):
        ok, seen, _ = closed_within(c, 8, f"{c.label}: closed on shutdown")
        R.check(seen and seen[-1].kind == "Exit", f"{c.label}: Exit is the last message at shutdown (5.5)", repr(seen[-3:]))
        if c is r:
            before += seen
    ok, seen, _ = closed_within(pending, 8, "a client in its handshake is closed on shutdown")
    R.eq([m for m in seen], [Msg("Error", "server shutting down")],
         "a client in its handshake gets Error \"server shutting down\" instead of Exit (5.1, 5.5)")
    R.check(any(is_("Said", text="last words")(m) for m in before),
            "a message accepted before shutdown reaches every reader before its Exit (5.5)")


def run_presence_race(srv, rounds=6, n=481):
    """Sections 8.3, 8.6: every client named in a crowd learns every other member of the lobby,
    by its Roster or a live Entered, once. Rounds of N clients with long names named at once
    and read in a sliding window (see t_long). Bounded by RUN_SECONDS."""
    R.section = "presence under a crowd (8.3, 8.6)"
    print(f"== {R.section}", flush=True)
    for rnd in range(rounds):
        if DEADLINE - time.monotonic() < 15:
            break
        crowd = []
        for i in range(n):
            c = Client(f"r{rnd}-{i}", srv.addr)
            c.drop = ("Entered", "Departed", "Joined", "Left", "Said", "Relay")
            c.send(Msg("Hello", 1, ROOMS))
            crowd.append(c)
        for i, c in enumerate(crowd):
            w = c.expect(is_("Welcome"), "Welcome", 15)
            c.welcome, c.rooms, c.limit = w, bool(w["features"] & ROOMS), w["max_frame"] + ROOMS_OVERHEAD
            c.send(Msg("Nick", chr(0x24000 + rnd) * 28 + f"{i:04d}"))
        for i, c in enumerate(crowd):
            for d in crowd[i : i + 50]:
                d.pump()
            c.name = c.expect(is_("Named"), "Named", 15)["name"]
            c.roster, c.frames = assemble(c, "Roster", "lobby")
        mine = {c.member() for c in crowd}

        def known(c):
            return len(mine.intersection(c.roster)) + len(mine.intersection(c.entered))

        for c in crowd:
            c.pump()  # frames read along with the Roster are still in `buf`, unparsed
        end = time.monotonic() + remaining(10)
        while time.monotonic() < end and any(known(c) < n for c in crowd):
            ready, _, _ = select.select([c.sock for c in crowd if not c.eof], [], [], max(0.0, end - time.monotonic()))
            for c in crowd:
                if c.sock in ready:
                    c.pump()
        bad = [(c.label, len(mine.intersection(c.roster)), len(mine.intersection(c.entered)),
                "closed" if c.eof else "open") for c in crowd if known(c) != n]
        R.check(not bad, f"round {rnd + 1}: each of {n} clients named at once learns all {n} by Roster or Entered",
                f"{len(bad)} client(s) short; (client, in its Roster, Entered got, state): {bad[:4]}")
        for c in crowd:
            c.close()
        if bad:
            break


# ---------------------------------------------------------------------------
# Accounts (section 10)
# ---------------------------------------------------------------------------

HANDSHAKE_FRAME = 1024  # the reference server's H (section 2.1, 10.3 item 4)
PRINTABLE = re.compile(r"^[\x21-\x7e]{1,128}$")


def ahello(srv, label, features=ROOMS | AUTH):
    """Hello/Welcome with AUTH granted (section 10.1)."""
    c = hello(srv, label, features)
    if not c.welcome["features"] & AUTH:
        raise Fail(f"{label}: the server did not grant AUTH (Welcome.features {c.welcome['features']:#x})")
    return c


def attempt(c, m):
    """One naming attempt (10.3 item 2): its answer, a Refused or a LoggedIn (or Named for a Nick)."""
    c.send(m)
    return c.expect(lambda x: x.kind in ("Refused", "LoggedIn", "Named"), f"answer to {m.kind}")


def refused(m, code, subject, what):
    return R.eq((m.kind, m.f.get("code"), m.f.get("subject")), ("Refused", CODE[code], subject), what)


def be_named(c, want, what):
    """Named (want: a name, or GUEST) then the lobby Roster with the client last (10.3, 8.3)."""
    m = c.expect(lambda x: x.kind in ("Named", "Refused", "LoggedIn"), f"Named after {what}")
    if m.kind != "Named":
        raise Fail(f"{c.label}: after {what}: {m!r}, want Named")
    ok = GUEST.match(m["name"]) if want is GUEST else m["name"] == want
    R.check(ok, f"{c.label}: {what}: then Named {want if want is not GUEST else 'guest-N'} (10.3)", repr(m))
    c.name = m["name"]
    roster, _ = assemble(c, "Roster", "lobby", f"the lobby Roster after {what}")
    R.check(roster and roster[-1] == c.member(), f"{c.label}: {what}: itself last in the lobby Roster (10.3, 8.3)")
    return c.name


def logged_in(c, m, name, what, token=None, expires=None):
    """A LoggedIn for name (10.2, 10.3), then Named and the Roster. token None: a new token."""
    if m.kind != "LoggedIn":
        raise Fail(f"{c.label}: {what}: got {m!r}, want LoggedIn")
    R.eq(m["name"], name, f"{what}: LoggedIn with the account's name")
    if token is None:
        R.check(PRINTABLE.match(m["token"]), f"{what}: a new token, 1 to 128 bytes of printable ASCII (10.3)",
                repr(m["token"]))
        R.check(m["expires"] > time.time() + 60, f"{what}: expires is in the future (seconds since the epoch)",
                m["expires"])
    else:
        R.eq(m["token"], token, f"{what}: the token field is empty after LoginToken (10.3)")
    if expires is not None:
        R.eq(m["expires"], expires, f"{what}: expires is that token's expiry (10.3)")
    be_named(c, name, what)
    return m


def fatal(c, m, reason, what):
    """Send m; the server must answer Error { reason } and close."""
    c.send(m)
    reason_is(c.expect(lambda x: x.kind == "Error", f"Error for {m.kind}"), reason, what)
    c.expect_close(f"close after {what}")
    c.close()


def ta_negotiation(srv, st):
    """Section 10.1: AUTH only with ROOMS; its messages only in a session that got it."""
    c = hello(srv, "a-features-4", AUTH)
    R.eq(c.welcome["features"], 0, "AUTH asked without ROOMS: not granted (10.1)")
    fatal(c, Msg("Register", "x", "password"),
          "protocol violation: Register belongs to a capability not negotiated in the handshake",
          "Register in a version 1 session (8.10, 10.2)")
    c = hello(srv, "a-features-3", ROOMS | HISTORY)
    R.eq(c.welcome["features"], ROOMS | HISTORY, "AUTH not asked: not granted")
    fatal(c, Msg("LoginToken", "x"),
          "protocol violation: LoginToken belongs to a capability not negotiated in the handshake",
          "LoginToken in a session without AUTH (8.10, 10.2)")
    c = ahello(srv, "a-features-5")
    R.eq(c.welcome["features"], ROOMS | AUTH, "features 5: ROOMS and AUTH granted (10.1)")
    c.send(Msg("Ping", 5))
    c.expect(is_("Pong", nonce=5), "Pong before the name (10.3 item 1)")
    fatal(c, Msg("Join", "lobby"), "expected Nick, Register, Login or LoginToken first, got Join",
          "Join before the name with AUTH: Error and close (10.3 item 1)")
    c = ahello(srv, "a-logout-first")
    fatal(c, Msg("Logout"), "expected Nick, Register, Login or LoginToken first, got Logout",
          "Logout before the name: Error and close (10.3 item 1)")


def ta_accounts(srv, st):
    """Sections 10.3 and 10.5: register, log in by password and by token, names kept by accounts,
    log out. At most 3 password attempts on the account (the per-account limit)."""
    tag = srv.tag
    sent, name, pw = "Rene\u0301" + tag, "Ren\u00e9" + tag, "密码 correct horse"
    a = ahello(srv, "register")
    m = attempt(a, Msg("Register", sent, pw))
    tok1 = logged_in(a, m, name, "Register (a name sent in NFD)")
    tok1, exp1 = tok1["token"], tok1["expires"]

    b = ahello(srv, "register-again")
    m = attempt(b, Msg("Register", name.upper(), "another password"))
    refused(m, "NameTaken", name.upper(), "Register of a registered name (other case): NameTaken, subject as sent (10.3)")
    m = attempt(b, Msg("Login", name, pw))  # password attempt 1 on the account
    refused(m, "NameTaken", name, "Login to an account in use by another connection: NameTaken (10.3)")
    m = attempt(b, Msg("Nick", name.lower()))
    refused(m, "NameReserved", name.lower(), "a guest's first Nick of a registered name: NameReserved (10.3)")
    be_named(b, GUEST, "NameReserved")
    b.send(Msg("Nick", name))
    m = b.expect(lambda x: x.kind in ("Refused", "Renamed"), "answer to a guest's rename to a registered name")
    refused(m, "NameReserved", name, "a guest may not rename to a registered name: NameReserved (10.5)")
    a.expect(is_("Entered", room="lobby", member=b.member()), "Entered of the guest to the logged-in client")

    a.send(Msg("Nick", "other" + tag))
    m = a.expect(lambda x: x.kind in ("Refused", "Renamed"), "answer to a logged-in client's rename")
    refused(m, "NameReserved", "other" + tag, "a logged-in client's rename to another name: NameReserved (10.5)")
    a.send(Msg("Nick", name))
    R.eq(a.expect(is_("Renamed"), "Renamed for its own name"), Msg("Renamed", name, a.member()),
         "a logged-in client's Nick of its own name: Renamed old == new (10.5, 8.5)")
    a.send(Msg("Nick", name.upper()))
    a.name = name.upper()
    R.eq(a.expect(lambda x: x.kind in ("Refused", "Renamed"), "answer to a case change"), Msg("Renamed", name, a.member()),
         "a logged-in client's Nick of its own name in another case: a rename as in 8.5 (10.5)")
    R.eq(b.expect(is_("Renamed"), "Renamed of the logged-in client"), Msg("Renamed", name, a.member()),
         "the case change reaches the lobby as a Renamed")

    r, ref, _ = named(srv, "rooms-guest", name.upper())
    R.check(ref is not None and ref["code"] == CODE["NameReserved"] and ref["subject"] == name.upper(),
            "a ROOMS client without AUTH: a first Nick of a registered name is NameReserved (10.3)", repr(ref))
    R.check(GUEST.match(r.name or ""), "... then Named guest-N", r.name)
    bye(r)
    fatal(b, Msg("Login", "nobody" + tag, pw), "protocol violation: Login after the client was named",
          "Login after the name: Error and close (10.3 item 5)")
    g = ahello(srv, "guest-logout")
    m = attempt(g, Msg("Nick", ""))
    R.check(m.kind == "Named", "an AUTH client's empty Nick: Named guest-N, as in 8.3", repr(m))
    g.name = m.f.get("name")
    assemble(g, "Roster", "lobby")
    g.send(Msg("Logout"))
    g.expect(is_("Exit"), "Exit answering a guest's Logout")
    R.check(g.expect_close("close after a guest's Logout"), "a guest's Logout is an Exit (10.5)")

    bye(a)
    c = ahello(srv, "login")
    m = attempt(c, Msg("Login", name.upper(), pw))  # attempt 2
    tok2 = logged_in(c, m, name, "Login by password, the name in another case (the name as registered)")["token"]
    R.check(tok2 != tok1, "each login gives a new token (10.3)")

    c.send(Msg("Logout"))
    c.expect(is_("Exit"), "Exit answering Logout")
    c.expect_close("close after Logout (10.5)")

    w = ahello(srv, "wrong")
    t0 = time.monotonic()
    wrong = attempt(w, Msg("Login", name, pw + "!"))  # attempt 3
    t1 = time.monotonic()
    unknown = attempt(w, Msg("Login", "nobody" + tag, pw))
    t2 = time.monotonic()
    refused(wrong, "AuthFailed", name, "Login with a wrong password: AuthFailed (10.3)")
    refused(unknown, "AuthFailed", "nobody" + tag, "Login of a name without account: AuthFailed (10.3)")
    R.eq(wrong.f.get("detail"), unknown.f.get("detail"),
         "wrong password and unknown name: the same detail (the answer never tells which names exist, 10.3)")
    R.note(f"AuthFailed took {1000 * (t1 - t0):.0f} ms for a wrong password, {1000 * (t2 - t1):.0f} ms for an unknown name")
    refused(attempt(w, Msg("LoginToken", "0" * 32 + ".bogus")), "AuthFailed", "",
            "an unknown token: AuthFailed, subject empty (10.3)")
    refused(attempt(w, Msg("LoginToken", tok2)), "AuthFailed", "", "the token of a session that logged out: AuthFailed (10.5)")
    m = attempt(w, Msg("LoginToken", tok1))
    logged_in(w, m, name, "LoginToken with another token of the account, still valid after the Logout (10.5)",
              token="", expires=exp1)
    x = ahello(srv, "token-in-use")
    m = attempt(x, Msg("LoginToken", tok1))
    refused(m, "NameTaken", name,
            "LoginToken to an account in use by another connection: NameTaken, naming the account (10.3, 10.4)")
    x.close()
    bye(w)


def ta_rules(srv, st):
    """Section 10.3's Register rules (BadPassword, NameInvalid, NameTaken) and the limits before the name."""
    tag = srv.tag
    p = ahello(srv, "rules")
    for pw, what in (("1234567", "7 bytes"), ("", "0 bytes"), ("p" * 257, "257 bytes"), ("密码", "2 characters, 6 bytes")):
        refused(attempt(p, Msg("Register", "pw" + tag, pw)), "BadPassword", "pw" + tag,
                f"Register with a password of {what}: BadPassword (10.3)")
    for bad in ("bad name!", "", "名" * 33):
        refused(attempt(p, Msg("Register", bad, "password")), "NameInvalid", bad,
                f"Register of the invalid name {bad[:12]!r}: NameInvalid (10.3, 8.4)")
    q, _, _ = named(srv, "in-use", "inuse" + tag)
    refused(attempt(p, Msg("Register", "INUSE" + tag, "password")), "NameTaken", "INUSE" + tag,
            "Register of a name a guest is using: NameTaken (10.3)")
    bye(q)
    gname = f"guest-{90000 + int(tag)}"
    for g in (gname, gname.upper()):
        refused(attempt(p, Msg("Register", g, "password")), "NameInvalid", g,
                f"Register of {g}: the server's guest names cannot be registered (10.3)")
    m = attempt(p, Msg("Register", "五个字" + tag, "密码密码密"))
    logged_in(p, m, "五个字" + tag, "Register with a password of 5 characters, 15 bytes (counted in bytes, 10.3)")
    bye(p)

    # Section 2.1 and 10.3 item 4: until Named, frames within H; after, the full limit.
    h = HANDSHAKE_FRAME
    c = Client("h-before-hello", srv.addr)
    c.raw(struct.pack(">I", h + 1))
    reason_is(c.next_msg("Error for a first frame over H"),
              f"invalid frame: frame of {h + 1} bytes exceeds the {h}-byte limit",
              f"before Hello, a frame of {h + 1} bytes: Error from the header (2.1, H = {h})")
    c.expect_close("close after a frame over H")
    c.close()
    for label, features in (("h-auth", ROOMS | AUTH), ("h-rooms", ROOMS)):
        c = hello(srv, label, features)
        c.raw(struct.pack(">I", h + 1))
        reason_is(c.next_msg("Error for a frame over H"),
                  f"invalid frame: frame of {h + 1} bytes exceeds the {h}-byte limit",
                  f"{label}: before Named, a frame of {h + 1} bytes: Error from the header (2.1, 10.3 item 4)")
        c.expect_close("close after a frame over H")
        c.close()
    c = ahello(srv, "h-fits")
    name = "lim" + tag
    n = h - 5 - len(name)  # tag, name length, the name, a 3-byte password length
    reg = Msg("Register", name, "p" * n)
    R.eq(len(encode(reg)), h, "the Register built is H bytes")
    refused(attempt(c, reg), "BadPassword", name, f"before Named, a frame of exactly {h} bytes is read (2.1)")
    m = attempt(c, Msg("Nick", ""))
    R.eq(m.kind, "Named", "Named after a refused Register")
    c.name = m.f.get("name")
    assemble(c, "Roster", "lobby")
    say = Msg("Say", "lobby", "字" * 1000)
    c.send(say)
    c.sync()
    R.check(not c.eof, f"after Named, a Say of {len(encode(say))} bytes (over H) is taken (2.1)")
    bye(c)


def ta_throttle(srv, st):
    """Section 10.3, throttling: 3 password attempts per account per minute (the reference server),
    on an account of its own; the 4th is Throttled at once, even with the right password."""
    tag = srv.tag
    name, pw = "throttle" + tag, "right password"
    t = ahello(srv, "throttle")
    logged_in(t, attempt(t, Msg("Register", name, pw)), name, "Register of the throttled account")
    bye(t)
    u = ahello(srv, "throttle-2")
    got = [attempt(u, Msg("Login", name, f"wrong {i}")) for i in range(3)]
    R.eq([(m.kind, m.f.get("code")) for m in got], [("Refused", CODE["AuthFailed"])] * 3,
         "3 wrong passwords in a row: AuthFailed each (10.3)")
    t0 = time.monotonic()
    m = attempt(u, Msg("Login", name, pw))
    took = time.monotonic() - t0
    refused(m, "Throttled", name, "the 4th password attempt on an account within a minute: Throttled (10.3)")
    R.check(re.search(r"\d", m.f.get("detail", "")), "Throttled: detail says when to try again", repr(m.f.get("detail")))
    R.check(took < 1.0, "Throttled is answered at once (10.3)", f"{took:.2f}s")
    R.note(f"Throttled answered in {1000 * took:.0f} ms: {m.f.get('detail')!r}")
    m = attempt(u, Msg("Nick", ""))
    R.eq(m.kind, "Named", "after Throttled the client is still unnamed and may go on (10.3 item 2)")
    u.name = m.f.get("name")
    assemble(u, "Roster", "lobby")
    bye(u)


NO_GUESTS = "this server requires an account: connect with a client that can log in (the AUTH capability)"


def run_no_guests(srv, ip_limit, reg_limit):
    """Against a server started with --no-guests --login-rate-ip IP_LIMIT --register-rate REG_LIMIT:
    section 10.1's refusal of clients without AUTH, AuthRequired, and the per-address limits on
    failed login attempts and on registrations (10.3)."""
    R.section = "no guests (10.1, 10.3)"
    print(f"== {R.section}", flush=True)
    tag = srv.tag
    for label, features in (("ng-v1", 0), ("ng-rooms", ROOMS), ("ng-history", ROOMS | HISTORY), ("ng-auth-only", AUTH)):
        c = Client(label, srv.addr)
        c.send(Msg("Hello", 1, features))
        reason_is(c.next_msg("Error instead of Welcome"), NO_GUESTS,
                  f"Hello with features {features}: Error instead of Welcome, no guests (10.1)")
        c.expect_close("close after the no-guests Error")
        c.close()
    a = ahello(srv, "ng-auth", ROOMS | HISTORY | AUTH)
    refused(attempt(a, Msg("Nick", "bob" + tag)), "AuthRequired", "bob" + tag, "a guest Nick: AuthRequired (10.3)")
    refused(attempt(a, Msg("Nick", "")), "AuthRequired", "", "an empty Nick: AuthRequired (10.3)")
    m = attempt(a, Msg("Register", "bob" + tag, "bob's password"))
    tok = logged_in(a, m, "bob" + tag, "Register after AuthRequired")["token"]
    bye(a)

    R.section = f"registrations per address (10.3, --register-rate {reg_limit})"
    print(f"== {R.section}", flush=True)
    for i in range(1, reg_limit):  # bob's was the first
        c = ahello(srv, f"ng-reg-{i}")
        logged_in(c, attempt(c, Msg("Register", f"reg{i}-{tag}", "a password")), f"reg{i}-{tag}",
                  f"registration {i + 1} of {reg_limit} from one address")
        bye(c)
    c = ahello(srv, "ng-reg-over")
    refused(attempt(c, Msg("Register", f"reg0-{tag}", "a password")), "Throttled", f"reg0-{tag}",
            f"registration {reg_limit + 1} from one address within the hour: Throttled (10.3)")
    c.close()

    R.section = f"attempts per address (10.3, --login-rate-ip {ip_limit})"
    print(f"== {R.section}", flush=True)
    b = ahello(srv, "ng-token")
    logged_in(b, attempt(b, Msg("LoginToken", tok)), "bob" + tag, "LoginToken", token="")
    bye(b)
    c = ahello(srv, "ng-ip")
    got = [attempt(c, Msg("LoginToken", f"bad-{i}")) for i in range(ip_limit - 1)]
    R.eq([(m.kind, m.f.get("code")) for m in got], [("Refused", CODE["AuthFailed"])] * (ip_limit - 1),
         f"{ip_limit - 1} failed attempts from one address after a successful one: AuthFailed each "
         "(the limit counts every attempt, failed or not, 10.3)")
    refused(attempt(c, Msg("LoginToken", tok)), "Throttled", "", "one more from that address, a good token: Throttled (10.3)")
    refused(attempt(c, Msg("Login", "carol" + tag, "a password")), "Throttled", "carol" + tag,
            "a password Login from that address, another account: Throttled (10.3)")
    c.close()


def run_live(srv):
    st = {}
    for name, fn in (("version 1 chat", t_v1_chat), ("handshake", t_handshake), ("names", t_names),
                     ("rooms", t_rooms), ("tell", t_tell), ("rename", t_rename), ("mixed lobby (8.11)", t_mixed),
                     ("history: negotiation (9.1, 9.3)", th_negotiation),
                     ("history: numbering and delivery (9.4-9.6, 9.9)", th_delivery),
                     ("history: pages (9.7)", th_pages), ("history: pages joined to live (9.8)", th_seam),
                     ("history: leaving", th_done),
                     ("accounts: negotiation (10.1)", ta_negotiation), ("accounts: naming (10.3, 10.5)", ta_accounts),
                     ("accounts: rules and limits (10.3, 2.1)", ta_rules), ("accounts: throttling (10.3)", ta_throttle),
                     ("long answers (8.9)", t_long)):
        R.section = name
        print(f"== {name}", flush=True)
        if time.monotonic() > DEADLINE:
            R.check(False, "run out of time before this part")
            continue
        try:
            if fn in (t_v1_chat, t_handshake):
                fn(srv)
            else:
                if fn in (t_rooms, t_tell, t_rename, t_mixed, t_long) and "al" not in st:
                    R.check(False, "skipped: the names part failed")
                    continue
                if fn in (th_pages, th_done) and "h" not in st:
                    R.check(False, "skipped: the history delivery part failed")
                    continue
                fn(srv, st)
        except Fail as e:
            R.check(False, "aborted", str(e))
        except OSError as e:
            R.check(False, "aborted on a socket error", f"{e!r}")
        except Exception as e:  # noqa: BLE001 - a bug here is reported, not hidden
            R.check(False, "aborted on an exception", "".join(traceback.format_exception(type(e), e, e.__traceback__))[-800:])
    for c in ALL_CLIENTS:
        c.close()


def parse_addr(s):
    host, _, port = s.rpartition(":")
    host = host.strip("[]")
    ip = ipaddress.ip_address(host)
    if str(ip) not in ("127.0.0.1", "::1"):
        sys.exit(f"refusing to connect to {host}: only 127.0.0.1 / ::1")
    return (str(ip), int(port))


def main():
    if len(sys.argv) != 2 and not (sys.argv[1:2] == ["--timers"] and len(sys.argv) == 8) and not (
            sys.argv[1:2] == ["--presence-race"] and len(sys.argv) == 3) and not (
            sys.argv[1:2] == ["--no-guests"] and len(sys.argv) == 5):
        sys.exit(__doc__)

    def out_of_time(*_):
        raise Fail(f"the run exceeded {RUN_SECONDS + 3}s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(RUN_SECONDS + 3)
    with open(SPEC, encoding="utf-8") as f:
        spec = f.read()
    try:
        if sys.argv[1] not in ("--timers", "--presence-race", "--no-guests"):  # the main run checks these
            check_golden(spec)
            check_tables(spec)
            check_decoder(spec)
        if sys.argv[1] == "--presence-race":
            run_presence_race(Server(parse_addr(sys.argv[2])))
        elif sys.argv[1] == "--no-guests":
            run_no_guests(Server(parse_addr(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4]))
        elif sys.argv[1] == "--timers":
            run_timers(Server(parse_addr(sys.argv[2])), int(sys.argv[3]), *map(float, sys.argv[4:8]))
        elif sys.argv[1] != "--golden":
            run_live(Server(parse_addr(sys.argv[1])))
    except Fail as e:
        R.check(False, "run aborted", str(e))
    except Exception as e:  # noqa: BLE001 - reported in the list of failures
        R.check(False, "run aborted on an exception", "".join(traceback.format_exception(type(e), e, e.__traceback__))[-800:])
    signal.alarm(0)
    print(f"\n{R.passed} checks passed ({R.awaited} awaited messages arrived besides), {len(R.failures)} failed")
    if R.notes:
        print("notes:\n  " + "\n  ".join(R.notes))
    if R.failures:
        print("FAILURES:\n  " + "\n  ".join(R.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
