//! A bare hyper 1.x HTTP/1.1 server that answers every request with `200`,
//! `content-type: application/json` and the body `{}`.
//!
//! It exists only as the baseline for `bench/ping`: the fastest this machine
//! can serve a trivial JSON answer with the same HTTP stack (hyper + tokio)
//! that bkjs uses, so bkjs's `/ping` throughput and latency can be judged as a
//! ratio against it instead of as absolute numbers.
//!
//! Usage: `bench-hello PORT [THREADS]` — binds `127.0.0.1:PORT` and runs a
//! multi-thread tokio runtime with `THREADS` workers (default 2).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const USAGE: &str = "usage: bench-hello PORT [THREADS]";

/// Answers any request with `200 {}`.
async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}

/// Accepts connections forever, one task per connection, keep-alive on.
async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("bench-hello: accept: {e}");
                continue;
            }
        };
        // Latency matters more than batching for a ping benchmark.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next().map(|s| s.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let threads: usize = match args.next().map(|s| s.parse()) {
        None => 2,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_io()
        .build()
        .expect("a tokio runtime must be buildable to serve anything");

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match runtime.block_on(serve(addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-hello: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
