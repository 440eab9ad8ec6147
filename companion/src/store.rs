//! The simulated phone's passkeys, kept in one JSON file in a directory so that a registration
//! made by one run can be used by a later sign-in.
//!
//! # File format
//!
//! `<dir>/passkeys.json`, mode 0600 (the directory is created 0700 when missing):
//!
//! ```json
//! { "version": 1,
//!   "passkeys": [ { "credential_id": "<base64url>", "rp_id": "example.com",
//!                   "user_handle": "<base64url>", "user_name": "alice",
//!                   "user_display_name": "Alice", "private_key": "<base64url COSE_Key>",
//!                   "counter": 3, "created_at_ms": 1767225600000 } ] }
//! ```
//!
//! The private key is the credential's COSE_Key (RFC 9052 §7, with the private `d` parameter)
//! as `passkey-authenticator` produces it, encoded with `coset`. Every change is written to a
//! temporary file in the same directory, flushed to disk and renamed over the old file, so a crash
//! leaves either the old or the new store, never a torn one. A file that does not parse gives
//! [`StoreError::Corrupt`] naming what is wrong (never the offending bytes, which may be key
//! material).
//!
//! # Lookup
//!
//! [`CredentialStore::find_credentials`] filters by relying party id itself: with an allow list it
//! returns the listed credentials of that relying party; without one (usernameless sign-in) it
//! returns every passkey of that relying party, newest first, which `passkey-authenticator` then
//! uses the first of. (The crate's built-in `MemoryStore` answers an empty allow list with
//! `CTAP2_ERR_NO_CREDENTIALS`, which is why this store exists.) Every passkey is discoverable, as
//! on a phone, and a new registration for the same relying party and user handle replaces the old
//! one (CTAP 2.2 §6.1 step 18).
//!
//! One process at a time may use a directory; nothing locks it.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coset::{CborSerializable, CoseKey};
use passkey_authenticator::{CredentialStore, DiscoverabilitySupport, StoreInfo};
use passkey_types::Passkey;
use passkey_types::ctap2::make_credential::{
    Options, PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
use passkey_types::ctap2::{Ctap2Error, StatusCode};
use passkey_types::webauthn::PublicKeyCredentialDescriptor;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Name of the store file inside the directory.
pub const STORE_FILE: &str = "passkeys.json";
/// The file format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

const TEMP_FILE: &str = ".passkeys.json.tmp";

/// Where the store reads the time of a new passkey from.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Why the store could not be opened or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("passkey store: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The store file exists but is not a valid store.
    #[error("passkey store {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: CorruptReason,
    },
}

/// What is wrong with a corrupt store file. Never carries the file's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// The file is not JSON of the expected shape.
    #[error("not a passkey store document (line {line}, column {column})")]
    Json {
        /// Line of the first error.
        line: usize,
        /// Column of the first error.
        column: usize,
    },
    /// The file is of a format version this code does not read.
    #[error("unsupported format version {0}")]
    Version(u32),
    /// A base64url field does not decode.
    #[error("passkey {index}: field {field} is not base64url")]
    Base64 {
        /// Position of the passkey in the file.
        index: usize,
        /// The field.
        field: &'static str,
    },
    /// A private key is not a COSE_Key.
    #[error("passkey {index}: private key is not a COSE_Key")]
    CoseKey {
        /// Position of the passkey in the file.
        index: usize,
    },
    /// A credential id is empty or appears twice.
    #[error("passkey {index}: credential id is empty or repeated")]
    CredentialId {
        /// Position of the passkey in the file.
        index: usize,
    },
}

/// What the store tells about a passkey (everything except the private key).
#[derive(Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    /// The credential id.
    pub credential_id: Vec<u8>,
    /// The relying party id it is bound to.
    pub rp_id: String,
    /// The user handle (WebAuthn `user.id`).
    pub user_handle: Option<Vec<u8>>,
    /// The user name given at registration.
    pub user_name: Option<String>,
    /// The display name given at registration.
    pub user_display_name: Option<String>,
    /// The signature counter; `None` when the passkey has none (always signs 0).
    pub counter: Option<u32>,
    /// When it was made, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl fmt::Debug for PasskeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasskeyInfo")
            .field("rp_id", &self.rp_id)
            .field("credential_id_len", &self.credential_id.len())
            .field("counter", &self.counter)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

struct Entry {
    passkey: Passkey,
    created_at_ms: u64,
}

/// A directory-backed [`CredentialStore`]. See the [module docs](self).
pub struct PasskeyStore {
    dir: PathBuf,
    /// In insertion order (oldest first).
    entries: Vec<Entry>,
    clock: Clock,
    last_error: Option<StoreError>,
}

impl fmt::Debug for PasskeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasskeyStore")
            .field("dir", &self.dir)
            .field("passkeys", &self.entries.len())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    passkeys: Vec<Record>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    credential_id: String,
    rp_id: String,
    #[serde(default)]
    user_handle: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    user_display_name: Option<String>,
    private_key: SecretText,
    #[serde(default)]
    counter: Option<u32>,
    created_at_ms: u64,
}

/// Text holding key material: cleared when dropped.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct SecretText(String);

impl Drop for SecretText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PasskeyStore {
    /// Opens the store in `dir`, creating the directory (0700) if needed. A missing file is an
    /// empty store; nothing is written until the first passkey is saved.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the directory or file cannot be read, [`StoreError::Corrupt`] if the
    /// file is not a valid store.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_clock(dir, Arc::new(SystemTime::now))
    }

    /// [`PasskeyStore::open`] with the clock that dates new passkeys.
    ///
    /// # Errors
    ///
    /// As [`PasskeyStore::open`].
    pub fn open_with_clock(dir: impl AsRef<Path>, clock: Clock) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir)?;
        let path = dir.join(STORE_FILE);
        let entries = match fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                parse(&bytes).map_err(|reason| StoreError::Corrupt {
                    path: path.clone(),
                    reason,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        Ok(Self {
            dir,
            entries,
            clock,
            last_error: None,
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }

    /// Number of passkeys stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no passkey is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every passkey, oldest first, without private keys.
    pub fn list(&self) -> Vec<PasskeyInfo> {
        self.entries.iter().map(Entry::info).collect()
    }

    /// The passkeys of `rp_id`, newest first, without private keys.
    pub fn list_for(&self, rp_id: &str) -> Vec<PasskeyInfo> {
        self.matching(None, rp_id, None)
            .map(|entry| entry.info())
            .collect()
    }

    /// Takes the error of the last failed write, if any. The CTAP layer only sees
    /// `CTAP1_ERR_OTHER` for it; this is where the cause is kept.
    pub fn take_last_error(&mut self) -> Option<StoreError> {
        self.last_error.take()
    }

    /// Adds `passkey` (dated now), replacing any passkey of the same relying party and user
    /// handle, and writes the store.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the file cannot be written; the store is then unchanged.
    pub fn insert(&mut self, passkey: Passkey) -> Result<(), StoreError> {
        let created_at_ms = (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let entry = Entry {
            passkey,
            created_at_ms,
        };
        let replaced = |e: &Entry| {
            let new = &entry.passkey;
            let same_account = e.passkey.rp_id == new.rp_id
                && new.user_handle.is_some()
                && e.passkey.user_handle == new.user_handle;
            same_account || e.passkey.credential_id == new.credential_id
        };
        let mut next: Vec<&Entry> = self.entries.iter().filter(|e| !replaced(e)).collect();
        next.push(&entry);
        self.write(&next)?;
        self.entries.retain(|e| !replaced(e));
        self.entries.push(entry);
        Ok(())
    }

    /// Replaces the stored passkey with `passkey`'s credential id (its counter, typically) and
    /// writes the store. Returns `false` if no such passkey is stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the file cannot be written; the store is then unchanged.
    pub fn update(&mut self, passkey: &Passkey) -> Result<bool, StoreError> {
        let Some(index) = self
            .entries
            .iter()
            .position(|e| e.passkey.credential_id == passkey.credential_id)
        else {
            return Ok(false);
        };
        let updated = Entry {
            passkey: passkey.clone(),
            created_at_ms: self.entries[index].created_at_ms,
        };
        let next: Vec<&Entry> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| if i == index { &updated } else { e })
            .collect();
        self.write(&next)?;
        self.entries[index] = updated;
        Ok(true)
    }

    /// Entries of `rp_id` with one of `ids` when given, otherwise with `user_handle` when given;
    /// newest first. With ids the user handle is not checked: an exclude list names credentials
    /// bound to the relying party whatever their account (CTAP 2.2 §6.1 step 3).
    fn matching<'a>(
        &'a self,
        ids: Option<&'a [PublicKeyCredentialDescriptor]>,
        rp_id: &'a str,
        user_handle: Option<&'a [u8]>,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let mut found: Vec<&Entry> = self
            .entries
            .iter()
            .rev()
            .filter(move |e| e.passkey.rp_id == rp_id)
            .filter(move |e| match ids {
                Some(ids) => ids.iter().any(|d| *d.id == *e.passkey.credential_id),
                None => user_handle.is_none_or(|h| {
                    e.passkey.user_handle.as_deref().map(|b| b.as_slice()) == Some(h)
                }),
            })
            .collect();
        // Newest first; entries are in insertion order, so ties keep the later one first.
        found.sort_by_key(|e| std::cmp::Reverse(e.created_at_ms));
        found.into_iter()
    }

    fn write(&self, entries: &[&Entry]) -> Result<(), StoreError> {
        let document = Document {
            version: FORMAT_VERSION,
            passkeys: entries
                .iter()
                .map(|e| e.record())
                .collect::<Result<_, _>>()
                .map_err(|source| StoreError::Io {
                    op: "encode a key for",
                    path: self.path(),
                    source,
                })?,
        };
        let json =
            Zeroizing::new(
                serde_json::to_vec_pretty(&document).map_err(|e| StoreError::Io {
                    op: "encode",
                    path: self.path(),
                    source: std::io::Error::other(e),
                })?,
            );
        write_atomically(&self.dir, &json)
    }
}

impl Entry {
    fn info(&self) -> PasskeyInfo {
        let p = &self.passkey;
        PasskeyInfo {
            credential_id: p.credential_id.to_vec(),
            rp_id: p.rp_id.clone(),
            user_handle: p.user_handle.as_ref().map(|h| h.to_vec()),
            user_name: p.username.clone(),
            user_display_name: p.user_display_name.clone(),
            counter: p.counter,
            created_at_ms: self.created_at_ms,
        }
    }

    fn record(&self) -> Result<Record, std::io::Error> {
        let p = &self.passkey;
        let key = Zeroizing::new(
            p.key
                .clone()
                .to_vec()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        Ok(Record {
            credential_id: URL_SAFE_NO_PAD.encode(&*p.credential_id),
            rp_id: p.rp_id.clone(),
            user_handle: p.user_handle.as_ref().map(|h| URL_SAFE_NO_PAD.encode(&**h)),
            user_name: p.username.clone(),
            user_display_name: p.user_display_name.clone(),
            private_key: SecretText(URL_SAFE_NO_PAD.encode(&*key)),
            counter: p.counter,
            created_at_ms: self.created_at_ms,
        })
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<Entry>, CorruptReason> {
    // Read the version first so that a future format is reported as such, not as bad JSON.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let json_error = |e: serde_json::Error| CorruptReason::Json {
        line: e.line(),
        column: e.column(),
    };
    let version: Version = serde_json::from_slice(bytes).map_err(json_error)?;
    if version.version != FORMAT_VERSION {
        return Err(CorruptReason::Version(version.version));
    }
    let document: Document = serde_json::from_slice(bytes).map_err(json_error)?;
    let mut entries: Vec<Entry> = Vec::with_capacity(document.passkeys.len());
    for (index, record) in document.passkeys.into_iter().enumerate() {
        let b64 = |field: &'static str, value: &str| {
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| CorruptReason::Base64 { index, field })
        };
        let credential_id = b64("credential_id", &record.credential_id)?;
        if credential_id.is_empty()
            || entries
                .iter()
                .any(|e| *e.passkey.credential_id == credential_id)
        {
            return Err(CorruptReason::CredentialId { index });
        }
        let user_handle = record
            .user_handle
            .as_deref()
            .map(|h| b64("user_handle", h))
            .transpose()?;
        let key_bytes = Zeroizing::new(b64("private_key", &record.private_key.0)?);
        let key = CoseKey::from_slice(&key_bytes).map_err(|_| CorruptReason::CoseKey { index })?;
        entries.push(Entry {
            passkey: Passkey {
                key,
                credential_id: credential_id.into(),
                rp_id: record.rp_id,
                user_handle: user_handle.map(Into::into),
                username: record.user_name,
                user_display_name: record.user_display_name,
                counter: record.counter,
                extensions: Default::default(),
            },
            created_at_ms: record.created_at_ms,
        });
    }
    Ok(entries)
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StoreError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `<dir>/passkeys.json` through a 0600 temporary file, fsync and rename.
fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let temp = dir.join(TEMP_FILE);
    let target = dir.join(STORE_FILE);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { op, path, source }
    };
    // A temporary file left by a crash is stale: start over.
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &temp)(e)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temp).map_err(io("create", &temp))?;
    file.write_all(bytes).map_err(io("write", &temp))?;
    file.sync_all().map_err(io("sync", &temp))?;
    drop(file);
    fs::rename(&temp, &target).map_err(io("replace", &target))?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[async_trait::async_trait]
impl CredentialStore for PasskeyStore {
    type PasskeyItem = Passkey;

    async fn find_credentials(
        &self,
        ids: Option<&[PublicKeyCredentialDescriptor]>,
        rp_id: &str,
        user_handle: Option<&[u8]>,
    ) -> Result<Vec<Passkey>, StatusCode> {
        // An empty allow list means "any passkey of this relying party".
        let ids = ids.filter(|ids| !ids.is_empty());
        Ok(self
            .matching(ids, rp_id, user_handle)
            .map(|e| e.passkey.clone())
            .collect())
    }

    async fn save_credential(
        &mut self,
        cred: Passkey,
        _user: PublicKeyCredentialUserEntity,
        _rp: PublicKeyCredentialRpEntity,
        _options: Options,
    ) -> Result<(), StatusCode> {
        self.insert(cred).map_err(|e| {
            tracing::warn!(error = %e, "passkey store write failed");
            self.last_error = Some(e);
            StatusCode::from(Ctap2Error::Other)
        })
    }

    async fn update_credential(&mut self, cred: &Passkey) -> Result<(), StatusCode> {
        match self.update(cred) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Ctap2Error::NoCredentials.into()),
            Err(e) => {
                tracing::warn!(error = %e, "passkey store write failed");
                self.last_error = Some(e);
                Err(Ctap2Error::Other.into())
            }
        }
    }

    async fn get_info(&self) -> StoreInfo {
        StoreInfo {
            // A phone keeps every passkey discoverable.
            discoverability: DiscoverabilitySupport::ForcedDiscoverable,
        }
    }
}
