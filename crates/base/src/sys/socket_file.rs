//! Unix socket files of one home: the IPC hub, the pub/sub forwarder and the jobs control socket.
//! They live in `var/ipc/`, a directory only its owner may enter (0700), and are themselves 0600.
//! A socket appears under its well-known name atomically (bound under a private name, then renamed
//! over whatever was there, so a connecting worker never finds the name missing), and a process
//! removes a socket file only while it is still the one it bound: an orphaned server draining next
//! to its replacement must not delete the replacement's sockets.

use crate::config::Config;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// The directory of this home's socket files (`var/ipc`).
pub fn socket_dir(cfg: &Config) -> PathBuf {
    cfg.dir("var").join("ipc")
}

/// Creates `dir` (0700) or, when it exists, makes it 0700; refuses a symlink or a non-directory.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    if meta.mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A socket file this process bound; dropping it removes the file if it is still the same one.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the name still refers to the socket this process bound.
    pub fn is_current(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // A successor may have renamed its own socket over this name: leave that one alone.
        if self.is_current() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Listens on the unix socket `path` (mode 0600), replacing a stale or live socket of that name
/// in one step. The directory is not changed: callers make it private with [`private_dir`].
pub fn bind_unix(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket path has no name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Left by an earlier process that had this pid and was killed between bind and rename.
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
        .and_then(|_| fs::rename(&tmp, path))
        .and_then(|_| fs::symlink_metadata(path));
    match placed {
        Ok(meta) => Ok((
            listener,
            SocketFile {
                path: path.to_path_buf(),
                dev: meta.dev(),
                ino: meta.ino(),
            },
        )),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_atomic_replace_and_owned_removal() {
        let home = tempfile::tempdir().expect("tempdir");
        let dir = home.path().join("var/ipc");
        private_dir(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&dir).expect("dir again");
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "an existing directory is made private");
        let path = dir.join("x.sock");
        let (_l1, first) = bind_unix(&path).expect("bind");
        assert_eq!(mode(&path), 0o600);
        assert!(first.is_current());
        // A successor binds the same name while the first still listens.
        let (_l2, second) = bind_unix(&path).expect("bind over a live socket");
        assert!(!first.is_current() && second.is_current());
        std::os::unix::net::UnixStream::connect(&path).expect("the successor answers");
        drop(first);
        assert!(
            path.exists(),
            "the first process must not remove its successor's socket"
        );
        drop(second);
        assert!(!path.exists(), "the owner removes its own socket");
        let left: Vec<_> = fs::read_dir(&dir).expect("ls").flatten().collect();
        assert!(left.is_empty(), "no temporary names left: {left:?}");
    }

    #[test]
    fn a_symlink_is_not_a_private_dir() {
        let home = tempfile::tempdir().expect("tempdir");
        let link = home.path().join("ipc");
        std::os::unix::fs::symlink(home.path(), &link).expect("symlink");
        assert!(private_dir(&link).is_err());
    }
}
