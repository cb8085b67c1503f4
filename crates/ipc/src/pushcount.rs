//! The push counter: eight bytes in a file next to the hub socket, mapped by the server and by
//! every web worker. The server bumps it after each invalidation it has written into the
//! workers' sockets, so a worker about to answer a read from its near cache learns with one
//! memory load whether anything was pushed since it last read its socket, instead of paying a
//! `recv(2)` on every cached read.
//!
//! # Why a worker that trusts it cannot serve a stale value
//! The server writes an invalidation into every worker's socket and only then bumps the counter,
//! and it answers the write that caused it only after both. A worker notes the counter's value
//! just before each complete read of its socket. When the counter still shows that value, every
//! push that was finished (hence every write that was acknowledged) before the note was already
//! in the socket when it was read; when it shows another, the worker reads the socket first.
//!
//! The counter must never come back to a value a worker noted, or that worker could miss a
//! push: the file is created once per home and never truncated, replaced or removed (a server
//! that starts keeps counting where the last one stopped, and bumps once so that workers still
//! holding values of the old server read their socket and find it closed). A server that cannot
//! map the file does not start; a worker that cannot map it reads its socket before every
//! cached read, as if every read might follow a push.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A mapping of a push counter file.
pub(crate) struct PushCounter {
    map: memmap2::MmapRaw,
}

impl std::fmt::Debug for PushCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCounter")
            .field("value", &self.load())
            .finish()
    }
}

const SIZE: u64 = std::mem::size_of::<AtomicU64>() as u64;

/// The counter file of the hub socket at `socket`.
pub fn counter_path(socket: &Path) -> PathBuf {
    socket.with_extension("pushes")
}

impl PushCounter {
    /// The server's side: opens the file, creating it (zero) when missing, never truncating it.
    pub fn create(path: &Path) -> std::io::Result<PushCounter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() < SIZE {
            file.set_len(SIZE)?;
        }
        Self::map(&file)
    }

    /// A worker's side: maps the file the server created.
    pub fn open(path: &Path) -> std::io::Result<PushCounter> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() < SIZE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is shorter than {SIZE} bytes", path.display()),
            ));
        }
        Self::map(&file)
    }

    fn map(file: &std::fs::File) -> std::io::Result<PushCounter> {
        let map = memmap2::MmapOptions::new()
            .len(SIZE as usize)
            .map_raw(file)?;
        Ok(PushCounter { map })
    }

    fn cell(&self) -> &AtomicU64 {
        let ptr = self.map.as_mut_ptr();
        debug_assert!(self.map.len() >= SIZE as usize && ptr.align_offset(8) == 0);
        // SAFETY: the mapping is at least 8 bytes long, starts on a page boundary (so it is
        // aligned for an AtomicU64), lives as long as `self`, and the file is never truncated
        // (module doc). Every process touches these bytes only through atomic operations.
        unsafe { &*ptr.cast::<AtomicU64>() }
    }

    /// The current value.
    pub fn load(&self) -> u64 {
        self.cell().load(Ordering::SeqCst)
    }

    /// One more push is in every worker's socket.
    pub(crate) fn bump(&self) {
        self.cell().fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_see_one_counter_that_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = counter_path(&dir.path().join("hub.sock"));
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some("hub.pushes")
        );
        assert!(
            PushCounter::open(&path).is_err(),
            "a worker does not create it"
        );
        let server = PushCounter::create(&path).expect("create");
        let worker = PushCounter::open(&path).expect("open");
        assert_eq!((server.load(), worker.load()), (0, 0));
        server.bump();
        server.bump();
        assert_eq!(worker.load(), 2);
        // A restarted server keeps counting: the value never comes back.
        drop(server);
        let again = PushCounter::create(&path).expect("create again");
        again.bump();
        assert_eq!((again.load(), worker.load()), (3, 3));
        // A file too short to hold the counter is refused, not read past its end.
        let short = dir.path().join("short.pushes");
        std::fs::write(&short, [0u8; 4]).expect("write");
        assert!(PushCounter::open(&short).is_err());
    }
}
