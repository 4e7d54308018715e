//! Rules, actions, weighted and sticky forwarding, headers and protocols, over real sockets.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use gantry_lb::LoadBalancer;
use gantry_model::elbv2::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;

fn fixed(body: &str) -> RuleAction {
    RuleAction::FixedResponse {
        status_code: 200,
        content_type: Some("text/plain".into()),
        body: Some(body.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_forwarding_and_trace_headers_and_without_hop_by_hop_ones() {
    let backend = Backend::start("a").await;
    let lb = LoadBalancer::new(LOCALHOST);
    lb.put_target_group(group("tg/a", vec![backend.target()]));
    let port = free_port();
    lb.put_listener(listener("l/1", port, vec![default_rule(forward("tg/a"))]))
        .unwrap();
    wait_state(&lb, "tg/a", backend.addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();

    let plain = get(&client, addr, "/").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, "a");

    // Keep-alive to the target: 200 requests open only a few connections (one per worker
    // that serves them, plus the health checks' own meanwhile).
    let accepted_before = backend.accepted.load(Ordering::SeqCst);
    let checks_before = backend.health_requests.load(Ordering::SeqCst);
    for _ in 0..200 {
        assert_eq!(get(&client, addr, "/").await.body, "a");
    }
    let opened = backend.accepted.load(Ordering::SeqCst) - accepted_before;
    let checks = backend.health_requests.load(Ordering::SeqCst) - checks_before;
    assert!(
        opened <= checks + 4,
        "{opened} connections for 200 requests ({checks} checks)"
    );

    let seen = get(&client, addr, "/headers").await.body;
    assert!(seen.contains("version: HTTP/1.1"), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(
        seen.contains(&format!("x-forwarded-port: {port}\n")),
        "{seen}"
    );
    assert!(seen.contains(&format!("host: {addr}\n")), "{seen}");
    let trace = seen
        .lines()
        .find_map(|l| l.strip_prefix("x-amzn-trace-id: "))
        .expect("a trace id");
    let parts: Vec<&str> = trace.split('-').collect();
    assert_eq!(parts.len(), 3, "{trace}");
    assert_eq!(parts[0], "Root=1");
    assert_eq!(parts[1].len(), 8);
    assert_eq!(parts[2].len(), 24);
    assert!(parts[1..]
        .iter()
        .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())));

    let seen = send(
        &client,
        addr,
        "GET",
        "/headers",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            (
                "x-amzn-trace-id",
                "Root=1-5f84c7a9-0123456789abcdef01234567",
            ),
            ("connection", "x-private"),
            ("x-private", "not for the target"),
            ("keep-alive", "timeout=5"),
        ],
    )
    .await
    .body;
    assert!(
        seen.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(
        seen.contains("x-amzn-trace-id: Root=1-5f84c7a9-0123456789abcdef01234567\n"),
        "{seen}"
    );
    assert!(!seen.contains("x-private"), "{seen}");
    assert!(!seen.contains("keep-alive: timeout"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_match_as_elbv2_documents_and_rules_apply_in_order() {
    let lb = LoadBalancer::new(LOCALHOST);
    let port = free_port();
    let rules = vec![
        rule(
            1,
            vec![Condition::PathPattern(vec![
                "/api/*".into(),
                "/v?/x".into(),
            ])],
            fixed("path"),
        ),
        // Also matches /api/…, but comes later: never wins for those.
        rule(
            2,
            vec![Condition::PathPattern(vec!["/api/special".into()])],
            fixed("shadowed"),
        ),
        rule(
            3,
            vec![Condition::HostHeader(vec!["*.example.com".into()])],
            fixed("host"),
        ),
        rule(
            4,
            vec![Condition::HttpHeader {
                name: "X-Env".into(),
                values: vec!["prod*".into()],
            }],
            fixed("header"),
        ),
        rule(
            5,
            vec![Condition::HttpRequestMethod(vec!["DELETE".into()])],
            fixed("method"),
        ),
        rule(
            6,
            vec![Condition::QueryString(vec![
                QueryStringPair {
                    key: Some("version".into()),
                    value: "v2".into(),
                },
                QueryStringPair {
                    key: None,
                    value: "beta*".into(),
                },
            ])],
            fixed("query"),
        ),
        rule(
            7,
            vec![
                Condition::SourceIp(vec![Cidr::parse("10.0.0.0/8").unwrap()]),
                Condition::PathPattern(vec!["/internal".into()]),
            ],
            fixed("source-10"),
        ),
        rule(
            8,
            vec![
                Condition::SourceIp(vec![Cidr::parse("127.0.0.0/8").unwrap()]),
                Condition::PathPattern(vec!["/internal".into()]),
            ],
            fixed("source-127"),
        ),
        default_rule(fixed("default")),
    ];
    lb.put_listener(listener("l/1", port, rules)).unwrap();
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();
    let body =
        |method: &'static str, path: &'static str, headers: Vec<(&'static str, &'static str)>| {
            let client = client.clone();
            async move { send(&client, addr, method, path, &headers).await.body }
        };

    assert_eq!(body("GET", "/api/users", vec![]).await, "path");
    assert_eq!(body("GET", "/api/special", vec![]).await, "path");
    assert_eq!(body("GET", "/v1/x", vec![]).await, "path");
    assert_eq!(body("GET", "/v10/x", vec![]).await, "default");
    assert_eq!(
        body("GET", "/API/users", vec![]).await,
        "default",
        "paths are case sensitive"
    );
    assert_eq!(
        body("GET", "/other?x=/api/", vec![]).await,
        "default",
        "the query is not part of the path"
    );
    assert_eq!(
        body("GET", "/", vec![("host", "WWW.Example.COM:8080")]).await,
        "host"
    );
    assert_eq!(
        body("GET", "/", vec![("host", "example.com")]).await,
        "default"
    );
    assert_eq!(
        body("GET", "/", vec![("x-env", "PRODUCTION")]).await,
        "header"
    );
    assert_eq!(
        body("GET", "/", vec![("x-env", "staging")]).await,
        "default"
    );
    assert_eq!(body("DELETE", "/", vec![]).await, "method");
    assert_eq!(body("GET", "/?a=1&version=V2", vec![]).await, "query");
    assert_eq!(body("GET", "/?anything=beta-7", vec![]).await, "query");
    assert_eq!(body("GET", "/?version=v3", vec![]).await, "default");
    assert_eq!(body("GET", "/internal", vec![]).await, "source-127");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_responses_and_redirects() {
    let lb = LoadBalancer::new(LOCALHOST);
    let port = free_port();
    let rules = vec![
        rule(
            1,
            vec![Condition::PathPattern(vec!["/teapot".into()])],
            RuleAction::FixedResponse {
                status_code: 418,
                content_type: Some("application/json".into()),
                body: Some("{\"short\":\"stout\"}".into()),
            },
        ),
        rule(
            2,
            vec![Condition::PathPattern(vec!["/old/*".into()])],
            RuleAction::Redirect {
                protocol: "HTTPS".into(),
                port: "443".into(),
                host: "#{host}".into(),
                path: "/new/#{path}".into(),
                query: "#{query}".into(),
                status_code: 301,
            },
        ),
        default_rule(RuleAction::Redirect {
            protocol: "#{protocol}".into(),
            port: "#{port}".into(),
            host: "elsewhere.example.com".into(),
            path: "/#{path}".into(),
            query: "#{query}".into(),
            status_code: 302,
        }),
    ];
    lb.put_listener(listener("l/1", port, rules)).unwrap();
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();

    let teapot = get(&client, addr, "/teapot").await;
    assert_eq!(teapot.status, 418);
    assert_eq!(teapot.headers["content-type"], "application/json");
    assert_eq!(teapot.body, "{\"short\":\"stout\"}");

    let moved = send(
        &client,
        addr,
        "GET",
        "/old/page?x=1",
        &[("host", "shop.example.com")],
    )
    .await;
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.headers["location"],
        "https://shop.example.com/new/old/page?x=1"
    );

    let found = get(&client, addr, "/a/b").await;
    assert_eq!(found.status, 302);
    assert_eq!(
        found.headers["location"],
        format!("http://elsewhere.example.com:{port}/a/b").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_forwarding_follows_the_weights_and_weight_zero_gets_nothing() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let lb = LoadBalancer::new(LOCALHOST);
    for (arn, backend) in [("tg/a", &a), ("tg/b", &b), ("tg/c", &c)] {
        lb.put_target_group(group(arn, vec![backend.target()]));
    }
    let weighted = |arn: &str, weight: u32| WeightedTargetGroup {
        arn: arn.into(),
        weight,
    };
    let port = free_port();
    lb.put_listener(listener(
        "l/1",
        port,
        vec![default_rule(RuleAction::Forward {
            target_groups: vec![
                weighted("tg/a", 70),
                weighted("tg/b", 30),
                weighted("tg/c", 0),
            ],
            stickiness: None,
        })],
    ))
    .unwrap();
    for (arn, backend) in [("tg/a", &a), ("tg/b", &b)] {
        wait_state(&lb, arn, backend.addr.port(), TargetState::Healthy).await;
    }
    let addr = lb.listener_addr("l/1").unwrap();
    let counts = spread(&http_client(), addr, "/", 2000).await;
    let share = |name: &str| *counts.get(name).unwrap_or(&0) as f64 / 2000.0;
    assert!((share("a") - 0.70).abs() <= 0.05, "{counts:?}");
    assert!((share("b") - 0.30).abs() <= 0.05, "{counts:?}");
    assert_eq!(share("c"), 0.0, "{counts:?}");
}

fn cookie_value(answer: &Answer, name: &str) -> Option<String> {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?;
            let (key, value) = first.split_once('=')?;
            (key == name).then(|| value.to_string())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_cookie_stickiness_follows_the_applications_cookie() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let lb = LoadBalancer::new(LOCALHOST);
    let mut config = group("tg/app", backends.iter().map(Backend::target).collect());
    config.app_cookie = Some(AppCookieStickiness {
        cookie_name: "session".into(),
        duration: Duration::from_secs(600),
    });
    lb.put_target_group(config);
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/app"))],
    ))
    .unwrap();
    for b in &backends {
        wait_state(&lb, "tg/app", b.addr.port(), TargetState::Healthy).await;
    }
    let addr = lb.listener_addr("l/1").unwrap();
    // HTTP/1.1 clients take the forwarding path of their own; h2c ones go through hyper.
    for (client, path) in [(http_client(), "HTTP/1.1"), (h2_client(), "h2c")] {
        // A response that does not set the application's cookie gets no AWSALBAPP cookie.
        let plain = get(&client, addr, "/").await;
        assert_eq!(cookie_value(&plain, APP_STICKINESS_COOKIE), None, "{path}");
        assert_eq!(
            cookie_value(&plain, TARGET_STICKINESS_COOKIE),
            None,
            "{path}"
        );
        // One that does gets it, beside the application's own cookies.
        let login = get(&client, addr, "/login").await;
        assert_eq!(
            cookie_value(&login, "session").as_deref(),
            Some("s-1"),
            "{path}"
        );
        let sticky = cookie_value(&login, APP_STICKINESS_COOKIE).unwrap_or_else(|| {
            panic!("{path}: no {APP_STICKINESS_COOKIE} beside the session cookie")
        });
        let attributes = login
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(APP_STICKINESS_COOKIE))
            .unwrap_or_default()
            .to_string();
        assert!(
            attributes.contains("Max-Age=600") && attributes.contains("Path=/"),
            "{attributes}"
        );
        // Requests that carry it stay on the target that set the session.
        let carried = format!("session=s-1; {APP_STICKINESS_COOKIE}={sticky}");
        for _ in 0..20 {
            let answer = send(&client, addr, "GET", "/", &[("cookie", carried.as_str())]).await;
            assert_eq!(
                answer.body, login.body,
                "{path}: a sticky client stays on its target"
            );
        }
        // Each such answer renews the cookie, for the same target.
        let renewed = send(&client, addr, "GET", "/", &[("cookie", carried.as_str())]).await;
        assert_eq!(
            cookie_value(&renewed, APP_STICKINESS_COOKIE).as_deref(),
            Some(sticky.as_str()),
            "{path}"
        );
        // A cookie naming no target here (its target gone) sticks the client to the target
        // that answered instead.
        let stale = format!("session=s-1; {APP_STICKINESS_COOKIE}=0000000000000000");
        let moved = send(&client, addr, "GET", "/", &[("cookie", stale.as_str())]).await;
        let now = cookie_value(&moved, APP_STICKINESS_COOKIE)
            .unwrap_or_else(|| panic!("{path}: a stale cookie was not replaced"));
        let restuck = format!("session=s-1; {APP_STICKINESS_COOKIE}={now}");
        for _ in 0..10 {
            let answer = send(&client, addr, "GET", "/", &[("cookie", restuck.as_str())]).await;
            assert_eq!(answer.body, moved.body, "{path}: stuck to the new target");
        }
        // Without it, requests spread over both targets again.
        let counts = spread(&client, addr, "/", 20).await;
        assert_eq!(counts.len(), 2, "{path}: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_and_target_stickiness_keep_a_client_on_its_group_and_target() {
    let backends = [
        Backend::start("a1").await,
        Backend::start("a2").await,
        Backend::start("b1").await,
    ];
    let lb = LoadBalancer::new(LOCALHOST);
    let mut sticky_a = group("tg/a", vec![backends[0].target(), backends[1].target()]);
    sticky_a.stickiness = Some(Duration::from_secs(3600));
    lb.put_target_group(sticky_a);
    lb.put_target_group(group("tg/b", vec![backends[2].target()]));
    let port = free_port();
    lb.put_listener(listener(
        "l/1",
        port,
        vec![default_rule(RuleAction::Forward {
            target_groups: vec![
                WeightedTargetGroup {
                    arn: "tg/a".into(),
                    weight: 1,
                },
                WeightedTargetGroup {
                    arn: "tg/b".into(),
                    weight: 1,
                },
            ],
            stickiness: Some(Duration::from_secs(600)),
        })],
    ))
    .unwrap();
    wait_state(&lb, "tg/a", backends[0].addr.port(), TargetState::Healthy).await;
    wait_state(&lb, "tg/a", backends[1].addr.port(), TargetState::Healthy).await;
    wait_state(&lb, "tg/b", backends[2].addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();

    // Without cookies, requests spread over both groups and both targets of a.
    let counts = spread(&client, addr, "/", 40).await;
    assert_eq!(counts.len(), 3, "{counts:?}");

    // Find a response from group a: it carries both cookies.
    let first = loop {
        let answer = get(&client, addr, "/").await;
        if answer.body.starts_with('a') {
            break answer;
        }
    };
    let group_cookie = cookie_value(&first, GROUP_STICKINESS_COOKIE).expect("AWSALBTG");
    let target_cookie = cookie_value(&first, TARGET_STICKINESS_COOKIE).expect("AWSALB");
    let cookie = format!("AWSALBTG={group_cookie}; AWSALB={target_cookie}");
    for _ in 0..30 {
        let answer = send(&client, addr, "GET", "/", &[("cookie", cookie.as_str())]).await;
        assert_eq!(
            answer.body, first.body,
            "a sticky client stays on its target"
        );
    }
    // Group stickiness alone keeps the group, the targets of a still alternate.
    let only_group = format!("AWSALBTG={group_cookie}");
    let mut seen = HashMap::new();
    for _ in 0..20 {
        let answer = send(
            &client,
            addr,
            "GET",
            "/",
            &[("cookie", only_group.as_str())],
        )
        .await;
        *seen.entry(answer.body).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.keys().all(|k| k.starts_with('a')), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served_and_http2_groups_get_h2c() {
    let (one, two) = (Backend::start("h1").await, Backend::start("h2").await);
    let lb = LoadBalancer::new(LOCALHOST);
    lb.put_target_group(group("tg/1", vec![one.target()]));
    let mut http2 = group("tg/2", vec![two.target()]);
    http2.protocol_version = TargetProtocolVersion::Http2;
    lb.put_target_group(http2);
    let port = free_port();
    lb.put_listener(listener(
        "l/1",
        port,
        vec![
            rule(
                1,
                vec![Condition::PathPattern(vec!["/two/*".into()])],
                forward("tg/2"),
            ),
            default_rule(forward("tg/1")),
        ],
    ))
    .unwrap();
    wait_state(&lb, "tg/1", one.addr.port(), TargetState::Healthy).await;
    wait_state(&lb, "tg/2", two.addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();

    let h2 = h2_client();
    let answer = get(&h2, addr, "/headers").await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("version: HTTP/1.1"), "{}", answer.body);
    assert!(
        answer.body.contains(&format!("host: {addr}")),
        "{}",
        answer.body
    );

    let answer = get(&http_client(), addr, "/two/x").await;
    assert_eq!(answer.body, "h2");
    let answer = get(&h2, addr, "/two/y").await;
    assert_eq!(answer.body, "h2", "h2c from the client to an h2c target");

    // Request bodies cross protocols both ways.
    let upload = Bytes::from("x".repeat(100_000));
    for (client, path) in [
        (&h2, "/echo"),
        (&http_client(), "/two/echo"),
        (&h2, "/two/echo"),
    ] {
        let answer = send_body(client, addr, "POST", path, &[], upload.clone()).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.body.len(), upload.len(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_groups_receive_http2_requests() {
    let backend = Backend::start("b").await;
    let lb = LoadBalancer::new(LOCALHOST);
    let mut http2 = group("tg/2", vec![backend.target()]);
    http2.protocol_version = TargetProtocolVersion::Http2;
    lb.put_target_group(http2);
    let port = free_port();
    lb.put_listener(listener("l/1", port, vec![default_rule(forward("tg/2"))]))
        .unwrap();
    wait_state(&lb, "tg/2", backend.addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let seen = get(&http_client(), addr, "/headers").await.body;
    assert!(seen.contains("version: HTTP/2.0"), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_update_keeps_open_keep_alive_connections() {
    let lb = LoadBalancer::new(LOCALHOST);
    let port = free_port();
    lb.put_listener(listener("l/1", port, vec![default_rule(fixed("before"))]))
        .unwrap();
    let addr = lb.listener_addr("l/1").unwrap();

    // One connection, used before and after the update.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let ask = async |sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>| {
        let request = http::Request::get("/")
            .header("host", "test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        // The connection is ready again once the previous exchange is fully done (hyper
        // refuses a request sent a moment before that).
        sender.ready().await.expect("the connection stays open");
        let response = sender.send_request(request).await.expect("same connection");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    };
    assert_eq!(ask(&mut sender).await, "before");
    lb.put_listener(listener("l/1", port, vec![default_rule(fixed("after"))]))
        .unwrap();
    assert_eq!(ask(&mut sender).await, "after");
    assert!(!connection.is_finished());
    assert_eq!(lb.listener_addr("l/1"), Some(addr));
}

/// A target as simple as busybox httpd: reads one request, answers HTTP/1.0 and closes at
/// once; records each request line.
async fn closing_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = lines.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let text = String::from_utf8_lossy(&buf[..got]).to_string();
                let line = text.lines().next().unwrap_or_default().to_string();
                let ok = line.split(' ').nth(1).is_some_and(|t| t.starts_with('/'));
                seen.lock().unwrap().push(line);
                let answer: &[u8] = if ok {
                    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nclosing"
                } else {
                    b"HTTP/1.0 400 Bad Request\r\n\r\n"
                };
                let _ = stream.write_all(answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_answer_and_close_get_origin_form_requests_and_pass_health_checks() {
    let (addr, lines) = closing_backend().await;
    let lb = LoadBalancer::new(LOCALHOST);
    let target = TargetConfig {
        id: "127.0.0.1".into(),
        port: addr.port(),
        address: addr.ip(),
    };
    lb.put_target_group(group("tg/closing", vec![target]));
    let port = free_port();
    lb.put_listener(listener(
        "l/closing",
        port,
        vec![default_rule(forward("tg/closing"))],
    ))
    .unwrap();
    // Health checks pass although each connection ends right after its answer.
    wait_state(&lb, "tg/closing", addr.port(), TargetState::Healthy).await;
    let client = http_client();
    let lb_addr = lb.listener_addr("l/closing").unwrap();
    for _ in 0..20 {
        let answer = get(&client, lb_addr, "/x?y=1").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "closing");
    }
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l == "GET /x?y=1 HTTP/1.1"),
        "requests reach the target in origin form: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.split(' ').nth(1).is_some_and(|t| t.starts_with('/'))),
        "{lines:?}"
    );
}
