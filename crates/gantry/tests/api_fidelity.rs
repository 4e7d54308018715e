//! What real clients trip over when ECS answers differently from AWS, through the AWS SDK for
//! Rust, the AWS CLI and boto3: the `default` cluster is never created by the API, input is
//! validated before resources are looked up, errors carry the types the model lists, a
//! service's deployment shares its number with its revision (Terraform's provider v6 waits
//! on that), and the lists AWS always returns are there.

mod common;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{ContainerInstanceField, LaunchType};
use common::svc::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const ECS: &str = "AmazonEC2ContainerServiceV20141113";

fn code_of<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_string()
}

#[tokio::test]
async fn a_missing_default_cluster_is_not_created_and_input_is_checked_first() {
    let dev = Dev::start().await;
    let c = &dev.client;
    // `gantry dev --cluster X` created X only: calls naming no cluster find no `default`.
    let e = c.list_services().send().await.unwrap_err();
    assert_eq!(code_of(&e.into_service_error()), "ClusterNotFoundException");
    let e = c
        .run_task()
        .task_definition("nothing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e.into_service_error()), "ClusterNotFoundException");
    let clusters = c.list_clusters().send().await.expect("ListClusters");
    assert!(
        clusters
            .cluster_arns()
            .iter()
            .all(|a| !a.ends_with(":cluster/default")),
        "no default cluster was created: {:?}",
        clusters.cluster_arns()
    );

    // An invalid enum is named before the missing cluster is noticed, with AWS's wording.
    let e = c
        .run_task()
        .cluster("no-such-cluster")
        .task_definition("nothing")
        .launch_type(LaunchType::from("EC3"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code_of(&e), "InvalidParameterException");
    let message = e.message().unwrap_or("");
    assert!(
        message.contains("Value 'EC3' at 'launchType' failed to satisfy constraint"),
        "{message}"
    );
    // A required member missing: the same kind of error, before anything is looked up.
    let (status, body) = signed_json(
        &dev.endpoint,
        &dev.keys,
        "ecs",
        &format!("{ECS}.DescribeServices"),
        &json!({"cluster": "no-such-cluster"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "InvalidParameterException", "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains(
            "Value null at 'services' failed to satisfy constraint: Member must not be null"
        ),
        "{body}"
    );

    // Scripts catch the modelled exception classes: boto3 and the AWS CLI.
    let script = r#"
import boto3, json, os
ecs = boto3.session.Session(region_name="us-east-1", aws_access_key_id=os.environ["ID"],
    aws_secret_access_key=os.environ["SECRET"]).client("ecs", endpoint_url=os.environ["EP"])
out = {}
try:
    ecs.list_tasks()
except ecs.exceptions.ClusterNotFoundException as e:
    out["no_cluster"] = e.response["Error"]["Code"]
try:
    ecs.list_tasks(cluster=os.environ["CLUSTER"], serviceName="no-such-service")
except ecs.exceptions.ServiceNotFoundException as e:
    out["no_service"] = e.response["Error"]["Code"]
try:
    ecs.list_tags_for_resource(resourceArn="arn:aws:ecs:us-east-1:000000000000:cluster/none")
except ecs.exceptions.ClusterNotFoundException as e:
    out["tags_of_missing_cluster"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("EP", &dev.endpoint)
        .env("ID", &dev.keys.id)
        .env("SECRET", &dev.keys.secret)
        .env("CLUSTER", &dev.cluster)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .await
        .expect("python3 with boto3 (pip install boto3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim()).expect("JSON from the script");
    assert_eq!(
        r,
        json!({
            "no_cluster": "ClusterNotFoundException",
            "no_service": "ServiceNotFoundException",
            "tags_of_missing_cluster": "ClusterNotFoundException",
        })
    );
    let aws = Aws::new(&dev);
    let cli = aws.run(&["ecs", "list-container-instances"]).await;
    assert!(!cli.status.success(), "{}", cli.stdout);
    assert!(
        cli.stderr.contains("ClusterNotFoundException"),
        "{}",
        cli.stderr
    );

    // Once a cluster named `default` exists, calls naming none use it.
    c.create_cluster()
        .cluster_name("default")
        .send()
        .await
        .expect("CreateCluster default");
    let services = c.list_services().send().await.expect("ListServices");
    assert!(services.service_arns().is_empty());
}

#[tokio::test]
async fn instance_health_is_reported_when_asked_for() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let arns = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .send()
        .await
        .expect("ListContainerInstances")
        .container_instance_arns()
        .to_vec();
    let plain = c
        .describe_container_instances()
        .cluster(&dev.cluster)
        .set_container_instances(Some(arns.clone()))
        .send()
        .await
        .expect("DescribeContainerInstances");
    assert!(plain.container_instances()[0].health_status().is_none());
    let with_health = c
        .describe_container_instances()
        .cluster(&dev.cluster)
        .set_container_instances(Some(arns))
        .include(ContainerInstanceField::ContainerInstanceHealth)
        .send()
        .await
        .expect("DescribeContainerInstances with health");
    let health = with_health.container_instances()[0]
        .health_status()
        .expect("healthStatus");
    assert_eq!(health.overall_status().map(|s| s.as_str()), Some("OK"));
    assert_eq!(
        health.details()[0].r#type().map(|t| t.as_str()),
        Some("CONTAINER_RUNTIME")
    );
    let e = c
        .describe_container_instances()
        .cluster(&dev.cluster)
        .container_instances("x")
        .include(ContainerInstanceField::from("EVERYTHING"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code_of(&e), "InvalidParameterException");
}

#[tokio::test]
async fn a_deployment_shares_its_number_with_its_revision_and_lists_are_always_there() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let td = register(
        c,
        "fidelity",
        vec![busybox_container("web", &["sleep", "3600"])],
    )
    .await;
    let name = unique("svc");
    let (status, body) = signed_json(
        &dev.endpoint,
        &dev.keys,
        "ecs",
        &format!("{ECS}.CreateService"),
        &json!({
            "cluster": dev.cluster,
            "serviceName": name,
            "taskDefinition": td,
            "desiredCount": 1,
            "serviceConnectConfiguration": {"enabled": false},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let service = &body["service"];
    for member in [
        "loadBalancers",
        "serviceRegistries",
        "placementConstraints",
        "placementStrategy",
        "events",
    ] {
        assert!(service[member].is_array(), "{member} in {service}");
    }
    assert_eq!(service["deploymentController"], json!({"type": "ECS"}));
    assert_eq!(service["propagateTags"], "NONE");
    assert_eq!(service["enableECSManagedTags"], false);
    assert!(
        service.get("serviceConnectConfiguration").is_none(),
        "per deployment only: {service}"
    );
    let primary = &service["deployments"][0];
    assert_eq!(
        primary["serviceConnectConfiguration"],
        json!({"enabled": false}),
        "{primary}"
    );

    // Terraform's provider v6: N from the primary deployment's id, then the service
    // deployment whose target revision ends in N.
    let check = |id: &str, revision_arns: &[String]| {
        let n = id.strip_prefix("ecs-svc/").expect("ecs-svc/ id");
        assert_eq!(n.len(), 19, "{id}");
        assert!(
            revision_arns.iter().any(|r| r.ends_with(&format!("/{n}"))),
            "{id} among {revision_arns:?}"
        );
    };
    let revisions = |c: aws_sdk_ecs::Client, cluster: String, name: String| async move {
        let list = c
            .list_service_deployments()
            .cluster(&cluster)
            .service(&name)
            .send()
            .await
            .expect("ListServiceDeployments");
        list.service_deployments()
            .iter()
            .filter_map(|d| d.target_service_revision_arn().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let first_id = primary["id"].as_str().expect("deployment id").to_string();
    check(
        &first_id,
        &revisions(c.clone(), dev.cluster.clone(), name.clone()).await,
    );

    // A new deployment: a new revision, a new shared number.
    let td2 = register(
        c,
        "fidelity",
        vec![busybox_container("web", &["sleep", "3601"])],
    )
    .await;
    let updated = c
        .update_service()
        .cluster(&dev.cluster)
        .service(&name)
        .task_definition(&td2)
        .send()
        .await
        .expect("UpdateService");
    let second_id = updated.service().expect("service").deployments()[0]
        .id()
        .expect("id")
        .to_string();
    assert_ne!(first_id, second_id);
    check(
        &second_id,
        &revisions(c.clone(), dev.cluster.clone(), name.clone()).await,
    );
    // The tasks the deployment starts carry its id.
    let (_, tasks) = wait_steady(c, &dev.cluster, &name, 1, &td2, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(&dev.proc.output(), 40)));
    assert_eq!(tasks[0].started_by(), Some(second_id.as_str()));
}

#[tokio::test]
async fn an_agent_joining_default_on_a_fresh_server_creates_it() {
    // `gantry server` with no cluster yet, then `gantry agent --cluster default` (the agent's
    // default): the host's registration creates `default`, as ECS's agent does.
    let mut split = Split::start(0).await;
    let before = split
        .client
        .list_services()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code_of(&before), "ClusterNotFoundException");
    split.cluster = "default".to_string();
    split.add_agent(0).await;
    let instances = split
        .client
        .list_container_instances()
        .send()
        .await
        .expect("ListContainerInstances on default");
    assert_eq!(instances.container_instance_arns().len(), 1);
    // Another cluster is never created by a host naming it.
    let mut args_cluster = unique("absent");
    std::mem::swap(&mut split.cluster, &mut args_cluster);
    split.spawn_agent_with(&[]);
    let absent = split.cluster.clone();
    let agent_log = wait_for(Duration::from_secs(30), "the agent to be refused", || {
        let log = split.agents[1].output();
        async move {
            if log.contains("ClusterNotFoundException") {
                Ok(log)
            } else {
                Err(log)
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent_log.contains("Create the cluster first"),
        "{agent_log}"
    );
    let clusters = split
        .client
        .list_clusters()
        .send()
        .await
        .expect("ListClusters");
    assert!(
        clusters
            .cluster_arns()
            .iter()
            .all(|a| !a.ends_with(&format!("/{absent}"))),
        "{:?}",
        clusters.cluster_arns()
    );
}
