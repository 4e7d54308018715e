//! Task scale-in protection on real containers, through the AWS SDK for Rust: a protected
//! task survives a scale-in while the others converge, a service deleted without force drains
//! only once protection is turned off, a rolling deployment waits for an old task's
//! protection to expire (with no call at expiry), standalone tasks and bad input are refused
//! as ECS refuses them.

mod common;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{ContainerDefinition, DesiredStatus, Service};
use aws_sdk_ecs::Client;
use common::svc::*;
use common::*;
use std::time::{Duration, Instant};

/// A service's first steady state: image cached, a few starts, the 5 s stability window.
const STEADY: Duration = Duration::from_secs(90);
/// Stops to take effect (containers stop within their 2 s stopTimeout).
const CONVERGE: Duration = Duration::from_secs(60);

fn sleeper() -> ContainerDefinition {
    busybox_container("app", &["sleep", "3600"])
}

fn dev_log(dev: &Dev) -> String {
    format!(
        "\n--- gantry (last lines) ---\n{}",
        log_tail(&dev.proc.output(), 120)
    )
}

fn has_event(s: &Service, part: &str) -> bool {
    s.events()
        .iter()
        .any(|e| e.message().unwrap_or("").contains(part))
}

async fn create_service(c: &Client, cluster: &str, name: &str, td: &str, n: i32) {
    c.create_service()
        .cluster(cluster)
        .service_name(name)
        .task_definition(td)
        .desired_count(n)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateService {name}: {e:?}"));
}

fn expect_code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, E>,
    code: &str,
    what: &str,
) -> String {
    match result {
        Ok(v) => panic!("{what}: expected {code}, but the call succeeded: {v:#?}"),
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{what}: wrong error: {e:?}");
            e.message().unwrap_or("").to_string()
        }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_protected_task_survives_scale_in_and_a_delete_until_protection_is_off() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let td = register(c, &unique("prot"), vec![sleeper()]).await;
    let name = unique("web");
    let name = name.as_str();
    create_service(c, cl, name, &td, 3).await;
    let (_, tasks) = wait_steady(c, cl, name, 3, &td, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));

    // Protect the newest task: the one a scale-in would stop first.
    let mut by_age = tasks.clone();
    by_age.sort_by(|a, b| {
        let t =
            |x: &aws_sdk_ecs::types::Task| x.created_at().map(|d| d.as_secs_f64()).unwrap_or(0.0);
        t(b).total_cmp(&t(a))
    });
    let keep = by_age[0].task_arn().expect("arn").to_string();
    let before = now();
    let up = c
        .update_task_protection()
        .cluster(cl)
        .tasks(task_id(&keep))
        .protection_enabled(true)
        .send()
        .await
        .expect("UpdateTaskProtection");
    assert!(up.failures().is_empty(), "{up:?}");
    let p = &up.protected_tasks()[0];
    assert_eq!(p.task_arn(), Some(keep.as_str()));
    assert!(p.protection_enabled());
    let expires = p
        .expiration_date()
        .map(|d| d.as_secs_f64())
        .expect("expirationDate");
    assert!(
        (expires - (before + 7200.0)).abs() < 30.0,
        "120 minutes by default: {expires} vs {before}"
    );
    let got = c
        .get_task_protection()
        .cluster(cl)
        .tasks(&keep)
        .send()
        .await
        .expect("GetTaskProtection");
    assert!(got.protected_tasks()[0].protection_enabled());

    // Scale to 1: the two others stop, the protected one stays, and the service is steady.
    c.update_service()
        .cluster(cl)
        .service(name)
        .desired_count(1)
        .send()
        .await
        .expect("UpdateService 1");
    let (_, left) = wait_steady(c, cl, name, 1, &td, CONVERGE)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    assert_eq!(left[0].task_arn(), Some(keep.as_str()));
    for t in &by_age[1..] {
        let arn = t.task_arn().expect("arn");
        let stopped = wait_task(c, cl, arn, "STOPPED", CONVERGE).await;
        assert_eq!(
            stopped.stop_code().map(|s| s.as_str()),
            Some("ServiceSchedulerInitiated"),
            "{stopped:#?}"
        );
    }

    // Scale to 0 and delete without force: the protected task keeps running, and says why.
    c.update_service()
        .cluster(cl)
        .service(name)
        .desired_count(0)
        .send()
        .await
        .expect("UpdateService 0");
    wait_for(CONVERGE, "the protection event", || async move {
        let s = describe_service(c, cl, name).await;
        if has_event(&s, "protected from scale-in") {
            Ok(())
        } else {
            Err(summary(&s))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let deleted = c
        .delete_service()
        .cluster(cl)
        .service(name)
        .send()
        .await
        .expect("DeleteService");
    assert_eq!(deleted.service().and_then(|s| s.status()), Some("DRAINING"));
    // Held, not merely slow: it is still running well after the others took seconds to stop.
    let held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(3) {
        let t = wait_task(c, cl, &keep, "RUNNING", Duration::from_secs(5)).await;
        assert_eq!(t.desired_status(), Some("RUNNING"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.status(), Some("DRAINING"), "{}", summary(&s));
    assert_eq!(s.running_count(), 1, "{}", summary(&s));

    // Protection off: the drain finishes at once.
    let off = c
        .update_task_protection()
        .cluster(cl)
        .tasks(&keep)
        .protection_enabled(false)
        .send()
        .await
        .expect("protection off");
    assert!(!off.protected_tasks()[0].protection_enabled());
    assert!(off.protected_tasks()[0].expiration_date().is_none());
    let stopped = wait_task(c, cl, &keep, "STOPPED", CONVERGE).await;
    assert_eq!(
        stopped.stop_code().map(|s| s.as_str()),
        Some("ServiceSchedulerInitiated")
    );
    wait_for(CONVERGE, "the service to go INACTIVE", || async move {
        let s = describe_service(c, cl, name).await;
        if s.status() == Some("INACTIVE") {
            Ok(())
        } else {
            Err(summary(&s))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));

    // Standalone tasks cannot be protected; unknown ones are MISSING; bad input is refused.
    let standalone = run_one(c, cl, &td).await;
    let r = c
        .update_task_protection()
        .cluster(cl)
        .tasks(&standalone)
        .tasks("no-such-task")
        .protection_enabled(true)
        .send()
        .await
        .expect("UpdateTaskProtection on a standalone task");
    assert!(r.protected_tasks().is_empty(), "{r:?}");
    let reasons: Vec<(Option<&str>, Option<&str>)> =
        r.failures().iter().map(|f| (f.arn(), f.reason())).collect();
    let missing_arn = format!(
        "{}/no-such-task",
        dev.cluster_arn().replace(":cluster/", ":task/")
    );
    assert_eq!(
        reasons,
        vec![
            (Some(standalone.as_str()), Some("TASK_NOT_VALID")),
            (Some(missing_arn.as_str()), Some("MISSING")),
        ]
    );
    let g = c
        .get_task_protection()
        .cluster(cl)
        .tasks(&standalone)
        .send()
        .await
        .expect("GetTaskProtection on a standalone task");
    assert_eq!(g.failures()[0].reason(), Some("TASK_NOT_VALID"));
    for minutes in [0, 2881] {
        let m = expect_code(
            c.update_task_protection()
                .cluster(cl)
                .tasks(&keep)
                .protection_enabled(true)
                .expires_in_minutes(minutes)
                .send()
                .await,
            "InvalidParameterException",
            "expiresInMinutes out of range",
        );
        assert!(m.contains("expiresInMinutes"), "{m}");
    }
    expect_code(
        c.update_task_protection()
            .cluster("no-such-cluster")
            .tasks(&standalone)
            .protection_enabled(true)
            .send()
            .await,
        "ClusterNotFoundException",
        "unknown cluster",
    );
}

#[tokio::test]
async fn a_deployment_waits_for_an_old_tasks_protection_to_expire() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let family = unique("prot-dep");
    let v1 = register(c, &family, vec![sleeper()]).await;
    let name = unique("api");
    let name = name.as_str();
    create_service(c, cl, name, &v1, 2).await;
    let (_, tasks) = wait_steady(c, cl, name, 2, &v1, STEADY)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let keep = tasks[0].task_arn().expect("arn").to_string();
    let other = tasks[1].task_arn().expect("arn").to_string();
    let up = c
        .update_task_protection()
        .cluster(cl)
        .tasks(&keep)
        .protection_enabled(true)
        .expires_in_minutes(1)
        .send()
        .await
        .expect("protect for a minute");
    let expires = up.protected_tasks()[0]
        .expiration_date()
        .map(|d| d.as_secs_f64())
        .expect("expirationDate");

    let v2 = register(
        c,
        &family,
        vec![busybox_container("app", &["sleep", "3601"])],
    )
    .await;
    c.update_service()
        .cluster(cl)
        .service(name)
        .task_definition(&v2)
        .send()
        .await
        .expect("UpdateService v2");

    // The new revision runs; the unprotected old task goes; the protected one stays and the
    // rollout is not done.
    let (keep_ref, other_ref, v2_ref) = (&keep, &other, &v2);
    wait_for(
        CONVERGE,
        "the unprotected old task replaced",
        || async move {
            let s = describe_service(c, cl, name).await;
            let running = running_tasks(c, cl, name).await;
            let new_running = running
                .iter()
                .filter(|t| {
                    t.task_definition_arn() == Some(v2_ref.as_str())
                        && t.last_status() == Some("RUNNING")
                })
                .count();
            let other_gone = !running
                .iter()
                .any(|t| t.task_arn() == Some(other_ref.as_str()));
            let keep_running = running
                .iter()
                .any(|t| t.task_arn() == Some(keep_ref.as_str()));
            if new_running == 2 && other_gone && keep_running {
                Ok(())
            } else {
                Err(format!("{}{}", summary(&s), task_lines(&running)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.deployments().len(), 2, "{}", summary(&s));
    assert_eq!(
        s.deployments()[0].rollout_state().map(|r| r.as_str()),
        Some("IN_PROGRESS"),
        "{}",
        summary(&s)
    );
    assert!(
        now() < expires,
        "the checks above ran before the protection expired"
    );

    // No call at expiry: the scheduler wakes then, stops the old task and completes.
    let stopped = wait_task(c, cl, &keep, "STOPPED", Duration::from_secs(120)).await;
    let stopping_at = stopped
        .stopping_at()
        .map(|d| d.as_secs_f64())
        .expect("stoppingAt");
    assert!(
        stopping_at >= expires - 1.0,
        "stopped at {stopping_at}, before its protection expired at {expires}"
    );
    // Well inside the scheduler's 15 s resync: the expiry itself woke the service.
    assert!(
        stopping_at < expires + 5.0,
        "stopped at {stopping_at}, long after its protection expired at {expires}"
    );
    wait_steady(c, cl, name, 2, &v2, CONVERGE)
        .await
        .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let g = c
        .get_task_protection()
        .cluster(cl)
        .tasks(&keep)
        .send()
        .await
        .expect("GetTaskProtection");
    assert!(!g.protected_tasks()[0].protection_enabled());
    let listed = list_service_tasks(c, cl, name, DesiredStatus::Running).await;
    assert_eq!(listed.len(), 2);
}
