/*
 * bkjs.js: a small browser client for bkjs that signs requests per docs/auth.md.
 *
 * Why its own SHA-1/SHA-256: WebCrypto (crypto.subtle) exists only in secure contexts (HTTPS or
 * localhost), and a console served over plain HTTP on a LAN address must sign too; the hashes
 * are small, synchronous and checked against the test vectors of docs/auth.md by bkjs.vectors().
 *
 *   bkjs.sign({version, login, secret, method, url, host, contentType, body, expires})
 *       -> the bk-signature header value
 *   bkjs.scramble(login, secret) -> {login, secret} as stored by clients that scramble secrets
 *   bkjs.send({method, url, body, contentType, login, secret, version}) -> Promise of
 *       {status, data, signature}
 *   bkjs.vectors() -> [{version, query, expected, got, ok}] for the test vectors of docs/auth.md
 *
 * Works in browsers and in node (module.exports).
 */
(function (root) {
    "use strict";

    var utf8 = function (s) {
        return new TextEncoder().encode(s == null ? "" : String(s));
    };

    function concat(a, b) {
        var out = new Uint8Array(a.length + b.length);
        out.set(a, 0);
        out.set(b, a.length);
        return out;
    }

    /* Message padding shared by SHA-1 and SHA-256: 0x80, zeros, 64-bit big-endian bit length. */
    function pad(bytes) {
        var len = bytes.length;
        var total = ((len + 9 + 63) >> 6) << 6;
        var out = new Uint8Array(total);
        out.set(bytes, 0);
        out[len] = 0x80;
        var bits = len * 8;
        var view = new DataView(out.buffer);
        view.setUint32(total - 8, Math.floor(bits / 0x100000000));
        view.setUint32(total - 4, bits >>> 0);
        return view;
    }

    function rotl(x, n) {
        return (x << n) | (x >>> (32 - n));
    }

    function rotr(x, n) {
        return (x >>> n) | (x << (32 - n));
    }

    function words(h) {
        var out = new Uint8Array(h.length * 4);
        var view = new DataView(out.buffer);
        for (var i = 0; i < h.length; i++) view.setUint32(i * 4, h[i] >>> 0);
        return out;
    }

    function sha1(bytes) {
        var v = pad(bytes);
        var h = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
        var w = new Array(80);
        for (var off = 0; off < v.byteLength; off += 64) {
            for (var i = 0; i < 16; i++) w[i] = v.getUint32(off + i * 4);
            for (i = 16; i < 80; i++) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
            var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
            for (i = 0; i < 80; i++) {
                var f, k;
                if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
                else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
                else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
                else { f = b ^ c ^ d; k = 0xca62c1d6; }
                var t = (rotl(a, 5) + f + e + k + w[i]) | 0;
                e = d; d = c; c = rotl(b, 30); b = a; a = t;
            }
            h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0;
            h[3] = (h[3] + d) | 0; h[4] = (h[4] + e) | 0;
        }
        return words(h);
    }

    var K256 = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
    ];

    function sha256(bytes) {
        var v = pad(bytes);
        var h = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
        var w = new Array(64);
        for (var off = 0; off < v.byteLength; off += 64) {
            for (var i = 0; i < 16; i++) w[i] = v.getUint32(off + i * 4);
            for (i = 16; i < 64; i++) {
                var s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
                var s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
                w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
            }
            var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
            for (i = 0; i < 64; i++) {
                var S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
                var ch = (e & f) ^ (~e & g);
                var t1 = (hh + S1 + ch + K256[i] + w[i]) | 0;
                var S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
                var maj = (a & b) ^ (a & c) ^ (b & c);
                var t2 = (S0 + maj) | 0;
                hh = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
            }
            h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
            h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + hh) | 0;
        }
        return words(h);
    }

    /* HMAC (RFC 2104) over a 64-byte-block hash. */
    function hmac(hash, key, message) {
        if (key.length > 64) key = hash(key);
        var k = new Uint8Array(64);
        k.set(key, 0);
        var ipad = new Uint8Array(64), opad = new Uint8Array(64);
        for (var i = 0; i < 64; i++) {
            ipad[i] = k[i] ^ 0x36;
            opad[i] = k[i] ^ 0x5c;
        }
        return hash(concat(opad, hash(concat(ipad, message))));
    }

    function base64(bytes) {
        var s = "";
        for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
        return btoa(s);
    }

    var HASHES = { 1: sha1, 3: sha256, 4: sha256 };
    var FORM = "application/x-www-form-urlencoded";

    /* Host header as signed: no port, lower case; "[::1]:80" keeps "[::1]". */
    function signedHost(host) {
        host = String(host || "");
        if (host.charAt(0) === "[") {
            var end = host.indexOf("]");
            return (end >= 0 ? host.slice(0, end + 1) : host).toLowerCase();
        }
        return host.split(":")[0].toLowerCase();
    }

    /* The raw query split on "&", empty and bk-signature items dropped, sorted bytewise. */
    function signedQuery(raw) {
        var items = String(raw || "").split("&").filter(function (item) {
            return item !== "" && item.split("=")[0] !== "bk-signature";
        });
        // The query is ASCII once percent-encoded, so code unit order is byte order.
        items.sort(function (a, b) { return a < b ? -1 : a > b ? 1 : 0; });
        return items.join("&");
    }

    function isForm(method, contentType) {
        return method === "POST" && !!contentType &&
            contentType.split(";")[0].trim().toLowerCase() === FORM;
    }

    /* The string to sign and its parts. url is the path and query exactly as sent. */
    function stringToSign(o) {
        var method = String(o.method || "GET").toUpperCase();
        var url = String(o.url || "/").split("#")[0];
        var q = url.indexOf("?");
        var path = q >= 0 ? url.slice(0, q) : url;
        var query = q >= 0 ? url.slice(q + 1) : "";
        var body = o.body == null ? "" : String(o.body);
        var checksum = "";
        if (isForm(method, o.contentType)) {
            query = body;
        } else if (body !== "") {
            checksum = base64(sha1(utf8(body)));
        }
        var expires = o.expires || Date.now() + 30000;
        var lines = [method, signedHost(o.host), path || "/", signedQuery(query), String(expires),
            String(o.contentType || "").toLowerCase(), checksum];
        return { text: lines.join("\n") + "\n", expires: expires, checksum: checksum };
    }

    function sign(o) {
        var version = Number(o.version || 3);
        var hash = HASHES[version];
        if (!hash) throw new Error("version must be 1, 3 or 4");
        if (!o.login || String(o.login).indexOf("|") >= 0) throw new Error("login is required, without '|'");
        var s = stringToSign(o);
        var signature = base64(hmac(hash, utf8(o.secret), utf8(s.text)));
        return version + "||" + o.login + "|" + signature + "|" + s.expires + "|" + s.checksum + "|";
    }

    /* secret' = b64(hmac_sha1(secret, login)), login' = b64(hmac_sha1(secret', login)). */
    function scramble(login, secret) {
        var s = base64(hmac(sha1, utf8(secret), utf8(login)));
        var l = base64(hmac(sha1, utf8(s), utf8(login)));
        return { login: l, secret: s };
    }

    /* Sends one request to this page's server; signed when login and secret are given. */
    function send(o) {
        var method = String(o.method || "GET").toUpperCase();
        var u = new URL(o.url || "/", root.location.href);
        // The path and query exactly as the browser will send them.
        var target = u.pathname + u.search;
        var headers = {};
        var body = o.body == null || o.body === "" ? undefined : String(o.body);
        var contentType = o.contentType || (body !== undefined ? "application/json" : "");
        if (contentType) headers["content-type"] = contentType;
        var signature = "";
        if (o.login && o.secret) {
            signature = sign({ version: o.version || 3, login: o.login, secret: o.secret,
                method: method, url: target, host: u.host, contentType: contentType,
                body: body, expires: o.expires });
            headers["bk-signature"] = signature;
        }
        return fetch(u.href, { method: method, headers: headers, body: body, credentials: "same-origin" })
            .then(function (res) {
                return res.text().then(function (text) {
                    var data;
                    try { data = JSON.parse(text); } catch (e) { data = text; }
                    return { status: res.status, data: data, signature: signature, url: target };
                });
            });
    }

    /* docs/auth.md test vectors: login alice, secret s3cret, GET, Host Api.Example.com:8000, /account/get. */
    var APPENDIX = [
        [1, "b=2&a=1&c=%2B", "1||alice|kzcRwejeU58HboBzv6+hZO5OIBI=|1900000000000||"],
        [3, "z=1&id=abc&_count=5", "3||alice|d+vXQuhdGnrFD4LIv50VBqP/F93Fc2k7gPbFb+/NdJA=|1900000000000||"],
        [1, "", "1||alice|Er9zAM2FG5jC0TnCevP0E9y38CE=|1900000000000||"]
    ];

    function vectors() {
        return APPENDIX.map(function (v) {
            var got = sign({ version: v[0], login: "alice", secret: "s3cret", method: "GET",
                url: "/account/get" + (v[1] ? "?" + v[1] : ""), host: "Api.Example.com:8000",
                expires: 1900000000000 });
            return { version: v[0], query: v[1], expected: v[2], got: got, ok: got === v[2] };
        });
    }

    var api = {
        sha1: function (s) { return base64(sha1(utf8(s))); },
        sha256: function (s) { return base64(sha256(utf8(s))); },
        hmacSha1: function (key, s) { return base64(hmac(sha1, utf8(key), utf8(s))); },
        hmacSha256: function (key, s) { return base64(hmac(sha256, utf8(key), utf8(s))); },
        stringToSign: stringToSign,
        sign: sign,
        scramble: scramble,
        send: send,
        vectors: vectors
    };
    if (typeof module !== "undefined" && module.exports) module.exports = api;
    else root.bkjs = api;
})(typeof window !== "undefined" ? window : globalThis);
