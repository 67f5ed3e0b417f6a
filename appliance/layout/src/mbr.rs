//! The Raspberry Pi's disk layout, defined once: a classic MBR partition
//! table (the Pi's boot ROM reads only that) with a FAT32 boot partition
//! (firmware, kernel, device trees) and the ext4 `data` partition, written
//! through `impl Write` like [`crate::gpt`], read back and grown to the
//! card on the box's first boot.

use std::io::{self, Write};

use crate::gpt::{ALIGN, SECTOR};

/// FAT32 with LBA addressing: what the Pi's firmware looks for.
pub const FAT32_LBA: u8 = 0x0C;
pub const LINUX: u8 = 0x83;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub kind: u8,
    pub start: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub disk_id: u32,
    pub size: u64,
    pub partitions: Vec<Partition>,
}

impl Layout {
    /// The SD card: boot (`boot_size`) then `data` up to `size` (a power of
    /// two: QEMU's SD card model insists, and real cards are close to one).
    pub fn raspberry_pi(boot_size: u64, size: u64, disk_id: u32) -> Layout {
        let data_start = ALIGN + boot_size.div_ceil(ALIGN) * ALIGN;
        assert!(data_start < size, "the card is too small for its boot partition");
        Layout {
            disk_id,
            size,
            partitions: vec![
                Partition { kind: FAT32_LBA, start: ALIGN, size: data_start - ALIGN },
                Partition { kind: LINUX, start: data_start, size: size - data_start },
            ],
        }
    }

    /// The first sector: boot code area left empty, disk id, four entries
    /// (LBA only: CHS fields say "beyond CHS"), signature.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut mbr = [0u8; SECTOR as usize];
        mbr[440..444].copy_from_slice(&self.disk_id.to_le_bytes());
        for (i, p) in self.partitions.iter().take(4).enumerate() {
            let e = &mut mbr[446 + 16 * i..462 + 16 * i];
            let lba = |x: u64| u32::try_from(x / SECTOR).map_err(|_| io::Error::other("partition beyond 2 TiB: MBR cannot say it"));
            e[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
            e[4] = p.kind;
            e[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
            e[8..12].copy_from_slice(&lba(p.start)?.to_le_bytes());
            e[12..16].copy_from_slice(&lba(p.size)?.to_le_bytes());
        }
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        w.write_all(&mbr)
    }

    /// Reads the table from the disk's first sector.
    pub fn read(sector: &[u8], disk_size: u64) -> Result<Layout, String> {
        if sector.len() < SECTOR as usize || sector[510..512] != [0x55, 0xAA] {
            return Err("no MBR partition table".into());
        }
        let mut partitions = Vec::new();
        for i in 0..4 {
            let e = &sector[446 + 16 * i..462 + 16 * i];
            let at = |r: std::ops::Range<usize>| u64::from(u32::from_le_bytes(e[r].try_into().expect("4 bytes")));
            if e[4] != 0 {
                partitions.push(Partition { kind: e[4], start: at(8..12) * SECTOR, size: at(12..16) * SECTOR });
            }
        }
        Ok(Layout { disk_id: u32::from_le_bytes(sector[440..444].try_into().expect("4 bytes")), size: disk_size, partitions })
    }

    /// The layout with its last partition, a Linux one, grown to the end of
    /// a disk of `disk_size` bytes (whole MiB, at most 2 TiB); None when it
    /// would not grow by at least 1 MiB.
    pub fn grown(&self, disk_size: u64) -> Option<Layout> {
        let last = self.partitions.last().filter(|p| p.kind == LINUX)?;
        let size = crate::grown_size(last.start, last.size, (disk_size.min(u64::from(u32::MAX) * SECTOR) / ALIGN) * ALIGN)?;
        let mut l = self.clone();
        l.size = disk_size;
        l.partitions.last_mut().expect("has a last").size = size;
        Some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_then_data_fill_the_card() {
        let l = Layout::raspberry_pi(100 << 20, 512 << 20, 0x5041_5256);
        let (boot, data) = (&l.partitions[0], &l.partitions[1]);
        assert_eq!((boot.kind, boot.start), (FAT32_LBA, ALIGN));
        assert!(boot.size >= 100 << 20);
        assert_eq!(data.start % ALIGN, 0);
        assert_eq!(data.start, boot.start + boot.size);
        assert_eq!(data.start + data.size, 512 << 20);
    }

    #[test]
    fn entries_are_little_endian_sectors() {
        let l = Layout::raspberry_pi(64 << 20, 256 << 20, 0x1234_5678);
        let mut s = Vec::new();
        l.write(&mut s).unwrap();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        assert_eq!(&s[440..444], &[0x78, 0x56, 0x34, 0x12]);
        let entry = |i: usize| &s[446 + 16 * i..462 + 16 * i];
        assert_eq!(entry(0)[4], 0x0C);
        assert_eq!(u32::from_le_bytes(entry(0)[8..12].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(entry(0)[12..16].try_into().unwrap()), 64 * 2048);
        assert_eq!(entry(1)[4], 0x83);
        assert_eq!(u32::from_le_bytes(entry(1)[8..12].try_into().unwrap()), 65 * 2048);
        assert_eq!(u32::from_le_bytes(entry(1)[12..16].try_into().unwrap()), (256 - 65) * 2048);
        assert!(entry(2).iter().all(|&b| b == 0));
    }

    #[test]
    fn it_reads_back_and_grows_the_data_partition_to_the_card() {
        let l = Layout::raspberry_pi(255 << 20, 512 << 20, 9);
        let mut s = Vec::new();
        l.write(&mut s).unwrap();
        let back = Layout::read(&s, 512 << 20).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.grown(512 << 20), None, "nothing to grow");
        assert_eq!(back.grown((512 << 20) + 4096), None, "less than 1 MiB more");
        let g = back.grown((32 << 30) + 12345).unwrap();
        assert_eq!(g.partitions[0], l.partitions[0]);
        assert_eq!(g.partitions[1].start, l.partitions[1].start);
        assert_eq!(g.partitions[1].start + g.partitions[1].size, 32 << 30);
        let mut again = Vec::new();
        g.write(&mut again).unwrap();
        assert_eq!(Layout::read(&again, 32 << 30).unwrap().grown(32 << 30), None);
        // an MBR says at most 2 TiB
        let huge = back.grown(3 << 40).unwrap();
        assert!(huge.write(&mut Vec::new()).is_ok());
    }

    #[test]
    fn only_a_linux_last_partition_grows() {
        let mut l = Layout::raspberry_pi(64 << 20, 256 << 20, 1);
        l.partitions.pop();
        assert_eq!(l.grown(1 << 30), None);
        assert!(Layout::read(&[0u8; 512], 1 << 30).is_err());
    }

    #[test]
    fn a_card_beyond_2_tib_is_refused() {
        let l = Layout::raspberry_pi(64 << 20, 4 << 40, 1);
        assert!(l.write(&mut Vec::new()).is_err());
    }
}
