//! File system changes that survive a power cut.

use std::path::Path;

/// Renames `from` to `to`, then syncs the renamed file and the directory
/// holding it: when this returns, the new name and its contents are on
/// disk. The file is synced too because of FAT (the box's ESP): there the
/// new directory entry gets the file's first cluster and size only when the
/// *file* is written back; syncing the directory alone left a 0-byte entry
/// after a power cut (seen in the boot test).
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    std::fs::File::open(to)?.sync_all()?;
    let dir = to.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}
