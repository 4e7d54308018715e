//! `gantry token` (the agents' join token, read from the server's data directory) and
//! `gantry audit` (the audit log, through the API like every other client).

use crate::client::ApiClient;
use crate::commands::print_table;
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct TokenArgs {
    /// The server's data directory (where it wrote `agent-token` on first start).
    #[arg(long, default_value = ".gantry", env = "GANTRY_DATA_DIR")]
    pub data_dir: PathBuf,
}

pub fn token(args: TokenArgs) -> Result<ExitCode, String> {
    let path = args.data_dir.join(crate::credentials::TOKEN_FILE);
    let token = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the join token at {} ({e}). Run this on the control plane's host, with the --data-dir `gantry server` uses; the server writes the token on its first start.",
            path.display()
        )
    })?;
    println!("{}", token.trim());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct AuditArgs {
    /// Only calls by this principal (an ARN, e.g. arn:aws:iam::000000000000:user/alice).
    #[arg(long)]
    pub principal: Option<String>,
    /// Only this action (`ecs:RunTask`), or a prefix ending in `*` (`iam:*`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this outcome: Success, AccessDenied, AuthFailure or Error.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only calls that touched a resource containing this text (an ARN, a cluster name).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only the last N minutes.
    #[arg(long, value_name = "MINUTES")]
    pub since: Option<f64>,
    /// How many calls to show, newest first.
    #[arg(long, short = 'n', default_value_t = 50)]
    pub limit: usize,
    /// Gantry's endpoint.
    #[arg(long, default_value = crate::DEFAULT_ENDPOINT, env = "GANTRY_ENDPOINT")]
    pub endpoint: String,
}

pub async fn audit(args: AuditArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.endpoint);
    let start = args
        .since
        .map(|m| gantry_model::now_epoch() - m.max(0.0) * 60.0);
    let mut rows = vec![vec![
        "TIME".to_string(),
        "PRINCIPAL".into(),
        "ACTION".into(),
        "OUTCOME".into(),
        "RESOURCE".into(),
        "SOURCE".into(),
    ]];
    let mut next: Option<String> = None;
    while rows.len() <= args.limit {
        let page = api
            .gantry(
                "ListAuditEvents",
                json!({
                    "principal": args.principal,
                    "action": args.action,
                    "outcome": args.outcome,
                    "resource": args.resource,
                    "startTime": start,
                    "maxResults": (args.limit + 1 - rows.len()).min(1000),
                    "nextToken": next,
                }),
            )
            .await
            .map_err(|e| e.to_string())?;
        for e in page["events"].as_array().into_iter().flatten() {
            let outcome = match e["errorCode"].as_str() {
                Some(code) => format!("{} ({code})", e["outcome"].as_str().unwrap_or("")),
                None => e["outcome"].as_str().unwrap_or("").to_string(),
            };
            let resources: Vec<&str> = e["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            rows.push(vec![
                crate::services::local_time(e["eventTime"].as_f64().unwrap_or(0.0)),
                e["principal"].as_str().unwrap_or("").to_string(),
                e["action"].as_str().unwrap_or("").to_string(),
                outcome,
                resources.join(","),
                e["sourceIp"].as_str().unwrap_or("").to_string(),
            ]);
        }
        next = page["nextToken"].as_str().map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    if rows.len() == 1 {
        println!("No API calls match.");
    } else {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    /// Gantry's endpoint.
    #[arg(long, default_value = crate::DEFAULT_ENDPOINT, env = "GANTRY_ENDPOINT", global = true)]
    pub endpoint: String,
}

#[derive(clap::Subcommand)]
pub enum KeysAction {
    /// Where the master keys come from and which one seals new values.
    Status,
    /// Make a new master key, rewrap every secret's data key under it and retire the old
    /// keys, while the server keeps serving. With keys from GANTRY_MASTER_KEY, put the new key
    /// first in that variable and restart the server before running this: it then rewraps
    /// and names the keys you may drop from the variable.
    Rotate,
}

pub async fn keys(args: KeysArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.endpoint);
    match args.action {
        KeysAction::Status => {
            let status = api
                .gantry("DescribeMasterKeys", json!({}))
                .await
                .map_err(|e| e.to_string())?;
            println!("source:  {}", status["source"].as_str().unwrap_or(""));
            println!("primary: {}", status["primaryKey"].as_str().unwrap_or(""));
            let keys: Vec<&str> = status["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!("keys:    {}", keys.join(", "));
        }
        KeysAction::Rotate => {
            eprintln!("rotating the master key (the API keeps serving)…");
            let done = api
                .gantry("RotateMasterKey", json!({}))
                .await
                .map_err(|e| e.to_string())?;
            let retired: Vec<&str> = done["retiredKeys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "new primary key {}; rewrapped {} secret value(s) and {} parameter value(s)",
                done["primaryKey"].as_str().unwrap_or(""),
                done["rewrappedSecretValues"],
                done["rewrappedParameterValues"],
            );
            let from_env = done["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("environment"));
            match (retired.is_empty(), from_env) {
                (true, _) => {}
                (false, true) => println!(
                    "no value uses {} any more: drop it from GANTRY_MASTER_KEY",
                    retired.join(", ")
                ),
                (false, false) => println!("retired {}", retired.join(", ")),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Gantry's endpoint (any replica).
    #[arg(long, default_value = crate::DEFAULT_ENDPOINT, env = "GANTRY_ENDPOINT")]
    pub endpoint: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `gantry status`: the control plane's replicas and which one runs the controllers.
pub async fn status(args: StatusArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.endpoint);
    let status = api
        .gantry("DescribeReplicas", json!({}))
        .await
        .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    println!("store:       {}", text(&status["store"]));
    println!(
        "answered by: {} ({})",
        text(&status["servedBy"]["replicaId"]),
        text(&status["servedBy"]["leadership"]).to_lowercase()
    );
    match status["leader"]["replicaId"].as_str() {
        Some(leader) => println!("leader:      {leader}"),
        None => println!("leader:      none yet (an election is under way, or etcd has no quorum)"),
    }
    if let Some(e) = status["storeError"].as_str() {
        println!("store error: {e}");
        println!("             (is a majority of the etcd members up and reachable from here?)");
    }
    println!();
    println!("{:<16} {:<8} {:<32} STARTED", "REPLICA", "ROLE", "ADDRESS");
    for r in status["replicas"].as_array().into_iter().flatten() {
        let role = if r["leader"].as_bool() == Some(true) {
            "leader"
        } else {
            "follower"
        };
        let started = r["startedAt"]
            .as_f64()
            .map(crate::services::local_time)
            .unwrap_or_default();
        println!(
            "{:<16} {:<8} {:<32} {}",
            text(&r["replicaId"]),
            role,
            text(&r["address"]),
            started
        );
    }
    Ok(ExitCode::SUCCESS)
}
