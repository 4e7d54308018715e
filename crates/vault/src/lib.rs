//! Encryption at rest for secret values (Secrets Manager secrets, SSM SecureStrings).
//!
//! Envelope encryption, as KMS does it: every value is sealed with AES-256-GCM under its own
//! random data key, and the data key is sealed under a master key that never enters the
//! store. A record holds only a [`Sealed`]: the master key's id, the wrapped data key and the
//! ciphertext. The master keys live in a keyring file (mode 0600, created on first start) or
//! come from the environment (`GANTRY_MASTER_KEY`).
//!
//! Rotation without downtime: [`Vault::begin_rotation`] makes a new primary key while the old
//! ones stay readable, the caller re-wraps every record's data key ([`Vault::rewrap`]: the
//! ciphertext of the value is untouched), and [`Vault::finish_rotation`] drops the keys no
//! record uses any more. Reads work throughout.
//!
//! The additional authenticated data binds a ciphertext to the record it belongs to (a
//! secret's ARN and version id), so ciphertexts swapped between records in the store fail to
//! open instead of answering with another secret's value.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// The environment variable that supplies master keys instead of a file: base64 of 32 bytes,
/// several separated by commas (the first seals, all open).
pub const MASTER_KEY_ENV: &str = "GANTRY_MASTER_KEY";

const NONCE_LEN: usize = 12;
const DATA_KEY_AAD: &[u8] = b"gantry-vault/data-key/v1";

/// A sealed value as records store it. Contains no plaintext and no key material that opens
/// without the master key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sealed {
    /// Id of the master key that wraps `data_key`.
    pub master_key: String,
    /// base64(nonce ‖ AES-256-GCM(master key, data key)).
    pub data_key: String,
    /// base64(nonce ‖ AES-256-GCM(data key, value)).
    pub ciphertext: String,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed(master key {})", self.master_key)
    }
}

/// A decrypted value. Its memory is wiped when dropped; `Debug` never prints it.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The value as text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

/// A value already in the clear (a String parameter's, say), handed out as a [`Plaintext`]
/// like an opened one, so that readers of either kind get the same wiping, redacted type.
impl From<Vec<u8>> for Plaintext {
    fn from(bytes: Vec<u8>) -> Self {
        Plaintext(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultError {
    /// The keyring cannot be read or written, or is malformed; the message says what to do.
    Keyring(String),
    /// The master key a value names is not in the keyring.
    UnknownMasterKey(String),
    /// Authentication failed: wrong key, tampered ciphertext or a value moved between records.
    Corrupt,
    /// Rotation is not possible with this key source; the message says what to do instead.
    Rotation(String),
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultError::Keyring(m) | VaultError::Rotation(m) => f.write_str(m),
            VaultError::UnknownMasterKey(id) => write!(
                f,
                "master key {id} is not in the keyring: was the key file replaced or {MASTER_KEY_ENV} changed?"
            ),
            VaultError::Corrupt => f.write_str(
                "a sealed value did not authenticate (wrong master key or tampered store record)",
            ),
        }
    }
}

impl std::error::Error for VaultError {}

/// The master keys: one primary that seals, others that still open values sealed before a
/// rotation.
#[derive(Clone)]
struct Keyring {
    primary: String,
    keys: BTreeMap<String, Zeroizing<[u8; 32]>>,
}

/// The keyring file's shape.
#[derive(Serialize, Deserialize)]
struct KeyringFile {
    primary: String,
    /// Key id → base64 of the 32-byte key.
    keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Environment,
}

/// Where the master keys come from, as a human reads it (`gantry keys status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyringStatus {
    /// `file:<path>` or `environment:GANTRY_MASTER_KEY`.
    pub source: String,
    pub primary: String,
    pub keys: Vec<String>,
}

pub struct Vault {
    source: Source,
    ring: RwLock<Arc<Keyring>>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vault({:?})", self.source)
    }
}

fn key_id(key: &[u8; 32]) -> String {
    let digest = Sha256::digest(key);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("mk-{hex}")
}

fn new_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(key.as_mut());
    key
}

fn decode_key(text: &str, what: &str) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| {
        VaultError::Keyring(format!("{what}: a master key must be base64 of 32 bytes"))
    })?);
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        VaultError::Keyring(format!(
            "{what}: a master key must be 32 bytes (got {})",
            bytes.len()
        ))
    })?;
    Ok(Zeroizing::new(key))
}

fn seal_with(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| VaultError::Corrupt)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_with(
    key: &[u8; 32],
    sealed_b64: &str,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let sealed = B64.decode(sealed_b64).map_err(|_| VaultError::Corrupt)?;
    if sealed.len() < NONCE_LEN {
        return Err(VaultError::Corrupt);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Corrupt)
}

impl Vault {
    /// The master keys from `GANTRY_MASTER_KEY` when `env_value` is given, else from the
    /// keyring file at `path`, created (mode 0600, with one new key) when absent.
    pub fn load(path: &Path, env_value: Option<&str>) -> Result<Vault, VaultError> {
        match env_value {
            Some(v) if !v.trim().is_empty() => Vault::from_env(v),
            _ => Vault::open_or_create(path),
        }
    }

    /// Keys from the environment's value: base64 keys separated by commas, the first primary.
    pub fn from_env(value: &str) -> Result<Vault, VaultError> {
        let mut keys = BTreeMap::new();
        let mut primary = None;
        for part in value.split(',').filter(|p| !p.trim().is_empty()) {
            let key = decode_key(part, MASTER_KEY_ENV)?;
            let id = key_id(&key);
            primary.get_or_insert_with(|| id.clone());
            keys.insert(id, key);
        }
        let primary = primary.ok_or_else(|| {
            VaultError::Keyring(format!("{MASTER_KEY_ENV} is set but holds no key"))
        })?;
        Ok(Vault {
            source: Source::Environment,
            ring: RwLock::new(Arc::new(Keyring { primary, keys })),
        })
    }

    /// The keyring file at `path`, created with one new key when it does not exist. A file
    /// that others may read is refused: the master key opens every secret.
    pub fn open_or_create(path: &Path) -> Result<Vault, VaultError> {
        let ring = if path.exists() {
            read_keyring(path)?
        } else {
            let key = new_key();
            let id = key_id(&key);
            let ring = Keyring {
                primary: id.clone(),
                keys: BTreeMap::from([(id, key)]),
            };
            write_keyring(path, &ring)?;
            ring
        };
        Ok(Vault {
            source: Source::File(path.to_path_buf()),
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    fn ring(&self) -> Arc<Keyring> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_ring(&self, ring: Keyring) {
        let mut slot = match self.ring.write() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(ring);
    }

    /// The id of the key that seals new values.
    pub fn primary(&self) -> String {
        self.ring().primary.clone()
    }

    pub fn status(&self) -> KeyringStatus {
        let ring = self.ring();
        KeyringStatus {
            source: match &self.source {
                Source::File(p) => format!("file:{}", p.display()),
                Source::Environment => format!("environment:{MASTER_KEY_ENV}"),
            },
            primary: ring.primary.clone(),
            keys: ring.keys.keys().cloned().collect(),
        }
    }

    /// Seals `plaintext` under a new data key wrapped by the primary master key. `aad` names
    /// the record the value belongs to; the same `aad` must be given to open it.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, VaultError> {
        let ring = self.ring();
        let master = ring
            .keys
            .get(&ring.primary)
            .ok_or_else(|| VaultError::UnknownMasterKey(ring.primary.clone()))?;
        let data_key = new_key();
        let value = seal_with(&data_key, plaintext, aad)?;
        let wrapped = seal_with(master, data_key.as_ref(), DATA_KEY_AAD)?;
        Ok(Sealed {
            master_key: ring.primary.clone(),
            data_key: B64.encode(wrapped),
            ciphertext: B64.encode(value),
        })
    }

    fn data_key(&self, ring: &Keyring, sealed: &Sealed) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let master = ring
            .keys
            .get(&sealed.master_key)
            .ok_or_else(|| VaultError::UnknownMasterKey(sealed.master_key.clone()))?;
        let bytes = open_with(master, &sealed.data_key, DATA_KEY_AAD)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Corrupt)?;
        Ok(Zeroizing::new(key))
    }

    /// Opens a sealed value; `aad` must be what it was sealed with.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Plaintext, VaultError> {
        let ring = self.ring();
        let data_key = self.data_key(&ring, sealed)?;
        open_with(&data_key, &sealed.ciphertext, aad).map(Plaintext)
    }

    /// Whether `sealed` is wrapped by a key other than the primary (a rotation must rewrap it).
    pub fn needs_rewrap(&self, sealed: &Sealed) -> bool {
        sealed.master_key != self.ring().primary
    }

    /// The same value with its data key wrapped by the primary master key; the ciphertext is
    /// untouched, so no plaintext is produced.
    pub fn rewrap(&self, sealed: &Sealed) -> Result<Sealed, VaultError> {
        let ring = self.ring();
        if sealed.master_key == ring.primary {
            return Ok(sealed.clone());
        }
        let data_key = self.data_key(&ring, sealed)?;
        let master = ring
            .keys
            .get(&ring.primary)
            .ok_or_else(|| VaultError::UnknownMasterKey(ring.primary.clone()))?;
        let wrapped = seal_with(master, data_key.as_ref(), DATA_KEY_AAD)?;
        Ok(Sealed {
            master_key: ring.primary.clone(),
            data_key: B64.encode(wrapped),
            ciphertext: sealed.ciphertext.clone(),
        })
    }

    /// Step one of a rotation: a new primary key, written to the keyring file beside the old
    /// ones (which still open what they sealed). Returns the new key's id. With keys from the
    /// environment there is nothing to write: the operator puts the new key first in
    /// `GANTRY_MASTER_KEY` and restarts; the rotation then only rewraps.
    pub fn begin_rotation(&self) -> Result<String, VaultError> {
        let Source::File(path) = &self.source else {
            return Ok(self.primary());
        };
        let mut ring = (*self.ring()).clone();
        let key = new_key();
        let id = key_id(&key);
        ring.keys.insert(id.clone(), key);
        ring.primary = id.clone();
        write_keyring(path, &ring)?;
        self.set_ring(ring);
        Ok(id)
    }

    /// Step three: once no record names them, the keys other than the primary are dropped from
    /// the keyring file. Returns the retired ids. With keys from the environment nothing is
    /// dropped; the ids returned are the ones the operator may now remove from
    /// `GANTRY_MASTER_KEY`.
    pub fn finish_rotation(&self) -> Result<Vec<String>, VaultError> {
        let mut ring = (*self.ring()).clone();
        let retired: Vec<String> = ring
            .keys
            .keys()
            .filter(|k| **k != ring.primary)
            .cloned()
            .collect();
        let Source::File(path) = &self.source else {
            return Ok(retired);
        };
        ring.keys.retain(|k, _| *k == ring.primary);
        write_keyring(path, &ring)?;
        self.set_ring(ring);
        Ok(retired)
    }
}

fn read_keyring(path: &Path) -> Result<Keyring, VaultError> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            VaultError::Keyring(format!("cannot read the master key file {shown}: {e}"))
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(VaultError::Keyring(format!(
                "the master key file {shown} can be read by others; run `chmod 600 {shown}` and start again"
            )));
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        VaultError::Keyring(format!("cannot read the master key file {shown}: {e}"))
    })?);
    let file: KeyringFile = serde_json::from_str(&text).map_err(|e| {
        VaultError::Keyring(format!("the master key file {shown} is malformed: {e}"))
    })?;
    let mut keys = BTreeMap::new();
    for (id, encoded) in &file.keys {
        let key = decode_key(encoded, &shown.to_string())?;
        if key_id(&key) != *id {
            return Err(VaultError::Keyring(format!(
                "the master key file {shown} is malformed: key {id} does not match its id"
            )));
        }
        keys.insert(id.clone(), key);
    }
    if !keys.contains_key(&file.primary) {
        return Err(VaultError::Keyring(format!(
            "the master key file {shown} is malformed: its primary key {} is missing",
            file.primary
        )));
    }
    Ok(Keyring {
        primary: file.primary,
        keys,
    })
}

/// Writes the keyring atomically: a new file with mode 0600 beside it, synced, then renamed
/// over the old one and the directory synced, so a crash leaves either the old keyring or
/// the new one, and the new one stays once this returns.
fn write_keyring(path: &Path, ring: &Keyring) -> Result<(), VaultError> {
    let shown = path.display();
    let fail = |e: std::io::Error| {
        VaultError::Keyring(format!("cannot write the master key file {shown}: {e}"))
    };
    let file = KeyringFile {
        primary: ring.primary.clone(),
        keys: ring
            .keys
            .iter()
            .map(|(id, k)| (id.clone(), B64.encode(k.as_ref())))
            .collect(),
    };
    let text = Zeroizing::new(
        serde_json::to_string_pretty(&file)
            .map_err(|e| VaultError::Keyring(format!("cannot encode the keyring: {e}")))?,
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    // A file left by an earlier attempt could carry wider permissions than a new one gets.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options.open(&tmp).map_err(fail)?;
    out.write_all(text.as_bytes()).map_err(fail)?;
    out.sync_all().map_err(fail)?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(fail)?;
    // The rename is durable only once the directory is: the store acknowledges rewrapped
    // records only after they are on disk, and they must not outlive the key that opens them.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
