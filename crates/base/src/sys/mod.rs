//! The operating-system layer every role shares: how a process was started ([`Boot`]), starting,
//! signalling and reaping children ([`spawn`], [`kill_group`], [`reap`]), dropping privileges,
//! listening TCP sockets, the home's unix socket files, and reading a process's memory. Roles and job workers both build on it.

mod boot;
mod child;
mod net;
mod privileges;
mod socket_file;

pub use boot::Boot;
pub use child::{descendants, kill_group, kill_tree, reap, spawn, ChildSpec, ExitInfo};
pub use net::tcp_listener;
pub use privileges::{drop_privileges, target_ids};
pub use socket_file::{bind_unix, private_dir, socket_dir, SocketFile};

/// Exit code of a role that cannot start at all (bad config, cannot bind): its parent does not
/// respawn it in a loop but waits `-server-crash-delay` (EX_CONFIG).
pub const EXIT_BOOT: i32 = 78;

/// Resident set size of a process in bytes, from `/proc/PID/statm`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}
