//! The nng (scalability protocols) wire format of the `ipc://` transport, spoken natively on tokio
//! unix sockets: an 8-byte greeting `00 'S' 'P' 00 PROTO(u16 BE) 00 00`, then frames of
//! `01 LEN(u64 BE) HEADER BODY`, where a REQ header is one 4-byte request id with its high bit set
//! and a REP answers with the header it received. Doing this on the worker's and the server's own
//! runtimes removes nng's internal thread hand-offs from every cache round trip while staying
//! wire-compatible with libnng REQ/REP sockets (tested against the `nng` crate).

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol numbers of REQ0 and REP0.
pub(crate) const REQ0: u16 = 0x30;
pub(crate) const REP0: u16 = 0x31;

/// Largest frame accepted (a cache value or key list; far above any real message).
pub const MAX_FRAME: u64 = 64 * 1024 * 1024;

/// Sends our greeting and checks the peer's: it must speak `want`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: u16,
    want: u16,
) -> io::Result<()> {
    let mut hello = [0u8, b'S', b'P', 0, 0, 0, 0, 0];
    hello[4..6].copy_from_slice(&me.to_be_bytes());
    s.write_all(&hello).await?;
    let mut peer = [0u8; 8];
    s.read_exact(&mut peer).await?;
    if peer[0] != 0
        || peer[1] != b'S'
        || peer[2] != b'P'
        || peer[3] != 0
        || peer[6] != 0
        || peer[7] != 0
    {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an SP peer"));
    }
    let proto = u16::from_be_bytes([peer[4], peer[5]]);
    if proto != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer speaks protocol {proto:#x}, expected {want:#x}"),
        ));
    }
    Ok(())
}

/// Reads one frame (header and body together).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await?;
    if head[0] != 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame type"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[1..]);
    let len = u64::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    r.read_exact(buf).await?;
    Ok(())
}

/// True when `buf` starts with a complete frame.
pub(crate) fn has_frame(buf: &[u8]) -> bool {
    if buf.len() < 9 {
        return false;
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&buf[1..9]);
    (buf.len() as u64).saturating_sub(9) >= u64::from_be_bytes(len)
}

/// The message of the whole frame `buf` starts with and the bytes that frame takes (9 + the
/// message's length); `None` while `buf` does not hold a whole frame yet.
pub(crate) fn next_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    if !has_frame(buf) {
        return None;
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&buf[1..9]);
    // has_frame: the length is at most buf.len() - 9, so it fits in a usize.
    let end = 9 + u64::from_be_bytes(len) as usize;
    Some((&buf[9..end], end))
}

/// Appends one frame made of `header` and `body` to `out`.
pub fn frame(out: &mut Vec<u8>, header: &[u8], body: &[u8]) {
    out.push(1);
    out.extend_from_slice(&((header.len() + body.len()) as u64).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
}

/// Splits a REP-side message into its backtrace (4-byte ids up to and including the first with
/// the high bit set) and the body.
pub(crate) fn split_backtrace(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut i = 0;
    while i + 4 <= msg.len() {
        let last = msg[i] & 0x80 != 0;
        i += 4;
        if last {
            return Some(msg.split_at(i));
        }
    }
    None
}

/// Writes all of `buf` and flushes.
pub async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> io::Result<()> {
    w.write_all(buf).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtrace_ends_at_the_high_bit() {
        let msg = [0, 0, 0, 1, 0x80, 0, 0, 7, b'{', b'}'];
        let (h, b) = split_backtrace(&msg).expect("split");
        assert_eq!(h, &msg[..8]);
        assert_eq!(b, b"{}");
        assert!(split_backtrace(&[0, 0, 0, 1]).is_none());
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes from a peer: a frame, an error or EOF; never a panic, and a length above
        /// MAX_FRAME is refused before anything is allocated for it.
        #[test]
        fn read_frame_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = bytes.as_slice();
            let mut buf = Vec::new();
            if block_on(read_frame(&mut r, &mut buf)).is_ok() {
                prop_assert!(has_frame(&bytes));
                prop_assert_eq!(&bytes[9..9 + buf.len()], buf.as_slice());
            }
            let _ = split_backtrace(&bytes);
            for direction in 0..3 {
                let body = bytes.get(4..).unwrap_or_default();
                let _ = match direction {
                    0 => serde_json::from_slice::<crate::Request>(body).map(|_| ()),
                    1 => serde_json::from_slice::<crate::Reply>(body).map(|_| ()),
                    _ => serde_json::from_slice::<crate::Push>(body).map(|_| ()),
                };
            }
        }

        /// A huge announced length is refused without reading on.
        #[test]
        fn oversized_frames_are_refused(len in (MAX_FRAME + 1)..u64::MAX) {
            let mut bytes = vec![1u8];
            bytes.extend_from_slice(&len.to_be_bytes());
            let mut r = bytes.as_slice();
            let mut buf = Vec::new();
            prop_assert!(block_on(read_frame(&mut r, &mut buf)).is_err());
            prop_assert!(buf.capacity() < 1024);
        }

        /// What `frame` writes, `read_frame` reads back whole.
        #[test]
        fn frames_round_trip(
            header in proptest::collection::vec(any::<u8>(), 0..16),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut out = Vec::new();
            frame(&mut out, &header, &body);
            prop_assert!(has_frame(&out));
            prop_assert!(!has_frame(&out[..out.len() - 1]) || header.is_empty() && body.is_empty());
            let mut r = out.as_slice();
            let mut buf = Vec::new();
            block_on(read_frame(&mut r, &mut buf)).expect("read");
            prop_assert_eq!(&buf[..header.len()], header.as_slice());
            prop_assert_eq!(&buf[header.len()..], body.as_slice());
        }
    }
}
