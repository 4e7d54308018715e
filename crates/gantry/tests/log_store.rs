//! The log store's size cap end to end: `gantry server --log-store-max-mib`, agents' output
//! arriving on `POST /agent/v1/logs`, and what the CloudWatch Logs API and the server's own
//! log show once the cap is reached. No Docker needed: the test posts what an agent would.

mod common;

use common::{eventually, free_port, Proc};
use serde_json::{json, Value};
use std::time::Duration;

const MIB: u64 = 1 << 20;

struct Server {
    proc: Proc,
    endpoint: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let data = dir.path().join("data").display().to_string();
        // The test posts what an agent would, unsigned: authentication is off (loopback).
        let mut args = vec![
            "server",
            "--listen",
            &listen,
            "--data-dir",
            &data,
            "--unauthenticated",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args, dir.path().join("server.log"));
        let server = Server {
            proc,
            endpoint: format!("http://{listen}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let health = format!("{}/healthz", server.endpoint);
        eventually(Duration::from_secs(30), "the server to answer", || {
            let (http, health) = (server.http.clone(), health.clone());
            async move {
                http.get(health)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.proc.output()));
        server
    }

    async fn ship(&self, group: &str, stream: &str, messages: &[String]) {
        let events: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({"logGroup": group, "logStream": stream,
                       "timestamp": 1_700_000_000_000i64 + i as i64, "message": m})
            })
            .collect();
        let resp = self
            .http
            .post(format!("{}/agent/v1/logs", self.endpoint))
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("post logs");
        assert!(
            resp.status().is_success(),
            "ingest answered {}\n{}",
            resp.status(),
            self.proc.output()
        );
    }

    async fn logs(&self, op: &str, input: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("Logs_20140328.{op}"))
            .body(input.to_string())
            .send()
            .await
            .expect("logs call");
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON answer");
        assert!(status.is_success(), "{op} answered {status}: {body:#}");
        body
    }
}

fn stored_bytes(groups: &Value, name: &str) -> u64 {
    groups["logGroups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["logGroupName"] == name))
        .and_then(|g| g["storedBytes"].as_u64())
        .unwrap_or_else(|| panic!("no storedBytes for {name}: {groups:#}"))
}

#[tokio::test]
async fn help_says_what_happens_at_the_log_store_cap() {
    for sub in ["server", "dev"] {
        let out = std::process::Command::new(common::gantry_bin())
            .args([sub, "--help"])
            .output()
            .expect("run gantry");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("--log-store-max-mib"), "{text}");
        assert!(text.contains("oldest events"), "{text}");
        assert!(text.contains("1024"), "the default is shown: {text}");
    }
}

#[tokio::test]
async fn a_capped_log_store_drops_the_oldest_output_and_says_so() {
    let server = Server::start(&["--log-store-max-mib", "1"]).await;
    // About 3 MiB of 1 KiB lines, first to one group and then to another.
    let line = |i: usize| format!("{i:06} {}", "x".repeat(1_000));
    for batch in 0..10 {
        let lines: Vec<String> = (0..100).map(|i| line(batch * 100 + i)).collect();
        server.ship("/ecs/old", "ecs/app/1", &lines).await;
    }
    for batch in 10..30 {
        let lines: Vec<String> = (0..100).map(|i| line(batch * 100 + i)).collect();
        server.ship("/ecs/new", "ecs/app/2", &lines).await;
    }

    let groups = server.logs("DescribeLogGroups", json!({})).await;
    let total = stored_bytes(&groups, "/ecs/old") + stored_bytes(&groups, "/ecs/new");
    assert!(
        total <= MIB,
        "{total} bytes stored over a 1 MiB cap: {groups:#}"
    );
    assert_eq!(
        stored_bytes(&groups, "/ecs/old"),
        0,
        "the oldest output went first: {groups:#}"
    );
    let newest = server
        .logs(
            "GetLogEvents",
            json!({"logGroupName": "/ecs/new", "logStreamName": "ecs/app/2", "limit": 1}),
        )
        .await;
    assert_eq!(newest["events"][0]["message"], line(2_999));

    let output = server.proc.output();
    assert!(
        output.contains("log store over its 1 MiB cap: dropped the oldest")
            && output.contains("/ecs/old"),
        "the eviction is not announced:\n{output}"
    );
}
