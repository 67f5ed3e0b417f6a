//! The disk layout, defined once: a GUID partition table (UEFI 2.10 §5.3)
//! with an EFI system partition and the `data` partition, written through
//! `impl Write`. No loop devices, no root: partition contents are made as
//! files and copied to their offsets by the image builder. The box reads it
//! back and grows `data` to the disk on first boot (`parvis::system::disk::grow_data`).

use std::io::{self, Write};

pub const SECTOR: u64 = 512;
/// Partitions start on 1 MiB boundaries (every disk and SD card likes that).
pub const ALIGN: u64 = 1 << 20;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors taken by the entry array (128 × 128 bytes).
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

pub const ESP_TYPE: [u8; 16] = guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
pub const LINUX_DATA_TYPE: [u8; 16] = guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4");

/// A GUID as stored on disk (first three fields little-endian).
pub const fn guid(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut hex = [0u8; 32];
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        if b[i] != b'-' {
            hex[n] = match b[i] {
                b'0'..=b'9' => b[i] - b'0',
                b'a'..=b'f' => b[i] - b'a' + 10,
                b'A'..=b'F' => b[i] - b'A' + 10,
                _ => panic!("not a GUID"),
            };
            n += 1;
        }
        i += 1;
    }
    let mut raw = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        raw[k] = hex[2 * k] << 4 | hex[2 * k + 1];
        k += 1;
    }
    // mixed endianness: 4-2-2 bytes reversed, the last 8 as they are
    [raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]]
}

/// One partition: its type, unique id, name and place (in bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub name: String,
    pub start: u64,
    pub size: u64,
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub disk_guid: [u8; 16],
    pub size: u64,
    pub partitions: Vec<Partition>,
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

impl Layout {
    /// The box's disk: ESP (`esp_size`) then `data` (`data_size`). GUIDs
    /// come from `seed` so a build is reproducible.
    pub fn appliance(esp_size: u64, data_size: u64, seed: u64) -> Layout {
        let id = |n: u64| {
            let mut g = [0u8; 16];
            g[..8].copy_from_slice(&seed.to_le_bytes());
            g[8..].copy_from_slice(&n.to_le_bytes());
            g[7] = (g[7] & 0x0F) | 0x40; // version 4 shape
            g[8] = (g[8] & 0x3F) | 0x80;
            g
        };
        let esp_start = ALIGN;
        let data_start = align_up(esp_start + esp_size);
        let end = align_up(data_start + data_size);
        // room for the backup table after the last partition
        let size = end + ALIGN;
        Layout {
            disk_guid: id(0),
            size,
            partitions: vec![
                Partition { type_guid: ESP_TYPE, unique_guid: id(1), name: "esp".into(), start: esp_start, size: esp_size },
                Partition { type_guid: LINUX_DATA_TYPE, unique_guid: id(2), name: "data".into(), start: data_start, size: data_size },
            ],
        }
    }

    fn last_lba(&self) -> u64 {
        self.size / SECTOR - 1
    }

    fn entries(&self) -> Vec<u8> {
        let mut out = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut out[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid);
            e[16..32].copy_from_slice(&p.unique_guid);
            e[32..40].copy_from_slice(&(p.start / SECTOR).to_le_bytes());
            e[40..48].copy_from_slice(&((p.start + p.size) / SECTOR - 1).to_le_bytes());
            for (j, u) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        out
    }

    fn header(&self, primary: bool, entries_crc: u32) -> [u8; SECTOR as usize] {
        let mut h = [0u8; SECTOR as usize];
        let (my, alt) = if primary { (1, self.last_lba()) } else { (self.last_lba(), 1) };
        let entries_lba = if primary { 2 } else { self.last_lba() - ENTRY_SECTORS };
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes()); // first usable
        h[48..56].copy_from_slice(&(self.last_lba() - ENTRY_SECTORS - 1).to_le_bytes()); // last usable
        h[56..72].copy_from_slice(&self.disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Protective MBR and primary table: the first `2 + 32` sectors.
    pub fn write_primary(&self, w: &mut impl Write) -> io::Result<()> {
        let mut mbr = [0u8; SECTOR as usize];
        let p = &mut mbr[446..462];
        p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        p[4] = 0xEE;
        p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        p[8..12].copy_from_slice(&1u32.to_le_bytes());
        p[12..16].copy_from_slice(&u32::try_from(self.last_lba()).unwrap_or(u32::MAX).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        let entries = self.entries();
        w.write_all(&mbr)?;
        w.write_all(&self.header(true, crc32fast::hash(&entries)))?;
        w.write_all(&entries)
    }

    /// Backup table: the last `32 + 1` sectors, at byte `size - 33 × 512`.
    pub fn write_backup(&self, w: &mut impl Write) -> io::Result<()> {
        let entries = self.entries();
        w.write_all(&entries)?;
        w.write_all(&self.header(false, crc32fast::hash(&entries)))
    }

    pub fn backup_offset(&self) -> u64 {
        self.size - (ENTRY_SECTORS + 1) * SECTOR
    }

    /// Bytes [`Layout::read`] needs from the start of the disk.
    pub const HEAD: usize = ((2 + ENTRY_SECTORS) * SECTOR) as usize;

    /// Reads the primary table (the disk's first [`Layout::HEAD`] bytes),
    /// checking both checksums.
    pub fn read(head: &[u8], disk_size: u64) -> Result<Layout, String> {
        if head.len() < Self::HEAD || &head[512..520] != b"EFI PART" {
            return Err("no GUID partition table".into());
        }
        let h = &head[512..1024];
        let u32_at = |r: std::ops::Range<usize>| u32::from_le_bytes(h[r].try_into().expect("4 bytes"));
        let u64_at = |b: &[u8], r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().expect("8 bytes"));
        let mut check = h[..92].to_vec();
        check[16..20].fill(0);
        if crc32fast::hash(&check) != u32_at(16..20) {
            return Err("the partition table header is damaged (checksum)".into());
        }
        if u64_at(h, 72..80) != 2 || u64::from(u32_at(80..84)) != ENTRIES || u64::from(u32_at(84..88)) != ENTRY_SIZE {
            return Err("a partition table not laid out as Parvis writes it".into());
        }
        let entries = &head[1024..Self::HEAD];
        if crc32fast::hash(entries) != u32_at(88..92) {
            return Err("the partition entries are damaged (checksum)".into());
        }
        let mut partitions = Vec::new();
        for e in entries.chunks_exact(ENTRY_SIZE as usize) {
            if e[..16].iter().all(|&b| b == 0) {
                continue;
            }
            let units: Vec<u16> = e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
            let (first, last) = (u64_at(e, 32..40), u64_at(e, 40..48));
            partitions.push(Partition {
                type_guid: e[0..16].try_into().expect("16 bytes"),
                unique_guid: e[16..32].try_into().expect("16 bytes"),
                name: String::from_utf16_lossy(&units),
                start: first * SECTOR,
                size: (last + 1 - first) * SECTOR,
            });
        }
        Ok(Layout { disk_guid: h[56..72].try_into().expect("16 bytes"), size: disk_size, partitions })
    }

    /// The layout on a disk of `disk_size` bytes, with its last partition,
    /// `data`, grown to the end (whole MiB, leaving the last MiB to the
    /// backup table as [`Layout::appliance`] does); None when it would not
    /// grow by at least 1 MiB.
    pub fn grown(&self, disk_size: u64) -> Option<Layout> {
        let last = self.partitions.last().filter(|p| p.name == "data" && p.type_guid == LINUX_DATA_TYPE)?;
        let size = crate::grown_size(last.start, last.size, (disk_size.saturating_sub(ALIGN) / ALIGN) * ALIGN)?;
        let mut l = self.clone();
        l.size = disk_size / SECTOR * SECTOR;
        l.partitions.last_mut().expect("has a last").size = size;
        Some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(ESP_TYPE[..4], [0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(ESP_TYPE[8..], [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
    }

    #[test]
    fn partitions_are_aligned_and_leave_room_for_both_tables() {
        let l = Layout::appliance(64 << 20, 300 << 20, 7);
        let (esp, data) = (&l.partitions[0], &l.partitions[1]);
        assert_eq!(esp.start, ALIGN);
        assert_eq!(data.start % ALIGN, 0);
        assert!(data.start >= esp.start + esp.size);
        assert!(data.start + data.size <= l.backup_offset());
        assert_eq!(l, Layout::appliance(64 << 20, 300 << 20, 7), "reproducible");
    }

    #[test]
    fn it_reads_back_what_it_wrote_and_grows_data_to_the_disk() {
        let l = Layout::appliance(64 << 20, 256 << 20, 3);
        let mut head = Vec::new();
        l.write_primary(&mut head).unwrap();
        let back = Layout::read(&head, l.size).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.grown(l.size), None, "nothing to grow");
        let disk = (8 << 30) + 777;
        let g = back.grown(disk).unwrap();
        assert_eq!(g.partitions[0], l.partitions[0]);
        let data = &g.partitions[1];
        assert_eq!(data.start, l.partitions[1].start);
        assert_eq!(data.start + data.size, (8 << 30) - ALIGN);
        assert!(data.start + data.size <= g.backup_offset());
        assert_eq!(g.backup_offset() + (ENTRY_SECTORS + 1) * SECTOR, (8 << 30) + 512, "backup in the last sectors");
        let mut again = Vec::new();
        g.write_primary(&mut again).unwrap();
        assert_eq!(Layout::read(&again, g.size).unwrap().grown(g.size), None);
    }

    #[test]
    fn damaged_or_foreign_tables_are_refused() {
        let l = Layout::appliance(8 << 20, 16 << 20, 1);
        let mut head = Vec::new();
        l.write_primary(&mut head).unwrap();
        let mut bad = head.clone();
        bad[1024 + 130] ^= 1;
        assert!(Layout::read(&bad, l.size).unwrap_err().contains("checksum"));
        assert!(Layout::read(&head[..1024], l.size).is_err());
        let mut no_data = l.clone();
        no_data.partitions.pop();
        assert_eq!(no_data.grown(1 << 30), None);
    }

    #[test]
    fn tables_carry_valid_checksums_and_point_at_each_other() {
        let l = Layout::appliance(8 << 20, 16 << 20, 1);
        let mut primary = Vec::new();
        l.write_primary(&mut primary).unwrap();
        let mut backup = Vec::new();
        l.write_backup(&mut backup).unwrap();
        assert_eq!(primary.len() as u64, (2 + ENTRY_SECTORS) * SECTOR);
        assert_eq!(backup.len() as u64, (ENTRY_SECTORS + 1) * SECTOR);
        assert_eq!(&primary[510..512], &[0x55, 0xAA]);
        for (hdr, entries) in [(&primary[512..1024], &primary[1024..]), (&backup[backup.len() - 512..], &backup[..backup.len() - 512])] {
            assert_eq!(&hdr[0..8], b"EFI PART");
            let mut h = hdr[..92].to_vec();
            let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
            h[16..20].fill(0);
            assert_eq!(crc32fast::hash(&h), crc);
            assert_eq!(u32::from_le_bytes(hdr[88..92].try_into().unwrap()), crc32fast::hash(entries));
        }
        // partition 2 is named "data" in UTF-16
        let e = &primary[1024 + 128..1024 + 256];
        assert_eq!(&e[56..64], &[b'd', 0, b'a', 0, b't', 0, b'a', 0]);
    }
}
