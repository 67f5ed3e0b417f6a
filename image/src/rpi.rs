//! The Raspberry Pi SD card (Pi 3, 3+, 4, 400, Zero 2 W; 64-bit): an MBR
//! card with a FAT32 boot partition, read by the Pi's own boot firmware
//! (Debian's `raspi-firmware`: bootcode.bin, start*.elf, fixup*.dat), which
//! loads the kernel (Debian's arm64 `Image`), the initramfs and the board's
//! device tree (from the kernel package) as `config.txt` says; then the
//! ext4 `data` partition, as on the PC image.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

use parvis_layout::mbr;


/// Room for the firmware (~20 MB), the kernel (~33 MB), the initramfs and
/// a second kernel + initramfs later.
const BOOT_SIZE: u64 = 255 << 20;
/// The card image; the data partition grows to the real card on first boot.
const CARD_SIZE: u64 = 512 << 20;

/// The kernel command line. Consoles: the Pi 3/4 GPIO UART (mini UART,
/// ttyS1), the PL011 (ttyAMA0: the UART of Pi 2, of `enable_uart` boards
/// without Bluetooth, of QEMU's boards) and the screen, last: /dev/console.
pub const CMDLINE: &str = "console=ttyS1,115200 console=ttyAMA0,115200 console=tty0 panic=10 loglevel=4";

/// What the Pi's firmware reads. 64-bit, the mainline kernel's device tree
/// names (`upstream_kernel`), the GPIO UART on, the initramfs placed after
/// the kernel.
fn config_txt(version: &str) -> String {
    format!(
        "# Parvis {version}: the Raspberry Pi firmware's settings\n\
         arm_64bit=1\n\
         upstream_kernel=1\n\
         enable_uart=1\n\
         disable_overscan=1\n\
         kernel=vmlinuz\n\
         initramfs initrd.img followkernel\n\
         [pi4]\n\
         max_framebuffers=2\n\
         [all]\n"
    )
}

/// The device trees of the supported boards, by the names the firmware
/// looks for with `upstream_kernel=1`.
fn device_trees(kernel_lib: &Path) -> Result<Vec<std::path::PathBuf>> {
    let dir = kernel_lib.join("broadcom");
    let mut dtbs: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("no device trees in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| (f.starts_with("bcm2837-rpi") || f.starts_with("bcm2711-rpi")) && f.ends_with(".dtb")))
        .collect();
    dtbs.sort();
    if dtbs.is_empty() {
        bail!("the kernel package has no Raspberry Pi device trees");
    }
    Ok(dtbs)
}

/// What goes on the card.
pub struct Parts<'a> {
    /// The kernel's `Image` (Debian's arm64 vmlinuz is not compressed).
    pub kernel: &'a Path,
    /// The kernel package's device trees (`usr/lib/linux-image-<version>`).
    pub dtbs: &'a Path,
    /// The unpacked raspi-firmware package.
    pub firmware: &'a Path,
    pub initrd: &'a Path,
    /// The data partition's filesystem image.
    pub data: &'a Path,
}

/// Builds `out`, the SD card image.
pub fn card(parts: &Parts, version: &str, work: &Path, out: &Path) -> Result<mbr::Layout> {
    let layout = mbr::Layout::raspberry_pi(BOOT_SIZE, CARD_SIZE, 0x5041_5256);
    let boot = work.join("boot.img");
    let staged = work.join("boot-tree");
    fs::create_dir_all(&staged)?;
    let fw = parts.firmware.join("usr/lib/raspi-firmware");
    let mut names: Vec<_> = fs::read_dir(&fw)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    if !names.iter().any(|n| n == "bootcode.bin") || !names.iter().any(|n| n == "start4.elf") {
        bail!("{} lacks the Pi's boot firmware", fw.display());
    }
    for n in &names {
        fs::copy(fw.join(n), staged.join(n))?;
    }
    for dtb in device_trees(parts.dtbs)? {
        fs::copy(&dtb, staged.join(dtb.file_name().context("name")?))?;
    }
    fs::copy(parts.kernel, staged.join("vmlinuz"))?;
    fs::copy(parts.initrd, staged.join("initrd.img"))?;
    fs::write(staged.join("config.txt"), config_txt(version))?;
    fs::write(staged.join("cmdline.txt"), format!("{CMDLINE}\n"))?;
    crate::fat(&boot, layout.partitions[0].size, "PARVIS-BOOT", "50415257", true, &staged)?;

    let mut f = fs::File::create(out)?;
    f.set_len(layout.size)?;
    layout.write(&mut f)?;
    crate::place(&mut f, layout.partitions.iter().map(|p| (p.start, p.size)), &[&boot, parts.data])?;
    f.flush()?;
    Ok(layout)
}
