//! Process-level tuning that needs direct libc calls.
//!
//! Why unsafe here: `mallopt` has no safe wrapper. Without it, glibc raises
//! its mmap threshold dynamically after the first large free, so argon2's
//! 19 MiB working buffers (one per login) end up in the heap and stay
//! resident: measured here, 20 logins grew RSS from 9 MiB to 350 MiB. With
//! a fixed threshold they are mapped and unmapped, and RSS stays flat.
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
