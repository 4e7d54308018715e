//! TLS end to end: `gantry server --tls` with its self-signed certificate, the AWS CLI trusting
//! it through `AWS_CA_BUNDLE`, an agent pinning its fingerprint among others (and one with the
//! wrong pin refused), a task run over the TLS channel, and the Gantry CLI pinning it too.

mod common;

use common::*;
use std::time::Duration;

/// The fingerprint the server printed at start.
async fn printed_fingerprint(server: &Proc) -> String {
    eventually(
        Duration::from_secs(30),
        "the server to print its fingerprint",
        || {
            let out = server.output();
            async move {
                out.lines()
                    .find_map(|l| l.split("(SHA-256 ").nth(1))
                    .and_then(|rest| rest.split(')').next())
                    .map(str::to_string)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.output()))
}

#[tokio::test]
async fn the_api_and_the_agent_channel_over_tls() {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let data = dir.path().join("server");
    let listen = format!("127.0.0.1:{port}");
    let data_arg = data.display().to_string();
    let server = Proc::spawn(
        &[
            "server",
            "--tls",
            "--listen",
            &listen,
            "--data-dir",
            &data_arg,
        ],
        dir.path().join("server.log"),
    );
    let fingerprint = printed_fingerprint(&server).await;
    let keys = admin_keys(&data);
    let endpoint = format!("https://{listen}");

    // The AWS CLI trusts the self-signed certificate through AWS_CA_BUNDLE.
    let mut aws = Aws::at(&endpoint, &keys);
    aws.env.push((
        "AWS_CA_BUNDLE".into(),
        data.join("tls/cert.pem").display().to_string(),
    ));
    let cluster = unique("tls");
    eventually(
        Duration::from_secs(30),
        "the server to answer over TLS",
        || {
            let aws = &aws;
            let cluster = cluster.clone();
            async move {
                let out = aws
                    .run(&["ecs", "create-cluster", "--cluster-name", &cluster])
                    .await;
                out.status.success().then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.output()));
    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .post(format!("http://{listen}/"))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // An agent with the wrong pin is refused by its own TLS check and registers nothing.
    let token = join_token(&data);
    let agent_args = |name: &str, pin: &str| -> Vec<String> {
        vec![
            "agent".into(),
            "--server".into(),
            endpoint.clone(),
            "--cluster".into(),
            cluster.clone(),
            "--data-dir".into(),
            dir.path().join(name).display().to_string(),
            "--token".into(),
            token.clone(),
            "--tls-fingerprint".into(),
            pin.to_string(),
            "--memory".into(),
            "512".into(),
        ]
    };
    let wrong = agent_args("wrong", &"00".repeat(32));
    let wrong_agent = Proc::spawn(
        &wrong.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.path().join("wrong.log"),
    );
    eventually(
        Duration::from_secs(30),
        "the pin mismatch to be reported",
        || {
            let out = wrong_agent.output();
            async move { out.contains("not the pinned one").then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", wrong_agent.output()));
    drop(wrong_agent);

    // The right pin, among others (replicas with their own self-signed certificates pin each
    // one): the agent joins, and a task runs over the TLS channel.
    let pins = format!("{},{fingerprint}", "00".repeat(32));
    let right = agent_args("right", &pins);
    let agent = Proc::spawn(
        &right.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.path().join("agent.log"),
    );
    let td = aws
        .ok(&[
            "ecs",
            "register-task-definition",
            "--family",
            "tls",
            "--container-definitions",
            &format!(
                r#"[{{"name":"c","image":"{IMAGE}","memory":16,"command":["sleep","30"],"stopTimeout":2}}]"#
            ),
        ])
        .await;
    let td_arn = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("arn")
        .to_string();
    let task = eventually(Duration::from_secs(60), "the agent to take a task", || {
        let aws = &aws;
        let (cluster, td_arn) = (cluster.clone(), td_arn.clone());
        async move {
            let r = aws
                .run(&[
                    "ecs",
                    "run-task",
                    "--cluster",
                    &cluster,
                    "--task-definition",
                    &td_arn,
                ])
                .await;
            r.json["tasks"][0]["taskArn"].as_str().map(str::to_string)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.output()));
    aws.ok(&[
        "ecs",
        "wait",
        "tasks-running",
        "--cluster",
        &cluster,
        "--tasks",
        &task,
    ])
    .await;

    // The Gantry CLI pins the same fingerprint.
    let out = tokio::process::Command::new(gantry_bin())
        .args(["ps", "--endpoint", &endpoint, "--cluster", &cluster])
        .envs(keys.env())
        .env("GANTRY_TLS_FINGERPRINT", &fingerprint)
        .output()
        .await
        .expect("gantry ps");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short: String = task
        .rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(12)
        .collect();
    assert!(stdout.contains(&short), "{stdout}");

    aws.ok(&["ecs", "stop-task", "--cluster", &cluster, "--task", &task])
        .await;
    aws.ok(&[
        "ecs",
        "wait",
        "tasks-stopped",
        "--cluster",
        &cluster,
        "--tasks",
        &task,
    ])
    .await;
    drop(agent);
    remove_containers(&format!(
        "com.amazonaws.ecs.cluster=arn:aws:ecs:us-east-1:000000000000:cluster/{cluster}"
    ));
}
