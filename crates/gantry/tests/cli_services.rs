//! The service CLI against `gantry dev`: `gantry deploy` (create and update, from a file and
//! from a family, `--wait` to a steady state, a failed rollout rolled back by the circuit
//! breaker), `gantry services`, `gantry events` (with `--follow`), the messages it prints
//! when something is wrong, and `--help`.

mod common;

use common::cli::*;
use common::*;
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Upper bound for any single `gantry` CLI invocation (rollouts included).
const CLI_LIMIT: Duration = Duration::from_secs(180);
/// What `gantry deploy --wait` is given as `--timeout`: less than CLI_LIMIT, so that a stuck
/// rollout ends with the command's own report rather than the harness's.
const WAIT_TIMEOUT: &str = "150";

/// Run `gantry <args>` with nothing inherited that could redirect it.
async fn gantry(args: &[&str]) -> Out {
    gantry_within(CLI_LIMIT, args).await
}

/// `gantry <args> --endpoint <dev> --cluster <dev's cluster>`.
async fn gantry_at(dev: &Dev, args: &[&str]) -> Out {
    gantry_within_as(CLI_LIMIT, &at_dev(dev, args), Some(&dev.keys)).await
}

fn task_definition_file(dir: &std::path::Path, family: &str, line: &str) -> String {
    let file = dir.join(format!("{line}.json"));
    let def = json!({
        "family": family,
        "containerDefinitions": [{
            "name": "app",
            "image": IMAGE,
            "memory": 16,
            "stopTimeout": 2,
            "command": long_running(line),
        }]
    });
    std::fs::write(&file, def.to_string()).expect("write the task definition");
    file.display().to_string()
}

/// The progress lines `gantry deploy --wait` prints: `ecs-svc/<digits>  family:rev  ...`.
fn progress_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ecs-svc/"))
        .collect()
}

/// The row of `gantry services` for `name`, split on runs of spaces.
fn service_row(stdout: &str, name: &str) -> Option<Vec<String>> {
    stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|r| r.first().map(String::as_str) == Some(name))
}

/// The service's tasks with desired status RUNNING, described.
async fn service_tasks(dev: &Dev, service: &str) -> Vec<aws_sdk_ecs::types::Task> {
    let arns = dev
        .client
        .list_tasks()
        .cluster(&dev.cluster)
        .service_name(service)
        .send()
        .await
        .expect("ListTasks")
        .task_arns()
        .to_vec();
    if arns.is_empty() {
        return Vec::new();
    }
    dev.client
        .describe_tasks()
        .cluster(&dev.cluster)
        .set_tasks(Some(arns))
        .send()
        .await
        .expect("DescribeTasks")
        .tasks()
        .to_vec()
}

async fn describe(dev: &Dev, service: &str) -> aws_sdk_ecs::types::Service {
    dev.client
        .describe_services()
        .cluster(&dev.cluster)
        .services(service)
        .send()
        .await
        .expect("DescribeServices")
        .services()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("service {service} is not described"))
}

#[tokio::test]
async fn deploy_update_list_and_events() {
    let dev = Dev::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let family = unique("svc-web");

    let none = gantry_at(&dev, &["services"]).await;
    assert!(none.status.success(), "{}", none.text());
    assert!(none.stdout.contains("no services"), "{}", none.text());
    assert!(none.stdout.contains("gantry deploy"), "{}", none.text());

    // 1. A new service from a file, waited for.
    let v1 = task_definition_file(dir.path(), &family, "v1");
    let first = gantry_at(
        &dev,
        &[
            "deploy",
            "web",
            "--task-definition",
            &v1,
            "--desired-count",
            "2",
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ],
    )
    .await;
    assert!(
        first.status.success(),
        "first deploy failed:\n{}\n{}",
        first.text(),
        dev.proc.output()
    );
    for expected in [
        format!("Registered {family}:1"),
        "Created service web".to_string(),
        "Started deployment ecs-svc/".to_string(),
        "is stable: 2/2".to_string(),
    ] {
        assert!(
            first.stdout.contains(&expected),
            "no `{expected}`:\n{}",
            first.text()
        );
    }
    let lines = progress_lines(&first.stdout);
    assert!(
        lines.iter().any(|l| l.contains(&format!("{family}:1"))
            && l.contains("PRIMARY")
            && l.contains("running 2/2")
            && l.contains("COMPLETED")),
        "no progress line shows the completed deployment:\n{}",
        first.text()
    );
    assert!(
        lines.len() >= 2,
        "the rollout's progress is shown as it changes:\n{}",
        first.text()
    );
    let s = describe(&dev, "web").await;
    assert_eq!(s.running_count(), 2, "{s:#?}");
    assert_eq!(s.deployments().len(), 1, "{s:#?}");

    // 2. A new revision by family name: all tasks end on it.
    let v2 = register(
        &dev.client,
        &family,
        vec![aws_sdk_ecs::types::ContainerDefinition::builder()
            .name("app")
            .image(IMAGE)
            .memory(16)
            .stop_timeout(2)
            .set_command(Some(long_running("v2")))
            .build()],
    )
    .await;
    assert!(v2.ends_with(&format!("{family}:2")), "{v2}");
    let second = gantry_at(
        &dev,
        &[
            "deploy",
            "web",
            "--task-definition",
            &family,
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ],
    )
    .await;
    assert!(
        second.status.success(),
        "second deploy failed:\n{}\n{}",
        second.text(),
        dev.proc.output()
    );
    assert!(
        second
            .stdout
            .contains(&format!("Updated service web: {family}:1 -> {family}:2")),
        "{}",
        second.text()
    );
    assert!(
        second.stdout.contains("is stable: 2/2"),
        "{}",
        second.text()
    );
    // Both deployments were shown while the old one drained.
    let lines = progress_lines(&second.stdout);
    for (td, status) in [
        (format!("{family}:2"), "PRIMARY"),
        (format!("{family}:1"), "ACTIVE"),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&td) && l.contains(status)),
            "no {status} line for {td}:\n{}",
            second.text()
        );
    }
    let tasks = service_tasks(&dev, "web").await;
    assert_eq!(tasks.len(), 2, "{tasks:#?}");
    for t in &tasks {
        assert_eq!(t.task_definition_arn(), Some(v2.as_str()), "{t:#?}");
        assert_eq!(t.last_status(), Some("RUNNING"), "{t:#?}");
    }

    // 3. `gantry services`.
    let list = gantry_at(&dev, &["services"]).await;
    assert!(list.status.success(), "{}", list.text());
    let header = list.stdout.lines().next().unwrap_or_default();
    for col in [
        "NAME",
        "STATUS",
        "TASK DEFINITION",
        "RUNNING/DESIRED",
        "PENDING",
        "DEPLOYMENTS",
        "ROLLOUT",
    ] {
        assert!(header.contains(col), "no {col} column:\n{}", list.text());
    }
    let row = service_row(&list.stdout, "web")
        .unwrap_or_else(|| panic!("no row for web:\n{}", list.text()));
    assert_eq!(
        row,
        vec![
            "web".to_string(),
            "ACTIVE".into(),
            format!("{family}:2"),
            "2/2".into(),
            "0".into(),
            "1".into(),
            "COMPLETED".into()
        ],
        "{}",
        list.text()
    );

    // 4. `gantry events`: oldest first, with local timestamps.
    let events = gantry_at(&dev, &["events", "web"]).await;
    assert!(events.status.success(), "{}", events.text());
    assert!(
        events
            .stdout
            .contains("(service web) has reached a steady state."),
        "{}",
        events.text()
    );
    let stamps: Vec<&str> = events
        .stdout
        .lines()
        .map(|l| l.get(..19).unwrap_or(l))
        .collect();
    assert!(
        stamps
            .iter()
            .all(|s| s.len() == 19 && s.as_bytes()[4] == b'-' && s.as_bytes()[13] == b':'),
        "every line starts with YYYY-MM-DD HH:MM:SS:\n{}",
        events.text()
    );
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted, "oldest first:\n{}", events.text());
    let last = gantry_at(&dev, &["events", "web", "-n", "1"]).await;
    assert!(last.status.success(), "{}", last.text());
    assert_eq!(last.stdout.lines().count(), 1, "{}", last.text());
    assert_eq!(
        last.stdout.lines().next(),
        events.stdout.lines().last(),
        "-n 1 is the newest event"
    );

    // 5. `gantry events --follow` prints what happens next.
    let mut follow = tokio::process::Command::new(gantry_bin());
    follow
        .envs(dev.keys.env())
        .args([
            "events",
            "web",
            "--follow",
            "-n",
            "0",
            "--endpoint",
            &dev.endpoint,
            "--cluster",
            &dev.cluster,
        ])
        .env_remove("GANTRY_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = follow.spawn().expect("spawn gantry events --follow");
    let stdout = child.stdout.take().expect("stdout");
    // Whatever happens once it says it follows is news to it.
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), stderr.next_line()).await;
    assert!(
        matches!(&ready, Ok(Ok(Some(l))) if l.starts_with("Following the events of service web")),
        "--follow did not start: {ready:?}"
    );
    let scale = gantry_at(
        &dev,
        &[
            "deploy",
            "web",
            "--task-definition",
            &family,
            "--desired-count",
            "1",
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ],
    )
    .await;
    assert!(scale.status.success(), "{}", scale.text());
    assert!(
        scale.stdout.contains("No new deployment"),
        "{}",
        scale.text()
    );
    assert!(scale.stdout.contains("is stable: 1/1"), "{}", scale.text());
    let mut reader = tokio::io::BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("(service web) has stopped 1 running tasks"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.next_line()).await {
            Ok(Ok(Some(line))) => seen.push(line),
            other => panic!(
                "--follow did not print the scale-in ({other:?}); it printed:\n{}",
                seen.join("\n")
            ),
        }
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "--follow keeps running"
    );
    let _ = child.kill().await;
}

#[tokio::test]
async fn failed_deploy_rolls_back() {
    let dev = Dev::start().await;
    let family = unique("svc-bad");
    register(
        &dev.client,
        &family,
        vec![busybox_container(
            "app",
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; while true; do sleep 1; done",
            ],
        )],
    )
    .await;
    let good = gantry_at(
        &dev,
        &[
            "deploy",
            "web",
            "--task-definition",
            &format!("{family}:1"),
            "--desired-count",
            "2",
            "--circuit-breaker",
            "rollback",
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ],
    )
    .await;
    assert!(
        good.status.success(),
        "{}\n{}",
        good.text(),
        dev.proc.output()
    );
    let s = describe(&dev, "web").await;
    let breaker = s
        .deployment_configuration()
        .and_then(|c| c.deployment_circuit_breaker())
        .unwrap_or_else(|| panic!("no circuit breaker set: {s:#?}"));
    assert!(breaker.enable() && breaker.rollback(), "{breaker:?}");

    register(
        &dev.client,
        &family,
        vec![busybox_container("app", &["sh", "-c", "exit 1"])],
    )
    .await;
    let bad = gantry_at(
        &dev,
        &[
            "deploy",
            "web",
            "--task-definition",
            &format!("{family}:2"),
            "--wait",
            "--timeout",
            WAIT_TIMEOUT,
        ],
    )
    .await;
    assert!(
        !bad.status.success(),
        "a deployment whose containers exit 1 succeeded:\n{}",
        bad.text()
    );
    for expected in [
        "failed: ECS deployment circuit breaker",
        &format!("rolled back to {family}:1"),
        "gantry events web",
    ] {
        assert!(
            bad.stderr.contains(expected),
            "no `{expected}`:\n{}\n{}",
            bad.text(),
            dev.proc.output()
        );
    }
    assert!(
        bad.stdout.contains("deployment failed"),
        "the events are shown:\n{}",
        bad.text()
    );

    // The service goes back to two tasks of the good revision.
    eventually(
        Duration::from_secs(60),
        "the rollback to settle",
        || async {
            let s = describe(&dev, "web").await;
            let done = s.deployments().len() == 1
                && s.task_definition()
                    .is_some_and(|t| t.ends_with(&format!("{family}:1")))
                && s.running_count() == 2;
            done.then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:#?}", dev.proc.output()));
}

#[tokio::test]
async fn errors_are_explained() {
    let dev = Dev::start().await;

    let out = gantry_at(&dev, &["events", "nosuchservice"]).await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        out.stderr.contains("nosuchservice")
            && out.stderr.contains("not found")
            && out.stderr.contains("gantry services"),
        "{}",
        out.text()
    );

    let out = gantry_at(
        &dev,
        &["deploy", "web", "--task-definition", "nosuchfamily"],
    )
    .await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        out.stderr
            .contains("task definition nosuchfamily not found"),
        "{}",
        out.text()
    );
    let list = gantry_at(&dev, &["services"]).await;
    assert!(
        list.stdout.contains("no services"),
        "a failed deploy created nothing:\n{}",
        list.text()
    );

    // Without --wait: the service, its deployment and where to look next.
    let family = unique("svc-nowait");
    register(
        &dev.client,
        &family,
        vec![busybox_container("app", &["sleep", "600"])],
    )
    .await;
    let out = gantry_at(&dev, &["deploy", "api", "--task-definition", &family]).await;
    assert!(out.status.success(), "{}", out.text());
    for expected in [
        "Created service api",
        "Started deployment ecs-svc/",
        "service/",
        "--wait",
        "gantry events api",
    ] {
        assert!(
            out.stdout.contains(expected),
            "no `{expected}`:\n{}",
            out.text()
        );
    }

    let out = gantry_within_as(
        CLI_LIMIT,
        &[
            "services",
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
async fn help_lists_the_service_commands() {
    let out = gantry(&["--help"]).await;
    assert!(out.status.success(), "{}", out.text());
    for sub in ["deploy", "services", "events"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "`{sub}` is not listed:\n{}",
            out.text()
        );
    }
    let expect = [
        (
            "deploy",
            &[
                "<SERVICE>",
                "--task-definition",
                "--desired-count",
                "--force-new-deployment",
                "--circuit-breaker",
                "--wait",
                "--timeout",
                "--endpoint",
                "--cluster",
                "Examples:",
            ][..],
        ),
        ("services", &["--endpoint", "--cluster"][..]),
        (
            "events",
            &["<SERVICE>", "--follow", "-n", "--endpoint", "--cluster"][..],
        ),
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
