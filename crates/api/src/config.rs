//! The API's configuration parameters (`-api-*`), declared once for the App to assemble with
//! the other crates' parameters.

use bkjs_base::config::{Kind, Param};

/// Paths that need no authentication by default (docs/auth.md).
const DEFAULT_ALLOW: &str =
    r"^/$ \.(html|ico|gif|png|jpg|svg|ttf|woff|js|css)$ ^/public ^/account/add$";

/// API parameters.
pub static PARAMS: &[Param] = &[
    Param::new(
        "api-image-max-side",
        Kind::Int { min: 1, max: 8192 },
        "4096",
        "largest width or height of an image the server produces (icons, message pictures); a larger _width/_height is a 400",
    ),
    Param::new(
        "api-image-max-pixels",
        Kind::Int { min: 1, max: 67108864 },
        "67108864",
        "most pixels (width times height) of an uploaded image; a larger one is a 400 before it is decoded",
    ),
    Param::new(
        "api-image-max-input-side",
        Kind::Int { min: 1, max: 65535 },
        "8192",
        "largest width or height of an uploaded image; a wider or taller one is a 400 before it is decoded",
    ),
    Param::new(
        "api-image-max-memory",
        Kind::Size,
        "256MB",
        "memory the decoder may use for one uploaded image; one that needs more is a 400",
    ),
    Param::new(
        "api-image-jobs",
        Kind::Int { min: 1, max: 64 },
        "2",
        "image conversions one web worker runs at once; more wait their turn",
    ),
    Param::new(
        "api-body-jobs",
        Kind::Int { min: 1, max: 64 },
        "2",
        "large request bodies (256KB or more) one web worker parses and decodes at once on its blocking pool; more wait their turn",
    ),
    Param::new(
        "api-allow",
        Kind::Regexp,
        DEFAULT_ALLOW,
        "paths that need no authentication; a value replaces the default list",
    ),
    Param::new(
        "api-allow-path",
        Kind::Regexp,
        "",
        "adds a path pattern that needs no authentication (repeatable)",
    ).accumulating(),
    Param::new(
        "api-deny-path",
        Kind::Regexp,
        "",
        "adds a path pattern that is always refused with 403 (repeatable)",
    ).accumulating(),
    Param::new(
        "api-disallow-path",
        Kind::Regexp,
        "",
        "adds a path pattern answered 404 as if it did not exist (repeatable)",
    ).accumulating(),
    Param::new(
        "api-upload-limit",
        Kind::Size,
        "10MB",
        "largest request body accepted",
    ),
    Param::new(
        "api-body-timeout",
        Kind::Duration,
        "30s",
        "a request body not fully received this long after its headers is answered 408 and its connection closed (0 = no limit)",
    ),
    Param::new(
        "api-max-url",
        Kind::Int { min: 256, max: 1048576 },
        "16384",
        "longest request path and query in bytes; a longer one is a 414",
    ),
    Param::new(
        "api-max-params",
        Kind::Int { min: 1, max: 1000000 },
        "1000",
        "most parameters of one request (query, form and JSON fields, multipart parts); more is a 400",
    ),
    Param::new(
        "api-max-json-depth",
        Kind::Int { min: 1, max: 127 },
        "127",
        "deepest nesting of arrays and objects in a JSON body; deeper is a 400 (127 is also the JSON parser's own limit)",
    ),
    Param::new(
        "api-ws-max-message",
        Kind::Int { min: 1024, max: 67108864 },
        "65536",
        "largest WebSocket message or frame a client may send in bytes; a larger one closes the socket with 1009",
    ),
    Param::new(
        "api-max-header-size",
        Kind::Int { min: 8192, max: 16777216 },
        "65536",
        "largest request head (request line and headers; the HTTP/2 header list) in bytes; a larger one is a 431",
    ),
    Param::new(
        "api-max-headers",
        Kind::Int { min: 8, max: 1000 },
        "100",
        "most header fields of an HTTP/1.1 request; more is a 431",
    ),
    Param::new(
        "api-h2-max-streams",
        Kind::Int { min: 1, max: 10000 },
        "100",
        "most concurrent streams of one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS)",
    ),
    Param::new(
        "api-h2-max-resets",
        Kind::Int { min: 1, max: 100000 },
        "20",
        "HTTP/2 streams reset before being answered (the rapid-reset pattern) that close the connection with GOAWAY",
    ),
    Param::new(
        "api-h2-max-local-resets",
        Kind::Int { min: 1, max: 100000 },
        "1024",
        "HTTP/2 streams this side may reset for a client's protocol errors before the connection is closed with GOAWAY (hyper's MAX_LOCAL_ERROR_RESET_STREAMS)",
    ),
    Param::new(
        "api-ip-conn-max",
        Kind::Int { min: 0, max: 1_000_000 },
        "256",
        "open connections one client address may hold on one web worker (in proxy mode: on the server's proxy); more are answered 429 and closed (0 = no limit; raise it behind a reverse proxy)",
    ),
    Param::new(
        "api-console",
        Kind::Bool,
        "true",
        "serve the web console built into the binary (/api.html, /doc.html, js, css) where -web-dir has no file of that name",
    ),
    Param::new(
        "api-ws-anonymous",
        Kind::Bool,
        "false",
        "allow WebSockets without a signed-in account on open paths; otherwise an anonymous upgrade is a 401",
    ),
    Param::new(
        "api-ws-origins",
        Kind::List,
        "",
        "origins (scheme://host[:port]) besides the request's own host and -api-origins whose pages may open WebSockets; * allows any; a foreign Origin is a 403",
    ),
    Param::new(
        "api-ws-ping-interval",
        Kind::Duration,
        "30s",
        "how often the server pings an open WebSocket (0 = never)",
    ),
    Param::new(
        "api-ws-pong-timeout",
        Kind::Duration,
        "10s",
        "a WebSocket whose peer sends nothing, not even a pong, this long after a ping is closed",
    ),
    Param::new(
        "api-ws-idle-timeout",
        Kind::Duration,
        "10m",
        "a WebSocket with neither a request from its peer nor a pushed event for this long is closed (0 = never)",
    ),
    Param::new(
        "api-quota-rate",
        Kind::Map,
        "",
        "requests (and WebSocket frames) an account may make per -api-quota-window, by bk_auth type: user:600,*:100 (* = other types, 0 = none); over it a 429",
    ),
    Param::new(
        "api-quota-window",
        Kind::Duration,
        "1m",
        "the window -api-quota-rate counts requests in",
    ),
    Param::new(
        "api-quota-storage",
        Kind::Map,
        "",
        "bytes of /file storage an account may hold, by bk_auth type: *:100MB,admin:0 (0 = none); a put over it is a 429",
    ),
    Param::new(
        "api-unsecure",
        Kind::List,
        "",
        "endpoint groups that may use _pool, _noscan and _noprocessrows (e.g. data)",
    ),
    Param::new(
        "api-allow-admin",
        Kind::Regexp,
        "^/(system|data)/ ^/metrics$",
        "paths only admins may call unless an allow pattern opens them without their extension; a value replaces the default list",
    ),
    Param::new(
        "api-disable",
        Kind::List,
        "",
        "endpoint groups (first path segment: account, system, data, ...) that are not served",
    ),
    Param::new(
        "api-max-expire",
        Kind::Duration,
        "10m",
        "a signed request whose expiry is further ahead than this is refused; a signed write is refused when replayed inside this window",
    ),
    Param::new(
        "api-read-path",
        Kind::Regexp,
        r"^/[^/]+/(get|select|search|list|columns|keys|subscribe|image|stats|recent)(/|$) ^/image/ ^/(ping|metrics)$",
        "routes that only read: a session cookie may call them from any page, and their signatures may be replayed until they expire; every other route is a write (POST from an allowed origin with the cookie, each signature used once); a value replaces the default list",
    ),
    Param::new(
        "api-origins",
        Kind::List,
        "",
        "origins (scheme://host[:port]) besides the server's own whose pages may call writes with the session cookie",
    ),
    Param::new(
        "api-session-age",
        Kind::Duration,
        "14d",
        "lifetime of the session cookie set by /account/get?_session=1",
    ),
    Param::new(
        "api-session-key",
        Kind::String,
        "",
        "key that signs session cookies; empty: one generated once and kept in bk_property",
    ),
    Param::new(
        "api-busy-latency",
        Kind::Duration,
        "1s",
        "answer 503 while a worker's runtime runs timers later than this (0 = never)",
    ),
    Param::new(
        "api-subscribe-timeout",
        Kind::Duration,
        "30m",
        "a /account/subscribe long poll without events answers [] after this long",
    ),
    Param::new(
        "api-subscribe-interval",
        Kind::Duration,
        "3s",
        "after the first event, /account/subscribe gathers events this long before it answers",
    ),
    Param::new(
        "api-threads",
        Kind::Int { min: 1, max: 256 },
        "1",
        "threads of each web worker's runtime",
    ),
];
