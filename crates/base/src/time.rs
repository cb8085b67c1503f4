//! Wall-clock time as the platform stores it: milliseconds since the Unix epoch, the unit of every
//! `mtime`, `ctime`, expiry and job timestamp in the DB and on the wire.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
