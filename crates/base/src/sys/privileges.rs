//! Switching to the unprivileged `-uid`/`-gid` after sockets are bound, and the ids they name.

use crate::config::Config;

/// Switches to `-gid` and `-uid` when set (web and job workers, after their sockets are bound).
pub fn drop_privileges(cfg: &Config) -> Result<(), String> {
    use nix::unistd::{setgid, setgroups, setuid, Group, User};
    let gid = match cfg.str("gid") {
        "" => None,
        g => Some(match g.parse::<u32>() {
            Ok(n) => nix::unistd::Gid::from_raw(n),
            Err(_) => {
                Group::from_name(g)
                    .map_err(|e| format!("-gid {g}: {e}"))?
                    .ok_or_else(|| format!("-gid {g}: no such group"))?
                    .gid
            }
        }),
    };
    let user = match cfg.str("uid") {
        "" => None,
        u => Some(match u.parse::<u32>() {
            Ok(n) => (nix::unistd::Uid::from_raw(n), None),
            Err(_) => {
                let user = User::from_name(u)
                    .map_err(|e| format!("-uid {u}: {e}"))?
                    .ok_or_else(|| format!("-uid {u}: no such user"))?;
                (user.uid, Some(user.gid))
            }
        }),
    };
    let gid = gid.or(user.and_then(|(_, g)| g));
    if let Some(gid) = gid {
        let _ = setgroups(&[gid]);
        setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    }
    if let Some((uid, _)) = user {
        setuid(uid).map_err(|e| format!("setuid({uid}): {e}"))?;
    }
    Ok(())
}

/// The uid and gid that `-uid`/`-gid` name, for chown of sockets the workers must reach.
pub fn target_ids(cfg: &Config) -> (Option<u32>, Option<u32>) {
    use nix::unistd::{Group, User};
    let uid = match cfg.str("uid") {
        "" => None,
        u => u
            .parse::<u32>()
            .ok()
            .or_else(|| User::from_name(u).ok().flatten().map(|x| x.uid.as_raw())),
    };
    let gid = match cfg.str("gid") {
        "" => None,
        g => g
            .parse::<u32>()
            .ok()
            .or_else(|| Group::from_name(g).ok().flatten().map(|x| x.gid.as_raw())),
    };
    (uid, gid)
}
