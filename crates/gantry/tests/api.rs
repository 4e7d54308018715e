//! The ECS wire API through the AWS SDK for Rust (and raw HTTP where the SDK would refuse to
//! send the bad input): clusters, task definitions, tags, pagination, errors.

mod common;

use aws_sdk_ecs::types::{
    ClusterField, ClusterSetting, ClusterSettingName, ContainerDefinition, HealthCheck,
    KeyValuePair, LogConfiguration, LogDriver, MountPoint, NetworkMode, PortMapping, Tag,
    TaskDefinitionField, TransportProtocol, Volume,
};
use common::*;
use serde_json::{json, Value};

/// An ECS call with a body as given (valid JSON or not), signed with the dev's keys.
async fn raw(dev: &Dev, op: &str, body: &str) -> (u16, Value) {
    let target = format!("AmazonEC2ContainerServiceV20141113.{op}");
    let resp = signed_request(
        "POST",
        &format!("{}/", dev.endpoint),
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", &target),
        ],
        body.as_bytes().to_vec(),
        Some(&dev.keys),
        "us-east-1",
        "ecs",
        gantry_auth::client::now(),
    )
    .send()
    .await
    .expect("request");
    let status = resp.status().as_u16();
    assert!(
        resp.headers().contains_key("x-amzn-requestid"),
        "every response carries x-amzn-RequestId"
    );
    let v: Value = resp.json().await.expect("JSON body");
    (status, v)
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

#[tokio::test]
async fn cluster_lifecycle() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let name = unique("life");
    let created = c
        .create_cluster()
        .cluster_name(&name)
        .tags(tag("team", "core"))
        .settings(
            ClusterSetting::builder()
                .name(ClusterSettingName::ContainerInsights)
                .value("enabled")
                .build(),
        )
        .send()
        .await
        .expect("CreateCluster");
    let cl = created.cluster().expect("cluster");
    assert_eq!(cl.cluster_name(), Some(name.as_str()));
    assert_eq!(cl.status(), Some("ACTIVE"));
    assert_eq!(
        cl.cluster_arn(),
        Some(format!("arn:aws:ecs:us-east-1:000000000000:cluster/{name}").as_str())
    );

    // Idempotent on an ACTIVE cluster.
    let again = c
        .create_cluster()
        .cluster_name(&name)
        .send()
        .await
        .expect("again");
    assert_eq!(
        again.cluster().and_then(|c| c.cluster_arn()),
        cl.cluster_arn()
    );

    // Tags and settings only when asked for; MISSING for unknown names.
    let d = c
        .describe_clusters()
        .clusters(&name)
        .clusters("no-such-cluster")
        .include(ClusterField::Tags)
        .include(ClusterField::Settings)
        .include(ClusterField::Statistics)
        .send()
        .await
        .expect("DescribeClusters");
    assert_eq!(d.clusters().len(), 1);
    let got = &d.clusters()[0];
    assert_eq!(got.tags(), &[tag("team", "core")]);
    assert_eq!(got.settings()[0].value(), Some("enabled"));
    assert!(!got.statistics().is_empty());
    assert_eq!(d.failures().len(), 1);
    assert_eq!(d.failures()[0].reason(), Some("MISSING"));
    let plain = c
        .describe_clusters()
        .clusters(cl.cluster_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        plain.clusters()[0].tags().is_empty(),
        "no tags without include"
    );

    c.update_cluster_settings()
        .cluster(&name)
        .settings(
            ClusterSetting::builder()
                .name(ClusterSettingName::ContainerInsights)
                .value("disabled")
                .build(),
        )
        .send()
        .await
        .expect("UpdateClusterSettings");
    let d = c
        .describe_clusters()
        .clusters(&name)
        .include(ClusterField::Settings)
        .send()
        .await
        .unwrap();
    assert_eq!(d.clusters()[0].settings()[0].value(), Some("disabled"));

    // Tagging through the generic calls.
    let arn = cl.cluster_arn().unwrap();
    c.tag_resource()
        .resource_arn(arn)
        .tags(tag("env", "dev"))
        .send()
        .await
        .unwrap();
    c.untag_resource()
        .resource_arn(arn)
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    let tags = c
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags(), &[tag("env", "dev")]);

    // Pagination: page size 1 walks every cluster exactly once.
    for i in 0..3 {
        c.create_cluster()
            .cluster_name(format!("{name}-{i}"))
            .send()
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_clusters()
            .max_results(1)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        assert!(page.cluster_arns().len() <= 1);
        seen.extend(page.cluster_arns().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no cluster listed twice");
    assert!(seen.iter().filter(|a| a.contains(&name)).count() >= 4);

    // Delete: INACTIVE afterwards, gone from the list, calls on it fail.
    let del = c
        .delete_cluster()
        .cluster(&name)
        .send()
        .await
        .expect("DeleteCluster");
    assert_eq!(del.cluster().and_then(|c| c.status()), Some("INACTIVE"));
    let d = c.describe_clusters().clusters(&name).send().await.unwrap();
    assert_eq!(d.clusters()[0].status(), Some("INACTIVE"));
    let listed = c.list_clusters().send().await.unwrap();
    assert!(!listed
        .cluster_arns()
        .iter()
        .any(|a| a.ends_with(&format!("/{name}"))));
    let err = c
        .list_tasks()
        .cluster(&name)
        .send()
        .await
        .expect_err("deleted cluster");
    assert!(err.into_service_error().is_cluster_not_found_exception());

    // A cluster with a registered instance cannot be deleted (gantry dev's own local
    // instances excepted: DeleteCluster deregisters those itself).
    let held = unique("held");
    c.create_cluster().cluster_name(&held).send().await.unwrap();
    let resource = |name: &str, v: i32| {
        aws_sdk_ecs::types::Resource::builder()
            .name(name)
            .r#type("INTEGER")
            .integer_value(v)
            .build()
    };
    c.register_container_instance()
        .cluster(&held)
        .total_resources(resource("CPU", 1024))
        .total_resources(resource("MEMORY", 1024))
        .send()
        .await
        .expect("RegisterContainerInstance");
    let err = c
        .delete_cluster()
        .cluster(&held)
        .send()
        .await
        .expect_err("instances registered");
    assert!(err
        .into_service_error()
        .is_cluster_contains_container_instances_exception());
    let deleted = c
        .delete_cluster()
        .cluster(&dev.cluster)
        .send()
        .await
        .expect("gantry dev's own instance goes with its cluster");
    assert_eq!(deleted.cluster().and_then(|c| c.status()), Some("INACTIVE"));
}

fn rich_container() -> ContainerDefinition {
    ContainerDefinition::builder()
        .name("app")
        .image(IMAGE)
        .cpu(128)
        .memory(128)
        .memory_reservation(64)
        .essential(true)
        .entry_point("sh")
        .entry_point("-c")
        .command("sleep 3600")
        .environment(KeyValuePair::builder().name("A").value("1").build())
        .port_mappings(
            PortMapping::builder()
                .container_port(8080)
                .host_port(0)
                .build(),
        )
        .port_mappings(
            PortMapping::builder()
                .container_port(5353)
                .protocol(TransportProtocol::Udp)
                .build(),
        )
        .mount_points(
            MountPoint::builder()
                .source_volume("data")
                .container_path("/data")
                .read_only(false)
                .build(),
        )
        .working_directory("/tmp")
        .user("nobody")
        .stop_timeout(5)
        .docker_labels("team", "core")
        .health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("true")
                .interval(5)
                .timeout(2)
                .retries(3)
                .start_period(1)
                .build()
                .unwrap(),
        )
        .log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", "/ecs/rich")
                .options("awslogs-stream-prefix", "rich")
                .build()
                .unwrap(),
        )
        .build()
}

#[tokio::test]
async fn task_definition_round_trip_and_revisions() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let family = unique("rich");
    let sidecar = ContainerDefinition::builder()
        .name("sidecar")
        .image(IMAGE)
        .memory(32)
        .essential(false)
        .depends_on(
            aws_sdk_ecs::types::ContainerDependency::builder()
                .container_name("app")
                .condition(aws_sdk_ecs::types::ContainerCondition::Start)
                .build()
                .unwrap(),
        )
        .build();
    let reg = c
        .register_task_definition()
        .family(&family)
        .network_mode(NetworkMode::Bridge)
        .cpu("256")
        .memory("512")
        .container_definitions(rich_container())
        .container_definitions(sidecar)
        .volumes(
            Volume::builder()
                .name("data")
                .host(
                    aws_sdk_ecs::types::HostVolumeProperties::builder()
                        .source_path("/tmp")
                        .build(),
                )
                .build(),
        )
        .tags(tag("owner", "me"))
        .send()
        .await
        .expect("RegisterTaskDefinition");
    let td = reg.task_definition().expect("taskDefinition");
    assert_eq!(td.revision(), 1);
    assert_eq!(
        td.status(),
        Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active)
    );
    assert_eq!(reg.tags(), &[tag("owner", "me")]);

    let d = c
        .describe_task_definition()
        .task_definition(&family)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .expect("DescribeTaskDefinition");
    let got = d.task_definition().unwrap();
    assert_eq!(
        d.tags(),
        &[tag("owner", "me")],
        "tags beside the definition"
    );
    assert_eq!(got.cpu(), Some("256"));
    assert_eq!(got.memory(), Some("512"));
    assert_eq!(got.network_mode(), Some(&NetworkMode::Bridge));
    assert_eq!(got.volumes().len(), 1);
    let app = &got.container_definitions()[0];
    // Everything sent comes back, with AWS's normalisation.
    let mut expected = rich_container();
    expected.port_mappings = Some(vec![
        PortMapping::builder()
            .container_port(8080)
            .host_port(0)
            .protocol(TransportProtocol::Tcp)
            .build(),
        PortMapping::builder()
            .container_port(5353)
            .protocol(TransportProtocol::Udp)
            .build(),
    ]);
    expected.volumes_from = Some(vec![]);
    assert_eq!(app, &expected);
    let sc = &got.container_definitions()[1];
    assert_eq!(sc.essential(), Some(false));
    assert_eq!(sc.environment(), &[], "environment defaults to []");
    assert_eq!(sc.mount_points(), &[]);
    assert_eq!(sc.cpu(), 0);

    // Without include, no tags.
    let d = c
        .describe_task_definition()
        .task_definition(format!("{family}:1"))
        .send()
        .await
        .unwrap();
    assert!(d.tags().is_empty());

    // Revisions, list filters and sort order.
    let second = register(c, &family, vec![busybox_container("app", &["true"])]).await;
    assert!(second.ends_with(&format!("{family}:2")));
    let latest = c
        .describe_task_definition()
        .task_definition(&family)
        .send()
        .await
        .unwrap();
    assert_eq!(latest.task_definition().unwrap().revision(), 2);
    let listed = c
        .list_task_definitions()
        .family_prefix(&family)
        .sort(aws_sdk_ecs::types::SortOrder::Desc)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.task_definition_arns().len(), 2);
    assert!(listed.task_definition_arns()[0].ends_with(":2"));

    // Deregister → INACTIVE, the family now resolves to revision 1; delete needs INACTIVE.
    let dereg = c
        .deregister_task_definition()
        .task_definition(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(
        dereg.task_definition().unwrap().status(),
        Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Inactive)
    );
    let latest = c
        .describe_task_definition()
        .task_definition(&family)
        .send()
        .await
        .unwrap();
    assert_eq!(latest.task_definition().unwrap().revision(), 1);
    let inactive = c
        .list_task_definitions()
        .family_prefix(&family)
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Inactive)
        .send()
        .await
        .unwrap();
    assert_eq!(
        inactive.task_definition_arns(),
        std::slice::from_ref(&second)
    );
    let del = c
        .delete_task_definitions()
        .task_definitions(&second)
        .task_definitions(format!("{family}:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.task_definitions().len(), 1);
    assert_eq!(del.failures().len(), 1, "revision 1 is still ACTIVE");
    let fams = c
        .list_task_definition_families()
        .family_prefix(&family)
        .send()
        .await
        .unwrap();
    assert_eq!(fams.families(), std::slice::from_ref(&family));

    // Running an INACTIVE revision is refused.
    let err = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&second)
        .send()
        .await
        .expect_err("inactive");
    assert!(err.into_service_error().is_client_exception());
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_writes_nothing() {
    let dev = Dev::start().await;
    let family = unique("bad");
    let container = |extra: Value| {
        let mut c = json!({"name": "app", "image": IMAGE, "memory": 64});
        if let (Some(obj), Some(more)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in more {
                obj.insert(k.clone(), v.clone());
            }
        }
        c
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("malformed JSON", "{\"family\": ".into(), "ClientException", "not valid JSON"),
        (
            "wrong type",
            json!({"family": family, "containerDefinitions": [container(json!({"memory": "lots"}))]}).to_string(),
            "ClientException",
            "containerDefinitions[0].memory",
        ),
        (
            "missing required member",
            json!({"family": family}).to_string(),
            "InvalidParameterException",
            "containerDefinitions",
        ),
        (
            "unknown enum",
            json!({"family": family, "networkMode": "bogus", "containerDefinitions": [container(json!({}))]}).to_string(),
            "InvalidParameterException",
            "networkMode",
        ),
        (
            "invalid family",
            json!({"family": "no spaces!", "containerDefinitions": [container(json!({}))]}).to_string(),
            "ClientException",
            "Family",
        ),
        (
            "impossible memory",
            json!({"family": family, "containerDefinitions": [container(json!({"memory": 2}))]}).to_string(),
            "ClientException",
            "memory",
        ),
        (
            "no memory at all",
            json!({"family": family, "containerDefinitions": [{"name": "app", "image": IMAGE}]}).to_string(),
            "ClientException",
            "memoryReservation",
        ),
        (
            "impossible task cpu",
            json!({"family": family, "cpu": "lots", "containerDefinitions": [container(json!({}))]}).to_string(),
            "ClientException",
            "cpu",
        ),
        (
            "too many containers",
            json!({"family": family, "containerDefinitions": (0..11).map(|i| json!({"name": format!("c{i}"), "image": IMAGE, "memory": 8})).collect::<Vec<_>>()}).to_string(),
            "ClientException",
            "at most 10",
        ),
        (
            "dependency on a missing container",
            json!({"family": family, "containerDefinitions": [container(json!({"dependsOn": [{"containerName": "ghost", "condition": "START"}]}))]}).to_string(),
            "ClientException",
            "ghost",
        ),
        (
            "mount of an undeclared volume",
            json!({"family": family, "containerDefinitions": [container(json!({"mountPoints": [{"sourceVolume": "nope", "containerPath": "/x"}]}))]}).to_string(),
            "ClientException",
            "nope",
        ),
    ];
    for (what, body, code, needle) in cases {
        let (status, v) = raw(&dev, "RegisterTaskDefinition", &body).await;
        assert_eq!(status, 400, "{what}: {v}");
        assert_eq!(v["__type"], code, "{what}: {v}");
        let msg = v["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(needle),
            "{what}: message '{msg}' should mention '{needle}'"
        );
    }
    // Nothing was half-written.
    let fams = dev
        .client
        .list_task_definition_families()
        .family_prefix(&family)
        .send()
        .await
        .unwrap();
    assert!(
        fams.families().is_empty(),
        "rejected registrations left {:?}",
        fams.families()
    );

    // Unknown operations are a 400 naming the operation, never a 5xx.
    let (status, v) = raw(&dev, "CreateWidget", "{}").await;
    assert_eq!(status, 400);
    assert_eq!(v["__type"], "UnknownOperationException");
    assert!(v["message"].as_str().unwrap_or("").contains("CreateWidget"));

    // RunTask input errors.
    let td = register(
        &dev.client,
        &family,
        vec![busybox_container("app", &["true"])],
    )
    .await;
    let (status, v) = raw(
        &dev,
        "RunTask",
        &json!({"cluster": dev.cluster, "taskDefinition": td, "count": 11}).to_string(),
    )
    .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("InvalidParameterException"))
    );
    let (status, v) = raw(
        &dev,
        "RunTask",
        &json!({"cluster": dev.cluster, "taskDefinition": "nope:1"}).to_string(),
    )
    .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("ClientException")),
        "{v}"
    );
    let (status, v) = raw(
        &dev,
        "RunTask",
        &json!({"cluster": "no-such", "taskDefinition": td}).to_string(),
    )
    .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("ClusterNotFoundException")),
        "{v}"
    );
    let (status, v) = raw(
        &dev,
        "RunTask",
        &json!({"cluster": dev.cluster, "taskDefinition": td, "overrides": {"containerOverrides": [{"name": "ghost"}]}}).to_string(),
    )
    .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (400, Some("InvalidParameterException")),
        "{v}"
    );
    // And none of them started a task.
    let tasks = dev
        .client
        .list_tasks()
        .cluster(&dev.cluster)
        .send()
        .await
        .unwrap();
    assert!(tasks.task_arns().is_empty());
}

#[tokio::test]
async fn container_instances_attributes_and_filters() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let list = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .send()
        .await
        .unwrap();
    assert_eq!(list.container_instance_arns().len(), 1);
    let arn = list.container_instance_arns()[0].clone();
    let d = c
        .describe_container_instances()
        .cluster(&dev.cluster)
        .container_instances(&arn)
        .container_instances("not-an-instance")
        .send()
        .await
        .unwrap();
    let ci = &d.container_instances()[0];
    assert!(ci.agent_connected());
    assert_eq!(ci.status(), Some("ACTIVE"));
    let names: Vec<&str> = ci
        .registered_resources()
        .iter()
        .filter_map(|r| r.name())
        .collect();
    for n in ["CPU", "MEMORY", "PORTS", "PORTS_UDP"] {
        assert!(names.contains(&n), "registered {n}");
    }
    assert!(ci.attributes().iter().any(|a| a.name() == "ecs.os-type"));
    assert_eq!(d.failures()[0].reason(), Some("MISSING"));

    // Custom attributes, listed and usable in filters.
    c.put_attributes()
        .cluster(&dev.cluster)
        .attributes(
            aws_sdk_ecs::types::Attribute::builder()
                .name("stack")
                .value("prod")
                .target_id(&arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("PutAttributes");
    let attrs = c
        .list_attributes()
        .cluster(&dev.cluster)
        .target_type(aws_sdk_ecs::types::TargetType::ContainerInstance)
        .attribute_name("stack")
        .send()
        .await
        .unwrap();
    assert_eq!(attrs.attributes().len(), 1);
    assert_eq!(attrs.attributes()[0].target_id(), Some(arn.as_str()));
    let hit = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .filter("attribute:stack == prod")
        .send()
        .await
        .unwrap();
    assert_eq!(hit.container_instance_arns().len(), 1);
    let miss = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .filter("attribute:stack == dev")
        .send()
        .await
        .unwrap();
    assert!(miss.container_instance_arns().is_empty());
    let err = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .filter("attribute:stack == prod and")
        .send()
        .await
        .expect_err("bad filter");
    assert!(err.into_service_error().is_invalid_parameter_exception());
    c.delete_attributes()
        .cluster(&dev.cluster)
        .attributes(
            aws_sdk_ecs::types::Attribute::builder()
                .name("stack")
                .target_id(&arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let attrs = c
        .list_attributes()
        .cluster(&dev.cluster)
        .target_type(aws_sdk_ecs::types::TargetType::ContainerInstance)
        .attribute_name("stack")
        .send()
        .await
        .unwrap();
    assert!(attrs.attributes().is_empty());

    // Draining and back.
    let upd = c
        .update_container_instances_state()
        .cluster(&dev.cluster)
        .container_instances(&arn)
        .status(aws_sdk_ecs::types::ContainerInstanceStatus::Draining)
        .send()
        .await
        .unwrap();
    assert_eq!(upd.container_instances()[0].status(), Some("DRAINING"));
    let td = register(
        c,
        &unique("drain"),
        vec![busybox_container("app", &["true"])],
    )
    .await;
    let run = c
        .run_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .send()
        .await
        .unwrap();
    assert!(
        run.tasks().is_empty(),
        "nothing is placed on a draining instance"
    );
    assert_eq!(run.failures()[0].reason(), Some("DRAINING"));
    c.update_container_instances_state()
        .cluster(&dev.cluster)
        .container_instances(&arn)
        .status(aws_sdk_ecs::types::ContainerInstanceStatus::Active)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn start_task_poll_endpoint_and_deregistration() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let arn = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .send()
        .await
        .unwrap()
        .container_instance_arns()[0]
        .clone();

    let ep = c
        .discover_poll_endpoint()
        .cluster(&dev.cluster)
        .container_instance(&arn)
        .send()
        .await
        .expect("DiscoverPollEndpoint");
    assert_eq!(
        ep.endpoint().map(|e| e.trim_end_matches('/')),
        Some(dev.endpoint.as_str())
    );

    // StartTask places on the named instance, by id as well as by ARN.
    let td = register(
        c,
        &unique("start"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    let id = arn.rsplit('/').next().unwrap();
    let started = c
        .start_task()
        .cluster(&dev.cluster)
        .task_definition(&td)
        .container_instances(id)
        .container_instances("not-an-instance")
        .send()
        .await
        .expect("StartTask");
    assert_eq!(started.tasks().len(), 1);
    assert_eq!(
        started.tasks()[0].container_instance_arn(),
        Some(arn.as_str())
    );
    assert_eq!(started.failures()[0].reason(), Some("MISSING"));
    let task = started.tasks()[0].task_arn().unwrap().to_string();
    wait_task(
        c,
        &dev.cluster,
        &task,
        "RUNNING",
        std::time::Duration::from_secs(60),
    )
    .await;

    // The agent-side call ECS also offers: one container's change.
    let ack = c
        .submit_container_state_change()
        .cluster(&dev.cluster)
        .task(&task)
        .container_name("app")
        .status("RUNNING")
        .reason("checked by the test")
        .send()
        .await
        .expect("SubmitContainerStateChange");
    assert_eq!(ack.acknowledgment(), Some("ACK"));
    let d = c
        .describe_tasks()
        .cluster(&dev.cluster)
        .tasks(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.tasks()[0].containers()[0].reason(),
        Some("checked by the test")
    );

    // Deregistration refuses while tasks run, unless forced; then the instance is INACTIVE.
    let err = c
        .deregister_container_instance()
        .cluster(&dev.cluster)
        .container_instance(&arn)
        .send()
        .await
        .expect_err("tasks are running");
    assert!(err.into_service_error().is_invalid_parameter_exception());
    let dereg = c
        .deregister_container_instance()
        .cluster(&dev.cluster)
        .container_instance(&arn)
        .force(true)
        .send()
        .await
        .expect("forced deregistration");
    assert_eq!(
        dereg.container_instance().and_then(|ci| ci.status()),
        Some("INACTIVE")
    );
    let listed = c
        .list_container_instances()
        .cluster(&dev.cluster)
        .send()
        .await
        .unwrap();
    assert!(listed.container_instance_arns().iter().all(|a| a != &arn));
    let t = wait_task(
        c,
        &dev.cluster,
        &task,
        "STOPPED",
        std::time::Duration::from_secs(60),
    )
    .await;
    assert_eq!(t.stopped_reason(), Some("Container instance deregistered"));
}
