//! What the Parvis box's media look like, defined once for the box and the
//! image builder: the partition tables of the PC disk (GPT) and the
//! Raspberry Pi card (MBR), and the signed update bundle. No I/O beyond
//! `impl Write` / byte slices, so everything is unit-tested in memory.

pub mod bundle;
pub mod gpt;
pub mod mbr;

/// The size a last partition starting at `start` (now `size` bytes) can
/// grow to when the disk's usable space ends at `end`: only when it gains
/// at least one alignment unit (1 MiB).
pub fn grown_size(start: u64, size: u64, end: u64) -> Option<u64> {
    (end >= start + size + gpt::ALIGN).then(|| end - start)
}
