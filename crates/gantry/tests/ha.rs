//! The control plane on etcd (`gantry server --store etcd://...`): real etcd members started
//! by the test on loopback, real `gantry server` and `gantry agent` processes, real
//! containers, the AWS SDK as the client.

mod common;

use common::*;
use gantry_store::testing::EtcdCluster;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// One master key for every replica (replicas on etcd must share it).
fn master_key_env() -> Vec<(String, String)> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("random key");
    let b64 = base64_encode(&key);
    vec![("GANTRY_MASTER_KEY".to_string(), b64)]
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn etcd(members: usize) -> (tempfile::TempDir, EtcdCluster) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = EtcdCluster::start(dir.path(), members)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (dir, cluster)
}

#[tokio::test]
async fn a_server_on_etcd_runs_tasks_and_keeps_them_across_a_restart() {
    let (_etcd_dir, etcd) = etcd(1).await;
    let url = etcd.store_url();
    let mut split = Split::start_with_env(1, &["--store", &url], &master_key_env()).await;
    let c = split.client.clone();
    let td = register(
        &c,
        &unique("etcd"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let arn = run_one(&c, &split.cluster, &td).await;
    wait_task(&c, &split.cluster, &arn, "RUNNING", T).await;

    // kill -9 of the server: everything it acknowledged is in etcd, and the restarted server
    // (same store) knows the task, the agent reconnects, the container was never touched.
    let before = split.containers();
    split.restart_server().await;
    split.wait_connected(1).await;
    let tasks = eventually(T, "the task after the restart", || {
        let c = c.clone();
        let cluster = split.cluster.clone();
        let arn = arn.clone();
        async move {
            let out = c
                .describe_tasks()
                .cluster(cluster)
                .tasks(arn)
                .send()
                .await
                .ok()?;
            (out.tasks().first()?.last_status() == Some("RUNNING")).then(|| out.tasks().to_vec())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    assert_eq!(tasks.len(), 1);
    assert_eq!(split.containers(), before, "the container was left alone");

    // The keys live in etcd under the namespace, not in a state.db.
    assert!(
        !split.dir.path().join("server/state.db").exists(),
        "an etcd-backed server wrote a state.db"
    );
    let store = gantry_store::EtcdStore::connect(&etcd.config("gantry/"))
        .await
        .expect("etcd");
    let (keys, _) = gantry_store::KvStore::range(&store, "tasks/")
        .await
        .expect("range");
    assert!(
        keys.iter()
            .any(|kv| arn.ends_with(kv.key.rsplit('/').next().unwrap_or("-"))),
        "the task's record is in etcd"
    );
}

#[tokio::test]
async fn a_server_on_etcd_without_a_shared_master_key_refuses_to_start() {
    let (_etcd_dir, etcd) = etcd(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let out = std::process::Command::new(gantry_bin())
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            &etcd.store_url(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("GANTRY_MASTER_KEY")
        .output()
        .expect("gantry server");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("GANTRY_MASTER_KEY") && text.contains("same master key"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_whose_etcd_is_unreachable_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let dead = free_port();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(gantry_bin())
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", &format!("etcd://127.0.0.1:{dead}")])
        .arg("--data-dir")
        .arg(dir.path())
        .envs(master_key_env())
        .output()
        .expect("gantry server");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot reach the store"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
