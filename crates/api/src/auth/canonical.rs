//! The strings that are signed: the canonical query, the request string and the session string,
//! with the host normalisation they share. Client and server must build them byte for byte alike,
//! so they live in one place, apart from the HMACs that sign them.

use std::net::Ipv4Addr;

/// Name of the header and of the query parameter carrying a request signature.
pub(crate) const SIGNATURE_NAME: &str = "bk-signature";

const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// The query as signed: the raw (still percent-encoded) query split on `&`, empty items and the
/// `bk-signature` item(s) dropped, sorted bytewise ascending, joined with `&`. Duplicates are kept.
pub(crate) fn canonical_query(raw_query: &str) -> String {
    let mut items: Vec<&str> = raw_query
        .split('&')
        .filter(|item| !item.is_empty() && !is_signature_item(item))
        .collect();
    items.sort_unstable();
    items.join("&")
}

/// True for an item whose name, as sent, is exactly `bk-signature`.
fn is_signature_item(item: &str) -> bool {
    let name = item.split_once('=').map_or(item, |(name, _)| name);
    name == SIGNATURE_NAME
}

/// True for a POST whose media type is `application/x-www-form-urlencoded` (any parameters, any
/// case): its body is signed in place of the query.
pub(crate) fn is_form_post(method: &str, content_type: Option<&str>) -> bool {
    method == "POST"
        && content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case(FORM_TYPE))
        })
}

/// The query item of the string to sign: the canonical form of the form body for a
/// form-urlencoded POST ([`is_form_post`]; `None` counts as empty), otherwise of the URL's raw
/// query (without the `?`).
pub(crate) fn signed_query(
    method: &str,
    content_type: Option<&str>,
    raw_query: &str,
    form_body: Option<&str>,
) -> String {
    if is_form_post(method, content_type) {
        canonical_query(form_body.unwrap_or(""))
    } else {
        canonical_query(raw_query)
    }
}

/// The `Host` header without its port, lower-cased; a bracketed IPv6 literal keeps its brackets.
pub(crate) fn normalize_host(host_header: &str) -> String {
    host_part(host_header).to_lowercase()
}

/// The `Host` header without its port, as sent ([`normalize_host`] lower-cases it).
fn host_part(host_header: &str) -> &str {
    match host_header.strip_prefix('[') {
        Some(rest) => match rest.find(']') {
            Some(end) => &host_header[..end + 2],
            None => host_header,
        },
        None => host_header.split(':').next().unwrap_or(""),
    }
}

/// The session domain: the normalized host minus its first label when it has more than two
/// labels (`a.b.example.com` → `b.example.com`); IP literals stay whole (bkjs).
pub(crate) fn session_domain(host_header: &str) -> String {
    let host = normalize_host(host_header);
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return host;
    }
    match host.split_once('.') {
        Some((_, rest)) if rest.contains('.') => rest.to_string(),
        _ => host,
    }
}

/// The request string to sign: METHOD, host (normalized), path (cut at `?`), query (already
/// chosen by [`signed_query`], inserted as is), EXPIRES, Content-Type lower-cased (empty for
/// none) and CHECKSUM, each followed by `\n`.
pub(crate) fn string_to_sign(
    method: &str,
    host_header: &str,
    path: &str,
    query: &str,
    expires: i64,
    content_type: Option<&str>,
    checksum: &str,
) -> String {
    use std::fmt::Write;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let host = host_part(host_header);
    let content_type = content_type.unwrap_or("");
    // Built in one allocation: this runs for every signed request.
    let mut out = String::with_capacity(
        method.len()
            + host.len()
            + path.len()
            + query.len()
            + content_type.len()
            + checksum.len()
            + 32,
    );
    out.push_str(method);
    out.push('\n');
    push_lowercase(&mut out, host);
    out.push('\n');
    out.push_str(path);
    out.push('\n');
    out.push_str(query);
    out.push('\n');
    let _ = write!(out, "{expires}");
    out.push('\n');
    push_lowercase(&mut out, content_type);
    out.push('\n');
    out.push_str(checksum);
    out.push('\n');
    out
}

/// Appends `s` lower-cased exactly as [`str::to_lowercase`] would, without a temporary string
/// when it is ASCII.
fn push_lowercase(out: &mut String, s: &str) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| char::from(b.to_ascii_lowercase())));
    } else {
        out.push_str(&s.to_lowercase());
    }
}

/// The session string `*\n{domain}\n/\n*\n{EXPIRES}\n*\n*\n` ([`session_domain`]).
pub(crate) fn session_string(host_header: &str, expires: i64) -> String {
    format!(
        "*\n{}\n/\n*\n{expires}\n*\n*\n",
        session_domain(host_header)
    )
}
