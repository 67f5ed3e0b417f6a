//! The box's disk: its partition tables (GPT on PCs, MBR on the Raspberry
//! Pi; the layouts are in `parvis_layout`, shared with the image builder).
//! The box grows the `data` partition and its ext4 filesystem to the whole
//! disk or card on first boot, while mounted, with nothing but the kernel.
//!
//! Why unsafe here: the two kernel calls that do it, BLKPG (tell the
//! kernel a partition's new size) and EXT4_IOC_RESIZE_FS (grow a mounted
//! ext4), are ioctls, which nix can declare but not call safely.
#![allow(unsafe_code)]

pub use parvis_layout::{gpt, mbr};

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// What [`grow_data`] did, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    pub partition_before: u64,
    pub partition_after: u64,
    pub filesystem_before: u64,
    pub filesystem_after: u64,
}

fn sysfs_u64(path: PathBuf) -> Result<u64> {
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    text.trim().parse().with_context(|| format!("{} is not a number", path.display()))
}

/// The ext4 superblock of `dev`: (block size, block count).
fn ext4_size(dev: &Path) -> Result<(u64, u64)> {
    let mut f = fs::File::open(dev).with_context(|| format!("cannot open {}", dev.display()))?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    if sb[0x38..0x3A] != [0x53, 0xEF] {
        bail!("{} holds no ext4 filesystem", dev.display());
    }
    let le32 = |at: usize| u64::from(u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes")));
    let block = 1024u64 << le32(0x18);
    let incompat_64bit = le32(0x60) & 0x80 != 0;
    let blocks = le32(0x04) | if incompat_64bit { le32(0x150) << 32 } else { 0 };
    Ok((block, blocks))
}

/// A disk's partition table, either kind.
enum Table {
    Gpt(gpt::Layout),
    Mbr(mbr::Layout),
}

impl Table {
    /// From the disk's first [`gpt::Layout::HEAD`] bytes.
    fn read(head: &[u8], disk_size: u64) -> Result<Table> {
        Ok(if &head[512..520] == b"EFI PART" {
            Table::Gpt(gpt::Layout::read(head, disk_size).map_err(anyhow::Error::msg)?)
        } else {
            Table::Mbr(mbr::Layout::read(&head[..512], disk_size).map_err(anyhow::Error::msg)?)
        })
    }

    /// (start, size) of each partition, in bytes.
    fn spans(&self) -> Vec<(u64, u64)> {
        match self {
            Table::Gpt(l) => l.partitions.iter().map(|p| (p.start, p.size)).collect(),
            Table::Mbr(l) => l.partitions.iter().map(|p| (p.start, p.size)).collect(),
        }
    }

    fn grown(&self, disk_size: u64) -> Option<Table> {
        match self {
            Table::Gpt(l) => l.grown(disk_size).map(Table::Gpt),
            Table::Mbr(l) => l.grown(disk_size).map(Table::Mbr),
        }
    }

    /// Writes the table durably. GPT: the new backup first, then the
    /// primary that points at it, so a power cut leaves one consistent
    /// table either way.
    fn write(&self, disk: &mut fs::File) -> std::io::Result<()> {
        match self {
            Table::Gpt(g) => {
                disk.seek(SeekFrom::Start(g.backup_offset()))?;
                g.write_backup(disk)?;
                disk.sync_all()?;
                disk.seek(SeekFrom::Start(0))?;
                g.write_primary(disk)?;
            }
            Table::Mbr(m) => {
                disk.seek(SeekFrom::Start(0))?;
                m.write(disk)?;
            }
        }
        disk.sync_all()
    }
}

/// Grows the partition `part` (e.g. /dev/mmcblk0p2, the `data` partition,
/// mounted at `mount`) to the end of its disk, then its filesystem to the
/// partition. Each step happens only when there is at least 1 MiB to gain,
/// so it runs at every boot and finishes what a power cut interrupted.
pub fn grow_data(part: &Path, mount: &Path) -> Result<Grown> {
    let name = part.file_name().and_then(|n| n.to_str()).context("a partition device like /dev/sda2")?;
    let sys = fs::canonicalize(format!("/sys/class/block/{name}")).with_context(|| format!("{name} is not a block device"))?;
    let pno = sysfs_u64(sys.join("partition")).with_context(|| format!("{name} is not a partition"))?;
    let start = sysfs_u64(sys.join("start"))? * 512;
    let before = sysfs_u64(sys.join("size"))? * 512;
    let disk_name = sys.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).context("no parent disk")?.to_string();
    let disk_size = sysfs_u64(PathBuf::from(format!("/sys/class/block/{disk_name}/size")))? * 512;
    let disk_dev = PathBuf::from(format!("/dev/{disk_name}"));

    let mut disk = fs::OpenOptions::new().read(true).write(true).open(&disk_dev).with_context(|| format!("cannot open {}", disk_dev.display()))?;
    let mut head = vec![0u8; gpt::Layout::HEAD];
    disk.read_exact(&mut head)?;
    let mut table = Table::read(&head, disk_size)?;
    check_is(&table.spans(), pno, start, before)?;
    if let Some(g) = table.grown(disk_size) {
        g.write(&mut disk)?;
        table = g;
    }
    // the kernel's idea of the partition follows the table
    let after = table.spans().last().map_or(before, |&(_, size)| size);
    if after != before {
        let mut p = BlkpgPartition { start: start as i64, length: after as i64, pno: pno as libc::c_int, devname: [0; 64], volname: [0; 64] };
        let arg = BlkpgIoctlArg {
            op: BLKPG_RESIZE_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: (&mut p as *mut BlkpgPartition).cast(),
        };
        // SAFETY: `arg` points at a live BlkpgPartition for the call.
        unsafe { blkpg(disk.as_raw_fd(), &arg) }.with_context(|| format!("the kernel refused {name}'s new size"))?;
    }
    drop(disk);

    let (block, blocks) = ext4_size(part)?;
    let fs_before = block * blocks;
    let mut fs_after = fs_before;
    if after >= fs_before + (1 << 20) {
        let target = after / block;
        let dir = fs::File::open(mount).with_context(|| format!("cannot open {}", mount.display()))?;
        // SAFETY: the argument is a live u64 for the call.
        unsafe { ext4_resize_fs(dir.as_raw_fd(), &target) }.with_context(|| format!("ext4 on {name} did not grow"))?;
        let (block, blocks) = ext4_size(part)?;
        fs_after = block * blocks;
    }
    Ok(Grown { partition_before: before, partition_after: after, filesystem_before: fs_before, filesystem_after: fs_after })
}

/// The table's partition `pno` must be the one the kernel knows, and the
/// last: only then is growing it safe.
fn check_is(table: &[(u64, u64)], pno: u64, start: u64, size: u64) -> Result<()> {
    let idx = usize::try_from(pno).ok().and_then(|n| n.checked_sub(1)).context("partition numbers start at 1")?;
    match table.get(idx) {
        Some(&(s, _)) if s == start && idx + 1 == table.len() => Ok(()),
        Some(&(s, z)) if s == start => bail!("partition {pno} ({z} bytes, kernel: {size}) is not the disk's last"),
        _ => bail!("partition {pno} at byte {start} is not in the table: leaving the disk alone"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_partition_the_kernel_knows_may_grow() {
        let table = [(1 << 20, 64 << 20), (65 << 20, 256 << 20)];
        assert!(check_is(&table, 2, 65 << 20, 256 << 20).is_ok());
        assert!(check_is(&table, 1, 1 << 20, 64 << 20).unwrap_err().to_string().contains("not the disk's last"));
        assert!(check_is(&table, 2, 66 << 20, 256 << 20).is_err(), "a different start");
        assert!(check_is(&table, 3, 65 << 20, 1).is_err());
        assert!(check_is(&table, 0, 65 << 20, 1).is_err());
    }

    #[test]
    fn the_ext4_superblock_gives_the_filesystem_size() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        // e2fsprogs is part of every Debian system
        let made = std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img).arg("8M").status().unwrap();
        assert!(made.success());
        let (block, blocks) = ext4_size(&img).unwrap();
        assert_eq!(block * blocks, 8 << 20);
        assert!(ext4_size(Path::new("/dev/null")).is_err());
    }
}
