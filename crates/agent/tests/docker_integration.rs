//! Against the real Docker engine, without a control plane: the driver, and the supervisor and
//! its runners driven by hand-made Tasks messages. Docker must be reachable: these tests fail
//! (they do not skip) when it is not.

mod common;

use common::*;
use gantry_agent::docker::{follow_events, EventFeed, EventKind};
use gantry_agent::logs::{run_shipper, LogSink};
use gantry_agent::spec::{
    build_create_spec, network_bindings, plan_volumes, task_id, NetMode, TaskContext,
};
use gantry_model::agent_protocol::{labels, LogBatch};
use gantry_model::status;
use gantry_model::types::{
    ContainerDefinition, ContainerDependency, HealthCheck, KeyValuePair, MountPoint, PortMapping,
    TaskDefinition, Volume,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

fn sleeper(name: &str) -> ContainerDefinition {
    ContainerDefinition {
        name: Some(name.into()),
        image: Some(IMAGE.into()),
        command: Some(vec!["sleep".into(), "300".into()]),
        stop_timeout: Some(1),
        ..Default::default()
    }
}

fn shell(name: &str, script: &str) -> ContainerDefinition {
    ContainerDefinition {
        name: Some(name.into()),
        image: Some(IMAGE.into()),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        stop_timeout: Some(1),
        ..Default::default()
    }
}

fn depends(on: &str, condition: &str) -> Option<Vec<ContainerDependency>> {
    Some(vec![ContainerDependency {
        container_name: on.into(),
        condition: condition.into(),
    }])
}

fn td(family: &str, containers: Vec<ContainerDefinition>) -> TaskDefinition {
    TaskDefinition {
        family: family.into(),
        revision: Some(1),
        container_definitions: containers,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_applies_limits_and_sees_the_die_event() {
    let (d, arn, _guard) = fresh_instance().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(follow_events(d.clone(), tx, stop_rx));

    let mut def = sleeper("app");
    def.memory = Some(64);
    def.cpu = Some(128);
    def.environment = Some(vec![KeyValuePair {
        name: Some("GREETING".into()),
        value: Some("hi".into()),
    }]);
    def.port_mappings = Some(vec![PortMapping {
        container_port: Some(8080),
        host_port: Some(0),
        ..Default::default()
    }]);
    def.docker_labels = Some(BTreeMap::from([(TEST_LABEL.to_string(), "1".to_string())]));
    let t = td("gantry-test-driver", vec![def.clone()]);
    let task = task_arn();
    let volumes = plan_volumes(&t, task_id(&task));
    let ctx = TaskContext {
        task_arn: &task,
        cluster_arn: CLUSTER_ARN,
        instance_arn: &arn,
        task_definition: &t,
        overrides: None,
        volumes: &volumes,
    };
    let spec = build_create_spec(&ctx, &def).unwrap();
    let id = d.create_container(&spec).await.unwrap();
    d.start_container(&id).await.unwrap();
    let snap = d.inspect_container(&id).await.unwrap();
    assert!(snap.running, "{snap:?}");
    assert_eq!(snap.name, spec.name);
    assert_eq!(snap.memory, Some(64 * 1024 * 1024));
    assert_eq!(snap.cpu_shares, Some(128));
    assert_eq!(snap.stop_timeout, Some(1));
    assert_eq!(snap.label(labels::TASK_ARN), Some(task.as_str()));
    assert_eq!(snap.label(labels::INSTANCE_ARN), Some(arn.as_str()));
    let nb = network_bindings(NetMode::Bridge, Some(&def), snap.ports.as_ref());
    assert_eq!(nb.len(), 1, "{nb:?}");
    assert_eq!(nb[0].container_port, Some(8080));
    assert!(
        nb[0].host_port.unwrap_or(0) > 0,
        "dynamic host port: {nb:?}"
    );
    assert_eq!(nb[0].bind_ip.as_deref(), Some("0.0.0.0"));

    let killed = Instant::now();
    d.kill_container(&id).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.recv().await {
                Some(EventFeed::Event(e)) if e.id == id && e.kind == EventKind::Die => break e,
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("die event within 10 s");
    eprintln!("die event {:?} after the kill", killed.elapsed());
    assert_eq!(ev.exit_code, Some(137));
    assert_eq!(ev.task_arn.as_deref(), Some(task.as_str()));
    let snap = d.inspect_container(&id).await.unwrap();
    assert!(!snap.running);
    assert_eq!(snap.exit_code, Some(137));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_dependencies_in_order_and_stops_when_an_essential_container_dies() {
    let (d, arn, _guard) = fresh_instance().await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(1), None).await;

    let mut init = shell("init", "echo init-done; sleep 1; exit 0");
    init.essential = Some(false);
    let mut app = sleeper("app");
    app.depends_on = depends("init", "SUCCESS");
    app.health_check = Some(HealthCheck {
        command: vec!["CMD-SHELL".into(), "test -e /bin/sh".into()],
        interval: Some(1),
        timeout: Some(2),
        retries: Some(2),
        start_period: None,
    });
    let mut web = sleeper("web");
    web.depends_on = depends("app", "HEALTHY");
    web.memory = Some(32);
    web.port_mappings = Some(vec![PortMapping {
        container_port: Some(8080),
        host_port: None,
        ..Default::default()
    }]);
    web.mount_points = Some(vec![MountPoint {
        source_volume: Some("scratch".into()),
        container_path: Some("/scratch".into()),
        read_only: None,
    }]);
    let mut t = td("gantry-test-deps", vec![init, app, web]);
    t.volumes = Some(vec![Volume {
        name: Some("scratch".into()),
        ..Default::default()
    }]);
    let task = task_arn();
    let a = assignment(&task, t, status::RUNNING);
    h.apply(vec![a.clone()]).await;

    h.wait_report(Duration::from_secs(30), "PENDING with pullStartedAt", |r| {
        r.status.as_deref() == Some(status::PENDING) && r.pull_started_at.is_some()
    })
    .await;
    let running = h
        .wait_report(Duration::from_secs(60), "RUNNING", |r| {
            r.status.as_deref() == Some(status::RUNNING)
        })
        .await;
    assert!(running.pull_stopped_at.is_some());
    assert_eq!(running.cluster.as_deref(), Some(CLUSTER_ARN));
    let init_c = container(&running, "init");
    assert_eq!(init_c.status.as_deref(), Some(status::STOPPED));
    assert_eq!(init_c.exit_code, Some(0));
    let app_c = container(&running, "app");
    assert_eq!(app_c.status.as_deref(), Some(status::RUNNING));
    assert_eq!(app_c.health_status.as_deref(), Some(status::HEALTHY));
    let web_c = container(&running, "web");
    assert_eq!(web_c.status.as_deref(), Some(status::RUNNING));
    let nb = web_c.network_bindings.clone().unwrap_or_default();
    assert!(
        nb.len() == 1 && nb[0].host_port.unwrap_or(0) > 0,
        "dynamic port binding reported: {nb:?}"
    );

    // Order: app after init exited, web after app was healthy.
    let init_s = d
        .inspect_container(init_c.runtime_id.as_deref().unwrap())
        .await
        .unwrap();
    let app_s = d
        .inspect_container(app_c.runtime_id.as_deref().unwrap())
        .await
        .unwrap();
    let web_s = d
        .inspect_container(web_c.runtime_id.as_deref().unwrap())
        .await
        .unwrap();
    assert!(
        app_s.started_at_ns >= init_s.finished_at_ns,
        "app started before init exited"
    );
    assert!(
        web_s.started_at_ns.unwrap() >= app_s.started_at_ns.unwrap() + 900_000_000,
        "web started before app could be healthy"
    );
    assert_eq!(web_s.memory, Some(32 * 1024 * 1024));
    let volume =
        gantry_agent::spec::task_volume_name("gantry-test-deps", 1, "scratch", task_id(&task));
    assert!(d.volume_exists(&volume).await.unwrap());

    // The same message again changes nothing.
    h.apply(vec![a.clone()]).await;

    // Kill the essential app: its death is reported at once, then the task stops.
    let killed = Instant::now();
    d.kill_container(app_c.runtime_id.as_deref().unwrap())
        .await
        .unwrap();
    let died = h
        .wait_report(Duration::from_secs(10), "app STOPPED", |r| {
            container(r, "app").status.as_deref() == Some(status::STOPPED)
        })
        .await;
    let latency = killed.elapsed();
    eprintln!("container death reported {latency:?} after the kill");
    assert!(
        latency < Duration::from_secs(2),
        "death reported after {latency:?}"
    );
    assert_eq!(container(&died, "app").exit_code, Some(137));
    let stopped = h
        .wait_report(Duration::from_secs(30), "task STOPPED", |r| {
            r.status.as_deref() == Some(status::STOPPED)
        })
        .await;
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert!(stopped.execution_stopped_at.is_some());
    for name in ["init", "app", "web"] {
        assert_eq!(
            container(&stopped, name).status.as_deref(),
            Some(status::STOPPED)
        );
    }
    assert_eq!(container(&stopped, "web").exit_code, Some(137));
    assert_eq!(container(&stopped, "init").exit_code, Some(0));

    // Cleanup after the (1 s) wait removes containers and the task-scoped volume.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = d
            .list_container_ids(&[format!("{}={task}", labels::TASK_ARN)])
            .await
            .unwrap();
        if left.is_empty() && !d.volume_exists(&volume).await.unwrap() {
            break;
        }
        assert!(Instant::now() < deadline, "not cleaned up: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmet_dependency_stops_the_task_with_a_reason() {
    let (d, arn, _guard) = fresh_instance().await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let mut init = shell("init", "exit 3");
    init.essential = Some(false);
    let mut app = sleeper("app");
    app.depends_on = depends("init", "SUCCESS");
    let task = task_arn();
    h.apply(vec![assignment(
        &task,
        td("gantry-test-depfail", vec![init, app]),
        status::RUNNING,
    )])
    .await;
    let stopped = h
        .wait_report(Duration::from_secs(30), "STOPPED", |r| {
            r.status.as_deref() == Some(status::STOPPED)
        })
        .await;
    let reason = stopped.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("init") && reason.contains("exited with code 3"),
        "{reason}"
    );
    assert_eq!(container(&stopped, "init").exit_code, Some(3));
    let app_c = container(&stopped, "app");
    assert_eq!(app_c.status.as_deref(), Some(status::STOPPED));
    assert_eq!(app_c.exit_code, None);
    let app_s = d
        .inspect_container(app_c.runtime_id.as_deref().unwrap())
        .await
        .unwrap();
    assert!(!app_s.started, "app must never have started");
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pull_stops_the_task_with_cannot_pull() {
    let d = docker().await;
    let arn = instance_arn();
    let _guard = CleanupGuard {
        docker: d.clone(),
        instance_arn: arn.clone(),
    };
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let mut c = sleeper("app");
    c.image = Some("127.0.0.1:1/gantry-test/missing:nope".into());
    let task = task_arn();
    h.apply(vec![assignment(
        &task,
        td("gantry-test-pull", vec![c]),
        status::RUNNING,
    )])
    .await;
    let stopped = h
        .wait_report(Duration::from_secs(60), "STOPPED", |r| {
            r.status.as_deref() == Some(status::STOPPED)
        })
        .await;
    let reason = stopped.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    let app = container(&stopped, "app");
    assert_eq!(app.status.as_deref(), Some(status::STOPPED));
    assert_eq!(app.reason.as_deref(), Some(reason.as_str()));
    assert!(stopped.pull_started_at.is_some() && stopped.pull_stopped_at.is_some());
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_adopts_containers_instead_of_duplicating_them() {
    let d = docker().await;
    ensure_image(&d).await;
    let arn = instance_arn();
    let other = instance_arn();
    let _guard = CleanupGuard {
        docker: d.clone(),
        instance_arn: arn.clone(),
    };
    let _guard2 = CleanupGuard {
        docker: d.clone(),
        instance_arn: other.clone(),
    };
    let task = task_arn();
    let mut side = shell("side", "exit 0");
    side.essential = Some(false);
    let a = assignment(
        &task,
        td("gantry-test-adopt", vec![sleeper("app"), side]),
        status::RUNNING,
    );

    // Another agent's task on the same engine.
    let mut h_other = Harness::start(&d, &other, Duration::from_secs(600), None).await;
    let other_task = task_arn();
    h_other
        .apply(vec![assignment(
            &other_task,
            td("gantry-test-other", vec![sleeper("app")]),
            status::RUNNING,
        )])
        .await;
    let other_running = h_other
        .wait_report(Duration::from_secs(30), "other RUNNING", |r| {
            r.status.as_deref() == Some(status::RUNNING)
        })
        .await;
    let other_id = container(&other_running, "app").runtime_id.clone().unwrap();
    h_other.kill().await;

    // First run.
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![a.clone()]).await;
    let running = h
        .wait_report(Duration::from_secs(30), "RUNNING", |r| {
            r.status.as_deref() == Some(status::RUNNING)
        })
        .await;
    let app_id = container(&running, "app").runtime_id.clone().unwrap();
    let side_id = container(&running, "side").runtime_id.clone().unwrap();
    h.kill().await;
    let owned = |d: gantry_agent::docker::DockerDriver, arn: String| async move {
        let mut ids = d
            .list_container_ids(&[format!("{}={arn}", labels::INSTANCE_ARN)])
            .await
            .unwrap();
        ids.sort();
        ids
    };
    let before = owned(d.clone(), arn.clone()).await;
    assert_eq!(before.len(), 2);

    // Restart: the same task is adopted and reported with the same containers.
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![a.clone()]).await;
    // (side may still have been exiting when the first run ended; its exit is then seen as
    // an event of the adopted task.)
    let adopted = h
        .wait_report(
            Duration::from_secs(30),
            "adopted RUNNING, side exited 0",
            |r| {
                r.status.as_deref() == Some(status::RUNNING)
                    && container(r, "side").exit_code == Some(0)
            },
        )
        .await;
    assert_eq!(
        container(&adopted, "app").runtime_id.as_deref(),
        Some(app_id.as_str())
    );
    assert_eq!(
        container(&adopted, "app").status.as_deref(),
        Some(status::RUNNING)
    );
    assert_eq!(
        container(&adopted, "side").runtime_id.as_deref(),
        Some(side_id.as_str())
    );
    assert_eq!(container(&adopted, "side").exit_code, Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(owned(d.clone(), arn.clone()).await, before, "no duplicates");
    h.kill().await;

    // The essential container dies while the agent is down: the next run reports the task
    // STOPPED with its exit code.
    d.kill_container(&app_id).await.unwrap();
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![a.clone()]).await;
    let stopped = h
        .wait_report(Duration::from_secs(30), "STOPPED after restart", |r| {
            r.status.as_deref() == Some(status::STOPPED)
        })
        .await;
    assert_eq!(container(&stopped, "app").exit_code, Some(137));
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(
        owned(d.clone(), arn.clone()).await,
        before,
        "nothing recreated"
    );

    // A task that disappears from the desired state is stopped.
    let task2 = task_arn();
    h.apply(vec![assignment(
        &task2,
        td("gantry-test-adopt2", vec![sleeper("app")]),
        status::RUNNING,
    )])
    .await;
    h.wait_report(Duration::from_secs(30), "task2 RUNNING", |r| {
        r.task.as_deref() == Some(task2.as_str()) && r.status.as_deref() == Some(status::RUNNING)
    })
    .await;
    h.apply(vec![]).await;
    h.wait_report(Duration::from_secs(30), "task2 STOPPED", |r| {
        r.task.as_deref() == Some(task2.as_str()) && r.status.as_deref() == Some(status::STOPPED)
    })
    .await;
    h.kill().await;

    // The other agent's container was never touched.
    let s = d.inspect_container(&other_id).await.unwrap();
    assert!(s.running, "another instance's container was touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_container_output_as_log_batches() {
    let (d, arn, _guard) = fresh_instance().await;
    let (rec, sink, _stop_tx) = log_recorder();
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), Some(sink)).await;
    let task = task_arn();
    h.apply(vec![assignment(
        &task,
        td(
            "gantry-test-logs",
            vec![shell(
                "app",
                "echo hello-out; echo hello-err >&2; sleep 300",
            )],
        ),
        status::RUNNING,
    )])
    .await;
    h.wait_report(Duration::from_secs(30), "RUNNING", |r| {
        r.status.as_deref() == Some(status::RUNNING)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events: Vec<_> = rec
            .0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.events.clone())
            .collect();
        if events.len() >= 2 {
            break events;
        }
        assert!(Instant::now() < deadline, "logs not shipped: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages.contains(&"hello-out") && messages.contains(&"hello-err"),
        "{messages:?}"
    );
    assert_eq!(events[0].log_group, "/ecs/gantry-test-logs");
    assert_eq!(events[0].log_stream, format!("ecs/app/{}", task_id(&task)));
    let now_ms = gantry_agent::util::now_ns() / 1_000_000;
    assert!(
        (now_ms - events[0].timestamp).abs() < 60_000,
        "timestamp in ms"
    );
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_start_failure_and_dependency_timeout_are_reported() {
    let (d, arn, _guard) = fresh_instance().await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;

    // A container that exceeds its hard limit.
    let mut hog = shell(
        "hog",
        "a=$(head -c 60000000 /dev/zero | tr '\\0' a); echo ${#a}; sleep 300",
    );
    hog.memory = Some(8);
    let oom_task = task_arn();
    // An essential container whose command does not exist.
    let mut broken = sleeper("broken");
    broken.command = Some(vec!["/does/not/exist".into()]);
    let broken_task = task_arn();
    // A dependency that never becomes healthy within its startTimeout.
    let mut db = sleeper("db");
    db.essential = Some(false);
    db.start_timeout = Some(2);
    db.health_check = Some(HealthCheck {
        command: vec!["CMD".into(), "false".into()],
        interval: Some(1),
        timeout: Some(1),
        retries: Some(1),
        start_period: None,
    });
    let mut app = sleeper("app");
    app.depends_on = depends("db", "HEALTHY");
    let timeout_task = task_arn();
    h.apply(vec![
        assignment(&oom_task, td("gantry-test-oom", vec![hog]), status::RUNNING),
        assignment(
            &broken_task,
            td("gantry-test-broken", vec![broken]),
            status::RUNNING,
        ),
        assignment(
            &timeout_task,
            td("gantry-test-timeout", vec![db, app]),
            status::RUNNING,
        ),
    ])
    .await;

    let mut waiting: Vec<&str> = vec![&oom_task, &broken_task, &timeout_task];
    let mut finals = std::collections::HashMap::new();
    while !waiting.is_empty() {
        let r = h
            .wait_report(Duration::from_secs(60), "STOPPED", |r| {
                r.status.as_deref() == Some(status::STOPPED)
            })
            .await;
        let t = r.task.clone().unwrap();
        waiting.retain(|w| *w != t);
        finals.insert(t, r);
    }
    let oom = &finals[&oom_task];
    let hog = container(oom, "hog");
    assert_eq!(
        hog.reason.as_deref(),
        Some("OutOfMemoryError: Container killed due to memory usage")
    );
    assert_eq!(hog.exit_code, Some(137));
    assert_eq!(
        oom.reason.as_deref(),
        Some("Essential container in task exited")
    );

    let broken = &finals[&broken_task];
    let reason = broken.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("CannotStartContainerError: "),
        "{reason}"
    );
    assert_eq!(
        container(broken, "broken").reason.as_deref(),
        Some(reason.as_str())
    );

    let timed_out = &finals[&timeout_task];
    let reason = timed_out.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("db") && reason.contains("startTimeout"),
        "{reason}"
    );
    assert_eq!(container(timed_out, "app").exit_code, None);
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_tasks_beyond_the_cap_are_cleaned_up_early() {
    let (d, arn, _guard) = fresh_instance().await;
    let config = gantry_agent::supervisor::SupervisorConfig {
        cleanup_wait: Duration::from_secs(3600),
        max_stopped_tasks: 1,
        allow_host_access: true,
        ..Default::default()
    };
    let mut h = Harness::start_with(&d, &arn, config, None).await;
    let first = task_arn();
    let second = task_arn();
    let quick = |t: &str| {
        assignment(
            t,
            td("gantry-test-cap", vec![shell("app", "exit 0")]),
            status::RUNNING,
        )
    };
    h.apply(vec![quick(&first)]).await;
    h.wait_report(Duration::from_secs(30), "first STOPPED", |r| {
        r.task.as_deref() == Some(first.as_str()) && r.status.as_deref() == Some(status::STOPPED)
    })
    .await;
    h.apply(vec![quick(&first), quick(&second)]).await;
    h.wait_report(Duration::from_secs(30), "second STOPPED", |r| {
        r.task.as_deref() == Some(second.as_str()) && r.status.as_deref() == Some(status::STOPPED)
    })
    .await;
    // Only one stopped task may keep its containers: the older one goes at once.
    let count = |t: String| {
        let d = d.clone();
        async move {
            d.list_container_ids(&[format!("{}={t}", labels::TASK_ARN)])
                .await
                .unwrap()
                .len()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(first.clone()).await != 0 {
        assert!(
            Instant::now() < deadline,
            "oldest stopped task not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count(second.clone()).await, 1);
    h.kill().await;
}

/// A definition's `extra` members holding `restartPolicy` (Gantry's model does not type it).
fn with_restart_policy(
    mut def: ContainerDefinition,
    policy: serde_json::Value,
) -> ContainerDefinition {
    def.extra.insert("restartPolicy".into(), policy);
    def
}

/// A supervisor whose containers' `restartAttemptPeriod` is 1 s (ECS's minimum is 60 s), as
/// `GANTRY_RESTART_ATTEMPT_PERIOD_SECS=1` sets it for the agent.
async fn restart_harness(
    d: &gantry_agent::docker::DockerDriver,
    arn: &str,
    logs: Option<LogSink>,
) -> Harness {
    let config = gantry_agent::supervisor::SupervisorConfig {
        cleanup_wait: Duration::from_secs(600),
        restart_attempt_period: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    Harness::start_with(d, arn, config, logs).await
}

#[derive(Default)]
struct LogRecorder(Mutex<Vec<LogBatch>>);

impl gantry_agent::api_client::LogUploader for LogRecorder {
    fn upload(
        &self,
        batch: &LogBatch,
    ) -> impl std::future::Future<Output = Result<(), gantry_agent::api_client::ApiError>> + Send
    {
        self.0.lock().unwrap().push(batch.clone());
        async { Ok(()) }
    }
}

/// A log shipper that records every batch instead of uploading it, and the sink to hand the
/// agent; keep the sender alive for as long as the shipper should run.
fn log_recorder() -> (Arc<LogRecorder>, LogSink, watch::Sender<bool>) {
    let rec = Arc::new(LogRecorder::default());
    let (sink, rx) = LogSink::new(Default::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(run_shipper(
        rec.clone(),
        sink.positions_handle(),
        rx,
        None,
        stop_rx,
    ));
    (rec, sink, stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_restarts_an_exited_container_in_place() {
    let (d, arn, _guard) = fresh_instance().await;
    let (rec, sink, _stop_tx) = log_recorder();
    let mut h = restart_harness(&d, &arn, Some(sink)).await;
    // Runs 2 s (longer than the 1 s period), then fails: restarted every time.
    let app = with_restart_policy(
        shell("app", "echo run-started; sleep 2; exit 3"),
        serde_json::json!({"enabled": true, "restartAttemptPeriod": 60}),
    );
    let task = task_arn();
    let t = td("gantry-test-restart", vec![app]);
    h.apply(vec![assignment(&task, t.clone(), status::RUNNING)])
        .await;
    let running = h
        .wait_report(Duration::from_secs(30), "RUNNING", |r| {
            r.status.as_deref() == Some(status::RUNNING)
        })
        .await;
    let id = container(&running, "app").runtime_id.clone().unwrap();
    let seen_before = h.seen.len();

    // The same container starts again after each exit: three distinct StartedAt values are
    // two restarts in place.
    let mut starts = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while starts.len() < 3 {
        let s = d.inspect_container(&id).await.unwrap();
        if let Some(t) = s.started_at_ns {
            starts.insert(t);
        }
        assert!(
            Instant::now() < deadline,
            "not restarted twice within 40 s; StartedAt values seen: {starts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Meanwhile neither the task nor the container was ever reported stopped.
    while let Ok(r) = h.reports.try_recv() {
        h.seen.push(r);
    }
    for r in &h.seen[seen_before..] {
        assert_eq!(r.status.as_deref(), Some(status::RUNNING), "{r:?}");
        let app = container(r, "app");
        assert_eq!(app.status.as_deref(), Some(status::RUNNING), "{r:?}");
        assert_eq!(app.runtime_id.as_deref(), Some(id.as_str()), "{r:?}");
        assert_eq!(app.exit_code, None, "{r:?}");
    }
    // In place: still the one container, restarted by the agent, not by Docker's own policy
    // (whose restarts Docker counts; a `docker start` does not).
    let ids = d
        .list_container_ids(&[format!("{}={task}", labels::TASK_ARN)])
        .await
        .unwrap();
    assert_eq!(ids, vec![id.clone()], "restarted in place, not replaced");
    let raw = d.raw().inspect_container(&id, None).await.unwrap();
    assert_eq!(raw.restart_count, Some(0));
    let docker_policy = raw
        .host_config
        .and_then(|h| h.restart_policy)
        .and_then(|p| p.name)
        .map(|n| n.to_string())
        .unwrap_or_default();
    assert!(
        docker_policy.is_empty() || docker_policy == "no",
        "Docker's restart policy must not be used: {docker_policy}"
    );

    // Stopped by the agent (the task is stopped): never restarted, whatever it ran.
    h.apply(vec![assignment(&task, t, status::STOPPED)]).await;
    let stopped = h
        .wait_report(Duration::from_secs(30), "task STOPPED", |r| {
            r.status.as_deref() == Some(status::STOPPED)
        })
        .await;
    let app = container(&stopped, "app");
    assert_eq!(app.status.as_deref(), Some(status::STOPPED));
    assert!(
        matches!(app.exit_code, Some(137) | Some(3)),
        "killed by the stop, or exited on its own meanwhile: {app:?}"
    );
    let after_stop = d.inspect_container(&id).await.unwrap();
    assert!(!after_stop.running, "running after the task stopped");
    // Longer than the 1 s period: a restart would have shown by now.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        let s = d.inspect_container(&id).await.unwrap();
        assert!(
            !s.running && s.started_at_ns == after_stop.started_at_ns,
            "restarted after the agent stopped it: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every run's output is shipped exactly once, across the restarts.
    let mut in_docker = 0;
    let logs = d.logs(&id, 0);
    futures::pin_mut!(logs);
    while let Some(item) = futures::StreamExt::next(&mut logs).await {
        let out = item.unwrap();
        in_docker += String::from_utf8_lossy(out.as_ref())
            .matches("run-started")
            .count();
    }
    assert!(in_docker >= 3, "{in_docker} runs in Docker's log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shipped: Vec<i64> = rec
            .0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.events.clone())
            .filter(|e| e.message == "run-started")
            .map(|e| e.timestamp)
            .collect();
        assert!(
            shipped.len() <= in_docker,
            "lines shipped twice: {} shipped, {in_docker} written",
            shipped.len()
        );
        if shipped.len() == in_docker {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {in_docker} runs' output shipped",
            shipped.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_leaves_ignored_exit_codes_and_early_exits_alone() {
    let (d, arn, _guard) = fresh_instance().await;
    let mut h = restart_harness(&d, &arn, None).await;
    // Ran long enough, but its exit code is ignored.
    let ignored = with_restart_policy(
        shell("app", "sleep 2; exit 3"),
        serde_json::json!({"enabled": true, "ignoredExitCodes": [3]}),
    );
    let ignored_task = task_arn();
    // Exits at once: shorter than the 1 s period.
    let early = with_restart_policy(shell("app", "exit 3"), serde_json::json!({"enabled": true}));
    let early_task = task_arn();
    h.apply(vec![
        assignment(
            &ignored_task,
            td("gantry-test-restart-ignored", vec![ignored]),
            status::RUNNING,
        ),
        assignment(
            &early_task,
            td("gantry-test-restart-early", vec![early]),
            status::RUNNING,
        ),
    ])
    .await;
    let running = h
        .wait_report(Duration::from_secs(30), "ignored-code task RUNNING", |r| {
            r.task.as_deref() == Some(ignored_task.as_str())
                && r.status.as_deref() == Some(status::RUNNING)
        })
        .await;
    let id = container(&running, "app").runtime_id.clone().unwrap();
    let first_start = d.inspect_container(&id).await.unwrap().started_at_ns;

    // (The early task may have stopped while the other one was awaited.)
    let mut finals: std::collections::HashMap<_, _> = h
        .seen
        .iter()
        .filter(|r| r.status.as_deref() == Some(status::STOPPED))
        .map(|r| (r.task.clone().unwrap(), r.clone()))
        .collect();
    while finals.len() < 2 {
        let r = h
            .wait_report(Duration::from_secs(30), "both tasks STOPPED", |r| {
                r.status.as_deref() == Some(status::STOPPED)
            })
            .await;
        finals.insert(r.task.clone().unwrap(), r);
    }
    for t in [&ignored_task, &early_task] {
        let r = &finals[t];
        assert_eq!(
            r.reason.as_deref(),
            Some("Essential container in task exited"),
            "{r:?}"
        );
        assert_eq!(container(r, "app").exit_code, Some(3), "{r:?}");
    }
    let s = d.inspect_container(&id).await.unwrap();
    assert_eq!(
        s.started_at_ns, first_start,
        "the ignored exit was restarted"
    );
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_asking_for_host_access_is_refused_where_it_is_not_allowed() {
    let (d, arn, _guard) = fresh_instance().await;
    let config = gantry_agent::supervisor::SupervisorConfig {
        allow_host_access: false,
        ..Default::default()
    };
    let mut h = Harness::start_with(&d, &arn, config, None).await;
    let task = task_arn();
    let mut def = td("gantry-test-privileged", vec![shell("app", "sleep 30")]);
    def.container_definitions[0].privileged = Some(true);
    h.apply(vec![assignment(&task, def, status::RUNNING)]).await;
    let r = h
        .wait_report(Duration::from_secs(30), "the refusal", |r| {
            r.task.as_deref() == Some(task.as_str()) && r.status.as_deref() == Some(status::STOPPED)
        })
        .await;
    let reason = r.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("does not allow host access") && reason.contains("privileged mode"),
        "{reason}"
    );
    let containers = d
        .list_container_ids(&[format!("{}={task}", labels::TASK_ARN)])
        .await
        .expect("list");
    assert!(
        containers.is_empty(),
        "no container was created: {containers:?}"
    );
    h.kill().await;
}
