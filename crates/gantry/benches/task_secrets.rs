//! RunTask → RUNNING for a task with five secrets (three Secrets Manager secrets, one of them
//! by JSON key, and two SSM SecureStrings, resolved with the execution role when the task
//! starts) against the same task without them, interleaved sample by sample in one run.
//!
//! `cargo bench -p gantry --bench task_secrets` (GANTRY_BENCH_SAMPLES to change the count,
//! 20 by default). Prints each median and the ratio (goal: within 1.1×); it asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::*;
use serde_json::{json, Value};
use support::{median, run_task_sample, samples, COMMAND};

async fn register_json(aws: &Aws, name: &str, td: Value) -> String {
    let input = aws.file(&format!("{name}.json"), &td);
    aws.ok(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &input,
    ])
    .await["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("task definition ARN")
        .to_string()
}

#[tokio::main]
async fn main() {
    let n = samples(20);
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let role = aws
        .ok(&[
            "iam",
            "create-role",
            "--role-name",
            "bench-exec",
            "--assume-role-policy-document",
            &trust.to_string(),
        ])
        .await["Role"]["Arn"]
        .as_str()
        .expect("role ARN")
        .to_string();
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "ssm:GetParameters"], "Resource": "*"}]});
    aws.ok(&[
        "iam",
        "put-role-policy",
        "--role-name",
        "bench-exec",
        "--policy-name",
        "secrets",
        "--policy-document",
        &policy.to_string(),
    ])
    .await;
    let mut secrets = Vec::new();
    for i in 0..3 {
        let value = if i == 0 {
            json!({"user": "bench", "password": "p"}).to_string()
        } else {
            format!("value-{i}")
        };
        let arn = aws
            .ok(&[
                "secretsmanager",
                "create-secret",
                "--name",
                &format!("bench/secret-{i}"),
                "--secret-string",
                &value,
            ])
            .await["ARN"]
            .as_str()
            .expect("secret ARN")
            .to_string();
        let value_from = if i == 0 {
            format!("{arn}:password::")
        } else {
            arn
        };
        secrets.push(json!({"name": format!("SECRET_{i}"), "valueFrom": value_from}));
    }
    for i in 0..2 {
        let name = format!("/bench/param-{i}");
        aws.ok(&[
            "ssm",
            "put-parameter",
            "--name",
            &name,
            "--type",
            "SecureString",
            "--value",
            &format!("param-{i}"),
        ])
        .await;
        secrets.push(json!({"name": format!("PARAM_{i}"), "valueFrom": name}));
    }
    let container = |secrets: Option<&Vec<Value>>| {
        let mut c = json!({"name": "app", "image": IMAGE, "memory": 64, "stopTimeout": 2,
            "command": ["sh", "-c", COMMAND]});
        if let Some(s) = secrets {
            c["secrets"] = json!(s);
        }
        c
    };
    let plain = register_json(
        &aws,
        "plain",
        json!({"family": "bench-plain", "executionRoleArn": role,
            "containerDefinitions": [container(None)]}),
    )
    .await;
    let with_secrets = register_json(
        &aws,
        "secrets",
        json!({"family": "bench-secrets", "executionRoleArn": role,
            "containerDefinitions": [container(Some(&secrets))]}),
    )
    .await;
    // Warm both paths once.
    run_task_sample(&dev, &plain).await;
    run_task_sample(&dev, &with_secrets).await;
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..n {
        without.push(run_task_sample(&dev, &plain).await);
        with.push(run_task_sample(&dev, &with_secrets).await);
    }
    let (w, p) = (median(with.clone()), median(without.clone()));
    println!("RunTask -> RUNNING, {n} samples, interleaved");
    println!("  without secrets    median {p:8.1} ms");
    println!("  with 5 secrets     median {w:8.1} ms");
    println!("  ratio with/without: {:.2}x (goal <= 1.10x)", w / p);
}
