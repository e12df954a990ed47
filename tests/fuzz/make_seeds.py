#!/usr/bin/env python3
"""Writes the seed corpora tests/fuzz/corpus/<target>/seed-* from our own test vectors:
the golden frames and sessions (tests/golden, captured from the original KiteQ), the ZooKeeper
binding JSON of tests/golden/zk-tree.txt, the example configs in lua/config, hand-written admin
requests and file store records. Run it again after changing a vector; findings are kept
next to the seeds as crash-* / regress-* files and are not touched here."""
import glob
import json
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def frames():
    golden = os.path.join(ROOT, "tests", "golden")
    for line in open(os.path.join(golden, "frames.jsonl")):
        fr = json.loads(line)
        put("frame", "golden-%02d" % fr["id"], bytes.fromhex(fr["header_hex"] + fr["body_hex"]))
    streams = {}
    for line in open(os.path.join(golden, "sessions.jsonl")):
        fr = json.loads(line)
        key = "session-%s-%s-%s" % (fr["scenario"], fr["conn"], fr["direction"])
        streams[key] = streams.get(key, b"") + bytes.fromhex(fr["frame_hex"])
    for key, data in streams.items():
        put("frame", re.sub(r"[^A-Za-z0-9_-]", "_", key), data)


def bindings():
    seen = set()
    for line in open(os.path.join(ROOT, "tests", "golden", "zk-tree.txt")):
        m = re.search(r'-bind\t.*\tdata="(.*)"$', line.rstrip("\n"))
        if m:
            seen.add(m.group(1).encode().decode("unicode_escape"))
    for i, data in enumerate(sorted(seen)):
        put("bindings", "zk-%d" % i, data)
    put("bindings", "all-types", json.dumps([
        {"groupId": "s-a", "topic": "trade", "messageType": "pay", "bindType": 0,
         "version": "1", "watermark": 1000, "persistent": True},
        {"groupId": "s-a", "topic": "trade", "messageType": "pay-.*", "bindType": 1,
         "version": "1", "watermark": 0, "persistent": False},
        {"groupId": "s-a", "topic": "user", "messageType": "*", "bindType": 2,
         "version": "", "watermark": -1, "persistent": True}]))
    put("bindings", "empty", "[]")


def configs():
    for path in sorted(glob.glob(os.path.join(ROOT, "lua", "config", "**", "*.lua"),
                                 recursive=True)):
        put("config", os.path.basename(path)[:-4], open(path, "rb").read())


def admin():
    reqs = {
        "stat": "GET /stat HTTP/1.1\r\n\r\n",
        "metrics-head": "HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
        "msg-later": "GET /msg/0123456789abcdef0123456789abcdef HTTP/1.1\r\n\r\n",
        "msg-404": "GET /msg/1123456789abcdef0123456789abcdef HTTP/1.0\r\n\r\n",
        "dlq-page": "GET /dlq?topic=trade&after=abc%20d&limit=10 HTTP/1.1\r\n\r\n",
        "requeue": "POST /dlq/requeue?id=* HTTP/1.1\r\nAuthorization: Bearer fuzz-token\r\n"
                   "Content-Length: 0\r\n\r\n",
        "purge-bad-token": "POST /dlq/purge?topic=trade HTTP/1.1\r\nAuthorization: Bearer no\r\n"
                           "Content-Length: 3\r\n\r\nabc",
        "reload-chunked": "POST /reload HTTP/1.1\r\nAuthorization: Bearer fuzz-token\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "pipelined": "GET /stat HTTP/1.1\r\n\r\nGET /binds HTTP/1.1\r\n\r\n"
                     "GET /dlq?limit=0 HTTP/1.1\r\n\r\nDELETE /stat HTTP/1.1\r\n\r\n",
        "garbage": "\x00\x01GET / HTTP/9.9\r\n\r\n",
    }
    for name, text in reqs.items():
        # HTTP/1.1 requests need a Host header (400 without)
        text = text.replace(" HTTP/1.1\r\n", " HTTP/1.1\r\nHost: kiteq\r\n")
        put("admin", name, text.encode("latin-1"))


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def record(rtype, seq, payload):
    """One file store record (src/store/file/record.h, docs/STORAGE.md)."""
    tail = struct.pack("<IBQ", len(payload), rtype, seq) + payload
    return struct.pack("<II", 0x3151454B, crc32c(tail)) + tail


def strf(s):
    return struct.pack("<H", len(s)) + s + b"\0"


def save(i, seq):
    mid = b"%032x" % i
    body = bytes(range(i, i + 20))
    return record(1, seq, mid + struct.pack("<QBBqqi", seq, 0x11, 1, 1700000000, 1800000000, 10)
                  + strf(b"trade") + strf(b"pay") + strf(b"g") + struct.pack("<I", 2) + b"hd"
                  + struct.pack("<I", len(body)) + body)


def store():
    # First byte: where the damage goes (fuzz_store_recover.c); seqs continue after the 5
    # valid records the target writes first.
    good = save(10, 6) + record(2, 7, b"%032x" % 10) + save(11, 8)
    for mode in range(3):
        m = bytes([mode])
        put("store_recover", "records-%d" % mode, m + good)
        put("store_recover", "torn-%d" % mode, m + good + save(12, 9)[:30])
        put("store_recover", "flipped-%d" % mode, m + good[:40] + b"\xff" + good[41:])
        put("store_recover", "zeros-%d" % mode, m + good + bytes(64))
        put("store_recover", "garbage-%d" % mode, m + b"KEQ1" * 8 + good)
    put("store_recover", "remove-1", b"\x00" + record(4, 9, b"%032x" % 1))
    put("store_recover", "state", b"\x00" + record(3, 9, b"%032x" % 11 + struct.pack(
        "<iqiH", 3, 0, 0, 1) + strf(b"g1") + struct.pack("<H", 0)))


if __name__ == "__main__":
    frames()
    bindings()
    configs()
    admin()
    store()
    sys.exit(0)
