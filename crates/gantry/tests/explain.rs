//! "Why is it PENDING?": `gantry explain` and the `GantryV1.ExplainPlacement` operation name,
//! for each container instance, the first check that refused a task and by how much.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn explain_api(split: &Split, input: Value) -> (u16, Value) {
    signed_json(
        &split.endpoint,
        &split.keys,
        "ecs",
        "GantryV1.ExplainPlacement",
        &input,
    )
    .await
}

async fn gantry_cli(split: &Split, cluster: &str, args: &[&str]) -> (i32, String) {
    let endpoint = split.endpoint.as_str();
    let out = tokio::process::Command::new(gantry_bin())
        .envs(split.keys.env())
        .args(args)
        .args(["--endpoint", endpoint, "--cluster", cluster])
        .output()
        .await
        .expect("run gantry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn explain_names_the_refusing_check_per_instance_through_the_api_and_the_cli() {
    // Two agents of 1024 MiB in us-east-1a and us-east-1b.
    let split = Split::start(2).await;
    let c = split.client.clone();
    let cl = split.cluster.clone();
    let big = register(
        &c,
        &unique("big"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    // A definition that fits nowhere: more memory than either instance has.
    let huge_family = unique("huge");
    c.register_task_definition()
        .family(&huge_family)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("app")
                .image(IMAGE)
                .memory(2048)
                .command("sleep")
                .command("3600")
                .build(),
        )
        .send()
        .await
        .expect("register huge");

    // A service whose constraint no instance satisfies.
    let name = unique("nowhere");
    c.create_service()
        .cluster(&cl)
        .service_name(&name)
        .task_definition(&big)
        .desired_count(1)
        .placement_constraints(
            aws_sdk_ecs::types::PlacementConstraint::builder()
                .r#type(aws_sdk_ecs::types::PlacementConstraintType::MemberOf)
                .expression("attribute:ecs.availability-zone == us-east-1c")
                .build(),
        )
        .send()
        .await
        .expect("CreateService");

    let (status, answer) = explain_api(&split, json!({"cluster": cl, "service": name})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["placeableOn"], 0, "{answer}");
    let rows = answer["instances"].as_array().expect("instances").clone();
    assert_eq!(rows.len(), 2, "{answer}");
    let mut zones: Vec<String> = Vec::new();
    for r in &rows {
        assert_eq!(r["fits"], false);
        assert_eq!(
            r["reason"], "MemberOf placement constraint unsatisfied.",
            "{answer}"
        );
        let detail = r["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with(
                "memberOf(attribute:ecs.availability-zone == us-east-1c) does not select it: attribute:ecs.availability-zone is us-east-1"
            ),
            "{detail}"
        );
        zones.push(detail.chars().last().map(String::from).unwrap_or_default());
    }
    zones.sort();
    assert_eq!(zones, vec!["a", "b"], "each instance's own zone is named");

    // Memory: "needs 2048 MiB, 1024 MiB free".
    let (status, answer) = explain_api(
        &split,
        json!({"cluster": cl, "taskDefinition": huge_family}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for r in answer["instances"].as_array().expect("instances") {
        assert_eq!(r["reason"], "RESOURCE:MEMORY", "{answer}");
        assert_eq!(r["detail"], "needs 2048 MiB, 1024 MiB free (of 1024 MiB)");
    }

    // The CLI prints a table and exits 1 when nothing fits …
    let (code, out) =
        gantry_cli(&split, &cl, &["explain", "--task-definition", &huge_family]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("needs 2048 MiB, 1024 MiB free"), "{out}");
    assert!(out.contains("No container instance can take it"), "{out}");

    // … and 0 when one does; a constraint narrows it to one zone.
    let (code, out) = gantry_cli(
        &split,
        &cl,
        &[
            "explain",
            "--task-definition",
            &big,
            "--constraint",
            "memberOf:attribute:ecs.availability-zone == us-east-1a",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 of 2 container instances can take one more task now."),
        "{out}"
    );

    // A placed task is explained by where it runs.
    let arn = run_one(&c, &cl, &big).await;
    wait_task(&c, &cl, &arn, "RUNNING", Duration::from_secs(60)).await;
    let (status, answer) = explain_api(&split, json!({"cluster": cl, "task": arn})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["task"]["lastStatus"], "RUNNING", "{answer}");

    // Bad input: none or two subjects.
    let (status, answer) = explain_api(&split, json!({"cluster": cl})).await;
    assert_eq!(status, 400);
    assert_eq!(answer["__type"], "InvalidParameterException", "{answer}");
    let (status, _) = explain_api(
        &split,
        json!({"cluster": cl, "service": name, "taskDefinition": big}),
    )
    .await;
    assert_eq!(status, 400);
}
