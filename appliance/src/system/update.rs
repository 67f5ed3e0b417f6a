//! Updates of the box (A/B at file level, systemd-boot boot counting).
//!
//! A bundle is a new unified kernel image, its version and an Ed25519
//! signature; the box holds the public key (in its signed initramfs,
//! `/etc/parvis/update.pub`). Installing writes `parvis-<version>+3.efi` beside
//! the running one: systemd-boot boots the newest entry and counts down its
//! tries; once Parvis is healthy on it, [`bless`] drops the counter (as
//! `systemd-bless-boot` does). A version that never gets healthy is tried 3
//! times, then systemd-boot falls back to the previous one. The data
//! partition is never touched.
//! The bundle format is `parvis_layout::bundle`.

use std::path::PathBuf;

/// The vendor GUID of systemd-boot's EFI variables.
const LOADER_VARS: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

pub use parvis_layout::bundle::{Bundle, UpdateError, newer, sign, valid_version, verify};

/// The running image's version (`/etc/os-release` of the initramfs), else
/// the binary's.
pub fn running_version() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("VERSION_ID=").map(|v| v.trim_matches('"').to_string())))
        .filter(|v| valid_version(v))
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

/// True when Parvis runs on the box (its image carries the update key),
/// not from `cargo run` or a package.
pub fn on_a_box(paths: &BoxPaths) -> bool {
    paths.key.exists()
}

/// Where the box's files are.
#[derive(Debug, Clone)]
pub struct BoxPaths {
    pub key: PathBuf,
    pub esp: PathBuf,
    pub efivars: PathBuf,
}

impl Default for BoxPaths {
    fn default() -> Self {
        BoxPaths {
            key: "/etc/parvis/update.pub".into(),
            esp: "/boot".into(),
            efivars: "/sys/firmware/efi/efivars".into(),
        }
    }
}

fn io(e: impl std::fmt::Display) -> UpdateError {
    UpdateError::Io(e.to_string())
}

/// Verifies `raw` and writes it as the next boot entry; returns its path.
pub fn install(paths: &BoxPaths, raw: &[u8], running: &str) -> Result<PathBuf, UpdateError> {
    let key = std::fs::read(&paths.key).map_err(|e| UpdateError::NoBox(format!("no update key {}: {e}", paths.key.display())))?;
    let bundle = verify(raw, &key)?;
    if !newer(bundle.version, running) {
        return Err(UpdateError::NotNewer { new: bundle.version.into(), running: running.into() });
    }
    let dir = paths.esp.join("EFI/Linux");
    if !dir.is_dir() {
        return Err(UpdateError::NoBox(format!("no boot partition at {}", paths.esp.display())));
    }
    let dest = dir.join(format!("parvis-{}+3.efi", bundle.version));
    let tmp = dir.join(format!("parvis-{}.tmp", bundle.version));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bundle.image).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    crate::system::durable::rename(&tmp, &dest).map_err(io)?;
    tracing::info!(version = bundle.version, "update installed: {}", dest.display());
    Ok(dest)
}

/// `parvis-1.2+2-1.efi` → `parvis-1.2.efi`; None when there is no counter.
pub fn blessed_name(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".efi")?;
    let (base, counter) = stem.rsplit_once('+')?;
    counter.split('-').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| format!("{base}.efi"))
}

/// Marks the entry this boot came from as good (the system is healthy):
/// drops its try counter, then keeps only the two newest good versions.
/// Returns the blessed entry's name, None when nothing was being counted.
pub fn bless(paths: &BoxPaths) -> Result<Option<String>, UpdateError> {
    let var = paths.efivars.join(format!("LoaderBootCountPath-{LOADER_VARS}"));
    let Ok(raw) = std::fs::read(&var) else { return Ok(None) };
    // 4 bytes of attributes, then a UTF-16LE path, NUL-terminated
    let units: Vec<u16> = raw.get(4..).unwrap_or(&[]).chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    let path = String::from_utf16_lossy(&units);
    let Some(name) = path.rsplit('\\').next().filter(|n| !n.is_empty()) else { return Ok(None) };
    let Some(good) = blessed_name(name) else { return Ok(None) };
    let dir = paths.esp.join("EFI/Linux");
    if dir.join(name).exists() {
        crate::system::durable::rename(&dir.join(name), &dir.join(&good)).map_err(io)?;
        tracing::info!("boot entry {name} is good: now {good}");
    }
    // keep the two newest good versions
    let mut good_versions: Vec<String> = std::fs::read_dir(&dir)
        .map_err(io)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("parvis-")?.strip_suffix(".efi").filter(|v| !v.contains('+')).map(str::to_string))
        .collect();
    // oldest first (semantic versions; anything else before them)
    good_versions.sort_by(|a, b| if newer(a, b) { std::cmp::Ordering::Greater } else if newer(b, a) { std::cmp::Ordering::Less } else { a.cmp(b) });
    for old in good_versions.iter().rev().skip(2) {
        let _ = std::fs::remove_file(dir.join(format!("parvis-{old}.efi")));
    }
    Ok(Some(good))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::Ed25519KeyPair;

    fn keypair() -> (Vec<u8>, Vec<u8>) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let public = ring::signature::KeyPair::public_key(&Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()).as_ref().to_vec();
        (pkcs8.as_ref().to_vec(), public)
    }

    #[test]
    fn a_signed_bundle_verifies_and_any_change_is_refused() {
        let (secret, public) = keypair();
        let raw = sign("1.2.3", b"the image", &secret).unwrap();
        let b = verify(&raw, &public).unwrap();
        assert_eq!((b.version, b.image), ("1.2.3", &b"the image"[..]));
        for i in [0, 9, 12, 25, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[i] ^= 1;
            assert!(verify(&bad, &public).is_err(), "byte {i}");
        }
        assert_eq!(verify(&raw[..raw.len() - 1], &public).unwrap_err(), UpdateError::Truncated);
        assert_eq!(verify(b"GARBAGE!!", &public).unwrap_err(), UpdateError::NotABundle);
        let (_, other) = keypair();
        assert_eq!(verify(&raw, &other).unwrap_err(), UpdateError::BadSignature);
        assert!(sign("../etc", b"x", &secret).is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(newer("0.10.0", "0.9.9"));
        assert!(newer("0.1.1", "0.1.0"));
        assert!(!newer("0.1.0", "0.1.0"));
        assert!(!newer("0.1.0", "0.2.0"));
    }

    #[test]
    fn blessing_drops_the_counter_and_keeps_two_good_versions() {
        assert_eq!(blessed_name("parvis-0.2.0+2-1.efi").as_deref(), Some("parvis-0.2.0.efi"));
        assert_eq!(blessed_name("parvis-0.2.0+3.efi").as_deref(), Some("parvis-0.2.0.efi"));
        assert_eq!(blessed_name("parvis-0.2.0.efi"), None);
        let d = tempfile::tempdir().unwrap();
        let paths = BoxPaths { key: d.path().join("k"), esp: d.path().join("esp"), efivars: d.path().join("vars") };
        let linux = paths.esp.join("EFI/Linux");
        std::fs::create_dir_all(&linux).unwrap();
        std::fs::create_dir_all(&paths.efivars).unwrap();
        for n in ["parvis-0.1.0.efi", "parvis-0.1.1.efi", "parvis-0.1.2+2-1.efi"] {
            std::fs::write(linux.join(n), n).unwrap();
        }
        assert_eq!(bless(&paths).unwrap(), None, "not booted by a counting entry");
        let mut var = vec![6, 0, 0, 0];
        for u in "\\EFI\\Linux\\parvis-0.1.2+2-1.efi".encode_utf16().chain([0]) {
            var.extend_from_slice(&u.to_le_bytes());
        }
        std::fs::write(paths.efivars.join(format!("LoaderBootCountPath-{LOADER_VARS}")), var).unwrap();
        assert_eq!(bless(&paths).unwrap().as_deref(), Some("parvis-0.1.2.efi"));
        let mut left: Vec<String> = std::fs::read_dir(&linux).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["parvis-0.1.1.efi", "parvis-0.1.2.efi"]);
    }

    #[test]
    fn install_refuses_old_versions_and_writes_a_counted_entry() {
        let (secret, public) = keypair();
        let d = tempfile::tempdir().unwrap();
        let paths = BoxPaths { key: d.path().join("k"), esp: d.path().join("esp"), efivars: d.path().join("vars") };
        std::fs::write(&paths.key, &public).unwrap();
        std::fs::create_dir_all(paths.esp.join("EFI/Linux")).unwrap();
        let raw = sign("0.1.1", b"image", &secret).unwrap();
        assert!(matches!(install(&paths, &raw, "0.1.1"), Err(UpdateError::NotNewer { .. })));
        let p = install(&paths, &raw, "0.1.0").unwrap();
        assert_eq!(p.file_name().unwrap(), "parvis-0.1.1+3.efi");
        assert_eq!(std::fs::read(p).unwrap(), b"image");
    }
}
