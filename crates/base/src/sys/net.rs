//! Listening TCP sockets as every bkjs listener wants them: address reuse (a restarted process
//! binds again at once) and an explicit backlog. They are left blocking: the HTTP socket is shared
//! with web workers that accept on it in a blocking thread; a caller that hands one to tokio sets
//! it non-blocking itself.

use std::net::{SocketAddr, TcpListener};

/// A TCP listener on `addr` with `SO_REUSEADDR` and room for `backlog` pending connections.
pub fn tcp_listener(addr: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}
