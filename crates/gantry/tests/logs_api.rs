//! The CloudWatch Logs lifecycle API against `gantry dev`, through the AWS CLI: log groups
//! (create, describe by prefix and pattern and in pages, retention, tags both ways, delete),
//! streams (create, describe, delete), PutLogEvents with CloudWatch's batch rules, `aws logs
//! tail` with and without `--follow` (AWS CLI version 2: version 1 has no `tail`), and the
//! `awslogs-create-group` option deciding whether a real container starts.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

const START: Duration = Duration::from_secs(90);
const ARN_PREFIX: &str = "arn:aws:logs:us-east-1:000000000000:log-group:";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {list:#}"))
        .iter()
        .map(|g| g[field].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn messages(aws: &Aws, group: &str, stream: &str) -> Vec<String> {
    let out = aws
        .ok(&[
            "logs",
            "get-log-events",
            "--log-group-name",
            group,
            "--log-stream-name",
            stream,
            "--start-from-head",
        ])
        .await;
    names(&out, "events", "message")
}

#[tokio::test]
async fn log_groups_streams_and_events_through_their_whole_life() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let base = format!("/{}", unique("lifecycle"));
    let (a, b, c) = (
        format!("{base}/a"),
        format!("{base}/b"),
        format!("{base}/c"),
    );

    // Create, with tags; twice is an error; names are checked.
    aws.ok(&[
        "logs",
        "create-log-group",
        "--log-group-name",
        &a,
        "--tags",
        "team=core,env=test",
    ])
    .await;
    fails_with(
        &aws,
        &["logs", "create-log-group", "--log-group-name", &a],
        "ResourceAlreadyExistsException",
    )
    .await;
    let bad = fails_with(
        &aws,
        &["logs", "create-log-group", "--log-group-name", "no spaces"],
        "InvalidParameterException",
    )
    .await;
    assert!(bad.contains("logGroupName"), "{bad}");
    for g in [&b, &c] {
        aws.ok(&["logs", "create-log-group", "--log-group-name", g])
            .await;
    }
    let data = format!("/other-{}/DataLogs", unique("x"));
    aws.ok(&["logs", "create-log-group", "--log-group-name", &data])
        .await;

    // Describe by prefix: every field Terraform reads.
    let listed = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &base,
        ])
        .await;
    assert_eq!(
        names(&listed, "logGroups", "logGroupName"),
        vec![a.clone(), b.clone(), c.clone()]
    );
    let first = &listed["logGroups"][0];
    assert_eq!(first["arn"], format!("{ARN_PREFIX}{a}:*"));
    assert_eq!(first["logGroupArn"], format!("{ARN_PREFIX}{a}"));
    assert_eq!(first["storedBytes"], 0);
    assert_eq!(first["metricFilterCount"], 0);
    assert_eq!(first["logGroupClass"], "STANDARD");
    assert!(first.get("retentionInDays").is_none(), "{first:#}");
    let created = first["creationTime"].as_i64().expect("creationTime");
    assert!((now_ms() - created).abs() < 120_000, "{first:#}");

    // Pattern: a case-sensitive substring, as the model documents it.
    let by_pattern = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-pattern",
            "DataLogs",
        ])
        .await;
    assert_eq!(
        names(&by_pattern, "logGroups", "logGroupName"),
        vec![data.clone()]
    );
    let lower = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-pattern",
            "datalogs",
        ])
        .await;
    assert_eq!(lower["logGroups"], json!([]), "{lower:#}");
    fails_with(
        &aws,
        &[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &base,
            "--log-group-name-pattern",
            "a",
        ],
        "InvalidParameterException",
    )
    .await;

    // Pages of one: the raw call, then the CLI's own paginator.
    let page = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &base,
            "--limit",
            "1",
            "--no-paginate",
        ])
        .await;
    assert_eq!(names(&page, "logGroups", "logGroupName"), vec![a.clone()]);
    let token = page["nextToken"].as_str().expect("nextToken").to_string();
    let page2 = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &base,
            "--limit",
            "1",
            "--no-paginate",
            "--next-token",
            &token,
        ])
        .await;
    assert_eq!(names(&page2, "logGroups", "logGroupName"), vec![b.clone()]);
    let paged = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &base,
            "--page-size",
            "1",
        ])
        .await;
    assert_eq!(
        names(&paged, "logGroups", "logGroupName"),
        vec![a.clone(), b.clone(), c.clone()]
    );
    fails_with(
        &aws,
        &["logs", "describe-log-groups", "--limit", "51"],
        "InvalidParameterException",
    )
    .await;

    // Retention: only CloudWatch's values.
    aws.ok(&[
        "logs",
        "put-retention-policy",
        "--log-group-name",
        &a,
        "--retention-in-days",
        "7",
    ])
    .await;
    fails_with(
        &aws,
        &[
            "logs",
            "put-retention-policy",
            "--log-group-name",
            &a,
            "--retention-in-days",
            "2",
        ],
        "InvalidParameterException",
    )
    .await;
    let missing = fails_with(
        &aws,
        &[
            "logs",
            "put-retention-policy",
            "--log-group-name",
            &format!("{base}/missing"),
            "--retention-in-days",
            "7",
        ],
        "ResourceNotFoundException",
    )
    .await;
    assert!(
        missing.contains("The specified log group does not exist."),
        "{missing}"
    );
    let described = aws
        .ok(&["logs", "describe-log-groups", "--log-group-name-prefix", &a])
        .await;
    assert_eq!(described["logGroups"][0]["retentionInDays"], 7);
    aws.ok(&["logs", "delete-retention-policy", "--log-group-name", &a])
        .await;
    let described = aws
        .ok(&["logs", "describe-log-groups", "--log-group-name-prefix", &a])
        .await;
    assert!(
        described["logGroups"][0].get("retentionInDays").is_none(),
        "{described:#}"
    );

    // Tags by ARN and by name. The ARN is the group's without `:*`: the model's pattern for
    // `resourceArn` has no `*`, so the `arn` DescribeLogGroups shows is refused, as on AWS.
    let arn = format!("{ARN_PREFIX}{a}");
    fails_with(
        &aws,
        &[
            "logs",
            "tag-resource",
            "--resource-arn",
            &format!("{arn}:*"),
            "--tags",
            "owner=me",
        ],
        "InvalidParameterException",
    )
    .await;
    let tags = aws
        .ok(&["logs", "list-tags-for-resource", "--resource-arn", &arn])
        .await;
    assert_eq!(tags["tags"], json!({"team": "core", "env": "test"}));
    aws.ok(&[
        "logs",
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "owner=me,team=platform",
    ])
    .await;
    aws.ok(&[
        "logs",
        "untag-resource",
        "--resource-arn",
        &arn,
        "--tag-keys",
        "env",
    ])
    .await;
    let tags = aws
        .ok(&["logs", "list-tags-for-resource", "--resource-arn", &arn])
        .await;
    assert_eq!(tags["tags"], json!({"team": "platform", "owner": "me"}));
    fails_with(
        &aws,
        &[
            "logs",
            "list-tags-for-resource",
            "--resource-arn",
            &format!("{ARN_PREFIX}{base}/missing"),
        ],
        "ResourceNotFoundException",
    )
    .await;
    aws.ok(&[
        "logs",
        "tag-log-group",
        "--log-group-name",
        &b,
        "--tags",
        "tier=web",
    ])
    .await;
    aws.ok(&[
        "logs",
        "untag-log-group",
        "--log-group-name",
        &a,
        "--tags",
        "owner",
    ])
    .await;
    let by_name = aws
        .ok(&["logs", "list-tags-log-group", "--log-group-name", &b])
        .await;
    assert_eq!(by_name["tags"], json!({"tier": "web"}));
    let by_name = aws
        .ok(&["logs", "list-tags-log-group", "--log-group-name", &a])
        .await;
    assert_eq!(by_name["tags"], json!({"team": "platform"}));

    // Streams.
    for s in ["web/1", "web/2", "api/1"] {
        aws.ok(&[
            "logs",
            "create-log-stream",
            "--log-group-name",
            &a,
            "--log-stream-name",
            s,
        ])
        .await;
    }
    fails_with(
        &aws,
        &[
            "logs",
            "create-log-stream",
            "--log-group-name",
            &a,
            "--log-stream-name",
            "web/1",
        ],
        "ResourceAlreadyExistsException",
    )
    .await;
    fails_with(
        &aws,
        &[
            "logs",
            "create-log-stream",
            "--log-group-name",
            &format!("{base}/missing"),
            "--log-stream-name",
            "s",
        ],
        "ResourceNotFoundException",
    )
    .await;
    let web = aws
        .ok(&[
            "logs",
            "describe-log-streams",
            "--log-group-name",
            &a,
            "--log-stream-name-prefix",
            "web/",
        ])
        .await;
    assert_eq!(
        names(&web, "logStreams", "logStreamName"),
        vec!["web/1", "web/2"]
    );
    let empty = &web["logStreams"][0];
    assert_eq!(empty["arn"], format!("{arn}:log-stream:web/1"));
    assert!(empty["creationTime"].as_i64().is_some(), "{empty:#}");
    assert!(
        empty.get("lastEventTimestamp").is_none(),
        "no events yet: {empty:#}"
    );

    // PutLogEvents: order is required; old events are rejected, not failed.
    let now = now_ms();
    let out_of_order = json!([
        {"timestamp": now, "message": "second"},
        {"timestamp": now - 1000, "message": "first"}
    ])
    .to_string();
    let err = fails_with(
        &aws,
        &[
            "logs",
            "put-log-events",
            "--log-group-name",
            &a,
            "--log-stream-name",
            "web/1",
            "--log-events",
            &out_of_order,
        ],
        "InvalidParameterException",
    )
    .await;
    assert!(err.contains("chronological order"), "{err}");
    let batch = json!([
        {"timestamp": now - 20 * 86_400_000, "message": "from three weeks ago"},
        {"timestamp": now - 2000, "message": "hello"},
        {"timestamp": now - 1000, "message": "world"}
    ])
    .to_string();
    let put = aws
        .ok(&[
            "logs",
            "put-log-events",
            "--log-group-name",
            &a,
            "--log-stream-name",
            "web/1",
            "--log-events",
            &batch,
            "--sequence-token",
            "ignored",
        ])
        .await;
    assert_eq!(
        put["rejectedLogEventsInfo"],
        json!({"tooOldLogEventEndIndex": 1}),
        "{put:#}"
    );
    assert!(put["nextSequenceToken"].as_str().is_some(), "{put:#}");
    assert_eq!(messages(&aws, &a, "web/1").await, vec!["hello", "world"]);
    // A time range keeps events at or after startTime and before endTime.
    let start = (now - 2000).to_string();
    let end = (now - 1000).to_string();
    let windowed = aws
        .ok(&[
            "logs",
            "get-log-events",
            "--log-group-name",
            &a,
            "--log-stream-name",
            "web/1",
            "--start-from-head",
            "--start-time",
            &start,
            "--end-time",
            &end,
        ])
        .await;
    assert_eq!(names(&windowed, "events", "message"), vec!["hello"]);
    // Filter patterns: alternatives, exclusions; structured patterns are refused.
    let filtered = aws
        .ok(&[
            "logs",
            "filter-log-events",
            "--log-group-name",
            &a,
            "--filter-pattern",
            "?hello ?absent",
        ])
        .await;
    assert_eq!(names(&filtered, "events", "message"), vec!["hello"]);
    fails_with(
        &aws,
        &[
            "logs",
            "filter-log-events",
            "--log-group-name",
            &a,
            "--filter-pattern",
            "{ $.level = \"error\" }",
        ],
        "InvalidParameterException",
    )
    .await;
    let later = json!([{"timestamp": now, "message": "api says hi"}]).to_string();
    aws.ok(&[
        "logs",
        "put-log-events",
        "--log-group-name",
        &a,
        "--log-stream-name",
        "api/1",
        "--log-events",
        &later,
    ])
    .await;
    fails_with(
        &aws,
        &[
            "logs",
            "put-log-events",
            "--log-group-name",
            &a,
            "--log-stream-name",
            "nope",
            "--log-events",
            &later,
        ],
        "ResourceNotFoundException",
    )
    .await;

    // Streams by last event time, newest first, one per page.
    let newest = aws
        .ok(&[
            "logs",
            "describe-log-streams",
            "--log-group-name",
            &a,
            "--order-by",
            "LastEventTime",
            "--descending",
            "--limit",
            "1",
            "--no-paginate",
        ])
        .await;
    assert_eq!(names(&newest, "logStreams", "logStreamName"), vec!["api/1"]);
    assert_eq!(newest["logStreams"][0]["lastEventTimestamp"], now);
    let token = newest["nextToken"].as_str().expect("nextToken").to_string();
    let next = aws
        .ok(&[
            "logs",
            "describe-log-streams",
            "--log-group-name",
            &a,
            "--order-by",
            "LastEventTime",
            "--descending",
            "--limit",
            "1",
            "--no-paginate",
            "--next-token",
            &token,
        ])
        .await;
    assert_eq!(names(&next, "logStreams", "logStreamName"), vec!["web/1"]);
    let all = aws
        .ok(&[
            "logs",
            "describe-log-streams",
            "--log-group-name",
            &a,
            "--page-size",
            "1",
        ])
        .await;
    assert_eq!(
        names(&all, "logStreams", "logStreamName"),
        vec!["api/1", "web/1", "web/2"]
    );
    fails_with(
        &aws,
        &[
            "logs",
            "describe-log-streams",
            "--log-group-name",
            &a,
            "--order-by",
            "LastEventTime",
            "--log-stream-name-prefix",
            "web",
        ],
        "InvalidParameterException",
    )
    .await;
    let sized = aws
        .ok(&["logs", "describe-log-groups", "--log-group-name-prefix", &a])
        .await;
    let stored = ["hello", "world", "api says hi"]
        .iter()
        .map(|m| m.len() as i64 + 26)
        .sum::<i64>();
    assert_eq!(sized["logGroups"][0]["storedBytes"], stored);

    // Deleting a stream, then the group with everything in it.
    aws.ok(&[
        "logs",
        "delete-log-stream",
        "--log-group-name",
        &a,
        "--log-stream-name",
        "web/2",
    ])
    .await;
    fails_with(
        &aws,
        &[
            "logs",
            "delete-log-stream",
            "--log-group-name",
            &a,
            "--log-stream-name",
            "web/2",
        ],
        "ResourceNotFoundException",
    )
    .await;
    aws.ok(&["logs", "delete-log-group", "--log-group-name", &a])
        .await;
    fails_with(
        &aws,
        &["logs", "delete-log-group", "--log-group-name", &a],
        "ResourceNotFoundException",
    )
    .await;
    fails_with(
        &aws,
        &[
            "logs",
            "get-log-events",
            "--log-group-name",
            &a,
            "--log-stream-name",
            "web/1",
        ],
        "ResourceNotFoundException",
    )
    .await;
    let left = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &base,
        ])
        .await;
    assert_eq!(names(&left, "logGroups", "logGroupName"), vec![b, c]);
    // Created again, the group starts empty and untagged.
    aws.ok(&["logs", "create-log-group", "--log-group-name", &a])
        .await;
    let tags = aws
        .ok(&["logs", "list-tags-for-resource", "--resource-arn", &arn])
        .await;
    assert_eq!(tags["tags"], json!({}));
    let streams = aws
        .ok(&["logs", "describe-log-streams", "--log-group-name", &a])
        .await;
    assert_eq!(streams["logStreams"], json!([]));
}

#[tokio::test]
async fn aws_logs_tail_prints_and_follows() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let v2 = aws_cli_v2();
    let group = format!("/{}", unique("tail"));
    aws.ok(&["logs", "create-log-group", "--log-group-name", &group])
        .await;
    aws.ok(&[
        "logs",
        "create-log-stream",
        "--log-group-name",
        &group,
        "--log-stream-name",
        "app/1",
    ])
    .await;
    let put = |message: &str| {
        let events = json!([{"timestamp": now_ms(), "message": message}]).to_string();
        let (aws, group) = (&aws, &group);
        async move {
            aws.ok(&[
                "logs",
                "put-log-events",
                "--log-group-name",
                group,
                "--log-stream-name",
                "app/1",
                "--log-events",
                &events,
            ])
            .await
        }
    };
    put("before the tail").await;

    // Without --follow: what the last ten minutes hold, then exit.
    let mut once = aws.command(&v2, &["logs", "tail", &group]);
    let out = tokio::time::timeout(CLI_LIMIT, once.output())
        .await
        .expect("`aws logs tail` finished")
        .expect("run aws v2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`aws logs tail` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.ends_with("before the tail"))
        .unwrap_or_else(|| panic!("no event printed:\n{stdout}"));
    assert!(line.contains(" app/1 "), "the stream is named: {line}");

    // With --follow: prints what arrives after it started, until killed.
    let mut follow = aws.command(&v2, &["logs", "tail", &group, "--follow"]);
    follow.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = follow.spawn().expect("spawn aws logs tail --follow");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // The old event first: the tail started ten minutes back.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut put_new = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "`aws logs tail --follow` did not print the new event within 60 s; it printed: {seen:?}"
        );
        match tokio::time::timeout(left.min(Duration::from_secs(1)), lines.next_line()).await {
            Ok(Ok(Some(l))) => {
                if l.ends_with("before the tail") && !put_new {
                    put_new = true;
                    put("while following").await;
                }
                let done = l.ends_with("while following");
                seen.push(l);
                if done {
                    break;
                }
            }
            Ok(Ok(None)) => panic!("`aws logs tail --follow` exited; it printed: {seen:?}"),
            Ok(Err(e)) => panic!("reading the tail: {e}"),
            Err(_) => {}
        }
    }
    child.kill().await.expect("kill the tail");
    assert_eq!(
        seen.iter()
            .filter(|l| l.ends_with("before the tail"))
            .count(),
        1,
        "no event twice: {seen:?}"
    );
}

/// A one-container definition logging through awslogs to `group`, printing `line`.
fn awslogs_definition(family: &str, group: &str, create_group: Option<&str>, line: &str) -> Value {
    let mut options = json!({
        "awslogs-group": group,
        "awslogs-region": "us-east-1",
        "awslogs-stream-prefix": "app"
    });
    if let Some(v) = create_group {
        options["awslogs-create-group"] = json!(v);
    }
    json!({
        "family": family,
        "containerDefinitions": [{
            "name": "app",
            "image": IMAGE,
            "memory": 16,
            "essential": true,
            "command": ["sh", "-c", format!("echo {line}")],
            "logConfiguration": {"logDriver": "awslogs", "options": options}
        }]
    })
}

async fn run_and_wait_stopped(dev: &Dev, aws: &Aws, definition: &Value) -> Value {
    let file = aws.file("td.json", definition);
    aws.ok(&["ecs", "register-task-definition", "--cli-input-json", &file])
        .await;
    let family = definition["family"].as_str().expect("family");
    let run = aws
        .ok(&[
            "ecs",
            "run-task",
            "--cluster",
            &dev.cluster,
            "--task-definition",
            family,
        ])
        .await;
    let arn = run["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("no task: {run:#}"))
        .to_string();
    wait_task(&dev.client, &dev.cluster, &arn, "STOPPED", START).await;
    let d = aws
        .ok(&[
            "ecs",
            "describe-tasks",
            "--cluster",
            &dev.cluster,
            "--tasks",
            &arn,
        ])
        .await;
    d["tasks"][0].clone()
}

#[tokio::test]
async fn awslogs_create_group_decides_whether_a_container_starts() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);

    // A group that does not exist, without awslogs-create-group: the container never starts.
    let family = unique("nogroup");
    let group = format!("/{family}/missing");
    let task = run_and_wait_stopped(
        &dev,
        &aws,
        &awslogs_definition(&family, &group, None, "never-printed"),
    )
    .await;
    assert_eq!(task["stopCode"], "TaskFailedToStart", "{task:#}");
    assert_eq!(
        task["containers"][0]["reason"],
        "CannotStartContainerError: Error response from daemon: failed to initialize logging \
         driver: failed to create Cloudwatch log stream: ResourceNotFoundException: The \
         specified log group does not exist.",
        "{task:#}"
    );
    assert!(task.get("startedAt").is_none(), "{task:#}");
    let groups = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &group,
        ])
        .await;
    assert_eq!(groups["logGroups"], json!([]), "nothing was created");

    // Once the group exists, the same definition runs.
    aws.ok(&["logs", "create-log-group", "--log-group-name", &group])
        .await;
    let task = run_and_wait_stopped(
        &dev,
        &aws,
        &awslogs_definition(&family, &group, None, "now-it-runs"),
    )
    .await;
    assert_eq!(task["stopCode"], "EssentialContainerExited", "{task:#}");
    assert_eq!(task["containers"][0]["exitCode"], 0, "{task:#}");
    let id = task_id(task["taskArn"].as_str().expect("taskArn")).to_string();
    let stream = format!("app/app/{id}");
    let printed = eventually(Duration::from_secs(30), "the container's output", || {
        let (aws, group, stream) = (&aws, &group, &stream);
        async move {
            let m = messages(aws, group, stream).await;
            (!m.is_empty()).then_some(m)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    assert_eq!(printed, vec!["now-it-runs"]);

    // awslogs-create-group "true": the group is created when the task starts.
    let family = unique("mkgroup");
    let group = format!("/{family}/created");
    let task = run_and_wait_stopped(
        &dev,
        &aws,
        &awslogs_definition(&family, &group, Some("true"), "group-made"),
    )
    .await;
    assert_eq!(task["stopCode"], "EssentialContainerExited", "{task:#}");
    let groups = aws
        .ok(&[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            &group,
        ])
        .await;
    assert_eq!(
        names(&groups, "logGroups", "logGroupName"),
        vec![group.clone()]
    );
    let id = task_id(task["taskArn"].as_str().expect("taskArn")).to_string();
    let stream = format!("app/app/{id}");
    let printed = eventually(Duration::from_secs(30), "the container's output", || {
        let (aws, group, stream) = (&aws, &group, &stream);
        async move {
            let m = messages(aws, group, stream).await;
            (!m.is_empty()).then_some(m)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.proc.output()));
    assert_eq!(printed, vec!["group-made"]);
}
