//! The entry of the `ipc_frame` fuzz target (`fuzz/`, `scripts/fuzz`): bytes as either end of an
//! IPC connection reads them, through the same frame reader, request-id split and message
//! decoding as the hub and the client, with the contracts of the wire format checked on the way.
//! Not an API: it exists so the fuzzer reaches crate-private parsers without a copy of them.

use crate::sp;
use crate::{Push, Reply, Request};
use bkjs_base::metrics::Aggregate;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Runs a future that cannot wait: reads from a byte slice are always ready.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a read from a byte slice never waits"),
    }
}

/// Feeds `data` to the hub's reading side (the worker's requests) and then to the client's (the
/// server's replies and pushes). Panics when a contract is broken: a frame read that is not the
/// bytes announced, a frame that does not write back the same, a message that does not decode
/// back to itself after encoding.
pub fn frames(data: &[u8]) {
    hub_side(data);
    client_side(data);
}

/// As `hub::serve` reads a connection: frames until one is refused, each split into its request
/// id and a [`Request`].
fn hub_side(data: &[u8]) {
    let mut r = data;
    let mut buf = Vec::new();
    loop {
        let before = r;
        if ready(sp::read_frame(&mut r, &mut buf)).is_err() {
            if before.len() >= 9 && before[0] == 1 {
                let mut len = [0u8; 8];
                len.copy_from_slice(&before[1..9]);
                // Refused although whole: only a length above MAX_FRAME may do that.
                assert!(
                    !sp::has_frame(before) || u64::from_be_bytes(len) > sp::MAX_FRAME,
                    "a whole frame was refused"
                );
            }
            break;
        }
        let (msg, used) = sp::next_frame(before).expect("read_frame read a whole frame");
        assert_eq!(msg, buf.as_slice(), "read_frame and next_frame disagree");
        assert_eq!(
            before.len() - r.len(),
            used,
            "read_frame read past its frame"
        );
        let Some((header, body)) = sp::split_backtrace(&buf) else {
            break;
        };
        // Whole 4-byte ids, the last (only the last) with its high bit set.
        assert!(header.len() >= 4 && header.len() % 4 == 0);
        assert!(header
            .chunks_exact(4)
            .enumerate()
            .all(|(i, id)| (id[0] & 0x80 != 0) == (i + 1 == header.len() / 4)));
        if let Ok(request) = serde_json::from_slice::<Request>(body) {
            request_contract(request);
        }
        // The reply goes back under the same header and reads back whole.
        let mut out = Vec::new();
        sp::frame(&mut out, header, body);
        let mut back = Vec::new();
        ready(sp::read_frame(&mut out.as_slice(), &mut back)).expect("a written frame reads back");
        assert_eq!(back, buf);
    }
}

/// As `client::dispatch` reads the server's bytes: whole frames, a request id, then a [`Push`]
/// (high bit clear) or a [`Reply`].
fn client_side(data: &[u8]) {
    let mut at = 0;
    while let Some((msg, used)) = sp::next_frame(&data[at..]) {
        assert!(sp::has_frame(&data[at..]));
        at += used;
        if msg.len() < 4 {
            return;
        }
        if msg[0] & 0x80 == 0 {
            if let Ok(push) = serde_json::from_slice::<Push>(&msg[4..]) {
                round_trip(&push);
            }
        } else if let Ok(reply) = serde_json::from_slice::<Reply>(&msg[4..]) {
            round_trip(&reply);
        }
    }
    assert!(!sp::has_frame(&data[at..]));
}

/// What the server does with a worker's metrics (merge them into the machine's figures and
/// render them); any other request must encode and decode back to itself.
fn request_contract(request: Request) {
    match request {
        Request::Metrics { pid, snapshot } | Request::MasterMetrics { pid, snapshot } => {
            // Floats need not survive JSON bit for bit (serde_json's default float parsing), so
            // snapshots are not round-tripped; they are merged and written out like the server's.
            let mut machine = Aggregate::new();
            machine.update(pid, snapshot.clone());
            machine.update(pid.wrapping_add(1), snapshot);
            let total = machine.total();
            let _ = total.to_json();
            let _ = total.to_prometheus("bk");
            let _ = serde_json::to_vec(&total);
        }
        other => round_trip(&other),
    }
}

fn round_trip<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_vec(msg).expect("an IPC message always encodes");
    let back: T = serde_json::from_slice(&text).expect("an encoded IPC message decodes");
    assert_eq!(&back, msg, "an IPC message changed on its way through JSON");
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_passes_its_committed_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ipc_frame");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("fuzz/corpus/ipc_frame") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("seed-") || name.starts_with("crash-") {
                super::frames(&std::fs::read(&path).expect("read"));
                n += 1;
            }
        }
        assert!(n >= 4, "the seeds of ipc_frame are missing");
    }
}
