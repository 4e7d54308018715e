//! `gantry bench auth`: what authentication (SigV4 verification, the key and principal
//! lookup, IAM policy evaluation and the audit record) adds to an API call.
//!
//! Two control planes in this process, identical but for `authenticate`, each on its own
//! loopback port with an in-memory store and the same cluster. The same DescribeTasks call
//! (10 task ids) is sent to each in turn (A B, B A, A B, …) so that the machine's noise, and
//! the work each plane does after answering, falls on both alike. Requests to the authenticated plane are signed before the clock
//! starts (a signature stays valid for 15 minutes), so the figures are the server's work, not
//! the client's signing. The administrator's key is used: its one policy, AdministratorAccess,
//! is the shortest evaluation; `--policies` attaches that many more customer managed policies
//! with several statements each, all evaluated on every call.

use crate::bench::server::{open_stores, plane_with, Server, CLUSTER};
use crate::bench::stats::{round1, Latency};
use clap::Args;
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Reproduce the recorded figures (docs/PERFORMANCE.md, \"Authentication\") with:
  cargo run --release -p gantry -- bench auth --calls 5000";

#[derive(Args)]
pub struct AuthArgs {
    /// Calls timed against each control plane.
    #[arg(long, default_value_t = 3000)]
    pub calls: usize,
    /// Extra customer managed policies (five statements each) attached to the caller.
    #[arg(long, default_value_t = 0)]
    pub policies: usize,
    /// Print exactly one JSON object with the figures instead of a table.
    #[arg(long)]
    pub json: bool,
}

const TARGET: &str = "AmazonEC2ContainerServiceV20141113.DescribeTasks";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

struct Prepared {
    headers: Vec<(String, String)>,
    body: String,
}

fn describe_body() -> String {
    let ids: Vec<String> = (0..10).map(|i| format!("{i:032x}")).collect();
    json!({"cluster": CLUSTER, "tasks": ids}).to_string()
}

fn sign(url: &str, body: &str, creds: &gantry_auth::sigv4::Credentials) -> Vec<(String, String)> {
    gantry_auth::client::sign_url(
        "POST",
        url,
        &[("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)],
        body.as_bytes(),
        creds,
        "us-east-1",
        "ecs",
        gantry_auth::client::now(),
    )
}

async fn send(http: &reqwest::Client, url: &str, p: &Prepared) -> Result<Duration, String> {
    let mut req = http
        .post(url)
        .header("content-type", CONTENT_TYPE)
        .header("x-amz-target", TARGET);
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    let started = Instant::now();
    let resp = req
        .body(p.body.clone())
        .send()
        .await
        .map_err(|e| format!("DescribeTasks: {e}"))?;
    let status = resp.status();
    let _ = resp.bytes().await;
    let took = started.elapsed();
    if !status.is_success() {
        return Err(format!("DescribeTasks answered {status}"));
    }
    Ok(took)
}

pub async fn run(args: AuthArgs) -> Result<ExitCode, String> {
    let calls = args.calls.clamp(10, 100_000);
    let (store, logs) = open_stores(None)?;
    let open = plane_with(store, logs, false).await?;
    let (store, logs) = open_stores(None)?;
    let guarded = plane_with(store, logs, true).await?;
    for plane in [&open, &guarded] {
        gantry_control::ensure_cluster(plane, CLUSTER)
            .await
            .map_err(|e| format!("cluster: {e}"))?;
    }
    let (id, secret) = gantry_control::bootstrap::new_admin_key(&guarded)
        .await
        .map_err(|e| format!("admin key: {e}"))?;
    let creds = gantry_auth::sigv4::Credentials {
        access_key_id: id,
        secret_access_key: secret,
        session_token: None,
    };
    let open_server = Server::serve(open).await?;
    let guarded_server = Server::serve(guarded).await?;
    let open_url = format!("{}/", open_server.endpoint);
    let guarded_url = format!("{}/", guarded_server.endpoint);
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    if args.policies > 0 {
        attach_policies(&http, &guarded_url, &creds, args.policies).await?;
    }
    let body = describe_body();
    let unsigned = Prepared {
        headers: Vec::new(),
        body: body.clone(),
    };
    let warmup = 200.min(calls);
    let signed: Vec<Prepared> = (0..calls + warmup)
        .map(|_| Prepared {
            headers: sign(&guarded_url, &body, &creds),
            body: body.clone(),
        })
        .collect();
    for p in signed.iter().take(warmup) {
        send(&http, &open_url, &unsigned).await?;
        send(&http, &guarded_url, p).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut a, mut b) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for (i, p) in signed.iter().skip(warmup).enumerate() {
        // Which plane goes first alternates too: the one that answered last still has its
        // audit writer busy on the other core while the next call runs.
        if i % 2 == 0 {
            a.push(send(&http, &open_url, &unsigned).await?);
            b.push(send(&http, &guarded_url, p).await?);
        } else {
            b.push(send(&http, &guarded_url, p).await?);
            a.push(send(&http, &open_url, &unsigned).await?);
        }
        if Instant::now() > deadline {
            break;
        }
    }
    open_server.shutdown().await;
    guarded_server.shutdown().await;
    let (off, on) = (Latency::of(&a), Latency::of(&b));
    let median_added = on.p50_us - off.p50_us;
    let p99_added = on.p99_us - off.p99_us;
    let ratio = if off.p50_us > 0.0 {
        on.p50_us / off.p50_us
    } else {
        0.0
    };
    if args.json {
        println!(
            "{}",
            json!({
                "calls": a.len(),
                "extra_policies": args.policies,
                "without_auth": off,
                "with_auth": on,
                "median_ratio": ratio,
                "median_added_us": median_added,
                "p99_added_us": p99_added,
            })
        );
    } else {
        println!(
            "DescribeTasks (10 ids), {} calls each, alternating; caller with {} policies",
            a.len(),
            1 + args.policies
        );
        println!(
            "{:<22} {:>10} {:>10} {:>10}",
            "", "p50 µs", "p90 µs", "p99 µs"
        );
        for (name, l) in [("authentication off", off), ("SigV4 + IAM + audit", on)] {
            println!(
                "{name:<22} {:>10} {:>10} {:>10}",
                round1(l.p50_us),
                round1(l.p90_us),
                round1(l.p99_us)
            );
        }
        println!(
            "added: median {} µs ({:.3}x), p99 {} µs",
            round1(median_added),
            ratio,
            round1(p99_added)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `n` customer managed policies of five statements each and attaches them to the
/// administrator, through the IAM API.
async fn attach_policies(
    http: &reqwest::Client,
    url: &str,
    creds: &gantry_auth::sigv4::Credentials,
    n: usize,
) -> Result<(), String> {
    for i in 0..n {
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["ecs:Describe*", "ecs:List*"], "Resource": "*"},
            {"Effect": "Allow", "Action": "ecs:RunTask", "Resource": "arn:aws:ecs:*:*:task-definition/web:*",
             "Condition": {"StringEquals": {"ecs:cluster": "arn:aws:ecs:us-east-1:000000000000:cluster/prod"}}},
            {"Effect": "Deny", "Action": "ecs:DeleteCluster", "Resource": "*"},
            {"Effect": "Allow", "Action": "logs:Get*", "Resource": "*",
             "Condition": {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "127.0.0.0/8"]}}},
            {"Effect": "Deny", "NotAction": ["ecs:*", "logs:*", "iam:*"], "Resource": "*"}
        ]});
        let name = format!("bench-{i}");
        let create = format!(
            "Action=CreatePolicy&Version=2010-05-08&PolicyName={name}&PolicyDocument={}",
            gantry_auth::sigv4::percent_encode(&doc.to_string())
        );
        let attach = format!(
            "Action=AttachUserPolicy&Version=2010-05-08&UserName=admin&PolicyArn={}",
            gantry_auth::sigv4::percent_encode(&format!("arn:aws:iam::000000000000:policy/{name}"))
        );
        for body in [create, attach] {
            let ct = "application/x-www-form-urlencoded; charset=utf-8";
            let mut req = http.post(url).header("content-type", ct);
            for (k, v) in gantry_auth::client::sign_url(
                "POST",
                url,
                &[("content-type", ct)],
                body.as_bytes(),
                creds,
                "us-east-1",
                "iam",
                gantry_auth::client::now(),
            ) {
                req = req.header(k, v);
            }
            let resp = req
                .body(body)
                .send()
                .await
                .map_err(|e| format!("IAM: {e}"))?;
            if !resp.status().is_success() {
                let text = resp.text().await.unwrap_or_default();
                return Err(format!("IAM refused the benchmark's policy: {text}"));
            }
        }
    }
    Ok(())
}
