#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*): valid inputs the
unit tests already use (docs/auth.md vectors, params.rs and sp.rs cases, frame.rs rules), laid out
as each target reads its input (see crates/api/src/fuzzing.rs, crates/ipc/src/fuzzing.rs and
fuzz/fuzz_targets/cluster_frame.rs), so the fuzzer starts from real shapes. Run it again after
changing a layout; the files it writes are committed."""

import base64
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# signature: CREDENTIAL\nHOST\nMETHOD TARGET\nCONTENT-TYPE\nBODY
H = "Api.Example.com:8000"
write("signature", "v1-query", f"1||alice|kzcRwejeU58HboBzv6+hZO5OIBI=|1900000000000||\n{H}\nGET /account/get?b=2&a=1&c=%2B\n\n")
write("signature", "v3-query", f"3||alice|d+vXQuhdGnrFD4LIv50VBqP/F93Fc2k7gPbFb+/NdJA=|1900000000000||\n{H}\nGET /account/get?z=1&id=abc&_count=5\n\n")
write("signature", "v1-empty", f"1||alice|Er9zAM2FG5jC0TnCevP0E9y38CE=|1900000000000||\n{H}\nGET /account/get\n\n")
write("signature", "v3-json", f"3||alice|X5CelqhEyIVN7XUepipEUoXn7jxiGUx3lM37NiP6Exk=|1900000000000|iD2Rve/jlI2A13Iw1wrdBubvGUQ=|\n{H}\nPOST /account/update\napplication/json\n" + '{"name":"x"}')
write("signature", "v1-form", f"1||alice|A03nKGPoOK91vLJVjgAHKeDC1No=|1900000000000||\n{H}\nPOST /account/update?ignored=1\napplication/x-www-form-urlencoded; charset=utf-8\nname=x%20y&alias=z")
write("signature", "v4-in-query", f"x\n{H}\nGET /account/get?bk-signature=4%7C%7Calice%7CFw%2Bl9X5nVyjyNAPRm3wCHalqBqm4RvWPjavCtUVLOsY%3D%7C1900000000000%7C%7C&b=1\n\n")
write("signature", "v2-cookie", "bk_sid=2||alice|AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=|1900000000000||; theme=dark\nwww.example.com:8000\nGET /ws\n\n")
write("signature", "all-fields", "4|app data|bob@x.com|QUJD|42|2jmj7l5rSw0yVb/vlWAYkK/YBwk=|\n[::1]:8000\nGET /\n\n")
write("signature", "unicode-host", "3||al|QUJD|7||\nΟΔΟΣ.example:80\nGET /a/b\nX/ΣΑΣ\n")

# params: SELECTOR QUERY\nBODY; SELECTOR % 5 picks None, json, json; charset, form, text;
# 1 + SELECTOR % 127 is -api-max-json-depth.
write("params", "form", b"\x03name=a&name=b%2Cc&e=\nb=2&name=x%20y")
write("params", "json", b'\x01id=q&z=1\n{"id":"x","n":5,"tags":["a"]}')
nested = '{"a":' + "[" * 9 + "1" + "]" * 9 + "}"
write("params", "json-deep", b"\x06\n" + nested.encode())
write("params", "json-strings", b'\x02\n{"a":"[[[[[[{{{{\\"[[[[","b\\\\":[{}]}')
write("params", "text", b"\x04b=1\nb=2")
write("params", "query", b"\x00a=1&bk-signature=x&c=%E2%82%AC+d\n")

# multipart: FLAGS BODY; FLAGS bit 0: boundary from the first line; bit 1: a query too.
write("multipart", "fields-and-file", b'\x02--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
      b'--XX\r\nContent-Disposition: form-data; name="icon"; filename="i.png"\r\n'
      b"Content-Type: image/png\r\n\r\nPNGDATA\r\n--XX--\r\n")
write("multipart", "mixed-case", b'\x01AbC\npreamble\r\n--AbC\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--AbC--\r\n')
write("multipart", "cut", b"\x00--XX\r\nnonsense")
write("multipart", "text-fields", b'\x00--XX\r\ncontent-disposition: form-data; name="k"\r\n\r\nv w\r\n'
      b'--XX\r\ncontent-disposition: form-data; name="z"\r\n\r\n\r\n--XX--\r\n')
write("multipart", "webkit", b"\x01----WebKitFormBoundary7MA4YWxkTrZu0gW\n------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
      b'Content-Disposition: form-data; name="f"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\n'
      b"hello\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n")


# ipc_frame: frames 01 LEN(u64 BE) ID(4) JSON, as a worker or the server sends them.
def frame(msg_id, body):
    msg = struct.pack(">I", msg_id) + json.dumps(body, separators=(",", ":")).encode()
    return b"\x01" + struct.pack(">Q", len(msg)) + msg


REQ = 0x80000001
meter = {"count": 5, "start": 1.0e9, "current": 2.0, "m1": 0.5, "m5": 0.25, "m15": 0.125}
samples = base64.b64encode(struct.pack("<fff", 12.0, 0.0, -1.5) + struct.pack("<fff", 30.0, -0.5, -2.0)).decode().rstrip("=")
hist = {"count": 2, "sum": 42.0, "min": 12.0, "max": 30.0, "base": 3.5, "samples": samples}
snapshot = {"time": 1.7e9, "metrics": {
    "api.requests": {"counter": 5}, "api.rss": {"gauge": 1.5}, "api.rate": {"meter": meter},
    "api.size": {"histogram": hist}, "api.GET.response": {"timer": {"meter": meter, "histogram": hist}}}}
write("ipc_frame", "requests", b"".join([
    frame(REQ, {"op": "ready", "pid": 7}),
    frame(REQ + 1, {"op": "heartbeat", "pid": 7, "requests": 10, "rss": 1 << 20}),
    frame(REQ + 2, {"op": "cacheget", "keys": ["a", "b"]}),
    frame(REQ + 3, {"op": "cacheput", "key": "a", "value": "1"}),
    frame(REQ + 4, {"op": "cacheincr", "key": "n", "delta": -3}),
    frame(REQ + 5, {"op": "systemstats", "prometheus": True}),
]))
write("ipc_frame", "metrics", frame(REQ, {"op": "metrics", "pid": 7, "snapshot": snapshot}))
write("ipc_frame", "backtrace", b"\x01" + struct.pack(">Q", 10) + b"\x00\x00\x00\x01\x80\x00\x00\x07{}")
write("ipc_frame", "replies", b"".join([
    frame(REQ, {"op": "values", "values": ["x", None]}),
    frame(REQ + 1, {"op": "stats", "stats": {"inserted": 1, "deleted": 0, "evicted": 0, "hits": 2, "misses": 1, "max": 100, "count": 1, "bytes": 2}}),
    frame(REQ + 2, {"op": "error", "message": "no"}),
    frame(3, {"op": "invalidate", "keys": ["a"]}),
    frame(4, {"op": "invalidateall"}),
]))


# cluster_frame: steps FLAGS COUNTER SKEW ADVANCE FLIP LEN PAYLOAD; FLAGS & 3 picks the origin
# (99 = the opener's own, 1, 2, u64::MAX), 4 tampers, 8 cuts; SKEW is seconds (i8).
def step(origin, counter, skew=0, advance=0, flip=0, payload=b"put a", tamper=False, cut=False):
    flags = origin | (4 if tamper else 0) | (8 if cut else 0)
    return bytes([flags, counter, skew & 0xFF, advance, flip, len(payload)]) + payload


write("cluster_frame", "opens-once", step(1, 1) + step(1, 2, payload=b"put b") + step(1, 1) + step(1, 2) + step(2, 1))
write("cluster_frame", "refused", step(1, 1, tamper=True, flip=40) + step(1, 1, cut=True) + step(0, 1)
      + step(2, 1, skew=-61) + step(2, 2, skew=61) + step(2, 3, skew=-59))
write("cluster_frame", "forgotten", step(1, 3) + step(1, 3, advance=3) + step(2, 1, advance=10) + step(1, 1))
write("cluster_frame", "unsealed", b'{"o":1,"s":1,"t":"put","k":"bk_auth|x","v":"{}"}')
