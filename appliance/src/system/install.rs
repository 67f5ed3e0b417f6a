//! "Install on this computer": the live system (the ISO on a CD or USB
//! stick, data in RAM) writes the box's disk image onto an internal disk,
//! then carries its data (accounts, certificates, settings) over, so the
//! installed box is the same box.
//!
//! The image is the flashable disk image itself, gzipped on the ISO (so an
//! installed box is byte for byte what `dd` would have written); its data
//! partition grows to the disk on first boot ([`crate::system::disk::grow_data`]).
//! Parvis, unprivileged, only lists the disks and records the admin's
//! choice; the box's init, as root, runs [`write_image`] and
//! [`copy_data`] (`parvis install-disk`), then turns the box off.
//!
//! Why unsafe here: BLKRRPART (the kernel re-reads the new partition table)
//! is an ioctl, which nix can declare but not call safely.
#![allow(unsafe_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// Written by init when running live with an image to install: the image
/// path, then the boot medium's device name (never offered as a target).
pub const LIVE_MARK: &str = "/run/parvis-live";
/// Written by Parvis: the disk the admin chose. init acts on it when
/// Parvis ends with [`crate::serve::Exit::Install`].
pub const REQUEST: &str = "/run/parvis/install";

/// What init said about the live system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub image: PathBuf,
    pub medium: String,
}

pub fn live(mark: &Path) -> Option<Live> {
    let text = fs::read_to_string(mark).ok()?;
    let mut lines = text.lines();
    let image = PathBuf::from(lines.next()?.trim());
    let medium = lines.next().unwrap_or("").trim().to_string();
    image.is_file().then_some(Live { image, medium })
}

/// An internal disk that can take the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Disk {
    /// Kernel name: sda, nvme0n1, mmcblk0, vda.
    pub name: String,
    pub size: u64,
    pub model: String,
    /// USB sticks and card readers say so: shown, with a warning.
    pub removable: bool,
}

/// The disk a block device (maybe a partition) belongs to.
fn whole_disk(sys_block: &Path, name: &str) -> String {
    if sys_block.join(name).exists() {
        return name.to_string();
    }
    // a partition: /sys/block/<disk>/<name>
    fs::read_dir(sys_block)
        .into_iter()
        .flatten()
        .flatten()
        .find(|d| d.path().join(name).is_dir())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string())
}

/// The disks in `sys_block` (/sys/block) of at least `min_size` bytes,
/// except the boot `medium` and what is not a disk (loop, RAM, optical,
/// device-mapper, RAID members' arrays).
pub fn candidates(sys_block: &Path, medium: &str, min_size: u64) -> Vec<Disk> {
    let boot = if medium.is_empty() { String::new() } else { whole_disk(sys_block, medium) };
    let mut disks: Vec<Disk> = fs::read_dir(sys_block)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| {
            let name = d.file_name().to_string_lossy().into_owned();
            let skip = ["loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd", "mtdblock"];
            if skip.iter().any(|p| name.starts_with(p)) || name == boot || name.contains("boot") || name.contains("rpmb") {
                return None;
            }
            let read = |f: &str| fs::read_to_string(d.path().join(f)).map(|s| s.trim().to_string()).unwrap_or_default();
            let size = read("size").parse::<u64>().ok()? * 512;
            let model = [read("device/model"), read("device/name")].into_iter().find(|m| !m.is_empty()).unwrap_or_default();
            (size >= min_size).then(|| Disk { name, size, model, removable: read("removable") == "1" })
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// The uncompressed size a gzip file states in its trailer (mod 4 GiB:
/// the box's image is far smaller).
pub fn image_size(gz: &Path) -> Result<u64> {
    let mut f = fs::File::open(gz).with_context(|| format!("cannot open {}", gz.display()))?;
    f.seek(SeekFrom::End(-4))?;
    let mut b = [0u8; 4];
    f.read_exact(&mut b)?;
    Ok(u64::from(u32::from_le_bytes(b)))
}

nix::ioctl_none!(blkrrpart, 0x12, 95);

/// The partition `n` of `disk` (/dev/sda → /dev/sda2, /dev/nvme0n1 →
/// /dev/nvme0n1p2).
pub fn partition(disk: &Path, n: u32) -> PathBuf {
    let s = disk.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) { PathBuf::from(format!("{s}p{n}")) } else { PathBuf::from(format!("{s}{n}")) }
}

/// Writes the gzipped image `gz` onto `disk` (whole device, not mounted:
/// opened exclusively), syncs, and has the kernel read its new partition
/// table. `progress` gets (written, total) bytes now and then.
pub fn write_image(gz: &Path, disk: &Path, mut progress: impl FnMut(u64, u64)) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let total = image_size(gz)?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(disk)
        .with_context(|| format!("cannot open {} (is it in use?)", disk.display()))?;
    let size = out.seek(SeekFrom::End(0))?;
    if size < total {
        bail!("{} holds {} MiB; the box needs {} MiB", disk.display(), size >> 20, total >> 20);
    }
    out.seek(SeekFrom::Start(0))?;
    let mut input = flate2::read::GzDecoder::new(std::io::BufReader::new(fs::File::open(gz)?));
    let mut buf = vec![0u8; 4 << 20];
    let (mut done, mut shown) = (0u64, 0u64);
    loop {
        let n = input.read(&mut buf).with_context(|| format!("{} is damaged", gz.display()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).with_context(|| format!("writing {} failed", disk.display()))?;
        done += n as u64;
        if done - shown >= 32 << 20 {
            out.sync_data()?;
            progress(done, total);
            shown = done;
        }
    }
    if done != total {
        bail!("{} ended after {done} of {total} bytes", gz.display());
    }
    out.sync_all()?;
    progress(done, total);
    // SAFETY: BLKRRPART takes no argument; `out` is an open block device.
    unsafe { blkrrpart(out.as_raw_fd()) }.with_context(|| format!("the kernel cannot read {}'s new partition table", disk.display()))?;
    Ok(())
}

/// Copies the live system's data folder into the new disk's data
/// partition (`part`, ext4), owned by `owner` as on the box.
pub fn copy_data(from: &Path, part: &Path, owner: (u32, u32)) -> Result<u64> {
    use nix::mount::{MsFlags, mount, umount};
    // the partition's device node appears once the kernel has read the table
    for _ in 0..50 {
        if part.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let target = Path::new("/run/parvis-install");
    fs::create_dir_all(target)?;
    mount(Some(part), target, Some("ext4"), MsFlags::MS_NOATIME, None::<&str>).with_context(|| format!("cannot mount {}", part.display()))?;
    let copied = copy_tree(from, &target.join("parvis"), owner);
    let synced = fs::File::open(target).and_then(|d| d.sync_all());
    nix::unistd::sync();
    umount(target).with_context(|| format!("cannot unmount {}", part.display()))?;
    synced?;
    copied
}

fn copy_tree(from: &Path, to: &Path, owner: (u32, u32)) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    std::os::unix::fs::chown(to, Some(owner.0), Some(owner.1))?;
    let mut bytes = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            bytes += copy_tree(&src, &dst, owner)?;
        } else if kind.is_file() {
            bytes += fs::copy(&src, &dst)?;
            let f = fs::File::open(&dst)?;
            f.sync_all()?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(entry.metadata()?.permissions().mode()))?;
            std::os::unix::fs::chown(&dst, Some(owner.0), Some(owner.1))?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_disk(root: &Path, name: &str, sectors: u64, model: &str, removable: bool) {
        let d = root.join(name);
        fs::create_dir_all(d.join("device")).unwrap();
        fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
        fs::write(d.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
        if !model.is_empty() {
            fs::write(d.join("device/model"), format!("{model}   \n")).unwrap();
        }
    }

    #[test]
    fn disks_are_offered_except_the_boot_medium_and_what_is_not_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        fake_disk(sys, "nvme0n1", 500 << 21, "Samsung SSD 980", false);
        fake_disk(sys, "sda", 32 << 21, "Cruzer Blade", true);
        fs::create_dir_all(sys.join("sda/sda1")).unwrap();
        fake_disk(sys, "sdb", 64 << 21, "Ultra Fit", true);
        fake_disk(sys, "mmcblk0", 8 << 21, "", false);
        fake_disk(sys, "mmcblk0boot0", 8 << 11, "", false);
        fake_disk(sys, "loop0", 1 << 21, "", false);
        fake_disk(sys, "sr0", 1 << 21, "QEMU DVD-ROM", true);
        fake_disk(sys, "vda", 100, "", false); // too small
        // booted from the stick's first partition: the whole stick is left out
        let d = candidates(sys, "sda1", 1 << 20);
        let names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["mmcblk0", "nvme0n1", "sdb"]);
        assert_eq!(d[1], Disk { name: "nvme0n1".into(), size: 500 << 30, model: "Samsung SSD 980".into(), removable: false });
        assert!(d[2].removable);
        assert_eq!(candidates(sys, "sr0", 1 << 20).len(), 4, "a CD is not a disk anyway");
    }

    #[test]
    fn partitions_are_named_like_the_kernel_does() {
        assert_eq!(partition(Path::new("/dev/sda"), 2), Path::new("/dev/sda2"));
        assert_eq!(partition(Path::new("/dev/nvme0n1"), 2), Path::new("/dev/nvme0n1p2"));
        assert_eq!(partition(Path::new("/dev/mmcblk0"), 1), Path::new("/dev/mmcblk0p1"));
    }

    #[test]
    fn the_image_is_written_whole_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let gz = dir.path().join("img.gz");
        let mut enc = flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(&payload).unwrap();
        enc.finish().unwrap();
        assert_eq!(image_size(&gz).unwrap(), payload.len() as u64);
        // too small a "disk"
        let small = dir.path().join("small");
        fs::File::create(&small).unwrap().set_len(1 << 20).unwrap();
        let e = write_image(&gz, &small, |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("the box needs"), "{e}");
        // a damaged image never ends up half written without an error
        let mut bad = fs::read(&gz).unwrap();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xFF;
        let bad_gz = dir.path().join("bad.gz");
        fs::write(&bad_gz, bad).unwrap();
        let disk = dir.path().join("disk");
        fs::File::create(&disk).unwrap().set_len(4 << 20).unwrap();
        assert!(write_image(&bad_gz, &disk, |_, _| {}).is_err());
        // a regular file is no block device: the data lands, BLKRRPART is refused
        let e = write_image(&gz, &disk, |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("partition table"), "{e}");
        assert_eq!(&fs::read(&disk).unwrap()[..payload.len()], &payload[..]);
    }

    #[test]
    fn the_live_mark_names_an_existing_image() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("live");
        assert_eq!(live(&mark), None);
        let img = dir.path().join("parvis-x86_64.img.gz");
        fs::write(&img, b"x").unwrap();
        fs::write(&mark, format!("{}\nsr0\n", img.display())).unwrap();
        assert_eq!(live(&mark), Some(Live { image: img.clone(), medium: "sr0".into() }));
        fs::remove_file(&img).unwrap();
        assert_eq!(live(&mark), None);
    }
}
