//! `gantry backup` and `gantry restore`: the whole store (either backend) in one versioned
//! JSON file, and back into an empty store.
//!
//! A backup is one `range("")`, so one consistent snapshot at one store revision. A SQLite
//! store is opened read-only (`SqliteStore::open_read_only`), which is safe next to the
//! running server that owns the file. A restore writes the keys in bounded transactions,
//! each guarded by "none of these keys exists", so it never overwrites anything.

use base64::Engine;
use clap::Args;
use gantry_store::{Compare, EtcdStore, KvStore, SqliteStore, StoreLocation, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The marker in every backup file's `format` member.
pub const FORMAT: &str = "gantry-backup";
/// The layout this Gantry writes and reads.
pub const VERSION: u64 = 1;
/// Keys per restore transaction: under etcd's default `--max-txn-ops` of 128.
const KEYS_PER_TXN: usize = 100;
/// Key and value bytes per restore transaction: well under etcd's default
/// `--max-request-bytes` of 1.5 MiB. A larger single entry goes alone.
const BYTES_PER_TXN: usize = 512 * 1024;
/// A restore this big reports progress every this many keys.
const PROGRESS_EVERY: usize = 1000;

pub const BACKUP_HELP: &str = "\
Examples:
  gantry backup --out gantry-backup.json                  # the store of ./.gantry
  gantry backup --data-dir /var/lib/gantry --out /backups/gantry-$(date +%F).json
  gantry backup --store etcd://10.0.0.1:2379,10.0.0.2:2379/gantry --out backup.json

The file is JSON: {\"format\": \"gantry-backup\", \"version\": 1, \"revision\", \"takenAt\",
\"keyCount\", \"keys\": [{\"key\", \"value\" (base64)}]}, written atomically with mode 0600. It
holds everything in the store, access keys' secrets and sealed secret values included: keep
it private. Sealed values open only with the same master key (<data-dir>/master.key or
GANTRY_MASTER_KEY), which is not in the backup: keep a copy of it, apart from the backups.
Container logs (logs.db) and the audit log (audit.db) are not in the store.

A running control plane may keep running: its SQLite file is read without writing to it or
holding up its writes. See docs/BACKUP.md.";

pub const RESTORE_HELP: &str = "\
Examples:
  gantry restore --data-dir /var/lib/gantry-new --in backup.json     # a new SQLite store
  gantry restore --store etcd://10.0.0.1:2379/gantry-restored --in backup.json

Restore writes only into an empty store (a new SQLite file, or an etcd namespace holding
no key), with the control plane stopped. Every key gets back its value; store revisions
start afresh, so they differ from the source's (nothing in Gantry's records depends on
them). Then put the master key in place (copy master.key into the data directory, or set
GANTRY_MASTER_KEY) before starting the control plane on the restored store. See
docs/BACKUP.md.";

#[derive(Args)]
pub struct BackupArgs {
    /// The store to back up: sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]
    /// (namespace `gantry` by default). Without it, the SQLite store of --data-dir.
    #[arg(long, value_name = "LOCATION", env = "GANTRY_STORE")]
    pub store: Option<StoreLocation>,
    /// The data directory of `gantry server` or `gantry dev` whose store (state.db) to back
    /// up; ignored with --store.
    #[arg(long, default_value = ".gantry", env = "GANTRY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Where to write the backup. An existing file is replaced, atomically.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The store to restore into, which must hold no key: sqlite:PATH (created if absent) or
    /// etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]. Without it, the SQLite store of
    /// --data-dir.
    #[arg(long, value_name = "LOCATION", env = "GANTRY_STORE")]
    pub store: Option<StoreLocation>,
    /// The data directory whose store (state.db) to restore into (created if absent);
    /// ignored with --store.
    #[arg(long, default_value = ".gantry", env = "GANTRY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The backup file, as `gantry backup` wrote it.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
}

/// A backup file, as written.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackupFile {
    format: String,
    version: u64,
    /// The Gantry that wrote it.
    gantry_version: String,
    /// The store it was taken from (`sqlite:…` or `etcd://…`).
    source: String,
    /// The source store's revision the snapshot was read at.
    revision: i64,
    /// RFC 3339, UTC.
    taken_at: String,
    key_count: usize,
    keys: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    /// The value's bytes, base64 (standard alphabet, padded).
    value: String,
}

fn location(store: Option<StoreLocation>, data_dir: &Path) -> StoreLocation {
    store.unwrap_or_else(|| StoreLocation::Sqlite(data_dir.join("state.db")))
}

pub async fn backup(args: BackupArgs) -> Result<ExitCode, String> {
    let location = location(args.store, &args.data_dir);
    let store: Arc<dyn KvStore> = match &location {
        StoreLocation::Sqlite(path) => {
            Arc::new(SqliteStore::open_read_only(path).map_err(|e| {
                format!(
                    "cannot open {location}: {e}. Name the control plane's data directory with --data-dir, or its store with --store."
                )
            })?)
        }
        StoreLocation::Etcd(config) => Arc::new(
            EtcdStore::connect(config)
                .await
                .map_err(|e| format!("cannot connect to {location}: {e}"))?,
        ),
    };
    let (kvs, revision) = store
        .range("")
        .await
        .map_err(|e| format!("cannot read {location}: {e}"))?;
    let taken_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("cannot format the time: {e}"))?;
    let file = BackupFile {
        format: FORMAT.into(),
        version: VERSION,
        gantry_version: env!("CARGO_PKG_VERSION").into(),
        source: location.to_string(),
        revision,
        taken_at,
        key_count: kvs.len(),
        keys: kvs
            .into_iter()
            .map(|kv| Entry {
                value: base64::engine::general_purpose::STANDARD.encode(&kv.value),
                key: kv.key,
            })
            .collect(),
    };
    let json =
        serde_json::to_vec_pretty(&file).map_err(|e| format!("cannot encode the backup: {e}"))?;
    write_private_atomically(&args.out, &json)?;
    println!(
        "Backed up {} of {location} (revision {revision}) to {} ({}, mode 0600).",
        keys(file.key_count),
        args.out.display(),
        human_bytes(json.len()),
    );
    println!(
        "It holds access keys' secrets and sealed secret values: keep it private. Sealed values open only with this control plane's master key (<data-dir>/master.key or GANTRY_MASTER_KEY), which is not in it: keep a copy of the key, apart from the backups."
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to `path` with mode 0600: to a temporary file beside it, fsynced, renamed
/// over `path`, and the directory fsynced, so `path` is either the old file or all of the new.
fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("--out {} does not name a file", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    if !dir.is_dir() {
        return Err(format!(
            "cannot write {}: there is no directory {} (create it first)",
            path.display(),
            dir.display()
        ));
    }
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// "1 key", "2 keys".
fn keys(n: usize) -> String {
    if n == 1 {
        "1 key".into()
    } else {
        format!("{n} keys")
    }
}

fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / (1 << 10) as f64),
        n => format!("{n} bytes"),
    }
}

/// A backup file checked whole: what it says it is (`keys` emptied), and every entry decoded,
/// sorted by key.
struct Checked {
    file: BackupFile,
    entries: Vec<(String, Vec<u8>)>,
}

/// Reads and checks the backup at `path` before anything is written anywhere.
fn read_backup(path: &Path) -> Result<Checked, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        format!("{shown} is not a Gantry backup: it is not JSON, or is cut short ({e})")
    })?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(format!(
            "{shown} is not a Gantry backup: it has no \"format\": \"{FORMAT}\" marker. Restore a file `gantry backup` wrote."
        ));
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(VERSION) => {}
        Some(v) if v > VERSION => {
            return Err(format!(
                "{shown} is a version {v} Gantry backup, written by Gantry {}; this Gantry ({}) reads version {VERSION}. Restore it with that Gantry or a newer one.",
                value.get("gantryVersion").and_then(|v| v.as_str()).unwrap_or("?"),
                env!("CARGO_PKG_VERSION"),
            ))
        }
        _ => {
            return Err(format!(
                "{shown} is a damaged Gantry backup: its \"version\" is not a version number"
            ))
        }
    }
    let damaged = |what: String| format!("{shown} is a damaged Gantry backup: {what}");
    let file: BackupFile = serde_json::from_value(value).map_err(|e| damaged(e.to_string()))?;
    if file.key_count != file.keys.len() {
        return Err(damaged(format!(
            "it says it holds {} but holds {}",
            keys(file.key_count),
            file.keys.len()
        )));
    }
    let mut file = file;
    let mut entries = std::mem::take(&mut file.keys)
        .into_iter()
        .map(|Entry { key, value }| {
            if key.is_empty() {
                return Err(damaged("it holds an empty key".into()));
            }
            match base64::engine::general_purpose::STANDARD.decode(&value) {
                Ok(value) => Ok((key, value)),
                Err(e) => Err(damaged(format!("the value of {key:?} is not base64 ({e})"))),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(twice) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(damaged(format!("key {:?} appears twice", twice[0].0)));
    }
    Ok(Checked { file, entries })
}

/// Refuses a store that holds any key.
async fn ensure_empty(store: &dyn KvStore, location: &StoreLocation) -> Result<(), String> {
    let (kvs, revision) = store
        .range("")
        .await
        .map_err(|e| format!("cannot read {location}: {e}"))?;
    if kvs.is_empty() {
        return Ok(());
    }
    let fresh = match location {
        StoreLocation::Sqlite(_) => {
            "a new SQLite file (--data-dir NEW_DIRECTORY, or --store sqlite:NEW_FILE)"
        }
        StoreLocation::Etcd(_) => "a new etcd namespace (--store etcd://HOST:PORT/NEW_NAMESPACE)",
    };
    Err(format!(
        "{location} already holds {} (revision {revision}): restore writes only into an empty store, so that it never merges with or overwrites state. Restore into {fresh}, or delete this store first with its control plane stopped.",
        keys(kvs.len())
    ))
}

/// Opens the store to restore into, refusing it if it holds any key. An existing SQLite file
/// is first looked at read-only, so a file in use is never written to.
async fn open_empty(location: &StoreLocation) -> Result<Arc<dyn KvStore>, String> {
    match location {
        StoreLocation::Sqlite(path) => {
            if path.exists() {
                let existing = SqliteStore::open_read_only(path)
                    .map_err(|e| format!("cannot open {location}: {e}"))?;
                ensure_empty(&existing, location).await?;
            } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Like a data directory `gantry server` makes: its owner's alone.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let store =
                SqliteStore::open(path).map_err(|e| format!("cannot open {location}: {e}"))?;
            ensure_empty(&store, location).await?;
            Ok(Arc::new(store))
        }
        StoreLocation::Etcd(config) => {
            let store = EtcdStore::connect(config)
                .await
                .map_err(|e| format!("cannot connect to {location}: {e}"))?;
            ensure_empty(&store, location).await?;
            Ok(Arc::new(store))
        }
    }
}

/// Consecutive runs of `entries` of at most [`KEYS_PER_TXN`] keys and (unless one entry is
/// bigger alone) [`BYTES_PER_TXN`] bytes.
fn batches(entries: &[(String, Vec<u8>)]) -> Vec<&[(String, Vec<u8>)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (key, value)) in entries.iter().enumerate() {
        let size = key.len() + value.len();
        if i > start && (i - start == KEYS_PER_TXN || bytes + size > BYTES_PER_TXN) {
            out.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

pub async fn restore(args: RestoreArgs) -> Result<ExitCode, String> {
    let Checked { file, entries } = read_backup(&args.input)?;
    let location = location(args.store, &args.data_dir);
    let store = open_empty(&location).await?;
    let total = entries.len();
    let mut written = 0;
    let mut revision = store
        .revision()
        .await
        .map_err(|e| format!("cannot read {location}: {e}"))?;
    let partial = |written: usize| {
        format!(
            "{written} of {total} keys were restored before this failed, so {location} may hold part of the backup: delete it, or choose another empty store, and restore again."
        )
    };
    for batch in batches(&entries) {
        let txn = Txn {
            // Keys someone else wrote since the store was found empty are left alone.
            compare: batch
                .iter()
                .map(|(key, _)| Compare::ModRevision {
                    key: key.clone(),
                    rev: 0,
                })
                .collect(),
            success: batch
                .iter()
                .map(|(key, value)| TxnOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            failure: Vec::new(),
        };
        let response = store.txn(txn).await.map_err(|e| {
            format!(
                "cannot write keys {:?} to {:?}: {e}. {}",
                batch[0].0,
                batch[batch.len() - 1].0,
                partial(written)
            )
        })?;
        if !response.succeeded {
            return Err(format!(
                "some of the keys {:?} to {:?} appeared in {location} during the restore: something else writes to it (stop its control plane). {}",
                batch[0].0,
                batch[batch.len() - 1].0,
                partial(written)
            ));
        }
        revision = response.revision;
        let before = written;
        written += batch.len();
        if total > PROGRESS_EVERY && written / PROGRESS_EVERY > before / PROGRESS_EVERY {
            eprintln!("restored {written} of {total} keys");
        }
    }
    println!(
        "Restored {} into {location} (now at revision {revision}) from {}: taken {} from {} at revision {}.",
        keys(total),
        args.input.display(),
        file.taken_at,
        file.source,
        file.revision,
    );
    println!(
        "Store revisions start afresh and differ from the source's. Before starting the control plane on this store, put the source's master key in place (copy its master.key into the data directory, mode 0600, or set GANTRY_MASTER_KEY): sealed secret values open only with it."
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(sizes: &[usize]) -> Vec<(String, Vec<u8>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("k{i:04}"), vec![0; n]))
            .collect()
    }

    #[test]
    fn batches_are_bounded_in_keys_and_bytes() {
        let lens = |b: Vec<&[(String, Vec<u8>)]>| b.iter().map(|b| b.len()).collect::<Vec<_>>();
        assert!(batches(&[]).is_empty());
        assert_eq!(lens(batches(&entries(&[1; 250]))), [100, 100, 50]);
        // 200 KiB values: two fit under 512 KiB, a third does not.
        assert_eq!(lens(batches(&entries(&[200 << 10; 5]))), [2, 2, 1]);
        // An entry bigger than the bound goes alone, not in an empty batch.
        assert_eq!(lens(batches(&entries(&[10, 600 << 10, 10]))), [1, 1, 1]);
        let all = entries(&[7; 1234]);
        assert_eq!(batches(&all).concat(), all);
    }
}
