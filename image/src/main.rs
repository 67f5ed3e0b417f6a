//! `parvis-image`: builds the box's flashable images from the static
//! `parvis` binary, `firmware/` and Debian packages (downloaded with a
//! private apt state, unpacked, never installed; cached under
//! `target/image-cache`): for x86_64 a GPT disk image and a hybrid ISO, for
//! aarch64 a Raspberry Pi SD card image. No root, loop devices or mounts:
//! partitions are made as files (`mkfs.vfat` + mtools, `mkfs.ext4 -d`) and
//! placed by [`gpt::Layout`] or [`mbr::Layout`].
//!
//! Updates are signed with `<cache>/update-signing.pk8` (Ed25519, made on
//! first use: keep it, it is what the boxes trust); its public key goes into
//! the image (`/etc/parvis/update.pub`). `--bundle` writes only a signed
//! update bundle, `parvis-x86_64-<version>.update`.
//!
//! Usage: parvis-image --binary PATH --out DIR [--arch x86_64|aarch64]
//!                     [--cache DIR] [--version V] [--bundle] [--broken]
//!        parvis-image --fetch PACKAGE [--arch A] [--cache DIR]: unpacks a
//!                     package of that architecture (e.g. the arm64 Rust
//!                     standard library for scripts/build-static), prints
//!                     where   (--broken: a Parvis that
//!                     marks the database as migrated by a newer version,
//!                     then fails: to test rollback)

mod debian;
mod rpi;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use parvis_layout::gpt;

/// Modules of the box: storage, network, filesystems, watchdogs (with
/// their dependencies, resolved against the unpacked kernel).
const MODULES_X86_64: &[&str] = &[
    // virtual machines
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi", "virtio_rng",
    // storage
    "ahci", "nvme", "xhci_pci", "ehci_pci", "usb_storage", "uas", "sd_mod", "sr_mod", "sdhci_pci", "sdhci_acpi", "mmc_block",
    // network: common mini-PC NICs and USB adapters
    "e1000e", "e1000", "igb", "igc", "r8169", "r8152", "ax88179_178a", "cdc_ether", "cdc_ncm",
    // filesystems
    "ext4", "vfat", "nls_cp437", "nls_iso8859_1", "nls_ascii", "isofs", "squashfs", "efivarfs", "crc32c_intel",
    // watchdogs
    "i6300esb", "iTCO_wdt", "sp5100_tco",
];

/// The Raspberry Pi's (and the same for arm64 virtual machines).
const MODULES_AARCH64: &[&str] = &[
    // virtual machines
    "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_rng",
    // storage: the SD card (sdhost on Pi 3, emmc2 on Pi 4), USB disks
    "bcm2835", "sdhci_iproc", "dwc2", "xhci_pci", "usb_storage", "uas", "sd_mod",
    // network: Pi 3 (smsc95xx), Pi 3+ (lan78xx), Pi 4 (genet), USB adapters
    "smsc95xx", "lan78xx", "genet", "broadcom", "r8152", "ax88179_178a", "cdc_ether", "cdc_ncm", "rndis_host",
    // filesystems
    "ext4", "crc32c_generic", "vfat", "nls_cp437", "nls_iso8859_1", "nls_ascii", "isofs", "squashfs",
    // watchdog, entropy (no RTC: the clock comes from the network)
    "bcm2835_wdt", "bcm2835_rng", "reset_raspberrypi",
];

const ESP_SIZE: u64 = 64 << 20;
const DATA_SIZE: u64 = 256 << 20;
/// A fixed date for every timestamp we control (reproducible output).
const EPOCH: &str = "2026-01-01 00:00:00";
const EPOCH_SECS: u64 = 1_767_225_600;

pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn step(what: &str) {
    println!("image: {what}");
}

/// A newc cpio of `root`, sorted, with fixed times and owners, gzipped.
fn initramfs(root: &Path, out: &Path) -> Result<()> {
    date_tree(root)?;
    let script = format!(
        "cd {} && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -n -9 > {}",
        root.display(),
        out.display()
    );
    run(Command::new("sh").arg("-c").arg(script))?;
    Ok(())
}

/// The unified kernel image: systemd's EFI stub with the kernel, initramfs,
/// command line and os-release as PE sections after the stub's own.
fn uki(stub: &Path, kernel: &Path, initrd: &Path, cmdline: &str, osrel: &str, work: &Path, out: &Path) -> Result<()> {
    let headers = run(Command::new("objdump").arg("-h").arg(stub))?;
    let mut end = 0u64;
    for l in headers.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 4 && f[0].parse::<u32>().is_ok() {
            let size = u64::from_str_radix(f[2], 16)?;
            let vma = u64::from_str_radix(f[3], 16)?;
            end = end.max(vma + size);
        }
    }
    let align = |x: u64| x.div_ceil(0x1000) * 0x1000;
    let (cmd_file, os_file) = (work.join("cmdline"), work.join("os-release"));
    fs::write(&cmd_file, cmdline)?;
    fs::write(&os_file, osrel)?;
    let mut at = align(end);
    let mut c = Command::new("objcopy");
    for (name, file) in [(".osrel", &os_file), (".cmdline", &cmd_file), (".linux", &kernel.to_path_buf()), (".initrd", &initrd.to_path_buf())] {
        c.arg("--add-section").arg(format!("{name}={}", file.display()));
        c.arg("--change-section-vma").arg(format!("{name}={at:#x}"));
        at = align(at + fs::metadata(file)?.len());
    }
    c.arg(stub).arg(out);
    run(&mut c)?;
    // objcopy dates the PE header now: date it EPOCH, and checksum it again
    let mut pe = fs::read(out)?;
    let at = u32::from_le_bytes(pe[0x3C..0x40].try_into().expect("4 bytes")) as usize;
    if pe.get(at..at + 4) != Some(b"PE\0\0".as_slice()) {
        bail!("{} is not a PE image", out.display());
    }
    pe[at + 8..at + 12].copy_from_slice(&(EPOCH_SECS as u32).to_le_bytes());
    let sum_at = at + 24 + 64;
    pe[sum_at..sum_at + 4].fill(0);
    let mut sum: u64 = 0;
    for (i, w) in pe.chunks(2).enumerate() {
        if i * 2 < sum_at || i * 2 >= sum_at + 4 {
            sum += u64::from(u16::from_le_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
    }
    let sum = (sum & 0xFFFF) as u32 + pe.len() as u32;
    pe[sum_at..sum_at + 4].copy_from_slice(&sum.to_le_bytes());
    fs::write(out, pe)?;
    Ok(())
}

/// A FAT filesystem image of `size` bytes holding the tree `staged`, with
/// every timestamp at [`EPOCH`] (reproducible): the files are dated, then
/// copied with their dates (`mcopy -s -m`); the volume label's entry, which
/// mkfs.vfat dates now, is set right afterwards.
pub(crate) fn fat(out: &Path, size: u64, label: &str, id: &str, fat32: bool, staged: &Path) -> Result<()> {
    let _ = fs::remove_file(out);
    let mut mkfs = Command::new("mkfs.vfat");
    if fat32 {
        mkfs.args(["-F", "32"]);
    }
    run(mkfs.args(["-C", "-n", label, "-i", id]).arg(out).arg((size / 1024).to_string()))?;
    fix_label_time(out)?;
    date_tree(staged)?;
    let mut entries: Vec<PathBuf> = fs::read_dir(staged)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    let mut copy = Command::new("mcopy");
    copy.args(["-s", "-m", "-i"]).arg(out).args(&entries).arg("::/").env("MTOOLS_SKIP_CHECK", "1");
    run(&mut copy)?;
    Ok(())
}

/// mkfs.vfat dates the volume label's directory entry with the current
/// time (it ignores SOURCE_DATE_EPOCH): set it to [`EPOCH`].
fn fix_label_time(fat: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = fs::OpenOptions::new().read(true).write(true).open(fat)?;
    let mut bpb = [0u8; 512];
    f.read_exact(&mut bpb)?;
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([bpb[o], bpb[o + 1]]));
    let u32_at = |o: usize| u64::from(u32::from_le_bytes(bpb[o..o + 4].try_into().expect("4 bytes")));
    let (bps, spc, reserved, fats) = (u16_at(11), u64::from(bpb[13]), u16_at(14), u64::from(bpb[16]));
    let fat_size = if u16_at(22) != 0 { u16_at(22) } else { u32_at(36) };
    let fat_end = (reserved + fats * fat_size) * bps;
    // FAT12/16: the root directory follows the FATs; FAT32: it is a cluster
    let root = if u16_at(17) != 0 { fat_end } else { fat_end + (u32_at(44) - 2) * spc * bps };
    let mut dir = vec![0u8; 32 * 16];
    f.seek(SeekFrom::Start(root))?;
    f.read_exact(&mut dir)?;
    // EPOCH, 2026-01-01 00:00:00, as a DOS date ((year - 1980) << 9 | month << 5 | day) and time
    let date = ((2026u16 - 1980) << 9 | 1 << 5 | 1).to_le_bytes();
    for (i, e) in dir.chunks_exact_mut(32).enumerate() {
        if e[0] != 0 && e[0] != 0xE5 && e[11] == 0x08 {
            e[13..16].fill(0);
            e[16..18].copy_from_slice(&date);
            e[18..20].copy_from_slice(&date);
            e[22..24].fill(0);
            e[24..26].copy_from_slice(&date);
            f.seek(SeekFrom::Start(root + 32 * i as u64))?;
            f.write_all(e)?;
        }
    }
    Ok(())
}

/// The EFI system partition image, `size` bytes. `counting`: name the entry
/// for boot counting (not on read-only media: nothing could be renamed).
fn esp(out: &Path, size: u64, boot_efi: &Path, uki: &Path, entry: &str, counting: bool) -> Result<()> {
    let staged = out.with_extension("tree");
    let _ = fs::remove_dir_all(&staged);
    for d in ["EFI/BOOT", "EFI/Linux", "loader/entries"] {
        fs::create_dir_all(staged.join(d))?;
    }
    fs::copy(boot_efi, staged.join("EFI/BOOT/BOOTX64.EFI"))?;
    // boot counting: systemd-boot tries an entry named NAME+3 three times
    let name = if counting { format!("{entry}+3.efi") } else { format!("{entry}.efi") };
    fs::copy(uki, staged.join("EFI/Linux").join(name))?;
    fs::write(staged.join("loader/loader.conf"), "timeout 0\neditor no\nconsole-mode keep\n")?;
    fat(out, size, "PARVIS-ESP", "50415256", false, &staged)
}

/// A hybrid ISO (boots as a CD and as a USB stick): the ESP image appended
/// as a GPT partition and used as the UEFI El Torito boot image. It runs
/// live: without a `data` partition nothing is kept. It carries the disk
/// image, gzipped, for "install on this computer" (Settings → Box).
fn iso(esp: &Path, disk_image: &Path, work: &Path, out: &Path, version: &str) -> Result<()> {
    let root = work.join("iso-root");
    fs::create_dir_all(&root)?;
    fs::write(root.join("README.TXT"), format!("Parvis {version}: boot this disc or stick on a UEFI PC, then open the address it shows.\n"))?;
    let gz = root.join(format!("{}.gz", disk_image.file_name().context("name")?.to_string_lossy()));
    run(Command::new("sh").arg("-c").arg(format!("gzip -n -6 -c '{}' > '{}'", disk_image.display(), gz.display())))?;
    date_tree(&root)?;
    let _ = fs::remove_file(out);
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-iso-level", "3", "-V", "PARVIS", "-J", "-R"])
        .args(["-append_partition", "2", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"])
        .arg(esp)
        .args(["-appended_part_as_gpt", "-e", "--interval:appended_partition_2:all::", "-no-emul-boot"])
        .arg("-o")
        .arg(out)
        .arg(&root)
        .env("SOURCE_DATE_EPOCH", EPOCH_SECS.to_string()))?;
    Ok(())
}

fn data(out: &Path) -> Result<()> {
    let _ = fs::remove_file(out);
    run(Command::new("mkfs.ext4")
        // 4 KiB blocks and the default inode ratio whatever the image's size:
        // the filesystem grows to the whole disk on first boot
        .args(["-q", "-F", "-b", "4096", "-T", "default", "-L", "parvis-data", "-U", "50415256-4953-4d44-8000-000000000001", "-E", "root_owner=0:0,hash_seed=50415256-4953-4d44-8000-000000000002"])
        .arg(out)
        .arg(format!("{}k", DATA_SIZE / 1024))
        .env("E2FSPROGS_FAKE_TIME", EPOCH_SECS.to_string()))?;
    Ok(())
}

/// Dates every file and directory under `dir` [`EPOCH`] (reproducible).
fn date_tree(dir: &Path) -> Result<()> {
    run(Command::new("find").arg(".").arg("-exec").args(["touch", "-h", "-d", EPOCH, "{}", "+"]).current_dir(dir))?;
    Ok(())
}

/// Copies each partition's filesystem image to its place, (start, size)
/// in bytes, in the disk image `f`.
pub(crate) fn place(f: &mut fs::File, spans: impl IntoIterator<Item = (u64, u64)>, files: &[&Path]) -> Result<()> {
    for ((start, size), file) in spans.into_iter().zip(files) {
        let mut src = fs::File::open(file)?;
        if src.metadata()?.len() > size {
            bail!("{} does not fit its partition", file.display());
        }
        f.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut src, f)?;
    }
    Ok(())
}

fn assemble(layout: &gpt::Layout, parts: &[&Path], out: &Path) -> Result<()> {
    let mut f = fs::File::create(out)?;
    f.set_len(layout.size)?;
    layout.write_primary(&mut f)?;
    place(&mut f, layout.partitions.iter().map(|p| (p.start, p.size)), parts)?;
    f.seek(SeekFrom::Start(layout.backup_offset()))?;
    layout.write_backup(&mut f)?;
    f.flush()?;
    Ok(())
}

/// The update signing key (made once) and its public half.
fn signing_key(cache: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let path = cache.join("update-signing.pk8");
    if !path.exists() {
        step("making the update signing key (keep it: boxes trust it)");
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).map_err(|_| anyhow::anyhow!("key generation"))?;
        fs::write(&path, pkcs8.as_ref())?;
    }
    let pkcs8 = fs::read(&path)?;
    let public = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| anyhow::anyhow!("{} is not an Ed25519 key", path.display()))?.public_key().as_ref().to_vec();
    Ok((pkcs8, public))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
}

fn main() -> Result<()> {
    let mut binary = None;
    let mut fetch = None;
    let (mut bundle_only, mut broken) = (false, false);
    let mut arch = Arch::X86_64;
    let mut out = PathBuf::from("target/images");
    let mut cache = PathBuf::from("target/image-cache");
    let mut version = env!("CARGO_PKG_VERSION").to_string();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--bundle" => { bundle_only = true; continue }
            "--broken" => { broken = true; continue }
            _ => {}
        }
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--binary" => binary = Some(PathBuf::from(v)),
            "--fetch" => fetch = Some(v),
            "--out" => out = v.into(),
            "--cache" => cache = v.into(),
            "--version" => version = v,
            "--arch" => arch = match v.as_str() {
                "x86_64" => Arch::X86_64,
                "aarch64" => Arch::Aarch64,
                _ => bail!("--arch x86_64 or aarch64, not {v}"),
            },
            _ => bail!("unknown option {k}"),
        }
    }
    if let Some(name) = fetch {
        fs::create_dir_all(&cache)?;
        let tree = debian::Apt::new(&cache.canonicalize()?, arch.debian())?.package(&name)?;
        println!("{}", tree.display());
        return Ok(());
    }
    let binary = binary.context("--binary PATH (the static parvis)")?;
    if bundle_only && arch != Arch::X86_64 {
        bail!("update bundles are for the x86_64 box (UEFI boot counting); the Raspberry Pi is updated by writing a new card");
    }
    let firmware = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware");
    fs::create_dir_all(&out)?;
    fs::create_dir_all(&cache)?;
    let (out, cache) = (out.canonicalize()?, cache.canonicalize()?);
    let work = out.join(format!("work-{}", arch.debian()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;

    let apt = debian::Apt::new(&cache, arch.debian())?;
    let kpkg = apt.kernel_package()?;
    let kernel = apt.package(&kpkg)?;
    let busybox = apt.package("busybox-static")?;
    let kver = kpkg.trim_start_matches("linux-image-").to_string();

    step(&format!("initramfs (kernel {kver})"));
    let root = work.join("initramfs");
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "perm", "tmp", "run", "usr/bin", "usr/sbin"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy(busybox.join("bin/busybox"), root.join("bin/busybox"))?;
    if broken {
        // It fails as a new version can after migrating the database:
        // the schema version (SQLite header, offset 60) is one this version's
        // predecessor does not know, and nothing answers.
        fs::write(
            root.join("bin/parvis"),
            "#!/bin/sh\n\
             echo 'parvis: this build is broken on purpose (rollback test): database schema 999, then failure'\n\
             db=/perm/parvis/parvis.db\n\
             [ -f $db ] && printf '\\000\\000\\003\\347' | dd of=$db bs=1 seek=60 conv=notrunc 2>/dev/null\n\
             exit 1\n",
        )?;
        run(Command::new("chmod").arg("755").arg(root.join("bin/parvis")))?;
    } else {
        fs::copy(&binary, root.join("bin/parvis"))?;
    }
    let (signing, public) = signing_key(&cache)?;
    fs::create_dir_all(root.join("etc/parvis"))?;
    fs::write(root.join("etc/parvis/update.pub"), &public)?;
    // the earliest time the box may believe (boards without a clock)
    fs::write(root.join("etc/parvis/build-time"), format!("{EPOCH_SECS}\n"))?;
    fs::copy(firmware.join("init"), root.join("init"))?;
    fs::copy(firmware.join("udhcpc.script"), root.join("etc/udhcpc.script"))?;
    let osrel = format!("NAME=Parvis\nID=parvis\nVERSION_ID={version}\nPRETTY_NAME=\"Parvis {version}\"\n");
    fs::write(root.join("etc/os-release"), &osrel)?;
    let wanted = if arch == Arch::X86_64 { MODULES_X86_64 } else { MODULES_AARCH64 };
    let n = debian::modules(&kernel, &kver, wanted, &root)?;
    let initrd = work.join("initrd.img");
    initramfs(&root, &initrd)?;
    step(&format!("initramfs: {n} modules, {} KiB", fs::metadata(&initrd)?.len() / 1024));
    let data_img = work.join("data.img");

    if arch == Arch::Aarch64 {
        let pi_firmware = apt.package("raspi-firmware")?;
        step("partitions");
        data(&data_img)?;
        let img = out.join("parvis-aarch64-rpi.img");
        let parts = rpi::Parts {
            kernel: &kernel.join(format!("boot/vmlinuz-{kver}")),
            dtbs: &kernel.join(format!("usr/lib/linux-image-{kver}")),
            firmware: &pi_firmware,
            initrd: &initrd,
            data: &data_img,
        };
        let layout = rpi::card(&parts, &version, &work, &img)?;
        let _ = fs::remove_dir_all(&work);
        println!("image: {} ({} MiB: boot {} MiB, data {} MiB, grows to the card)", img.display(), layout.size >> 20, layout.partitions[0].size >> 20, layout.partitions[1].size >> 20);
        return Ok(());
    }

    let sdboot = apt.package("systemd-boot-efi")?;
    step("unified kernel image");
    let uki_file = work.join("parvis.efi");
    let stub = sdboot.join("usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    let cmdline = "console=tty0 console=ttyS0,115200 panic=10 loglevel=4";
    uki(&stub, &kernel.join(format!("boot/vmlinuz-{kver}")), &initrd, cmdline, &osrel, &work, &uki_file)?;

    if bundle_only {
        let bundle = parvis_layout::bundle::sign(&version, &fs::read(&uki_file)?, &signing).map_err(|e| anyhow::anyhow!("{e}"))?;
        let file = out.join(format!("parvis-x86_64-{version}.update"));
        fs::write(&file, bundle)?;
        let _ = fs::remove_dir_all(&work);
        println!("image: {} (signed update bundle)", file.display());
        return Ok(());
    }
    step("partitions");
    let esp_img = work.join("esp.img");
    let boot_efi = sdboot.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    esp(&esp_img, ESP_SIZE, &boot_efi, &uki_file, &format!("parvis-{version}"), true)?;
    data(&data_img)?;
    let layout = gpt::Layout::appliance(ESP_SIZE, DATA_SIZE, 0x5041_5256_4953);
    let img = out.join("parvis-x86_64.img");
    assemble(&layout, &[&esp_img, &data_img], &img)?;
    step("hybrid ISO");
    // El Torito counts the boot image in 16-bit sectors: keep it under 32 MiB
    let iso_esp = work.join("esp-iso.img");
    let need = (fs::metadata(&uki_file)?.len() + fs::metadata(&boot_efi)?.len()).div_ceil(1 << 20) + 2;
    if need > 31 {
        bail!("the unified kernel image is too large for an El Torito boot image ({need} MiB)");
    }
    esp(&iso_esp, need << 20, &boot_efi, &uki_file, &format!("parvis-{version}"), false)?;
    let iso_file = out.join("parvis-x86_64.iso");
    iso(&iso_esp, &img, &work, &iso_file, &version)?;
    let uki_kib = fs::metadata(&uki_file)?.len() / 1024;
    let _ = fs::remove_dir_all(&work);
    println!("image: {} ({} MiB; unified kernel image {uki_kib} KiB)", img.display(), layout.size >> 20);
    println!("image: {} ({} MiB)", iso_file.display(), fs::metadata(&iso_file)?.len() >> 20);
    Ok(())
}
