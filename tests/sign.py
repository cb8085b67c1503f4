#!/usr/bin/env python3
"""Independent signer for bkjs requests (docs/auth.md), standard library only.

It exists so tests and benchmarks can sign requests without trusting the Rust code they check: it
is written from docs/auth.md alone and shares nothing with crates/api/src/auth. If both agree on the
docs/auth.md test vectors and on each other's output, the reading of docs/auth.md is the same twice over.

Rules implemented (each line is one rule of docs/auth.md or a documented bkjs choice):
  header   VERSION|APPDATA|LOGIN|SIGNATURE|EXPIRES|CHECKSUM|   (APPDATA left empty)
  string   METHOD, host, path, query, EXPIRES, content type, CHECKSUM, each followed by a newline
  host     Host header without the port, lower case ("[::1]:80" keeps "[::1]")
  path     the URL path before "?", as sent (still percent-encoded)
  query    raw query split on "&", empty items and items named exactly "bk-signature" dropped,
           sorted bytewise, joined with "&"; for a POST whose media type is
           application/x-www-form-urlencoded the raw body is used instead of the URL query
  checksum base64 SHA1 of any other non-empty body, empty otherwise
  HMAC     SHA1 for version 1, SHA256 for versions 3 and 4, key = secret, base64 with padding
Version 2 (session cookies) is issued by the server with its own key and cannot be made here.

Usage:
  python3 tests/sign.py VERSION LOGIN SECRET METHOD HOST URL [CONTENT_TYPE] [BODY_FILE]
      prints the bk-signature header value; BODY_FILE "-" reads stdin;
      --expires MS sets EXPIRES (default: now + 30 s); -v prints the string to sign on stderr
  python3 tests/sign.py --vectors
      checks the test vectors of docs/auth.md, exit status 1 on any mismatch

As a module:
  from sign import sign
  sign(3, "alice", "s3cret", "GET", "/account/get?id=1", "localhost:8000")
"""

import argparse
import base64
import hashlib
import hmac
import sys
import time
import urllib.parse

SIGNATURE_NAME = b"bk-signature"
FORM_TYPE = "application/x-www-form-urlencoded"
DIGESTS = {1: hashlib.sha1, 3: hashlib.sha256, 4: hashlib.sha256}

# docs/auth.md test vectors: login alice, secret s3cret, GET, Host Api.Example.com:8000, path /account/get,
# EXPIRES 1900000000000, no content type, no checksum.
APPENDIX = [
    (1, "b=2&a=1&c=%2B", "1||alice|kzcRwejeU58HboBzv6+hZO5OIBI=|1900000000000||"),
    (3, "z=1&id=abc&_count=5",
     "3||alice|d+vXQuhdGnrFD4LIv50VBqP/F93Fc2k7gPbFb+/NdJA=|1900000000000||"),
    (1, "", "1||alice|Er9zAM2FG5jC0TnCevP0E9y38CE=|1900000000000||"),
]


def _bytes(value):
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode("utf-8")


def host_for_signing(host):
    """Host header value as signed: no port, lower case."""
    host = host or ""
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            return host[: end + 1].lower()
        return host.lower()
    return host.partition(":")[0].lower()


def signed_query(raw):
    """Raw query bytes to their signed form."""
    kept = []
    for item in _bytes(raw).split(b"&"):
        if not item:
            continue
        if item.partition(b"=")[0] == SIGNATURE_NAME:
            continue
        kept.append(item)
    return b"&".join(sorted(kept))


def _is_form(method, content_type):
    if method != "POST" or not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == FORM_TYPE


def string_to_sign(method, url, host, content_type=None, body=None, expires=None):
    """Returns (string to sign as bytes, EXPIRES, CHECKSUM)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    body = _bytes(body)
    if _is_form(method, content_type):
        query = signed_query(body)
        checksum = b""
    else:
        query = signed_query(parts.query)
        checksum = base64.b64encode(hashlib.sha1(body).digest()) if body else b""
    if expires is None:
        expires = int(time.time() * 1000) + 30000
    expires = int(expires)
    if expires <= 0:
        raise ValueError("expires must be a positive number of milliseconds")
    lines = [
        _bytes(method),
        _bytes(host_for_signing(host)),
        _bytes(path),
        query,
        _bytes(str(expires)),
        _bytes((content_type or "").lower()),
        checksum,
    ]
    return b"".join(line + b"\n" for line in lines), expires, checksum.decode("ascii")


def sign(version, login, secret, method, url, host, content_type=None, body=None, expires=None):
    """The bk-signature header value for one request.

    url is the path with its query exactly as it will be sent (an absolute URL also works);
    host is the Host header that will be sent; body is bytes or str.
    """
    version = int(version)
    if version not in DIGESTS:
        raise ValueError("version must be 1, 3 or 4 (2 is the server's session cookie)")
    if not login or "|" in login:
        raise ValueError("login must be non-empty and without '|'")
    text, expires, checksum = string_to_sign(method, url, host, content_type, body, expires)
    mac = hmac.new(_bytes(secret), text, DIGESTS[version]).digest()
    signature = base64.b64encode(mac).decode("ascii")
    return "%d||%s|%s|%d|%s|" % (version, login, signature, expires, checksum)


def check_vectors(out=sys.stdout):
    """Checks the test vectors of docs/auth.md; returns the number of mismatches."""
    failures = 0
    for version, query, expected in APPENDIX:
        url = "/account/get" + ("?" + query if query else "")
        got = sign(version, "alice", "s3cret", "GET", url, "Api.Example.com:8000",
                   expires=1900000000000)
        if got == expected:
            print("ok       v%d %-22s %s" % (version, query or "(none)", got), file=out)
        else:
            failures += 1
            print("MISMATCH v%d %-22s got %s expected %s" % (version, query or "(none)", got,
                                                             expected), file=out)
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Print a bkjs bk-signature header value (docs/auth.md).",
        usage="%(prog)s [--expires MS] [-v] VERSION LOGIN SECRET METHOD HOST URL "
              "[CONTENT_TYPE] [BODY_FILE]\n       %(prog)s --vectors")
    parser.add_argument("--vectors", action="store_true", help="check the test vectors of docs/auth.md")
    parser.add_argument("--expires", type=int, help="EXPIRES in ms since the epoch")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the string to sign on stderr")
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)

    if opts.vectors:
        return 1 if check_vectors() else 0
    if not 6 <= len(opts.args) <= 8:
        parser.error("expected VERSION LOGIN SECRET METHOD HOST URL [CONTENT_TYPE] [BODY_FILE]")
    version, login, secret, method, host, url = opts.args[:6]
    content_type = opts.args[6] if len(opts.args) > 6 and opts.args[6] else None
    body = None
    if len(opts.args) > 7:
        if opts.args[7] == "-":
            body = sys.stdin.buffer.read()
        else:
            with open(opts.args[7], "rb") as f:
                body = f.read()
    try:
        header = sign(version, login, secret, method, url, host, content_type, body,
                      opts.expires)
    except ValueError as e:
        parser.error(str(e))
    if opts.verbose:
        text, _, _ = string_to_sign(method, url, host, content_type, body,
                                    int(header.split("|")[4]))
        sys.stderr.write(text.decode("utf-8", "replace"))
    print(header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
