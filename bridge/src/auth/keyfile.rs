//! Private key files: PKCS#8 PEM armour and owner-only (0600) file writes.
//!
//! Used by the dev issuer's key file and the envelope signing key set. New files are written to a
//! temporary file in the same directory (created 0600), flushed to disk, then moved into place:
//! [`create_new`] links it (so an existing file is never clobbered, and a concurrent creator
//! wins cleanly) and [`replace`] renames it (atomic replacement). Readers never see a half-written
//! key file. Loading a file that group or others can read logs a warning.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::SecretKey;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use zeroize::Zeroizing;

/// Key files larger than this are refused unread.
pub(crate) const MAX_KEY_FILE_LEN: u64 = 1024 * 1024;

const PKCS8_LABEL: &str = "PRIVATE KEY";
const SEC1_LABEL: &str = "EC PRIVATE KEY";

/// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) of a P-256 private key.
pub(crate) fn secret_key_to_pem(key: &SecretKey) -> Option<Zeroizing<String>> {
    let der = key.to_pkcs8_der().ok()?;
    Some(pem_encode(PKCS8_LABEL, der.as_bytes()))
}

/// Parses a P-256 private key from PKCS#8 PEM (what we write and what
/// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes), also accepting
/// SEC1 `EC PRIVATE KEY` PEM (`openssl ecparam -genkey`).
pub(crate) fn secret_key_from_pem(pem: &str) -> Option<SecretKey> {
    if let Some(der) = pem_decode(pem, PKCS8_LABEL) {
        return SecretKey::from_pkcs8_der(&der).ok();
    }
    let der = pem_decode(pem, SEC1_LABEL)?;
    SecretKey::from_sec1_der(&der).ok()
}

fn pem_encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let body = Zeroizing::new(STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(body.len() + body.len() / 64 + 64));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Decodes the first PEM block with `label`; `None` when there is none or it is not base64.
fn pem_decode(pem: &str, label: &str) -> Option<Zeroizing<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: Zeroizing<String> = Zeroizing::new(
        pem[start..stop]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    STANDARD.decode(body.as_bytes()).ok().map(Zeroizing::new)
}

/// Reads a whole file of at most [`MAX_KEY_FILE_LEN`] bytes. With `secret`, warns when the file
/// is readable by group or others.
pub(crate) fn read_limited(path: &Path, secret: bool) -> io::Result<Zeroizing<Vec<u8>>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file is too large",
        ));
    }
    if secret {
        warn_if_loose(path, &meta);
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
    file.take(MAX_KEY_FILE_LEN + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file is too large",
        ));
    }
    Ok(buf)
}

#[cfg(unix)]
fn warn_if_loose(path: &Path, meta: &fs::Metadata) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "private key file is readable by group or others; run chmod 600 on it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_loose(_path: &Path, _meta: &fs::Metadata) {}

/// Writes `bytes` to a new file at `path` (0600). Fails with `AlreadyExists` if `path` exists;
/// the existing file is left untouched.
pub(crate) fn create_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    let linked = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(err),
        // Some filesystems have no hard links; fall back to a checked rename (a narrow race,
        // acceptable for a file written once at first start).
        Err(_) if !path.exists() => fs::rename(&tmp, path),
        Err(_) => Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists")),
    };
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_parent(path);
    Ok(())
}

/// Atomically replaces (or creates) `path` with `bytes` (0600).
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    if let Err(err) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    sync_parent(path);
    Ok(())
}

fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|_| io::Error::other("no randomness for temp name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
    let tmp = path.with_file_name(tmp_name);

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(err) = written {
        drop(file);
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(tmp)
}

/// Makes the directory entry durable; best effort (not all platforms can open directories).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::Generate as _;

    #[test]
    fn pem_round_trip_and_garbage() {
        let key = SecretKey::generate();
        let pem = secret_key_to_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = secret_key_from_pem(&pem).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        assert!(secret_key_from_pem("").is_none());
        assert!(
            secret_key_from_pem("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----")
                .is_none()
        );
        assert!(secret_key_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA").is_none());
    }
}
