//! Process-level tuning that needs direct libc calls.
//!
//! Why unsafe here: `mallopt` has no safe wrapper. Without it, glibc raises
//! its mmap threshold dynamically after the first large free, so argon2's
//! 19 MiB working buffers (one per login) end up in the heap and stay
//! resident: measured here, 20 logins grew RSS from 9 MiB to 350 MiB. With
//! a fixed threshold they are mapped and unmapped, and RSS stays flat.
//! `setpriority` has none either (a thread's own nice value).
#![allow(unsafe_code)]

/// Call once at the very start, before any thread is spawned.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists, as glibc requires for parameter changes.
    unsafe {
        // A fixed threshold also disables glibc's dynamic adjustment.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        // Two arenas are plenty for a small box and bound fragmentation.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Makes the calling thread yield the CPU to the others (nice 10): for
/// password hashing, so that a burst of logins never slows the chat down.
pub fn lower_thread_priority() {
    // SAFETY: setpriority with who = 0 changes only the calling thread (on
    // Linux, PRIO_PROCESS with 0 names the caller's thread ID).
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if r != 0 {
        tracing::debug!("cannot lower the priority of a hashing thread: {}", std::io::Error::last_os_error());
    }
}

/// Raises the soft limit of open files to the hard limit (at most 2^20):
/// the default soft limit of 1,024 is what 1,100 idle connections to the
/// TURN port exhausted. Returns the limit now in force. The budgets of
/// [`FdBudget`] are shares of it.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    let want = hard.min(1 << 20);
    if want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
        return want;
    }
    soft
}

/// How the process's file descriptors are shared, so that a flood on one
/// listener never takes what the others need: the web (HTTPS and HTTP
/// connections, WebSockets included), TURN over TCP and TLS, and TURN relay
/// sockets (one per allocation). A fixed reserve stays for the database,
/// files, certificates and the listeners themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    pub web: usize,
    pub turn_streams: usize,
    pub relays: usize,
}

/// Descriptors kept out of every budget.
pub const FD_RESERVE: u64 = 128;

impl FdBudget {
    /// Shares of `limit` (the open-file limit): 35 % web, 25 % TURN
    /// streams, 40 % relays, after [`FD_RESERVE`].
    pub fn of(limit: u64) -> FdBudget {
        let usable = limit.saturating_sub(FD_RESERVE).max(64) as usize;
        FdBudget { web: usable * 35 / 100, turn_streams: usable * 25 / 100, relays: usable * 40 / 100 }
    }
}

/// Becomes `ids` ("UID:GID") for good: no supplementary groups, then the
/// group, then the user (glibc applies each to every thread). Checked: the
/// process cannot become root again.
pub fn drop_privileges(ids: &str) -> anyhow::Result<()> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    let (uid, gid) = crate::config::parse_ids(ids).ok_or_else(|| anyhow::anyhow!("run_as {ids:?} is not UID:GID"))?;
    setgroups(&[]).map_err(|e| anyhow::anyhow!("cannot drop supplementary groups: {e}"))?;
    setgid(Gid::from_raw(gid)).map_err(|e| anyhow::anyhow!("cannot become group {gid}: {e}"))?;
    setuid(Uid::from_raw(uid)).map_err(|e| anyhow::anyhow!("cannot become user {uid}: {e}"))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        anyhow::bail!("still able to become root after dropping privileges");
    }
    tracing::info!(uid, gid, "ports bound; running unprivileged");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_share_the_limit_and_keep_a_reserve() {
        let b = FdBudget::of(1024);
        assert_eq!((b.web, b.turn_streams, b.relays), (313, 224, 358));
        assert!((b.web + b.turn_streams + b.relays) as u64 + FD_RESERVE <= 1024);
        assert!(FdBudget::of(10).web > 0, "never zero");
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let got = raise_fd_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(got, soft);
        assert_eq!(soft, hard.min(1 << 20));
    }
}
