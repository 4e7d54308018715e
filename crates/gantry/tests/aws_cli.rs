//! The AWS CLI (v1) end to end against `gantry dev`: `--cli-input-json` registration,
//! `run-task`/`stop-task` with the `tasks-running`/`tasks-stopped` waiters (success and failure
//! acceptors), the CLI's own pagination (`--page-size`, `--max-items`, `--starting-token`),
//! error shapes, and CloudWatch Logs `get-log-events` on the streams the agent writes.
//!
//! Every invocation runs with a private HOME and nonexistent config/credentials files, and
//! without any inherited `AWS_*` variable, so nothing on the machine changes what the CLI does
//! (`Aws` in `common/mod.rs`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const START: Duration = Duration::from_secs(60);
/// A container command that runs until SIGTERM and answers it within a second (a shell as
/// PID 1 would otherwise ignore it and be killed only after the 30 s stop timeout).
const UNTIL_TERM: &str = "trap 'exit 0' TERM; echo up; while true; do sleep 1; done";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn container<'a>(task_or_def: &'a Value, key: &str, name: &str) -> &'a Value {
    task_or_def[key]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {task_or_def:#}"))
}

async fn describe_tasks(aws: &Aws, cluster: &str, arns: &[String]) -> Vec<Value> {
    let mut args = vec!["ecs", "describe-tasks", "--cluster", cluster, "--tasks"];
    args.extend(arns.iter().map(String::as_str));
    let d = aws.ok(&args).await;
    assert_eq!(
        d["failures"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{d:#}"
    );
    let tasks = d["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), arns.len(), "{d:#}");
    tasks
}

#[tokio::test]
async fn register_from_cli_input_json_run_wait_and_stop() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let family = unique("cli-web");
    let group = format!("/custom/{family}");
    let input = json!({
        "family": family,
        "containerDefinitions": [
            {
                "name": "web",
                "image": IMAGE,
                "memory": 32,
                "essential": true,
                "command": ["sh", "-c", UNTIL_TERM],
                "environment": [{"name": "GREETING", "value": "hello"}, {"name": "MODE", "value": "cli"}],
                "portMappings": [{"containerPort": 8080, "hostPort": 0}],
                "healthCheck": {
                    "command": ["CMD-SHELL", "true"],
                    "interval": 5,
                    "timeout": 2,
                    "retries": 3
                },
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": group,
                        "awslogs-region": "us-east-1",
                        "awslogs-stream-prefix": "web"
                    }
                }
            },
            {
                "name": "sidecar",
                "image": IMAGE,
                "memory": 16,
                "essential": false,
                "command": ["sh", "-c", UNTIL_TERM],
                "environment": [{"name": "ROLE", "value": "helper"}]
            }
        ]
    });
    let file = aws.file("taskdef.json", &input);
    let reg = aws
        .ok(&["ecs", "register-task-definition", "--cli-input-json", &file])
        .await;
    assert_eq!(reg["taskDefinition"]["family"], family.as_str());
    assert_eq!(reg["taskDefinition"]["revision"], 1);

    // Describe echoes what was sent, with AWS's normalisation.
    let d = aws
        .ok(&[
            "ecs",
            "describe-task-definition",
            "--task-definition",
            &format!("{family}:1"),
        ])
        .await;
    let td = &d["taskDefinition"];
    assert_eq!(
        td["taskDefinitionArn"],
        format!("arn:aws:ecs:us-east-1:000000000000:task-definition/{family}:1")
    );
    assert_eq!(td["status"], "ACTIVE");
    assert_eq!(td["containerDefinitions"].as_array().unwrap().len(), 2);
    let web = container(td, "containerDefinitions", "web");
    assert_eq!(web["image"], IMAGE);
    assert_eq!(web["memory"], 32);
    assert_eq!(web["essential"], true);
    assert_eq!(web["command"], json!(["sh", "-c", UNTIL_TERM]));
    assert_eq!(
        web["environment"],
        json!([{"name": "GREETING", "value": "hello"}, {"name": "MODE", "value": "cli"}])
    );
    assert_eq!(
        web["portMappings"],
        json!([{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}])
    );
    assert_eq!(web["healthCheck"]["command"], json!(["CMD-SHELL", "true"]));
    assert_eq!(web["healthCheck"]["interval"], 5);
    assert_eq!(web["healthCheck"]["timeout"], 2);
    assert_eq!(web["healthCheck"]["retries"], 3);
    assert_eq!(web["logConfiguration"]["logDriver"], "awslogs");
    assert_eq!(
        web["logConfiguration"]["options"],
        json!({"awslogs-group": group, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "web"})
    );
    let side = container(td, "containerDefinitions", "sidecar");
    assert_eq!(side["essential"], false);
    assert_eq!(
        side["environment"],
        json!([{"name": "ROLE", "value": "helper"}])
    );
    assert_eq!(side["portMappings"], json!([]));

    // The awslogs group must exist before the task starts (no awslogs-create-group).
    aws.ok(&["logs", "create-log-group", "--log-group-name", &group])
        .await;

    // Two copies, then the CLI's waiter until both are RUNNING.
    let run = aws
        .ok(&[
            "ecs",
            "run-task",
            "--cluster",
            &dev.cluster,
            "--task-definition",
            &family,
            "--count",
            "2",
        ])
        .await;
    assert_eq!(run["failures"], json!([]), "{run:#}");
    let arns: Vec<String> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(arns.len(), 2, "{run:#}");
    assert_ne!(arns[0], arns[1]);
    let mut wait = vec![
        "ecs",
        "wait",
        "tasks-running",
        "--cluster",
        &dev.cluster,
        "--tasks",
    ];
    wait.extend(arns.iter().map(String::as_str));
    let waited = aws.run(&wait).await;
    assert!(
        waited.status.success(),
        "tasks-running waiter failed: {}\n{}",
        waited.stderr,
        dev.proc.output()
    );
    let tasks = describe_tasks(&aws, &dev.cluster, &arns).await;
    for t in &tasks {
        assert_eq!(t["lastStatus"], "RUNNING", "{t:#}");
        assert_eq!(t["desiredStatus"], "RUNNING", "{t:#}");
        assert_eq!(
            t["taskDefinitionArn"],
            format!("arn:aws:ecs:us-east-1:000000000000:task-definition/{family}:1")
        );
        let web = container(t, "containers", "web");
        assert_eq!(web["lastStatus"], "RUNNING", "{t:#}");
        assert_eq!(web["networkBindings"][0]["containerPort"], 8080, "{t:#}");
        assert!(
            web["networkBindings"][0]["hostPort"].as_i64().unwrap_or(0) > 0,
            "{t:#}"
        );
        // The environment really reached Docker.
        let id = web["runtimeId"].as_str().expect("runtimeId");
        let env = strings(&inspect(id)["Config"]["Env"]);
        assert!(env.contains(&"GREETING=hello".to_string()), "{env:?}");
        assert!(env.contains(&"MODE=cli".to_string()), "{env:?}");
    }

    // Stop both with a reason; the stopped waiter then returns.
    for arn in &arns {
        let s = aws
            .ok(&[
                "ecs",
                "stop-task",
                "--cluster",
                &dev.cluster,
                "--task",
                task_id(arn),
                "--reason",
                "stopped by the aws cli test",
            ])
            .await;
        assert_eq!(s["task"]["taskArn"], arn.as_str());
        assert_eq!(s["task"]["desiredStatus"], "STOPPED");
    }
    let mut wait = vec![
        "ecs",
        "wait",
        "tasks-stopped",
        "--cluster",
        &dev.cluster,
        "--tasks",
    ];
    wait.extend(arns.iter().map(String::as_str));
    let waited = aws.run(&wait).await;
    assert!(
        waited.status.success(),
        "tasks-stopped waiter failed: {}",
        waited.stderr
    );
    for t in describe_tasks(&aws, &dev.cluster, &arns).await {
        assert_eq!(t["lastStatus"], "STOPPED", "{t:#}");
        assert_eq!(t["stoppedReason"], "stopped by the aws cli test", "{t:#}");
        assert_eq!(t["stopCode"], "UserInitiated", "{t:#}");
        assert!(t["stoppedAt"].is_number(), "{t:#}");
    }
}

#[tokio::test]
async fn the_tasks_running_waiter_fails_when_the_task_stops() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let family = unique("cli-exit");
    let containers = json!([{
        "name": "main",
        "image": IMAGE,
        "memory": 16,
        "command": ["sh", "-c", "exit 1"]
    }]);
    aws.ok(&[
        "ecs",
        "register-task-definition",
        "--family",
        &family,
        "--container-definitions",
        &containers.to_string(),
    ])
    .await;
    let run = aws
        .ok(&[
            "ecs",
            "run-task",
            "--cluster",
            &dev.cluster,
            "--task-definition",
            &format!("{family}:1"),
        ])
        .await;
    let arn = run["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("no task: {run:#}"))
        .to_string();
    let waited = aws
        .run(&[
            "ecs",
            "wait",
            "tasks-running",
            "--cluster",
            &dev.cluster,
            "--tasks",
            &arn,
        ])
        .await;
    assert!(
        !waited.status.success(),
        "the waiter succeeded for a task that exits at once: {}{}",
        waited.stdout,
        waited.stderr
    );
    assert!(
        waited.stderr.contains("TasksRunning failed") && waited.stderr.contains("STOPPED"),
        "the failure acceptor (lastStatus STOPPED) should end the wait: {}",
        waited.stderr
    );
    assert!(
        waited.elapsed < Duration::from_secs(60),
        "the waiter took {:?}",
        waited.elapsed
    );
    let t = &describe_tasks(&aws, &dev.cluster, std::slice::from_ref(&arn)).await[0];
    assert_eq!(t["lastStatus"], "STOPPED", "{t:#}");
    assert_eq!(
        t["stoppedReason"], "Essential container in task exited",
        "{t:#}"
    );
    assert_eq!(container(t, "containers", "main")["exitCode"], 1, "{t:#}");
}

/// A container that started and exited is `EssentialContainerExited`, however quickly it
/// exited: `TaskFailedToStart` is for tasks whose containers never ran (pull failures...).
/// Five copies make the race between the exit and the RUNNING report show reliably.
#[tokio::test]
async fn a_container_that_exits_at_once_stops_the_task_as_essential_container_exited() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let family = unique("cli-quick");
    let containers = json!([{
        "name": "main",
        "image": IMAGE,
        "memory": 16,
        "command": ["sh", "-c", "exit 1"]
    }]);
    aws.ok(&[
        "ecs",
        "register-task-definition",
        "--family",
        &family,
        "--container-definitions",
        &containers.to_string(),
    ])
    .await;
    let run = aws
        .ok(&[
            "ecs",
            "run-task",
            "--cluster",
            &dev.cluster,
            "--task-definition",
            &family,
            "--count",
            "5",
        ])
        .await;
    assert_eq!(run["failures"], json!([]), "{run:#}");
    let arns: Vec<String> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(arns.len(), 5);
    let mut wait = vec![
        "ecs",
        "wait",
        "tasks-stopped",
        "--cluster",
        &dev.cluster,
        "--tasks",
    ];
    wait.extend(arns.iter().map(String::as_str));
    let waited = aws.run(&wait).await;
    assert!(waited.status.success(), "{}", waited.stderr);
    let tasks = describe_tasks(&aws, &dev.cluster, &arns).await;
    let summary: Vec<String> = tasks
        .iter()
        .map(|t| {
            format!(
                "{} stopCode={} startedAt={} exitCode={}",
                task_id(t["taskArn"].as_str().unwrap_or("")),
                t["stopCode"],
                t["startedAt"],
                container(t, "containers", "main")["exitCode"]
            )
        })
        .collect();
    for t in &tasks {
        assert_eq!(container(t, "containers", "main")["exitCode"], 1, "{t:#}");
        assert_eq!(
            t["stopCode"], "EssentialContainerExited",
            "the container ran and exited 1, yet: {summary:#?}"
        );
    }
}

/// The number of requests for `op` in a `--debug` log.
fn requests(stderr: &str, op: &str) -> usize {
    stderr
        .matches(&format!("Making request for OperationModel(name={op})"))
        .count()
}

#[tokio::test]
async fn the_cli_paginates_with_page_size_max_items_and_starting_token() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let c = &dev.client;

    // One family with five revisions.
    let family = unique("cli-page");
    let mut revisions = Vec::new();
    for _ in 0..5 {
        revisions.push(
            register(
                c,
                &family,
                vec![busybox_container("app", &["sleep", "3600"])],
            )
            .await,
        );
    }
    let all: BTreeSet<String> = revisions.iter().cloned().collect();
    assert_eq!(all.len(), 5);

    let paged = aws
        .run(&[
            "--debug",
            "ecs",
            "list-task-definitions",
            "--family-prefix",
            &family,
            "--page-size",
            "2",
        ])
        .await;
    assert!(paged.status.success(), "{}", paged.stderr);
    let listed = strings(&paged.json["taskDefinitionArns"]);
    assert_eq!(listed, revisions, "each revision once, oldest first");
    assert!(paged.json.get("NextToken").is_none(), "{:#}", paged.json);
    assert!(
        requests(&paged.stderr, "ListTaskDefinitions") >= 3,
        "with --page-size 2 the server should hand out 5 definitions in 3 pages"
    );

    let first = aws
        .ok(&[
            "ecs",
            "list-task-definitions",
            "--family-prefix",
            &family,
            "--max-items",
            "2",
        ])
        .await;
    assert_eq!(
        strings(&first["taskDefinitionArns"]),
        revisions[..2].to_vec()
    );
    let token = first["NextToken"]
        .as_str()
        .unwrap_or_else(|| panic!("--max-items 2 of 5 gives a NextToken: {first:#}"))
        .to_string();
    let rest = aws
        .ok(&[
            "ecs",
            "list-task-definitions",
            "--family-prefix",
            &family,
            "--starting-token",
            &token,
            "--max-items",
            "10",
        ])
        .await;
    assert_eq!(
        strings(&rest["taskDefinitionArns"]),
        revisions[2..].to_vec()
    );
    assert!(rest.get("NextToken").is_none(), "{rest:#}");

    // Five families sharing a prefix.
    let prefix = unique("cli-fam");
    let mut families = Vec::new();
    for i in 0..5 {
        let f = format!("{prefix}-{i}");
        register(c, &f, vec![busybox_container("app", &["true"])]).await;
        families.push(f);
    }
    let paged = aws
        .ok(&[
            "ecs",
            "list-task-definition-families",
            "--family-prefix",
            &prefix,
            "--page-size",
            "2",
        ])
        .await;
    assert_eq!(strings(&paged["families"]), families);
    let first = aws
        .ok(&[
            "ecs",
            "list-task-definition-families",
            "--family-prefix",
            &prefix,
            "--max-items",
            "2",
        ])
        .await;
    let token = first["NextToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no NextToken: {first:#}"))
        .to_string();
    let rest = aws
        .ok(&[
            "ecs",
            "list-task-definition-families",
            "--family-prefix",
            &prefix,
            "--starting-token",
            &token,
            "--max-items",
            "10",
        ])
        .await;
    let mut seen = strings(&first["families"]);
    seen.extend(strings(&rest["families"]));
    assert_eq!(seen, families);

    // Three running tasks, one per page.
    let td = register(
        c,
        &unique("cli-ptask"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let run = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .count(3)
        .send()
        .await
        .expect("RunTask");
    assert!(run.failures().is_empty(), "{:?}", run.failures());
    let mut tasks = BTreeSet::new();
    for t in run.tasks() {
        let arn = t.task_arn().unwrap().to_string();
        wait_task(c, &dev.cluster, &arn, "RUNNING", START).await;
        tasks.insert(arn);
    }
    assert_eq!(tasks.len(), 3);
    let paged = aws
        .run(&[
            "--debug",
            "ecs",
            "list-tasks",
            "--cluster",
            &dev.cluster,
            "--page-size",
            "1",
        ])
        .await;
    assert!(paged.status.success(), "{}", paged.stderr);
    let listed = strings(&paged.json["taskArns"]);
    assert_eq!(listed.len(), 3, "each task once: {listed:?}");
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), tasks);
    assert!(
        requests(&paged.stderr, "ListTasks") >= 3,
        "with --page-size 1 the server should hand out 3 tasks in 3 pages"
    );
    let first = aws
        .ok(&[
            "ecs",
            "list-tasks",
            "--cluster",
            &dev.cluster,
            "--max-items",
            "2",
        ])
        .await;
    let token = first["NextToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no NextToken: {first:#}"))
        .to_string();
    let rest = aws
        .ok(&[
            "ecs",
            "list-tasks",
            "--cluster",
            &dev.cluster,
            "--starting-token",
            &token,
            "--max-items",
            "10",
        ])
        .await;
    let mut seen = strings(&first["taskArns"]);
    assert_eq!(seen.len(), 2);
    seen.extend(strings(&rest["taskArns"]));
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), tasks);
}

#[tokio::test]
async fn errors_reach_the_cli_in_the_shape_it_expects() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);

    let d = aws
        .ok(&["ecs", "describe-clusters", "--clusters", "nope"])
        .await;
    assert_eq!(d["clusters"], json!([]), "{d:#}");
    assert_eq!(d["failures"][0]["reason"], "MISSING", "{d:#}");
    assert_eq!(
        d["failures"][0]["arn"], "arn:aws:ecs:us-east-1:000000000000:cluster/nope",
        "{d:#}"
    );

    let out = aws.run(&["ecs", "list-tasks", "--cluster", "nope"]).await;
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(
        out.stderr.contains("ClusterNotFoundException"),
        "{}",
        out.stderr
    );
    assert!(
        out.elapsed < Duration::from_secs(10),
        "a client error must not be retried: took {:?}",
        out.elapsed
    );

    let out = aws
        .run(&[
            "ecs",
            "run-task",
            "--task-definition",
            "nope:1",
            "--cluster",
            &dev.cluster,
        ])
        .await;
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains("ClientException"), "{}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
}

/// `get-log-events` on one stream: the messages, or None when the group or stream is absent.
async fn log_messages(aws: &Aws, group: &str, stream: &str) -> Option<Vec<String>> {
    let out = aws
        .run(&[
            "logs",
            "get-log-events",
            "--log-group-name",
            group,
            "--log-stream-name",
            stream,
            "--start-from-head",
        ])
        .await;
    if !out.status.success() {
        assert!(
            out.stderr.contains("ResourceNotFoundException"),
            "unexpected GetLogEvents error: {}",
            out.stderr
        );
        return None;
    }
    Some(
        out.json["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events array: {:#}", out.json))
            .iter()
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect(),
    )
}

#[tokio::test]
async fn container_output_is_readable_with_aws_logs_get_log_events() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let c = &dev.client;
    let family = unique("cli-logs");
    let group = format!("/custom/{family}");
    let containers = json!([
        {
            "name": "plain",
            "image": IMAGE,
            "memory": 16,
            "command": ["sh", "-c", "echo plain-says-hello; sleep 1; echo plain-done"]
        },
        {
            "name": "routed",
            "image": IMAGE,
            "memory": 16,
            "essential": false,
            "command": ["sh", "-c", "echo routed-says-hello"],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": group,
                    "awslogs-region": "us-east-1",
                    "awslogs-stream-prefix": "pfx",
                    "awslogs-create-group": "true"
                }
            }
        }
    ]);
    aws.ok(&[
        "ecs",
        "register-task-definition",
        "--family",
        &family,
        "--container-definitions",
        &containers.to_string(),
    ])
    .await;
    let run = aws
        .ok(&[
            "ecs",
            "run-task",
            "--cluster",
            &dev.cluster,
            "--task-definition",
            &family,
        ])
        .await;
    let arn = run["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("no task: {run:#}"))
        .to_string();
    let id = task_id(&arn).to_string();
    // The task runs to completion (the essential container exits 0).
    let t = wait_task(c, &dev.cluster, &arn, "STOPPED", START).await;
    assert_eq!(
        t.containers()
            .iter()
            .find(|c| c.name() == Some("plain"))
            .and_then(|c| c.exit_code()),
        Some(0),
        "{t:#?}"
    );

    // No awslogs configuration: /ecs/<family>, ecs/<container>/<task-id>.
    let default_group = format!("/ecs/{family}");
    let default_stream = format!("ecs/plain/{id}");
    let plain = eventually(Duration::from_secs(30), "the plain container's log", || {
        let aws = &aws;
        let (g, s) = (default_group.clone(), default_stream.clone());
        async move {
            let m = log_messages(aws, &g, &s).await?;
            m.contains(&"plain-done".to_string()).then_some(m)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    assert_eq!(plain, vec!["plain-says-hello", "plain-done"]);

    // awslogs: the group and stream prefix the definition names.
    let routed_stream = format!("pfx/routed/{id}");
    let routed = eventually(
        Duration::from_secs(30),
        "the routed container's log",
        || {
            let aws = &aws;
            let (g, s) = (group.clone(), routed_stream.clone());
            async move {
                let m = log_messages(aws, &g, &s).await?;
                (!m.is_empty()).then_some(m)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    assert_eq!(routed, vec!["routed-says-hello"]);

    // And nowhere else.
    let misrouted = log_messages(&aws, &default_group, &format!("ecs/routed/{id}")).await;
    assert!(
        misrouted.as_ref().is_none_or(Vec::is_empty),
        "the routed container also wrote to the default group: {misrouted:?}"
    );
    let streams = aws
        .ok(&["logs", "describe-log-streams", "--log-group-name", &group])
        .await;
    let names: Vec<&str> = streams["logStreams"]
        .as_array()
        .unwrap_or_else(|| panic!("{streams:#}"))
        .iter()
        .filter_map(|s| s["logStreamName"].as_str())
        .collect();
    assert_eq!(names, vec![routed_stream.as_str()], "{streams:#}");
}
