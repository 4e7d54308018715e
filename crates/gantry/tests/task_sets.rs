//! Task sets of services with the EXTERNAL deployment controller, on real containers, through
//! the AWS SDK for Rust and the AWS CLI: two task sets sharing a service's desired count
//! (100 % / 0 %, then shifted), the primary switch and what the service shows of it, deleting
//! a task set (its tasks stop), the desired count moving every share, deleting the service;
//! and the errors ECS gives (a task set on an ECS-controlled service, unknown task sets, bad
//! scales, what an EXTERNAL service refuses to update).
//!
//! The behaviour checked is the contract in `docs/SERVICES.md` ("Task sets"). Every test has
//! its own `gantry` and cluster; every wait polls with a deadline.

mod common;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{
    AwsVpcConfiguration, ContainerDefinition, DeploymentController, DeploymentControllerType,
    DesiredStatus, LaunchType, NetworkConfiguration, Scale, ScaleUnit, Service, StabilityStatus,
    Tag, TaskSet, TaskSetField,
};
use aws_sdk_ecs::Client;
use common::svc::*;
use common::*;
use std::time::Duration;

/// Tasks placed, images cached, containers started and reported.
const SETTLE: Duration = Duration::from_secs(90);

fn sleeper() -> ContainerDefinition {
    busybox_container("app", &["sleep", "3600"])
}

fn dev_log(dev: &Dev) -> String {
    format!(
        "\n--- gantry (last lines) ---\n{}",
        log_tail(&dev.proc.output(), 120)
    )
}

fn percent(value: f64) -> Scale {
    Scale::builder()
        .value(value)
        .unit(ScaleUnit::Percent)
        .build()
}

fn external() -> DeploymentController {
    DeploymentController::builder()
        .r#type(DeploymentControllerType::External)
        .build()
        .expect("deployment controller")
}

/// Assert that a call failed with the ECS error `code` and a message containing `text`.
fn expect_error<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, E>,
    code: &str,
    text: &str,
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: expected {code}, but the call succeeded: {v:#?}"),
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{what}: wrong error: {e:?}");
            let message = e.message().unwrap_or("");
            assert!(
                message.contains(text),
                "{what}: {code} message {message:?} does not say {text:?}"
            );
        }
    }
}

async fn create_external(c: &Client, cluster: &str, name: &str, desired: i32) -> Service {
    c.create_service()
        .cluster(cluster)
        .service_name(name)
        .desired_count(desired)
        .deployment_controller(external())
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateService {name} (EXTERNAL): {e:?}"))
        .service()
        .cloned()
        .expect("CreateService returns the service")
}

async fn create_set(
    c: &Client,
    cluster: &str,
    service: &str,
    td: &str,
    scale: f64,
    token: Option<&str>,
) -> TaskSet {
    c.create_task_set()
        .cluster(cluster)
        .service(service)
        .task_definition(td)
        .scale(percent(scale))
        .set_client_token(token.map(str::to_string))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTaskSet {td}: {e:?}"))
        .task_set()
        .cloned()
        .expect("CreateTaskSet returns the task set")
}

async fn describe_sets(c: &Client, cluster: &str, service: &str) -> Vec<TaskSet> {
    let d = c
        .describe_task_sets()
        .cluster(cluster)
        .service(service)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeTaskSets {service}: {e:?}"));
    assert!(d.failures().is_empty(), "{:?}", d.failures());
    d.task_sets().to_vec()
}

fn set_lines(sets: &[TaskSet]) -> String {
    sets.iter()
        .map(|s| {
            format!(
                "  task set {} {} {} scale={:?} computed={} running={} pending={} {:?}\n",
                s.id().unwrap_or("?"),
                s.status().unwrap_or("?"),
                s.task_definition().unwrap_or("?"),
                s.scale().map(|x| x.value()),
                s.computed_desired_count(),
                s.running_count(),
                s.pending_count(),
                s.stability_status().map(|x| x.as_str()),
            )
        })
        .collect()
}

/// The tasks a task set started that are meant to run (ListTasks --started-by), described.
async fn tasks_of_set(c: &Client, cluster: &str, set_id: &str) -> Vec<aws_sdk_ecs::types::Task> {
    let arns = c
        .list_tasks()
        .cluster(cluster)
        .started_by(set_id)
        .desired_status(DesiredStatus::Running)
        .send()
        .await
        .expect("ListTasks --started-by")
        .task_arns()
        .to_vec();
    describe_task_arns(c, cluster, &arns).await
}

/// Wait until every task set named in `want` (id → running count) runs exactly that many
/// tasks of its own task definition, all RUNNING and started by it, and says STEADY_STATE.
async fn wait_shares(
    dev: &Dev,
    service: &str,
    want: &[(&str, i32)],
) -> (Vec<TaskSet>, Vec<Vec<aws_sdk_ecs::types::Task>>) {
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    wait_for(SETTLE, "task sets at their shares", || async move {
        let sets = describe_sets(c, cl, service).await;
        let mut all = Vec::new();
        let mut lines = set_lines(&sets);
        let mut ok = true;
        for (id, n) in want {
            let tasks = tasks_of_set(c, cl, id).await;
            lines.push_str(&task_lines(&tasks));
            let Some(set) = sets.iter().find(|s| s.id() == Some(id)) else {
                ok = false;
                continue;
            };
            ok &= set.computed_desired_count() == *n
                && set.running_count() == *n
                && set.pending_count() == 0
                && set.stability_status() == Some(&StabilityStatus::SteadyState)
                && tasks.len() == *n as usize
                && tasks.iter().all(|t| {
                    t.last_status() == Some("RUNNING")
                        && t.started_by() == Some(id)
                        && t.task_definition_arn() == set.task_definition()
                        && t.group() == Some(format!("service:{service}").as_str())
                });
            all.push(tasks);
        }
        if ok {
            Ok((sets, all))
        } else {
            Err(lines)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(dev)))
}

#[tokio::test]
async fn an_external_service_shifts_its_tasks_between_task_sets() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let family = unique("ts-web");
    let blue_td = register(c, &family, vec![sleeper()]).await;
    let green_td = register(c, &family, vec![sleeper()]).await;
    let name = unique("ext");
    let name = name.as_str();

    // The service alone: no task definition, no deployment, no task set.
    let created = create_external(c, cl, name, 2).await;
    assert_eq!(created.status(), Some("ACTIVE"));
    assert_eq!(
        created.deployment_controller().map(|d| d.r#type()),
        Some(&DeploymentControllerType::External)
    );
    assert!(created.deployments().is_empty(), "{created:#?}");
    assert!(created.task_sets().is_empty(), "{created:#?}");
    assert_eq!(created.task_definition(), None);
    assert_eq!(created.launch_type(), Some(&LaunchType::Ec2));

    // Blue takes the whole desired count, green none; a retried create (same clientToken)
    // gets the same task set.
    let blue = c
        .create_task_set()
        .cluster(cl)
        .service(name)
        .task_definition(&blue_td)
        .external_id("blue")
        .scale(percent(100.0))
        .client_token("blue-token")
        .tags(Tag::builder().key("colour").value("blue").build())
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTaskSet blue: {e:?}"))
        .task_set()
        .cloned()
        .expect("task set");
    let blue_id = blue.id().expect("id").to_string();
    let digits = blue_id.strip_prefix("ecs-svc/").unwrap_or("");
    assert!(
        digits.len() == 19 && digits.chars().all(|c| c.is_ascii_digit()),
        "task set id {blue_id:?} is not ecs-svc/<19 digits>"
    );
    assert_eq!(
        blue.task_set_arn(),
        Some(format!("arn:aws:ecs:us-east-1:000000000000:task-set/{cl}/{name}/{blue_id}").as_str())
    );
    assert_eq!(blue.service_arn(), created.service_arn());
    assert_eq!(blue.cluster_arn(), Some(dev.cluster_arn().as_str()));
    assert_eq!(
        blue.status(),
        Some("ACTIVE"),
        "the first task set is not PRIMARY"
    );
    assert_eq!(blue.task_definition(), Some(blue_td.as_str()));
    assert_eq!(blue.computed_desired_count(), 2);
    assert_eq!(blue.external_id(), Some("blue"));
    assert_eq!(blue.launch_type(), Some(&LaunchType::Ec2));
    assert_eq!(blue.scale().map(|s| s.value()), Some(100.0));
    assert_eq!(
        blue.scale().and_then(|s| s.unit()),
        Some(&ScaleUnit::Percent)
    );
    assert!(blue.stability_status().is_some() && blue.stability_status_at().is_some());
    assert!(blue.created_at().is_some() && blue.updated_at().is_some());
    assert_eq!(blue.tags().len(), 1);
    let retried = c
        .create_task_set()
        .cluster(cl)
        .service(name)
        .task_definition(&blue_td)
        .scale(percent(100.0))
        .client_token("blue-token")
        .send()
        .await
        .expect("retried CreateTaskSet")
        .task_set()
        .cloned()
        .expect("task set");
    assert_eq!(
        retried.id(),
        Some(blue_id.as_str()),
        "clientToken is idempotent"
    );
    let green = create_set(c, cl, name, &green_td, 0.0, None).await;
    let green_id = green.id().expect("id").to_string();
    assert_eq!(green.computed_desired_count(), 0);

    let (sets, tasks) = wait_shares(&dev, name, &[(&blue_id, 2), (&green_id, 0)]).await;
    assert_eq!(sets.len(), 2, "{}", set_lines(&sets));
    let blue_tasks = tasks[0].clone();
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.running_count(), 2, "{}", summary(&s));
    assert_eq!(s.task_sets().len(), 2);
    assert!(s.deployments().is_empty());
    assert_eq!(s.task_definition(), None, "no primary task set yet");
    // Tags come back on request only.
    let tagged = c
        .describe_task_sets()
        .cluster(cl)
        .service(name)
        .task_sets(&blue_id)
        .include(TaskSetField::Tags)
        .send()
        .await
        .expect("DescribeTaskSets TAGS");
    assert_eq!(tagged.task_sets()[0].tags()[0].value(), Some("blue"));
    assert!(sets.iter().all(|s| s.tags().is_empty()));

    // Blue becomes the primary: the service shows its task definition.
    let primary = c
        .update_service_primary_task_set()
        .cluster(cl)
        .service(name)
        .primary_task_set(blue.task_set_arn().expect("arn"))
        .send()
        .await
        .expect("UpdateServicePrimaryTaskSet blue")
        .task_set()
        .cloned()
        .expect("task set");
    assert_eq!(primary.status(), Some("PRIMARY"));
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.task_definition(), Some(blue_td.as_str()));

    // Shift: green to 100 %, blue to 50 % (one task of two).
    let updated = c
        .update_task_set()
        .cluster(cl)
        .service(name)
        .task_set(&green_id)
        .scale(percent(100.0))
        .send()
        .await
        .expect("UpdateTaskSet green 100")
        .task_set()
        .cloned()
        .expect("task set");
    assert_eq!(updated.computed_desired_count(), 2);
    c.update_task_set()
        .cluster(cl)
        .service(name)
        .task_set(&blue_id)
        .scale(percent(50.0))
        .send()
        .await
        .expect("UpdateTaskSet blue 50");
    let (_, tasks) = wait_shares(&dev, name, &[(&blue_id, 1), (&green_id, 2)]).await;
    assert!(
        blue_tasks
            .iter()
            .any(|t| t.task_arn() == tasks[0][0].task_arn()),
        "scaling blue down kept one of its tasks"
    );
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.running_count(), 3, "{}", summary(&s));

    // Green becomes the primary; blue is ACTIVE again.
    c.update_service_primary_task_set()
        .cluster(cl)
        .service(name)
        .primary_task_set(&green_id)
        .send()
        .await
        .expect("UpdateServicePrimaryTaskSet green");
    let sets = describe_sets(c, cl, name).await;
    let status_of = |id: &str| {
        sets.iter()
            .find(|s| s.id() == Some(id))
            .and_then(|s| s.status())
            .map(str::to_string)
    };
    assert_eq!(status_of(&green_id).as_deref(), Some("PRIMARY"));
    assert_eq!(status_of(&blue_id).as_deref(), Some("ACTIVE"));
    assert_eq!(
        describe_service(c, cl, name).await.task_definition(),
        Some(green_td.as_str())
    );

    // Blue still runs a task: it goes only with force, DRAINING, then gone, its task stopped.
    expect_error(
        c.delete_task_set()
            .cluster(cl)
            .service(name)
            .task_set(&blue_id)
            .send()
            .await,
        "InvalidParameterException",
        "scaled above 0",
        "DeleteTaskSet of a set with tasks, without force",
    );
    let blue_left = tasks_of_set(c, cl, &blue_id).await;
    let deleted = c
        .delete_task_set()
        .cluster(cl)
        .service(name)
        .task_set(&blue_id)
        .force(true)
        .send()
        .await
        .expect("DeleteTaskSet blue --force")
        .task_set()
        .cloned()
        .expect("task set");
    assert_eq!(deleted.status(), Some("DRAINING"));
    assert_eq!(deleted.computed_desired_count(), 0);
    let blue_arns: Vec<String> = blue_left
        .iter()
        .filter_map(|t| t.task_arn().map(str::to_string))
        .collect();
    assert_eq!(blue_arns.len(), 1);
    let blue_arns = &blue_arns;
    let blue_id_ref = blue_id.as_str();
    wait_for(SETTLE, "blue's task stopped and blue gone", || async move {
        let d = c
            .describe_task_sets()
            .cluster(cl)
            .service(name)
            .task_sets(blue_id_ref)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let stopped = describe_task_arns(c, cl, blue_arns).await;
        let missing = d.failures().iter().any(|f| f.reason() == Some("MISSING"));
        if missing
            && d.task_sets().is_empty()
            && stopped.iter().all(|t| t.last_status() == Some("STOPPED"))
        {
            Ok(())
        } else {
            Err(format!("{:?}\n{}", d.failures(), task_lines(&stopped)))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.task_sets().len(), 1, "{s:#?}");

    // The desired count moves the shares: green (100 %) runs 3.
    let scaled = c
        .update_service()
        .cluster(cl)
        .service(name)
        .desired_count(3)
        .send()
        .await
        .expect("UpdateService desiredCount 3")
        .service()
        .cloned()
        .expect("service");
    assert_eq!(scaled.task_sets()[0].computed_desired_count(), 3);
    wait_shares(&dev, name, &[(&green_id, 3)]).await;
    let s = describe_service(c, cl, name).await;
    assert_eq!((s.desired_count(), s.running_count()), (3, 3));

    // The primary needs force; the service goes with its task sets.
    expect_error(
        c.delete_task_set()
            .cluster(cl)
            .service(name)
            .task_set(&green_id)
            .send()
            .await,
        "InvalidParameterException",
        "Primary TaskSet cannot be deleted",
        "DeleteTaskSet of the primary without force",
    );
    expect_error(
        c.delete_service().cluster(cl).service(name).send().await,
        "InvalidParameterException",
        "desiredCount",
        "DeleteService of an EXTERNAL service scaled above 0",
    );
    let green_arns: Vec<String> = tasks_of_set(c, cl, &green_id)
        .await
        .iter()
        .filter_map(|t| t.task_arn().map(str::to_string))
        .collect();
    let gone = c
        .delete_service()
        .cluster(cl)
        .service(name)
        .force(true)
        .send()
        .await
        .expect("DeleteService --force")
        .service()
        .cloned()
        .expect("service");
    assert_eq!(gone.status(), Some("DRAINING"));
    let green_arns = &green_arns;
    wait_for(
        SETTLE,
        "the service INACTIVE, every task stopped",
        || async move {
            let s = describe_service(c, cl, name).await;
            let tasks = describe_task_arns(c, cl, green_arns).await;
            if s.status() == Some("INACTIVE")
                && s.task_sets().is_empty()
                && tasks.iter().all(|t| t.last_status() == Some("STOPPED"))
            {
                Ok(())
            } else {
                Err(format!("{}{}", summary(&s), task_lines(&tasks)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));
}

#[tokio::test]
async fn task_set_calls_answer_as_ecs_does_and_change_nothing_when_refused() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let td = register(c, &unique("ts-bad"), vec![sleeper()]).await;

    // A task set on a service the ECS controller runs.
    let rolling = unique("rolling");
    c.create_service()
        .cluster(cl)
        .service_name(&rolling)
        .task_definition(&td)
        .desired_count(0)
        .send()
        .await
        .expect("CreateService (ECS)");
    let only_external = "only supports task set management on services configured to use external deployment controllers";
    expect_error(
        c.create_task_set()
            .cluster(cl)
            .service(&rolling)
            .task_definition(&td)
            .send()
            .await,
        "InvalidParameterException",
        only_external,
        "CreateTaskSet on an ECS service",
    );
    expect_error(
        c.describe_task_sets()
            .cluster(cl)
            .service(&rolling)
            .send()
            .await,
        "InvalidParameterException",
        only_external,
        "DescribeTaskSets on an ECS service",
    );
    expect_error(
        c.update_service()
            .cluster(cl)
            .service(&rolling)
            .deployment_controller(external())
            .send()
            .await,
        "InvalidParameterException",
        "deployment controller",
        "UpdateService from ECS to EXTERNAL",
    );

    // What CreateService refuses for an EXTERNAL service.
    expect_error(
        c.create_service()
            .cluster(cl)
            .service_name(unique("ext-td"))
            .task_definition(&td)
            .deployment_controller(external())
            .send()
            .await,
        "InvalidParameterException",
        "TaskDefinition must be blank",
        "CreateService EXTERNAL with a task definition",
    );
    let awsvpc = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .subnets("subnet-12345678")
                .build()
                .expect("awsvpc"),
        )
        .build();
    expect_error(
        c.create_service()
            .cluster(cl)
            .service_name(unique("ext-net"))
            .network_configuration(awsvpc.clone())
            .deployment_controller(external())
            .send()
            .await,
        "InvalidParameterException",
        "NetworkConfiguration must be null",
        "CreateService EXTERNAL with a network configuration",
    );

    let name = unique("ext");
    let name = name.as_str();
    create_external(c, cl, name, 1).await;
    let set = create_set(c, cl, name, &td, 0.0, None).await;
    let set_id = set.id().expect("id").to_string();

    // What UpdateService refuses for an EXTERNAL service: what defines the tasks.
    expect_error(
        c.update_service()
            .cluster(cl)
            .service(name)
            .task_definition(&td)
            .send()
            .await,
        "InvalidParameterException",
        "EXTERNAL deployment controller",
        "UpdateService taskDefinition on an EXTERNAL service",
    );
    expect_error(
        c.update_service()
            .cluster(cl)
            .service(name)
            .network_configuration(awsvpc)
            .send()
            .await,
        "InvalidParameterException",
        "networkConfiguration",
        "UpdateService networkConfiguration on an EXTERNAL service",
    );
    expect_error(
        c.update_service()
            .cluster(cl)
            .service(name)
            .force_new_deployment(true)
            .send()
            .await,
        "InvalidParameterException",
        "EXTERNAL deployment controller",
        "UpdateService forceNewDeployment on an EXTERNAL service",
    );

    // Bad scales.
    for (value, unit) in [(150.0, ScaleUnit::Percent), (-1.0, ScaleUnit::Percent)] {
        expect_error(
            c.update_task_set()
                .cluster(cl)
                .service(name)
                .task_set(&set_id)
                .scale(Scale::builder().value(value).unit(unit).build())
                .send()
                .await,
            "InvalidParameterException",
            "scale",
            &format!("UpdateTaskSet scale {value}"),
        );
    }
    expect_error(
        c.create_task_set()
            .cluster(cl)
            .service(name)
            .task_definition(&td)
            .scale(percent(100.5))
            .send()
            .await,
        "InvalidParameterException",
        "scale",
        "CreateTaskSet scale 100.5",
    );

    // Unknown task sets, services and clusters.
    let unknown = "ecs-svc/1111111111111111111";
    expect_error(
        c.update_task_set()
            .cluster(cl)
            .service(name)
            .task_set(unknown)
            .scale(percent(10.0))
            .send()
            .await,
        "TaskSetNotFoundException",
        "task set",
        "UpdateTaskSet of an unknown task set",
    );
    expect_error(
        c.delete_task_set()
            .cluster(cl)
            .service(name)
            .task_set(unknown)
            .send()
            .await,
        "TaskSetNotFoundException",
        "task set",
        "DeleteTaskSet of an unknown task set",
    );
    expect_error(
        c.update_service_primary_task_set()
            .cluster(cl)
            .service(name)
            .primary_task_set(unknown)
            .send()
            .await,
        "TaskSetNotFoundException",
        "task set",
        "UpdateServicePrimaryTaskSet of an unknown task set",
    );
    let d = c
        .describe_task_sets()
        .cluster(cl)
        .service(name)
        .task_sets(&set_id)
        .task_sets(unknown)
        .send()
        .await
        .expect("DescribeTaskSets with an unknown id");
    assert_eq!(d.task_sets().len(), 1);
    assert_eq!(d.failures().len(), 1);
    assert_eq!(d.failures()[0].reason(), Some("MISSING"));
    assert_eq!(
        d.failures()[0].arn(),
        Some(format!("arn:aws:ecs:us-east-1:000000000000:task-set/{cl}/{name}/{unknown}").as_str())
    );
    expect_error(
        c.describe_task_sets()
            .cluster(cl)
            .service("no-such-service")
            .send()
            .await,
        "ServiceNotFoundException",
        "Service",
        "DescribeTaskSets of an unknown service",
    );
    expect_error(
        c.create_task_set()
            .cluster("no-such-cluster")
            .service(name)
            .task_definition(&td)
            .send()
            .await,
        "ClusterNotFoundException",
        "Cluster",
        "CreateTaskSet in an unknown cluster",
    );
    expect_error(
        c.create_task_set()
            .cluster(cl)
            .service(name)
            .task_definition("no-such-family:1")
            .send()
            .await,
        "ClientException",
        "TaskDefinition",
        "CreateTaskSet of an unknown task definition",
    );

    // At most five task sets (ECS's message counts deployments).
    for _ in 0..4 {
        create_set(c, cl, name, &td, 0.0, None).await;
    }
    expect_error(
        c.create_task_set()
            .cluster(cl)
            .service(name)
            .task_definition(&td)
            .send()
            .await,
        "InvalidParameterException",
        "5 deployments exist on the service",
        "a sixth task set",
    );

    // Nothing refused changed anything: five sets at 0 %, the service as created.
    let sets = describe_sets(c, cl, name).await;
    assert_eq!(sets.len(), 5, "{}", set_lines(&sets));
    assert!(sets
        .iter()
        .all(|s| s.scale().map(|x| x.value()) == Some(0.0) && s.computed_desired_count() == 0));
    let s = describe_service(c, cl, name).await;
    assert_eq!(s.desired_count(), 1);
    assert_eq!(s.task_definition(), None);
    assert!(s.deployments().is_empty());
    let tasks = c
        .list_tasks()
        .cluster(cl)
        .service_name(name)
        .send()
        .await
        .expect("ListTasks");
    assert!(tasks.task_arns().is_empty(), "no set has a share to run");
}

#[tokio::test]
async fn the_aws_cli_creates_and_describes_task_sets() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let c = &dev.client;
    let cl = dev.cluster.as_str();
    let td = register(c, &unique("ts-cli"), vec![sleeper()]).await;
    let name = unique("cli-ext");
    let name = name.as_str();

    let created = aws
        .ok(&[
            "ecs",
            "create-service",
            "--cluster",
            cl,
            "--service-name",
            name,
            "--desired-count",
            "1",
            "--deployment-controller",
            "type=EXTERNAL",
        ])
        .await;
    assert_eq!(
        created["service"]["deploymentController"]["type"], "EXTERNAL",
        "{created:#}"
    );
    assert_eq!(created["service"]["taskSets"], serde_json::json!([]));
    let set = aws
        .ok(&[
            "ecs",
            "create-task-set",
            "--cluster",
            cl,
            "--service",
            name,
            "--task-definition",
            &td,
            "--external-id",
            "canary",
            "--scale",
            "value=0,unit=PERCENT",
            "--tags",
            "key=stage,value=canary",
        ])
        .await;
    let id = set["taskSet"]["id"].as_str().expect("id").to_string();
    assert_eq!(set["taskSet"]["status"], "ACTIVE", "{set:#}");
    assert_eq!(set["taskSet"]["scale"]["unit"], "PERCENT", "{set:#}");
    assert_eq!(set["taskSet"]["computedDesiredCount"], 0, "{set:#}");
    assert_eq!(set["taskSet"]["loadBalancers"], serde_json::json!([]));
    // The scheduler has looked at it (nothing to run at 0 %): steady.
    let id_ref = id.as_str();
    wait_for(SETTLE, "the task set steady", || async move {
        let sets = describe_sets(c, cl, name).await;
        match sets.iter().find(|s| s.id() == Some(id_ref)) {
            Some(s) if s.stability_status() == Some(&StabilityStatus::SteadyState) => Ok(()),
            _ => Err(set_lines(&sets)),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}{}", dev_log(&dev)));

    let described = aws
        .ok(&[
            "ecs",
            "describe-task-sets",
            "--cluster",
            cl,
            "--service",
            name,
            "--task-sets",
            &id,
            "ecs-svc/2222222222222222222",
            "--include",
            "TAGS",
        ])
        .await;
    let sets = described["taskSets"].as_array().expect("taskSets");
    assert_eq!(sets.len(), 1, "{described:#}");
    assert_eq!(sets[0]["externalId"], "canary");
    assert_eq!(sets[0]["tags"][0]["value"], "canary");
    assert_eq!(sets[0]["stabilityStatus"], "STEADY_STATE", "{described:#}");
    assert_eq!(described["failures"][0]["reason"], "MISSING");

    // A task set is a taggable resource by its ARN.
    let set_arn = sets[0]["taskSetArn"]
        .as_str()
        .expect("taskSetArn")
        .to_string();
    aws.ok(&[
        "ecs",
        "tag-resource",
        "--resource-arn",
        &set_arn,
        "--tags",
        "key=owner,value=deployer",
    ])
    .await;
    let tags = aws
        .ok(&["ecs", "list-tags-for-resource", "--resource-arn", &set_arn])
        .await;
    let mut keys: Vec<&str> = tags["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["owner", "stage"], "{tags:#}");
    aws.ok(&[
        "ecs",
        "untag-resource",
        "--resource-arn",
        &set_arn,
        "--tag-keys",
        "stage",
    ])
    .await;
    let tags = aws
        .ok(&["ecs", "list-tags-for-resource", "--resource-arn", &set_arn])
        .await;
    assert_eq!(
        tags["tags"],
        serde_json::json!([{"key": "owner", "value": "deployer"}])
    );

    let primary = aws
        .ok(&[
            "ecs",
            "update-service-primary-task-set",
            "--cluster",
            cl,
            "--service",
            name,
            "--primary-task-set",
            &id,
        ])
        .await;
    assert_eq!(primary["taskSet"]["status"], "PRIMARY", "{primary:#}");
    let refused = aws
        .run(&[
            "ecs",
            "delete-task-set",
            "--cluster",
            cl,
            "--service",
            name,
            "--task-set",
            &id,
        ])
        .await;
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("InvalidParameterException"),
        "{}",
        refused.stderr
    );
}
