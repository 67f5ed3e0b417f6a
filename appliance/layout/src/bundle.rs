//! Signed update bundles: a new unified kernel image, its version and an
//! Ed25519 signature. The image builder signs ([`sign`]); the box verifies
//! ([`verify`]) with the public key in its signed initramfs.
//!
//! Layout: `PARVISU1`, u16 version length, version, u64 image length,
//! image, 64-byte signature over everything before it (all big-endian).
//! Versions are semantic versions (`0.2.0`, `0.2.0-rc1` sorts before it).

use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

const MAGIC: &[u8; 8] = b"PARVISU1";
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpdateError {
    #[error("not a Parvis update bundle")]
    NotABundle,
    #[error("the bundle is truncated or has trailing bytes")]
    Truncated,
    #[error("bad signature: this bundle was not made for this box (or was altered)")]
    BadSignature,
    #[error("version {0:?} is not a version")]
    BadVersion(String),
    #[error("version {new} is not newer than the running {running}")]
    NotNewer { new: String, running: String },
    #[error("this is not a box: {0}")]
    NoBox(String),
    #[error("{0}")]
    Io(String),
}

/// A verified bundle.
#[derive(Debug)]
pub struct Bundle<'a> {
    pub version: &'a str,
    pub image: &'a [u8],
}

/// A semantic version of at most 32 characters (it names files on the
/// boot partition).
pub fn valid_version(v: &str) -> bool {
    v.len() <= 32 && semver::Version::parse(v).is_ok()
}

/// Whether version `a` comes after `b` (semantic versioning: `0.10.0` after
/// `0.9.1`, `0.2.0` after `0.2.0-rc1`). Not versions: never newer.
pub fn newer(a: &str, b: &str) -> bool {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a > b,
        (Ok(_), Err(_)) => true,
        _ => false,
    }
}

/// The bytes before the signature.
fn body(version: &str, image: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 2 + version.len() + 8 + image.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(version.len() as u16).to_be_bytes());
    b.extend_from_slice(version.as_bytes());
    b.extend_from_slice(&(image.len() as u64).to_be_bytes());
    b.extend_from_slice(image);
    b
}

/// Makes a signed bundle (the image builder; `pkcs8` is the signing key).
pub fn sign(version: &str, image: &[u8], pkcs8: &[u8]) -> Result<Vec<u8>, UpdateError> {
    if !valid_version(version) {
        return Err(UpdateError::BadVersion(version.into()));
    }
    let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| UpdateError::Io("bad signing key".into()))?;
    let mut b = body(version, image);
    let sig = key.sign(&b);
    b.extend_from_slice(sig.as_ref());
    Ok(b)
}

/// Checks the layout and the signature with `public_key` (32 bytes).
pub fn verify<'a>(raw: &'a [u8], public_key: &[u8]) -> Result<Bundle<'a>, UpdateError> {
    if raw.len() < 8 + 2 || &raw[..8] != MAGIC {
        return Err(UpdateError::NotABundle);
    }
    let vlen = usize::from(u16::from_be_bytes([raw[8], raw[9]]));
    let after_version = 10 + vlen;
    let len_bytes = raw.get(after_version..after_version + 8).ok_or(UpdateError::Truncated)?;
    let ilen = usize::try_from(u64::from_be_bytes(len_bytes.try_into().expect("8 bytes"))).map_err(|_| UpdateError::Truncated)?;
    let image_start = after_version + 8;
    let sig_start = image_start.checked_add(ilen).ok_or(UpdateError::Truncated)?;
    if raw.len() != sig_start + 64 {
        return Err(UpdateError::Truncated);
    }
    UnparsedPublicKey::new(&ED25519, public_key).verify(&raw[..sig_start], &raw[sig_start..]).map_err(|_| UpdateError::BadSignature)?;
    let version = std::str::from_utf8(&raw[10..after_version]).map_err(|_| UpdateError::BadVersion("(not text)".into()))?;
    if !valid_version(version) {
        return Err(UpdateError::BadVersion(version.into()));
    }
    Ok(Bundle { version, image: &raw[image_start..sig_start] })
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_as_semantic_versions() {
        assert!(newer("0.10.0", "0.9.1"));
        assert!(newer("0.2.0", "0.2.0-rc1"), "a release comes after its candidates");
        assert!(newer("0.2.0-rc2", "0.2.0-rc1"));
        assert!(!newer("0.2.0-rc1", "0.2.0"));
        assert!(!newer("0.1.1", "0.1.1"));
        assert!(newer("0.1.1", "unknown"), "anything beats a version that is not one");
        assert!(valid_version("1.2.3") && valid_version("0.2.0-rc1"));
        assert!(!valid_version("1.2") && !valid_version("x") && !valid_version("1.2.3/../../evil"));
    }

    #[test]
    fn a_bundle_verifies_with_its_key_only() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        use ring::signature::KeyPair;
        let public = key.public_key().as_ref().to_vec();
        let b = sign("0.3.0", b"kernel", pkcs8.as_ref()).unwrap();
        let v = verify(&b, &public).unwrap();
        assert_eq!((v.version, v.image), ("0.3.0", &b"kernel"[..]));
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert!(verify(&bad, &public).is_err());
        assert_eq!(sign("banana", b"", pkcs8.as_ref()).unwrap_err(), UpdateError::BadVersion("banana".into()));
    }
}
