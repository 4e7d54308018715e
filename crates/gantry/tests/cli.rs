//! The human CLI against `gantry dev`: `gantry run` (from a file or a family), `gantry ps`
//! (with and without `--all`), `gantry logs`, `gantry stop --wait`, the messages it prints when
//! something is wrong, and `--help`.

mod common;

use common::cli::*;
use common::*;
use serde_json::json;
use std::time::Duration;

/// Upper bound for any single `gantry` CLI invocation.
const CLI_LIMIT: Duration = Duration::from_secs(120);

/// Run `gantry <args>` with nothing inherited that could redirect it.
async fn gantry(args: &[&str]) -> Out {
    gantry_within(CLI_LIMIT, args).await
}

/// `gantry <args> --endpoint <dev> --cluster <dev's cluster>`.
async fn gantry_at(dev: &Dev, args: &[&str]) -> Out {
    gantry_within_as(CLI_LIMIT, &at_dev(dev, args), Some(&dev.keys)).await
}

/// The rows of a `gantry ps` table (header first), split on runs of spaces.
fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('('))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn row_of<'a>(rows: &'a [Vec<String>], id: &str) -> Option<&'a Vec<String>> {
    rows.iter()
        .skip(1)
        .find(|r| r.first().map(String::as_str) == Some(id))
}

#[tokio::test]
async fn run_from_a_file_ps_logs_and_stop() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let dir = tempfile::tempdir().expect("tempdir");
    let family = unique("cli-run");
    let file = dir.path().join("task.json");
    let def = json!({
        "family": family,
        "containerDefinitions": [{
            "name": "app",
            "image": IMAGE,
            "memory": 16,
            "command": long_running("cli-hello"),
            "portMappings": [{"containerPort": 80, "hostPort": 0}]
        }]
    });
    std::fs::write(&file, def.to_string()).expect("write task.json");

    let run = gantry_at(&dev, &["run", file.to_str().unwrap()]).await;
    assert!(run.status.success(), "gantry run failed:\n{}", run.text());
    assert!(
        run.stdout.contains(&format!("Registered {family}:1")),
        "{}",
        run.text()
    );
    assert!(run.stdout.contains("RUNNING"), "{}", run.text());
    let id = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Started task "))
        .unwrap_or_else(|| panic!("no task id printed:\n{}", run.text()))
        .trim()
        .to_string();
    assert!(!id.is_empty());

    // It is RUNNING when `gantry run` returns.
    let listed = c
        .list_tasks()
        .cluster(&dev.cluster)
        .family(&family)
        .send()
        .await
        .expect("ListTasks");
    assert_eq!(listed.task_arns().len(), 1, "{listed:?}");
    let arn = listed.task_arns()[0].clone();
    let full_id = arn.rsplit('/').next().unwrap().to_string();
    assert!(
        full_id.starts_with(&id),
        "printed id {id} is not the task's ({full_id})"
    );
    let d = c
        .describe_tasks()
        .cluster(&dev.cluster)
        .tasks(&arn)
        .send()
        .await
        .expect("DescribeTasks");
    assert_eq!(d.tasks()[0].last_status(), Some("RUNNING"));

    // `gantry ps`: a header and the task's row.
    let ps = gantry_at(&dev, &["ps"]).await;
    assert!(ps.status.success(), "{}", ps.text());
    let rows = table(&ps.stdout);
    assert_eq!(
        rows.first().map(|r| r[..3].to_vec()),
        Some(vec!["TASK".into(), "DEFINITION".into(), "STATUS".into()]),
        "{}",
        ps.text()
    );
    for col in ["DESIRED", "HEALTH", "PORTS", "AGE"] {
        assert!(
            rows[0].iter().any(|h| h == col),
            "no {col} column: {}",
            ps.text()
        );
    }
    let row = row_of(&rows, &id).unwrap_or_else(|| panic!("no row for {id}:\n{}", ps.text()));
    assert_eq!(row[1], format!("{family}:1"), "{}", ps.text());
    assert_eq!(row[2], "RUNNING", "{}", ps.text());
    assert_eq!(row[3], "RUNNING", "{}", ps.text());
    assert!(
        row.iter().any(|cell| cell.ends_with("->80/tcp")),
        "the port binding is shown: {}",
        ps.text()
    );

    // What went wrong along the way, reported together at the end so that the rest of the
    // flow is still exercised.
    let mut problems: Vec<String> = Vec::new();

    // `gantry logs <the id it printed>`.
    let logs = eventually(
        Duration::from_secs(20),
        "gantry logs to show the line",
        || {
            let dev = &dev;
            let id = id.clone();
            async move {
                let out = gantry_at(dev, &["logs", &id]).await;
                (!out.status.success() || out.stdout.contains("cli-hello")).then_some(out)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    if !logs.status.success() {
        problems.push(format!(
            "`gantry logs {id}` (the id `gantry run` and `gantry ps` print) failed:\n{}",
            logs.text()
        ));
        let by_full = eventually(Duration::from_secs(20), "gantry logs <full id>", || {
            let dev = &dev;
            let full_id = full_id.clone();
            async move {
                let out = gantry_at(dev, &["logs", &full_id]).await;
                (!out.status.success() || out.stdout.contains("cli-hello")).then_some(out)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
        assert!(by_full.status.success(), "{}", by_full.text());
        assert_eq!(by_full.stdout.trim(), "cli-hello", "{}", by_full.text());
    } else {
        assert_eq!(logs.stdout.trim(), "cli-hello", "{}", logs.text());
    }

    // `gantry stop <id> --wait`.
    let reason = "stopped by the cli test";
    let mut stop = gantry_at(&dev, &["stop", &id, "--wait", "--reason", reason]).await;
    if !stop.status.success() {
        problems.push(format!(
            "`gantry stop {id} --wait` (the id `gantry run` and `gantry ps` print) failed:\n{}",
            stop.text()
        ));
        stop = gantry_at(&dev, &["stop", &full_id, "--wait", "--reason", reason]).await;
    }
    assert!(
        stop.status.success(),
        "gantry stop failed:\n{}",
        stop.text()
    );
    assert!(stop.stdout.contains("STOPPED"), "{}", stop.text());
    assert!(
        stop.elapsed < Duration::from_secs(30),
        "the container answers SIGTERM at once, yet stop --wait took {:?}",
        stop.elapsed
    );
    let d = c
        .describe_tasks()
        .cluster(&dev.cluster)
        .tasks(&arn)
        .send()
        .await
        .expect("DescribeTasks");
    let t = &d.tasks()[0];
    assert_eq!(
        t.last_status(),
        Some("STOPPED"),
        "--wait returned too early"
    );
    assert_eq!(t.stopped_reason(), Some(reason));

    let ps = gantry_at(&dev, &["ps"]).await;
    assert!(ps.status.success(), "{}", ps.text());
    assert!(
        row_of(&table(&ps.stdout), &id).is_none(),
        "a stopped task is listed without --all:\n{}",
        ps.text()
    );
    assert!(ps.stdout.contains("no tasks"), "{}", ps.text());

    let all = gantry_at(&dev, &["ps", "--all"]).await;
    assert!(all.status.success(), "{}", all.text());
    let rows = table(&all.stdout);
    let row = row_of(&rows, &id).unwrap_or_else(|| panic!("no row for {id}:\n{}", all.text()));
    assert_eq!(row[2], "STOPPED", "{}", all.text());
    assert_eq!(row[3], "STOPPED", "{}", all.text());
    let line = all
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_default();
    assert!(
        line.ends_with(reason),
        "the NOTE column shows the reason: {line}"
    );

    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// `gantry run <family>` for a container that exits 1 at once: a non-zero exit with the stop
/// reason and the exit code, every time. Several runs at once, because whether the task is
/// briefly seen RUNNING before it stops is a matter of timing and the answer must not be.
#[tokio::test]
async fn run_reports_why_a_task_stopped() {
    const RUNS: usize = 10;
    let dev = Dev::start().await;
    let family = unique("cli-fail");
    register(
        &dev.client,
        &family,
        vec![busybox_container("main", &["sh", "-c", "exit 1"])],
    )
    .await;
    let args = ["run", family.as_str()];
    let runs = futures::future::join_all((0..RUNS).map(|_| gantry_at(&dev, &args))).await;
    let mut problems = Vec::new();
    for run in &runs {
        assert!(run.stdout.contains("Started task "), "{}", run.text());
        assert!(
            run.elapsed < Duration::from_secs(30),
            "took {:?}",
            run.elapsed
        );
        if run.status.success() {
            problems.push(format!(
                "`gantry run {family}` exited 0 for a container that exits 1 at once:\n{}",
                run.text()
            ));
            continue;
        }
        for expected in [
            "STOPPED",
            "stopped: Essential container in task exited",
            "container main: exit code 1",
            "gantry logs",
        ] {
            if !run.stdout.contains(expected) {
                problems.push(format!("no `{expected}` in the output:\n{}", run.text()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {RUNS} runs went wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test]
async fn errors_are_explained() {
    // Nothing listens on port 1.
    let out = gantry(&["ps", "--endpoint", "http://127.0.0.1:1", "--cluster", "x"]).await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        out.stderr
            .contains("cannot reach Gantry at http://127.0.0.1:1"),
        "{}",
        out.text()
    );
    assert!(
        out.stderr.contains("gantry dev") && out.stderr.contains("--endpoint"),
        "says what to do: {}",
        out.text()
    );
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );

    let dev = Dev::start().await;

    let out = gantry_at(&dev, &["logs", "nosuchtask"]).await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        out.stderr.contains("nosuchtask") && out.stderr.contains("not found"),
        "{}",
        out.text()
    );

    let out = gantry_at(&dev, &["stop", "nosuchtask"]).await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(out.stderr.contains("not found"), "{}", out.text());

    // Not a file, so a family name that is not registered.
    let out = gantry_at(&dev, &["run", "/nonexistent.json"]).await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        out.stderr.contains("task definition") && out.stderr.contains("/nonexistent.json"),
        "{}",
        out.text()
    );
    assert!(!out.stdout.contains("Started task"), "{}", out.text());

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").expect("write");
    let out = gantry_at(&dev, &["run", bad.to_str().unwrap()]).await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(out.stderr.contains("is not valid JSON"), "{}", out.text());

    let out = gantry_within_as(
        CLI_LIMIT,
        &[
            "ps",
            "--endpoint",
            &dev.endpoint,
            "--cluster",
            "no-such-cluster",
        ],
        Some(&dev.keys),
    )
    .await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        out.stderr.contains("ClusterNotFoundException"),
        "{}",
        out.text()
    );
}

#[tokio::test]
async fn help_lists_the_subcommands_and_flags() {
    let out = gantry(&["--help"]).await;
    assert!(out.status.success(), "{}", out.text());
    for sub in ["dev", "server", "agent", "run", "ps", "logs", "stop"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "`{sub}` is not listed:\n{}",
            out.text()
        );
    }
    assert!(out.stdout.contains("--endpoint-url"), "{}", out.text());

    let expect = [
        (
            "run",
            &[
                "<TASK_DEFINITION>",
                "--count",
                "--detach",
                "--timeout",
                "--endpoint",
                "--cluster",
            ][..],
        ),
        ("ps", &["--all", "--endpoint", "--cluster"][..]),
        (
            "logs",
            &["<TASK>", "--follow", "--container", "--endpoint"][..],
        ),
        ("stop", &["<TASK>", "--wait", "--reason", "--endpoint"][..]),
    ];
    for (sub, flags) in expect {
        let out = gantry(&[sub, "--help"]).await;
        assert!(out.status.success(), "{}", out.text());
        for flag in flags {
            assert!(
                out.stdout.contains(flag),
                "`gantry {sub} --help` does not mention {flag}:\n{}",
                out.text()
            );
        }
    }
}
