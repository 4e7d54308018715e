//! Running the `gantry` binary as a user would, for the CLI tests.

use super::{gantry_bin, Dev, Keys};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    pub fn text(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Run `gantry <args>` with nothing inherited that could redirect it; panics if it takes
/// longer than `limit`.
pub async fn gantry_within(limit: Duration, args: &[&str]) -> Out {
    gantry_within_as(limit, args, None).await
}

/// [`gantry_within`], signing with `keys` (as `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
pub async fn gantry_within_as(limit: Duration, args: &[&str], keys: Option<&Keys>) -> Out {
    let mut cmd = tokio::process::Command::new(gantry_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    if let Some(keys) = keys {
        cmd.envs(keys.env());
    }
    cmd.args(args)
        .env_remove("GANTRY_ENDPOINT")
        .env_remove("GANTRY_CLUSTER")
        .env_remove("GANTRY_STORE")
        .env_remove("GANTRY_DATA_DIR")
        .env_remove("GANTRY_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`gantry {}` did not finish in {limit:?}", args.join(" ")))
        .expect("run gantry");
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        elapsed: started.elapsed(),
    }
}

/// `args` followed by `--endpoint <dev> --cluster <dev's cluster>`.
pub fn at_dev<'a>(dev: &'a Dev, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--endpoint", &dev.endpoint, "--cluster", &dev.cluster]);
    all
}

/// A container command that prints a line and then runs until SIGTERM (answered within a
/// second).
pub fn long_running(line: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("trap 'exit 0' TERM; echo {line}; while true; do sleep 1; done"),
    ]
}
