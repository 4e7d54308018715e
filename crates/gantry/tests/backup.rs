//! `gantry backup` and `gantry restore` with real processes: a backup of a running `gantry dev`
//! (state made through the AWS SDK, sealed secrets included), restored into a fresh etcd and a
//! fresh SQLite file, the restored stores read directly and compared with the source, and a
//! `gantry server` on the restored file serving the same state with the same keys. Restore
//! refuses stores that hold keys and files that are no (readable) backup, and a restore into
//! an etcd configured as shipped (128 operations per transaction) keeps under its limits.
//!
//! Docker (for `gantry dev`) and etcd (Debian's etcd-server) are required.

mod common;

use base64::Engine;
use common::cli::gantry_within;
use common::*;
use gantry_store::testing::EtcdCluster;
use gantry_store::{EtcdStore, KeyValue, KvStore, SqliteStore, Txn, TxnOp};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// `gantry <args>`, which must succeed; its output.
async fn gantry_ok(args: &[&str]) -> common::cli::Out {
    let out = gantry_within(LIMIT, args).await;
    assert!(
        out.status.success(),
        "`gantry {}` failed:\n{}",
        args.join(" "),
        out.text()
    );
    out
}

/// `gantry <args>`, which must fail saying `wanted`; its output.
async fn gantry_fails(args: &[&str], wanted: &str) -> common::cli::Out {
    let out = gantry_within(LIMIT, args).await;
    assert!(
        !out.status.success(),
        "`gantry {}` succeeded:\n{}",
        args.join(" "),
        out.text()
    );
    assert!(
        out.stderr.contains(wanted),
        "`gantry {}` failed without saying {wanted:?}:\n{}",
        args.join(" "),
        out.text()
    );
    out
}

type Pairs = BTreeMap<String, Vec<u8>>;

fn pairs(kvs: Vec<KeyValue>) -> Pairs {
    kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

/// The keys and values a backup file holds.
fn backup_pairs(path: &Path) -> (Value, Pairs) {
    let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let keys = file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(e["value"].as_str().unwrap())
                .unwrap();
            (e["key"].as_str().unwrap().to_string(), value)
        })
        .collect();
    (file, keys)
}

async fn sqlite_pairs(path: &Path) -> (Pairs, Vec<KeyValue>) {
    let (kvs, _) = SqliteStore::open_read_only(path)
        .unwrap()
        .range("")
        .await
        .unwrap();
    (pairs(kvs.clone()), kvs)
}

async fn etcd_pairs(etcd: &EtcdCluster, namespace: &str) -> (Pairs, i64) {
    let store = EtcdStore::connect(&etcd.config(namespace)).await.unwrap();
    let (kvs, revision) = store.range("").await.unwrap();
    (pairs(kvs), revision)
}

async fn start_etcd(dir: &Path, max_txn_ops: u32) -> EtcdCluster {
    EtcdCluster::start_with_max_txn_ops(dir, 1, max_txn_ops)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A cluster, a task definition, a SecureString parameter and a secret in a running `gantry
/// dev`, backed up while it runs; the backup restored into etcd and into a new SQLite file,
/// both identical to the source as of the backup's revision; a `gantry server` on the
/// restored file answers with the same state, the same access key and the same secrets.
#[tokio::test]
async fn a_running_dev_backed_up_restores_into_etcd_and_sqlite_and_serves_again() {
    let mut dev = Dev::start().await;
    let data = dev.dir.path().join("data");
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("backup.json");

    let cluster = unique("kept");
    dev.client
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster");
    let family = unique("web");
    register(
        &dev.client,
        &family,
        vec![busybox_container("web", &["sleep", "60"])],
    )
    .await;
    let parameter = format!("/{}/db-password", unique("app"));
    let (status, body) = signed_json(
        &dev.endpoint,
        &dev.keys,
        "ssm",
        "AmazonSSM.PutParameter",
        &json!({"Name": parameter, "Value": "parameter-plaintext", "Type": "SecureString"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let secret = unique("api-token");
    let (status, body) = signed_json(
        &dev.endpoint,
        &dev.keys,
        "secretsmanager",
        "secretsmanager.CreateSecret",
        &json!({"Name": secret, "SecretString": "secret-plaintext"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The backup, while dev runs and is written to: none of those writes may fail.
    let backing_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writes = {
        let client = dev.client.clone();
        let backing_up = backing_up.clone();
        tokio::spawn(async move {
            let mut made = 0;
            while made == 0 || backing_up.load(std::sync::atomic::Ordering::SeqCst) {
                client
                    .create_cluster()
                    .cluster_name(unique("during"))
                    .send()
                    .await
                    .expect("CreateCluster during the backup");
                made += 1;
            }
            made
        })
    };
    let out = gantry_ok(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
    ])
    .await;
    backing_up.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(writes.await.unwrap() > 0);
    assert_eq!(mode(&backup), 0o600);
    let (file, backed_up) = backup_pairs(&backup);
    assert_eq!(file["format"], "gantry-backup");
    assert_eq!(file["version"], 1);
    assert_eq!(file["keyCount"], backed_up.len());
    let revision = file["revision"].as_i64().unwrap();
    assert!(
        out.stdout.contains(&format!(
            "Backed up {} keys of sqlite:{}",
            backed_up.len(),
            data.join("state.db").display()
        )) && out.stdout.contains(&format!("(revision {revision})")),
        "{}",
        out.text()
    );
    for wanted in [&cluster, &family, &parameter, &secret] {
        assert!(
            backed_up.keys().any(|k| k.contains(wanted.as_str())),
            "no key names {wanted}: {:?}",
            backed_up.keys()
        );
    }
    // Nothing in clear: the sealed values stay sealed in the file.
    let text = std::fs::read_to_string(&backup).unwrap();
    let all_values: Vec<u8> = backed_up.values().flatten().copied().collect();
    for plaintext in ["parameter-plaintext", "secret-plaintext"] {
        assert!(!text.contains(plaintext));
        assert!(!String::from_utf8_lossy(&all_values).contains(plaintext));
    }

    // Made after the backup: not in it.
    let later = unique("later");
    dev.client
        .create_cluster()
        .cluster_name(&later)
        .send()
        .await
        .expect("CreateCluster after the backup");
    dev.proc.kill9();

    // The source as of the backup: every key last written at or before its revision is in
    // it with the same value; what it holds besides was written or deleted since.
    let (source, source_kvs) = sqlite_pairs(&data.join("state.db")).await;
    for kv in &source_kvs {
        if kv.mod_revision <= revision {
            assert_eq!(
                backed_up.get(&kv.key),
                Some(&kv.value),
                "{} (mod revision {}) differs from the backup's",
                kv.key,
                kv.mod_revision
            );
        }
    }
    for (key, value) in &backed_up {
        let changed_since = source_kvs
            .iter()
            .find(|kv| &kv.key == key)
            .is_none_or(|kv| kv.mod_revision > revision);
        assert!(
            changed_since || source.get(key) == Some(value),
            "the backup's {key} is not the source's"
        );
    }
    assert!(source.keys().any(|k| k.contains(&later)));
    assert!(!backed_up.keys().any(|k| k.contains(&later)));

    // Into a fresh etcd namespace (etcd's default limits), and into a new data directory.
    let etcd = start_etcd(work.path(), 128).await;
    let etcd_url = format!("{}/restored", etcd.store_url());
    let out = gantry_ok(&[
        "restore",
        "--store",
        &etcd_url,
        "--in",
        backup.to_str().unwrap(),
    ])
    .await;
    assert!(
        out.stdout
            .contains(&format!("Restored {} keys into", backed_up.len())),
        "{}",
        out.text()
    );
    let (in_etcd, etcd_revision) = etcd_pairs(&etcd, "restored/").await;
    assert_eq!(in_etcd, backed_up);

    let restored_dir = work.path().join("restored-data");
    gantry_ok(&[
        "restore",
        "--data-dir",
        restored_dir.to_str().unwrap(),
        "--in",
        backup.to_str().unwrap(),
    ])
    .await;
    assert_eq!(mode(&restored_dir), 0o700);
    let (in_sqlite, _) = sqlite_pairs(&restored_dir.join("state.db")).await;
    assert_eq!(in_sqlite, backed_up);

    // A second restore into either is refused, and changes nothing.
    gantry_fails(
        &[
            "restore",
            "--store",
            &etcd_url,
            "--in",
            backup.to_str().unwrap(),
        ],
        "restore writes only into an empty store",
    )
    .await;
    assert_eq!(
        etcd_pairs(&etcd, "restored/").await,
        (in_etcd, etcd_revision)
    );
    let restored_db = restored_dir.join("state.db");
    let before = SqliteStore::open_read_only(&restored_db)
        .unwrap()
        .revision()
        .await
        .unwrap();
    let out = gantry_fails(
        &[
            "restore",
            "--store",
            &format!("sqlite:{}", restored_db.display()),
            "--in",
            backup.to_str().unwrap(),
        ],
        &format!("already holds {} keys", backed_up.len()),
    )
    .await;
    assert!(out.stderr.contains("a new SQLite file"), "{}", out.text());
    let after = SqliteStore::open_read_only(&restored_db).unwrap();
    assert_eq!(after.revision().await.unwrap(), before);
    assert_eq!(pairs(after.range("").await.unwrap().0), backed_up);
    drop(after);

    // A control plane on the restored file, with the source's master key and credentials.
    for file in ["master.key", "credentials"] {
        std::fs::copy(data.join(file), restored_dir.join(file)).unwrap();
    }
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = Proc::spawn(
        &[
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            restored_dir.to_str().unwrap(),
        ],
        work.path().join("server.log"),
    );
    // The source's access key: IAM came back too.
    let client = client_for(&endpoint, &dev.keys).await;
    let clusters = eventually(Duration::from_secs(30), "the restored server", || {
        let client = client.clone();
        let cluster = cluster.clone();
        async move {
            client
                .describe_clusters()
                .clusters(cluster)
                .send()
                .await
                .ok()
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.output()));
    assert_eq!(clusters.clusters()[0].status(), Some("ACTIVE"));
    let later_cluster = client
        .describe_clusters()
        .clusters(&later)
        .send()
        .await
        .unwrap();
    assert!(later_cluster.clusters().is_empty(), "{later_cluster:?}");
    let td = client
        .describe_task_definition()
        .task_definition(&family)
        .send()
        .await
        .expect("DescribeTaskDefinition");
    let td = td.task_definition().unwrap();
    assert_eq!(td.revision(), 1);
    assert_eq!(td.container_definitions()[0].image(), Some(IMAGE));
    let (status, body) = signed_json(
        &endpoint,
        &dev.keys,
        "ssm",
        "AmazonSSM.GetParameter",
        &json!({"Name": parameter, "WithDecryption": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Parameter"]["Value"], "parameter-plaintext");
    let (status, body) = signed_json(
        &endpoint,
        &dev.keys,
        "secretsmanager",
        "secretsmanager.GetSecretValue",
        &json!({"SecretId": secret}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["SecretString"], "secret-plaintext");
    assert!(!server.exited(), "{}", server.output());
    server.kill9();
}

/// Refusals: a store holding keys (unchanged after), files that are not JSON, cut short,
/// someone else's JSON, a newer format, damaged entries; a backup of no store. A refused file
/// creates nothing.
#[tokio::test]
async fn restore_refuses_stores_with_keys_and_files_that_are_no_backup() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source.db");
    let store = SqliteStore::open(&source).unwrap();
    store
        .txn(Txn {
            success: vec![
                TxnOp::Put {
                    key: "clusters/a".into(),
                    value: b"{\"clusterName\":\"a\"}".to_vec(),
                },
                TxnOp::Put {
                    key: "clusters/b".into(),
                    value: vec![0, 159, 146, 150, 255],
                },
            ],
            ..Txn::default()
        })
        .await
        .unwrap();
    drop(store);
    let source_url = format!("sqlite:{}", source.display());
    let backup = work.path().join("b.json");
    let backup_str = backup.to_str().unwrap().to_string();
    let out = gantry_ok(&["backup", "--store", &source_url, "--out", &backup_str]).await;
    assert!(out.stdout.contains("Backed up 2 keys"), "{}", out.text());
    let (valid, _) = backup_pairs(&backup);

    // Onto the store it came from.
    let before = sqlite_pairs(&source).await.1;
    let out = gantry_fails(
        &["restore", "--store", &source_url, "--in", &backup_str],
        "already holds 2 keys",
    )
    .await;
    assert!(
        out.stderr
            .contains("restore writes only into an empty store"),
        "{}",
        out.text()
    );
    assert_eq!(sqlite_pairs(&source).await.1, before);

    // Files that are no backup, each refused before any store is touched.
    let target = work.path().join("never/state.db");
    let target_url = format!("sqlite:{}", target.display());
    let text = std::fs::read_to_string(&backup).unwrap();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut v = valid.clone();
        change(&mut v);
        v.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("not-json", "hello\n".into(), "it is not JSON"),
        (
            "cut-short",
            text[..text.len() / 2].to_string(),
            "it is not JSON, or is cut short",
        ),
        (
            "task-definition",
            json!({"family": "web", "containerDefinitions": []}).to_string(),
            "is not a Gantry backup: it has no \"format\": \"gantry-backup\" marker",
        ),
        (
            "newer",
            with(&|v| v["version"] = json!(2)),
            "is a version 2 Gantry backup",
        ),
        (
            "no-keys",
            with(&|v| {
                v.as_object_mut().unwrap().remove("keys");
            }),
            "is a damaged Gantry backup: missing field `keys`",
        ),
        (
            "bad-base64",
            with(&|v| v["keys"][1]["value"] = json!("not base64!")),
            "the value of \"clusters/b\" is not base64",
        ),
        (
            "count",
            with(&|v| v["keyCount"] = json!(3)),
            "it says it holds 3 keys but holds 2",
        ),
        (
            "twice",
            with(&|v| v["keys"][1]["key"] = json!("clusters/a")),
            "key \"clusters/a\" appears twice",
        ),
    ];
    for (name, contents, wanted) in cases {
        let file = work.path().join(format!("{name}.json"));
        std::fs::write(&file, contents).unwrap();
        gantry_fails(
            &[
                "restore",
                "--store",
                &target_url,
                "--in",
                file.to_str().unwrap(),
            ],
            wanted,
        )
        .await;
        assert!(!target.parent().unwrap().exists(), "{name} created a store");
    }

    // No store to back up: said so, and no file written.
    let out_file = work.path().join("none.json");
    gantry_fails(
        &[
            "backup",
            "--data-dir",
            work.path().join("no-such-dir").to_str().unwrap(),
            "--out",
            out_file.to_str().unwrap(),
        ],
        "there is no store",
    )
    .await;
    assert!(!out_file.exists());
}

/// A store bigger than one transaction (1,500 keys, binary values, a run of 300 KiB values
/// and one of 700 KiB) through backup and into an etcd as shipped (128 operations and 1.5 MiB
/// per request): every key comes back, with progress reported on the way.
#[tokio::test]
async fn a_big_restore_keeps_within_etcds_default_limits() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("state.db");
    let store = SqliteStore::open(&source).unwrap();
    let mut ops = Vec::new();
    for i in 0..1500u32 {
        let size = match i {
            700..710 => 300 << 10,
            1000 => 700 << 10,
            _ => 64,
        };
        let value: Vec<u8> = (0..size).map(|j| (i as usize * 31 + j) as u8).collect();
        ops.push(TxnOp::Put {
            key: format!("tasks/{i:05}"),
            value,
        });
    }
    for chunk in ops.chunks(100) {
        store
            .txn(Txn {
                success: chunk.to_vec(),
                ..Txn::default()
            })
            .await
            .unwrap();
    }
    let (source_kvs, _) = store.range("").await.unwrap();
    drop(store);
    let backup = work.path().join("big.json");
    gantry_ok(&[
        "backup",
        "--store",
        &format!("sqlite:{}", source.display()),
        "--out",
        backup.to_str().unwrap(),
    ])
    .await;

    let etcd = start_etcd(work.path(), 128).await;
    let out = gantry_ok(&[
        "restore",
        "--store",
        &etcd.store_url(),
        "--in",
        backup.to_str().unwrap(),
    ])
    .await;
    assert!(
        out.stderr.contains("restored 1000 of 1500 keys"),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("Restored 1500 keys into"),
        "{}",
        out.text()
    );
    let (in_etcd, _) = etcd_pairs(&etcd, "gantry/").await;
    assert_eq!(in_etcd, pairs(source_kvs));
}
