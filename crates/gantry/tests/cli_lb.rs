//! `gantry lb` against `gantry dev`: load balancers, listeners, rules and target groups made
//! with the AWS CLI (`aws elbv2`), an ip target on a small HTTP server this test runs on
//! 127.0.0.1 (healthy) and one on a port nothing listens on (unhealthy, with its reason),
//! shown as a tree, as JSON, for one load balancer, page by page, and live with `--watch`.
//!
//! Every wait polls with a deadline; the HTTP server and the watch are bounded.

mod common;

use common::cli::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for any single `gantry` CLI invocation.
const CLI_LIMIT: Duration = Duration::from_secs(60);
/// Health checks every 5 s (ELBv2's least), 2 in a row to change state, and a first check.
const HEALTH_SETTLES: Duration = Duration::from_secs(60);

async fn gantry_lb(dev: &Dev, args: &[&str]) -> Out {
    let mut all = vec!["lb"];
    all.extend_from_slice(args);
    all.extend(["--endpoint", dev.endpoint.as_str()]);
    gantry_within_as(CLI_LIMIT, &all, Some(&dev.keys)).await
}

/// An HTTP server on 127.0.0.1 answering every request `200 ok` and closing; its port. It
/// runs as long as the test's runtime.
async fn http_ok_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the test's HTTP server");
    let port = listener.local_addr().expect("local addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head (bounded in size and time) before answering, so the
                // close does not reset the connection under an unread request.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                let read = async {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

async fn create_group(aws: &Aws, name: &str, port: u16) -> String {
    let out = aws
        .ok(&[
            "elbv2",
            "create-target-group",
            "--name",
            name,
            "--protocol",
            "HTTP",
            "--port",
            &port.to_string(),
            "--target-type",
            "ip",
            "--health-check-interval-seconds",
            "5",
            "--health-check-timeout-seconds",
            "2",
            "--healthy-threshold-count",
            "2",
            "--unhealthy-threshold-count",
            "2",
        ])
        .await;
    out["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .expect("TargetGroupArn")
        .to_string()
}

/// Whether a line of `text` holds `pattern`'s pieces in this order.
fn has_line(text: &str, pattern: &[&str]) -> bool {
    text.lines().any(|l| {
        let mut rest = l;
        pattern.iter().all(|p| match rest.find(p) {
            Some(i) => {
                rest = &rest[i + p.len()..];
                true
            }
            None => false,
        })
    })
}

fn target_group<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["targetGroups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == name)
}

fn first_target_state(view: &Value, group: &str) -> Option<String> {
    target_group(view, group)?["targets"][0]["state"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn gantry_lb_shows_listeners_rules_groups_and_target_health() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);

    // Nothing yet: the command says how to make a load balancer.
    let empty = gantry_lb(&dev, &[]).await;
    assert!(empty.status.success(), "{}", empty.text());
    assert!(
        empty.stdout.contains("no load balancers yet")
            && empty.stdout.contains("elbv2 create-load-balancer"),
        "{}",
        empty.text()
    );

    let ok_port = http_ok_server().await;
    let refused_port = free_port();
    let web = create_group(&aws, "web", ok_port).await;
    let down = create_group(&aws, "down", refused_port).await;
    create_group(&aws, "spare", 80).await;
    let lb = aws
        .ok(&[
            "elbv2",
            "create-load-balancer",
            "--name",
            "front",
            "--subnets",
            "subnet-a",
        ])
        .await;
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .expect("LoadBalancerArn")
        .to_string();
    let dns_name = lb["LoadBalancers"][0]["DNSName"]
        .as_str()
        .expect("DNSName")
        .to_string();
    let listener_port = free_port();
    let listener = aws
        .ok(&[
            "elbv2",
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &listener_port.to_string(),
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={web}"),
        ])
        .await;
    let listener_arn = listener["Listeners"][0]["ListenerArn"]
        .as_str()
        .expect("ListenerArn")
        .to_string();
    let rule = |priority: &'static str, path: &'static str, actions: Value| {
        let aws = &aws;
        let listener_arn = listener_arn.clone();
        async move {
            aws.ok(&[
                "elbv2",
                "create-rule",
                "--listener-arn",
                &listener_arn,
                "--priority",
                priority,
                "--conditions",
                &format!("Field=path-pattern,Values={path}"),
                "--actions",
                &actions.to_string(),
            ])
            .await;
        }
    };
    rule(
        "10",
        "/api/*",
        json!([{"Type": "forward", "TargetGroupArn": down}]),
    )
    .await;
    rule(
        "20",
        "/mix/*",
        json!([{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": web, "Weight": 3}, {"TargetGroupArn": down, "Weight": 1}]}}]),
    )
    .await;
    rule(
        "30",
        "/gone",
        json!([{"Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "410", "ContentType": "text/plain", "MessageBody": "gone"}}]),
    )
    .await;
    for (group, port) in [(&web, ok_port), (&down, refused_port)] {
        aws.ok(&[
            "elbv2",
            "register-targets",
            "--target-group-arn",
            group,
            "--targets",
            &format!("Id=127.0.0.1,Port={port}"),
        ])
        .await;
    }

    // Poll `gantry lb --json` until the health checks have settled both targets.
    let deadline = Instant::now() + HEALTH_SETTLES;
    let view = loop {
        let out = gantry_lb(&dev, &["--json"]).await;
        assert!(out.status.success(), "{}", out.text());
        let view: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("`gantry lb --json` is not JSON ({e}):\n{}", out.text()));
        let web_state = first_target_state(&view, "web");
        let down_state = first_target_state(&view, "down");
        if web_state.as_deref() == Some("healthy") && down_state.as_deref() == Some("unhealthy") {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "targets did not become healthy (web) and unhealthy (down) within {HEALTH_SETTLES:?}: web {web_state:?}, down {down_state:?}\n{view:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // The JSON document: the load balancer, its listener and rules, the groups and targets.
    let lbj = &view["loadBalancers"][0];
    assert_eq!(view["loadBalancers"].as_array().map(Vec::len), Some(1));
    assert_eq!(lbj["name"], "front");
    assert_eq!(lbj["dnsName"], dns_name.as_str());
    assert_eq!(lbj["state"], "active");
    let lj = &lbj["listeners"][0];
    assert_eq!(lj["port"], listener_port);
    assert_eq!(lj["protocol"], "HTTP");
    let priorities: Vec<&str> = lj["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["priority"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(priorities, ["10", "20", "30", "default"]);
    assert_eq!(lj["rules"][0]["conditions"][0]["field"], "path-pattern");
    assert_eq!(lj["rules"][0]["conditions"][0]["values"], json!(["/api/*"]));
    assert_eq!(
        lj["rules"][0]["actions"][0]["targetGroups"][0]["name"],
        "down"
    );
    assert_eq!(
        lj["rules"][1]["actions"][0]["targetGroups"],
        json!([{"name": "web", "arn": web, "weight": 3}, {"name": "down", "arn": down, "weight": 1}])
    );
    assert_eq!(
        lj["rules"][2]["actions"][0]["fixedResponse"]["statusCode"],
        "410"
    );
    assert_eq!(lj["rules"][3]["isDefault"], true);
    let web_json = target_group(&view, "web").expect("group web");
    assert_eq!(web_json["targetType"], "ip");
    assert_eq!(web_json["loadBalancerArns"], json!([lb_arn]));
    assert_eq!(web_json["healthCheck"]["intervalSeconds"], 5);
    assert_eq!(web_json["targets"][0]["id"], "127.0.0.1");
    assert_eq!(web_json["targets"][0]["port"], ok_port);
    let down_json = target_group(&view, "down").expect("group down");
    let reason = down_json["targets"][0]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("an unhealthy target has a reason: {down_json:#}"))
        .to_string();
    assert!(reason.starts_with("Target."), "{reason}");
    let spare = target_group(&view, "spare").expect("group spare");
    assert_eq!(spare["loadBalancerArns"], json!([]));

    // The tree.
    let out = gantry_lb(&dev, &[]).await;
    assert!(out.status.success(), "{}", out.text());
    let text = &out.stdout;
    assert!(
        has_line(text, &["LOAD BALANCER", "front (active)", &dns_name]),
        "{text}"
    );
    assert!(
        has_line(text, &["LISTENER", &format!("HTTP :{listener_port}")]),
        "{text}"
    );
    assert!(
        has_line(
            text,
            &["RULE 10", "path-pattern /api/*", "→ forward down (100%)"]
        ),
        "{text}"
    );
    assert!(
        has_line(
            text,
            &[
                "RULE 20",
                "path-pattern /mix/*",
                "forward web (75%, weight 3), down (25%, weight 1)"
            ]
        ),
        "{text}"
    );
    assert!(
        has_line(
            text,
            &["RULE 30", "/gone", "fixed-response 410 text/plain \"gone\""]
        ),
        "{text}"
    );
    assert!(
        has_line(text, &["RULE default", "→ forward web (100%)"]),
        "{text}"
    );
    assert!(
        has_line(
            text,
            &["TARGET GROUP", "web", "ip HTTP:", "health GET / every 5s"]
        ),
        "{text}"
    );
    assert!(
        has_line(
            text,
            &["TARGET", &format!("127.0.0.1:{ok_port}"), "healthy"]
        ),
        "{text}"
    );
    assert!(
        has_line(
            text,
            &[
                "TARGET",
                &format!("127.0.0.1:{refused_port}"),
                "unhealthy",
                &reason
            ]
        ),
        "{text}"
    );
    assert!(
        has_line(text, &["TARGET GROUP", "spare"])
            && text.contains("(no listener or rule forwards to it)"),
        "{text}"
    );
    // Load balancers before groups, rules in priority order.
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} in:\n{text}"));
    assert!(at("LOAD BALANCER") < at("TARGET GROUP"), "{text}");
    assert!(at("RULE 10") < at("RULE 20") && at("RULE 30") < at("RULE default"));

    // Asking one item per page reads every page: the same view.
    let paged = gantry_lb(&dev, &["--page-size", "1"]).await;
    assert!(paged.status.success(), "{}", paged.text());
    assert_eq!(paged.stdout, out.stdout);

    // One load balancer (by name and by ARN): the groups it uses, not the spare one.
    for which in ["front", lb_arn.as_str()] {
        let one = gantry_lb(&dev, &[which]).await;
        assert!(one.status.success(), "{}", one.text());
        assert!(one.stdout.contains("front (active)"), "{}", one.text());
        assert!(
            has_line(&one.stdout, &["TARGET GROUP", "down"]),
            "{}",
            one.text()
        );
        assert!(!one.stdout.contains("spare"), "{}", one.text());
    }
    let missing = gantry_lb(&dev, &["nosuch"]).await;
    assert!(!missing.status.success(), "{}", missing.text());
    assert!(
        missing.stderr.contains("load balancer nosuch not found")
            && missing.stderr.contains("`gantry lb`"),
        "{}",
        missing.text()
    );

    // --watch redraws every --interval until --count views.
    let watch = gantry_lb(&dev, &["--watch", "--interval", "1", "--count", "3"]).await;
    assert!(watch.status.success(), "{}", watch.text());
    assert_eq!(
        watch.stdout.matches("LOAD BALANCER  front").count(),
        3,
        "{}",
        watch.text()
    );
    assert_eq!(watch.stdout.matches("Ctrl-C stops").count(), 3);
    assert!(
        watch.elapsed >= Duration::from_secs(2),
        "3 views 1 s apart took {:?}",
        watch.elapsed
    );
    // --watch --json: one document per line per view.
    let stream = gantry_lb(
        &dev,
        &["--watch", "--json", "--interval", "1", "--count", "2"],
    )
    .await;
    assert!(stream.status.success(), "{}", stream.text());
    let docs: Vec<Value> = stream
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(docs.len(), 2, "{}", stream.text());
    assert_eq!(docs[1]["loadBalancers"][0]["name"], "front");
}

#[tokio::test]
async fn gantry_lb_watch_stops_on_ctrl_c() {
    let dev = Dev::start().await;
    let mut cmd = tokio::process::Command::new(gantry_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("GANTRY_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args([
            "lb",
            "--watch",
            "--interval",
            "1",
            "--endpoint",
            &dev.endpoint,
        ])
        .envs(dev.keys.env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start gantry lb --watch");
    let mut stdout = child.stdout.take().expect("stdout");
    // Wait for two views (the second comes after the first sleep), then press Ctrl-C.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + CLI_LIMIT;
    while seen.matches("Ctrl-C stops").count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stdout.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            other => panic!("gantry lb --watch stopped drawing ({other:?}) after:\n{seen}"),
        }
    }
    assert!(seen.contains("no load balancers yet"), "{seen}");
    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("gantry lb --watch did not stop within 10 s of Ctrl-C")
        .expect("wait");
    assert!(
        status.success(),
        "Ctrl-C ends the watch as success: {status:?}"
    );
}

#[tokio::test]
async fn gantry_lb_refused_says_which_permissions_it_needs() {
    let dev = Dev::start().await;
    let admin = Aws::new(&dev);
    admin
        .ok(&["iam", "create-user", "--user-name", "nobody"])
        .await;
    let key = admin
        .ok(&["iam", "create-access-key", "--user-name", "nobody"])
        .await;
    let keys = Keys {
        id: key["AccessKey"]["AccessKeyId"]
            .as_str()
            .expect("AccessKeyId")
            .to_string(),
        secret: key["AccessKey"]["SecretAccessKey"]
            .as_str()
            .expect("SecretAccessKey")
            .to_string(),
        session_token: None,
    };
    let out = gantry_within_as(CLI_LIMIT, &["lb", "--endpoint", &dev.endpoint], Some(&keys)).await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        out.stderr.contains("AccessDenied")
            && out.stderr.contains("elasticloadbalancing:Describe*"),
        "{}",
        out.text()
    );
}

#[tokio::test]
async fn gantry_lb_without_a_server_says_what_to_do() {
    let port = free_port();
    let out = gantry_within(
        CLI_LIMIT,
        &["lb", "--endpoint", &format!("http://127.0.0.1:{port}")],
    )
    .await;
    assert!(!out.status.success(), "{}", out.text());
    assert!(
        out.stderr.contains("gantry dev") && out.stderr.contains("--endpoint"),
        "{}",
        out.text()
    );
    let top = gantry_within(CLI_LIMIT, &["--help"]).await;
    assert!(
        top.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("lb ")),
        "`lb` is not listed:\n{}",
        top.text()
    );
    let help = gantry_within(CLI_LIMIT, &["lb", "--help"]).await;
    assert!(help.status.success(), "{}", help.text());
    for flag in [
        "--watch",
        "--interval",
        "--count",
        "--json",
        "--endpoint",
        "Examples:",
    ] {
        assert!(help.stdout.contains(flag), "{flag} in:\n{}", help.stdout);
    }
}
