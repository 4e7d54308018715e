//! An agent given several control-plane servers (`--server A,B`): when the one it uses dies,
//! it moves to the next and its running tasks are left alone (same container, never
//! restarted); an agent whose first server is down joins through the next.
//!
//! The two "replicas" are one `gantry server` at a time on the same data directory (the SQLite
//! store has one writer): A is killed with SIGKILL, then B starts on another port over the
//! same store, as a replica taking over would.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// `--server` for an agent with `data_dir`, listing `first` and `second` in the order that
/// makes the agent start at `first` (agents start at a server chosen by a hash of their host
/// and data directory).
fn servers_starting_at(first: &str, second: &str, data_dir: &Path) -> String {
    use gantry_agent::servers::{agent_seed, start_index};
    if start_index(&agent_seed(data_dir), 2) == 0 {
        format!("{first},{second}")
    } else {
        format!("{second},{first}")
    }
}

/// Whether `line` names `url` whole (not a longer port that starts the same).
fn names(line: &str, url: &str) -> bool {
    line.match_indices(url).any(|(at, _)| {
        !line[at + url.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Waits for the agent's one line saying it left `from` for `to`.
async fn failover_line(agent: &Proc, from: &str, to: &str) -> Result<String, String> {
    let left = format!("control plane {from} unreachable (");
    let using = format!("; using {to}");
    eventually(T, &format!("the agent to fail over to {to}"), || {
        let out = agent.output();
        let line = out
            .lines()
            .find(|l| l.contains(&left) && names(l, &using))
            .map(str::to_string);
        async move { line }
    })
    .await
}

fn runtime_id(t: &aws_sdk_ecs::types::Task) -> String {
    t.containers()[0]
        .runtime_id()
        .expect("runtimeId")
        .to_string()
}

#[tokio::test]
async fn the_agent_fails_over_to_the_next_server_and_its_task_runs_on_untouched() {
    let mut split = Split::start(0).await;
    let a = split.endpoint.clone();
    let b_port = free_port();
    let b = format!("http://127.0.0.1:{b_port}");
    let servers = servers_starting_at(&a, &b, &split.agent_dir(0));
    split.spawn_agent_on(&servers);
    split.wait_connected(1).await;

    let td = register(
        &split.client,
        &unique("failover"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let long_lived = run_one(&split.client, &split.cluster, &td).await;
    let before = wait_task(&split.client, &split.cluster, &long_lived, "RUNNING", T).await;
    let instance = before
        .container_instance_arn()
        .expect("instance")
        .to_string();
    let container = runtime_id(&before);
    let started_at = inspect(&container)["State"]["StartedAt"].clone();
    assert!(started_at.is_string(), "{started_at}");

    // A dies; B takes over the same store on another port.
    split.move_server_to(b_port).await;
    let moved_at = Instant::now();
    let line = failover_line(&split.agents[0], &a, &b)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
    eprintln!("failed over in {:?}: {line}", moved_at.elapsed());
    let c = &split.client;

    // A new task run through B reaches RUNNING on the same agent: its channel is on B.
    let fresh = run_one(c, &split.cluster, &td).await;
    let fresh = wait_task(c, &split.cluster, &fresh, "RUNNING", T).await;
    assert_eq!(fresh.container_instance_arn(), Some(instance.as_str()));

    // The long-lived task was never touched: RUNNING as B sees it, on the same container,
    // started once.
    let now = c
        .describe_tasks()
        .cluster(&split.cluster)
        .tasks(&long_lived)
        .send()
        .await
        .expect("DescribeTasks through B")
        .tasks()[0]
        .clone();
    assert_eq!(now.last_status(), Some("RUNNING"), "{}", split.dump());
    assert_eq!(runtime_id(&now), container, "the same container");
    let state = inspect(&container)["State"].clone();
    assert_eq!(state["Running"], true, "{state}");
    assert_eq!(state["StartedAt"], started_at, "never restarted: {state}");
    assert_eq!(
        inspect(&container)["RestartCount"],
        0,
        "never restarted by Docker"
    );
    assert_eq!(
        split.containers().len(),
        2,
        "no duplicate containers: {}",
        split.dump()
    );
    // One line per failover: the agent moved once.
    let failovers = split.agents[0]
        .output()
        .lines()
        .filter(|l| l.contains("unreachable (") && l.contains("; using "))
        .count();
    assert_eq!(failovers, 1, "{}", split.agents[0].output());
}

#[tokio::test]
async fn an_agent_whose_first_server_is_down_joins_through_the_next() {
    let mut split = Split::start(0).await;
    let live = split.endpoint.clone();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let servers = servers_starting_at(&dead, &live, &split.agent_dir(0));
    split.spawn_agent_on(&servers);
    split.wait_connected(1).await;
    failover_line(&split.agents[0], &dead, &live)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", split.dump()));
}
