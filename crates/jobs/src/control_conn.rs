//! Kept-alive connections to the master's control socket (`control.rs`), so that a web worker's
//! `/system/jobs` does not open a new unix-socket connection per request (issue 19: about a
//! tenth of an enqueue's fixed cost). One process-wide pool of idle connections per socket path:
//! a request takes one (or connects), writes its line, reads the answer line and puts the
//! connection back; concurrent requests each hold their own connection, so lines never
//! interleave and every answer pairs with its request. The master answers the lines of one
//! connection in order (`serve_conn` in master/mod.rs).
//!
//! A restarted master (kill -9, the monitor starts a new one) leaves the idle connections to the
//! old one closed: an idle connection is checked before use (a non-blocking read that finds the
//! end of the stream, or stray bytes, drops it) and the request goes on a new connection. When
//! the write itself fails on a reused connection (the master died between the check and the
//! write: it never saw the request), the request is sent once more on a new connection. A reply
//! that never comes after a complete write is not retried: the master may have committed the
//! jobs before it died, and a second try could queue them twice; the caller gets the error, as
//! it did with one connection per request.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Idle connections kept per socket; more concurrent requests than this open and close their own.
const MAX_IDLE: usize = 16;

/// One connection to the master.
pub(crate) struct Conn {
    stream: BufReader<UnixStream>,
}

/// Why an exchange failed, and whether the master can have seen the request.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// Connecting or writing failed: the request was not delivered.
    NotSent(io::Error),
    /// The request was written; no complete answer came.
    NoAnswer(io::Error),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::NotSent(e) | ExchangeError::NoAnswer(e) => e.fmt(f),
        }
    }
}

impl Conn {
    async fn connect(path: &Path) -> io::Result<Conn> {
        Ok(Conn {
            stream: BufReader::new(UnixStream::connect(path).await?),
        })
    }

    /// Whether an idle connection can carry a request: the master has not closed it and sent
    /// nothing unasked (the end of the stream or stray bytes mean it cannot).
    fn usable(&self) -> bool {
        if !self.stream.buffer().is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(
            self.stream.get_ref().try_read(&mut byte),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }

    /// Writes `line` (ending with a newline) and reads the answer line.
    async fn exchange(&mut self, line: &str) -> Result<String, ExchangeError> {
        self.stream
            .get_mut()
            .write_all(line.as_bytes())
            .await
            .map_err(ExchangeError::NotSent)?;
        let mut reply = String::new();
        let n = self
            .stream
            .read_line(&mut reply)
            .await
            .map_err(ExchangeError::NoAnswer)?;
        if n == 0 || !reply.ends_with('\n') {
            return Err(ExchangeError::NoAnswer(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the master closed the connection before its answer",
            )));
        }
        Ok(reply)
    }
}

type Idle = Mutex<HashMap<PathBuf, Vec<Conn>>>;

fn idle() -> &'static Idle {
    static IDLE: OnceLock<Idle> = OnceLock::new();
    IDLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A usable idle connection to `path`, dropping those the master closed.
fn take_idle(path: &Path) -> Option<Conn> {
    let mut idle = idle().lock();
    let list = idle.get_mut(path)?;
    while let Some(c) = list.pop() {
        if c.usable() {
            return Some(c);
        }
    }
    None
}

fn put_back(path: &Path, conn: Conn) {
    let mut idle = idle().lock();
    let list = idle.entry(path.to_path_buf()).or_default();
    if list.len() < MAX_IDLE {
        list.push(conn);
    }
}

/// Sends `line` (a JSON request ending with a newline) to the master at `path` and returns its
/// answer line, on a kept-alive connection when one is idle (see the module's doc for when it
/// is sent a second time). The caller bounds the time: a connection dropped mid-exchange (a
/// timeout) is closed, never put back, so a late answer cannot pair with another request.
pub(crate) async fn exchange(path: &Path, line: &str) -> Result<String, ExchangeError> {
    if let Some(mut conn) = take_idle(path) {
        match conn.exchange(line).await {
            Ok(reply) => {
                put_back(path, conn);
                return Ok(reply);
            }
            Err(ExchangeError::NotSent(e)) => {
                tracing::debug!(
                    "jobs: a kept-alive control connection was closed ({e}): again on a new one"
                );
            }
            Err(e) => return Err(e),
        }
    }
    let mut conn = Conn::connect(path).await.map_err(ExchangeError::NotSent)?;
    let reply = conn.exchange(line).await?;
    put_back(path, conn);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A master stand-in answering each line of a connection with `N:LINE` (N its connection's
    /// number), closing each connection after `per_conn` answers.
    fn serve(listener: UnixListener, per_conn: usize) {
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((s, _)) = listener.accept().await {
                n += 1;
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    for _ in 0..per_conn {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let out = format!("{n}:{line}");
                        if r.get_mut().write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    #[tokio::test]
    async fn one_connection_carries_many_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.sock");
        serve(UnixListener::bind(&path).expect("bind"), usize::MAX);
        for i in 0..5 {
            let r = exchange(&path, &format!("r{i}\n")).await.expect("answer");
            assert_eq!(r, format!("1:r{i}\n"), "the same, first, connection");
        }
    }

    #[tokio::test]
    async fn a_closed_idle_connection_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.sock");
        // Each connection answers once and closes, as a master that restarted would.
        serve(UnixListener::bind(&path).expect("bind"), 1);
        assert_eq!(exchange(&path, "x\n").await.expect("first"), "1:x\n");
        // Wait (with a deadline) until the closed connection shows its end of stream.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let closed = idle()
                .lock()
                .get(&path)
                .is_some_and(|l| l.iter().all(|c| !c.usable()));
            if closed {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never closed");
            tokio::task::yield_now().await;
        }
        assert_eq!(exchange(&path, "y\n").await.expect("second"), "2:y\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_get_their_own_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sock");
        serve(UnixListener::bind(&path).expect("bind"), usize::MAX);
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let path = path.clone();
                tokio::spawn(async move {
                    for j in 0..10 {
                        let r = exchange(&path, &format!("{i}-{j}\n"))
                            .await
                            .expect("answer");
                        assert!(r.ends_with(&format!(":{i}-{j}\n")), "{r} for {i}-{j}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        assert!(idle().lock().get(&path).map_or(0, Vec::len) <= MAX_IDLE);
    }

    #[tokio::test]
    async fn no_master_is_not_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.sock");
        assert!(matches!(
            exchange(&path, "x\n").await,
            Err(ExchangeError::NotSent(_))
        ));
    }
}
