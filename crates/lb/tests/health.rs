//! Health checks, their states and reasons, draining, slow start and least outstanding
//! requests, over real sockets.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gantry_lb::LoadBalancer;
use gantry_model::elbv2::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_leaves_rotation_with_elbv2_reasons_and_returns_when_it_recovers() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = LoadBalancer::new(LOCALHOST);
    let recorder = Recorder::default();
    lb.observe_health(recorder.observer());
    lb.put_target_group(group("tg/1", vec![a.target(), b.target()]));
    let port = free_port();
    lb.put_listener(listener("l/1", port, vec![default_rule(forward("tg/1"))]))
        .unwrap();
    let (pa, pb) = (a.addr.port(), b.addr.port());
    wait_state(&lb, "tg/1", pa, TargetState::Healthy).await;
    wait_state(&lb, "tg/1", pb, TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();
    assert_eq!(spread(&client, addr, "/", 20).await.len(), 2);

    a.set_health(500);
    let report = wait_state(&lb, "tg/1", pa, TargetState::Unhealthy).await;
    assert_eq!(report.reason, Some(TargetReason::ResponseCodeMismatch));
    assert_eq!(
        report.description.as_deref(),
        Some("Health checks failed with these codes: [500]")
    );
    let counts = spread(&client, addr, "/", 20).await;
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");

    a.set_health(200);
    let report = wait_state(&lb, "tg/1", pa, TargetState::Healthy).await;
    assert_eq!((report.reason, report.description), (None, None));
    assert_eq!(spread(&client, addr, "/", 20).await.len(), 2);

    let history = recorder.history(pa);
    let expected = vec![
        (TargetState::Unused, Some(TargetReason::NotInUse)),
        (
            TargetState::Initial,
            Some(TargetReason::RegistrationInProgress),
        ),
        (
            TargetState::Initial,
            Some(TargetReason::InitialHealthChecking),
        ),
        (TargetState::Healthy, None),
        (
            TargetState::Unhealthy,
            Some(TargetReason::ResponseCodeMismatch),
        ),
        (TargetState::Healthy, None),
    ];
    // The group was put before the listener named it: its targets were first not in use.
    assert_eq!(history, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_refused_connections_have_their_own_reasons() {
    let hanging = Backend::start("hanging").await;
    hanging.set_health(0);
    let refused_port = free_port();
    let refused = TargetConfig {
        id: "127.0.0.1".into(),
        port: refused_port,
        address: LOCALHOST,
    };
    let lb = LoadBalancer::new(LOCALHOST);
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    lb.put_target_group(group("tg/1", vec![hanging.target(), refused]));
    let report = wait_state(&lb, "tg/1", hanging.addr.port(), TargetState::Unhealthy).await;
    assert_eq!(report.reason, Some(TargetReason::Timeout));
    assert_eq!(report.description.as_deref(), Some("Request timed out"));
    let report = wait_state(&lb, "tg/1", refused_port, TargetState::Unhealthy).await;
    assert_eq!(report.reason, Some(TargetReason::FailedHealthChecks));
    assert_eq!(report.description.as_deref(), Some("Health checks failed"));

    // Every target unhealthy: the group fails open and still routes to the registered ones.
    let addr = lb.listener_addr("l/1").unwrap();
    let answer = get(&http_client(), addr, "/").await;
    assert!(
        answer.status == 200 || answer.status == 502,
        "{}",
        answer.status
    );
    assert!(answer.status != 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_groups_are_not_checked_and_disabled_checks_leave_targets_serving() {
    let (used, unused) = (Backend::start("used").await, Backend::start("unused").await);
    let lb = LoadBalancer::new(LOCALHOST);
    let mut disabled = group("tg/used", vec![used.target()]);
    disabled.health_check.enabled = false;
    lb.put_target_group(disabled);
    lb.put_target_group(group("tg/unused", vec![unused.target()]));
    // A third, checked group that is in use paces the wait below.
    let pacer = Backend::start("pacer").await;
    lb.put_target_group(group("tg/pacer", vec![pacer.target()]));
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![
            rule(
                1,
                vec![Condition::PathPattern(vec!["/pacer".into()])],
                forward("tg/pacer"),
            ),
            default_rule(forward("tg/used")),
        ],
    ))
    .unwrap();
    let report = wait_state(&lb, "tg/used", used.addr.port(), TargetState::Unavailable).await;
    assert_eq!(report.reason, Some(TargetReason::HealthCheckDisabled));
    let report = wait_state(&lb, "tg/unused", unused.addr.port(), TargetState::Unused).await;
    assert_eq!(report.reason, Some(TargetReason::NotInUse));
    eventually(
        Duration::from_secs(5),
        "three checks of the pacer",
        || async { (pacer.health_requests.load(Ordering::SeqCst) >= 3).then_some(()) },
    )
    .await;
    assert_eq!(unused.health_requests.load(Ordering::SeqCst), 0);
    assert_eq!(used.health_requests.load(Ordering::SeqCst), 0);
    let addr = lb.listener_addr("l/1").unwrap();
    assert_eq!(get(&http_client(), addr, "/").await.body, "used");

    // Named by a rule now: the unused group's target is checked and becomes healthy.
    lb.put_listener(listener(
        "l/1",
        addr.port(),
        vec![
            rule(
                1,
                vec![Condition::PathPattern(vec!["/other".into()])],
                forward("tg/unused"),
            ),
            default_rule(forward("tg/used")),
        ],
    ))
    .unwrap();
    wait_state(&lb, "tg/unused", unused.addr.port(), TargetState::Healthy).await;
    assert_eq!(get(&http_client(), addr, "/other").await.body, "unused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_waits_for_in_flight_requests_then_ends_early() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = LoadBalancer::new(LOCALHOST);
    let recorder = Recorder::default();
    lb.observe_health(recorder.observer());
    let mut config = group("tg/1", vec![a.target()]);
    config.deregistration_delay = Duration::from_secs(10);
    lb.put_target_group(config.clone());
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    let pa = a.addr.port();
    wait_state(&lb, "tg/1", pa, TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();

    let slow = tokio::spawn({
        let client = client.clone();
        async move { get(&client, addr, "/slow?ms=700").await }
    });
    eventually(Duration::from_secs(5), "the slow request at a", || async {
        (a.active.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let connections_while_busy = a.open_connections.load(Ordering::SeqCst);
    config.targets = vec![b.target()];
    let deregistered = Instant::now();
    lb.put_target_group(config);
    let report = state_of(&lb, "tg/1", pa).expect("still listed while draining");
    assert_eq!(report.state, TargetState::Draining);
    assert_eq!(report.reason, Some(TargetReason::DeregistrationInProgress));
    wait_state(&lb, "tg/1", b.addr.port(), TargetState::Healthy).await;
    // New requests go to b only, sticky or not.
    let counts = spread(&client, addr, "/", 10).await;
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");

    let answer = slow.await.unwrap();
    assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "a"));
    eventually(Duration::from_secs(5), "a to be gone", || async {
        state_of(&lb, "tg/1", pa).is_none().then_some(())
    })
    .await;
    assert!(
        deregistered.elapsed() < Duration::from_secs(5),
        "drained early, not after the 10 s delay"
    );
    // The keep-alive connection the slow request used went back to the pool; it closes with
    // the target.
    assert!(connections_while_busy >= 1);
    eventually(
        Duration::from_secs(5),
        "a's pooled connections to close",
        || async { (a.open_connections.load(Ordering::SeqCst) == 0).then_some(()) },
    )
    .await;
    let history = recorder.history(pa);
    assert_eq!(
        history[history.len() - 2..].to_vec(),
        vec![
            (
                TargetState::Draining,
                Some(TargetReason::DeregistrationInProgress)
            ),
            (TargetState::Unused, Some(TargetReason::NotRegistered)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_is_bounded_by_the_deregistration_delay() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = LoadBalancer::new(LOCALHOST);
    let mut config = group("tg/1", vec![a.target()]);
    config.deregistration_delay = Duration::from_millis(300);
    lb.put_target_group(config.clone());
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    let pa = a.addr.port();
    wait_state(&lb, "tg/1", pa, TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();
    let _slow = tokio::spawn({
        let client = client.clone();
        async move { get(&client, addr, "/slow?ms=5000").await }
    });
    eventually(Duration::from_secs(5), "the slow request at a", || async {
        (a.active.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    config.targets = vec![b.target()];
    let deregistered = Instant::now();
    lb.put_target_group(config);
    eventually(Duration::from_secs(3), "a to be gone", || async {
        state_of(&lb, "tg/1", pa).is_none().then_some(())
    })
    .await;
    let took = deregistered.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(
        a.active.load(Ordering::SeqCst),
        1,
        "the slow request was still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_requests_prefers_the_idle_target() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = LoadBalancer::new(LOCALHOST);
    let mut config = group("tg/1", vec![a.target(), b.target()]);
    config.algorithm = Algorithm::LeastOutstandingRequests;
    lb.put_target_group(config);
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    wait_state(&lb, "tg/1", a.addr.port(), TargetState::Healthy).await;
    wait_state(&lb, "tg/1", b.addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();
    let _slow = tokio::spawn({
        let client = client.clone();
        async move { get(&client, addr, "/slow?ms=3000").await }
    });
    let busy = eventually(Duration::from_secs(5), "the slow request", || async {
        if a.active.load(Ordering::SeqCst) == 1 {
            Some("a")
        } else if b.active.load(Ordering::SeqCst) == 1 {
            Some("b")
        } else {
            None
        }
    })
    .await;
    let counts = spread(&client, addr, "/", 20).await;
    let idle = if busy == "a" { "b" } else { "a" };
    assert_eq!(counts.get(idle), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_new_target_up() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = LoadBalancer::new(LOCALHOST);
    let ramp = Duration::from_millis(2000);
    let mut config = group("tg/1", vec![a.target()]);
    config.slow_start = ramp;
    lb.put_target_group(config.clone());
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    wait_state(&lb, "tg/1", a.addr.port(), TargetState::Healthy).await;
    // Let a's own ramp end (waiting for time to pass is what is tested here).
    tokio::time::sleep(ramp).await;
    config.targets = vec![a.target(), b.target()];
    lb.put_target_group(config);
    wait_state(&lb, "tg/1", b.addr.port(), TargetState::Healthy).await;
    let healthy_at = Instant::now();
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();
    let early = spread(&client, addr, "/", 100).await;
    let early_took = healthy_at.elapsed();
    let early_b = *early.get("b").unwrap_or(&0);
    assert!(
        early_took < ramp / 2,
        "the early window took {early_took:?}"
    );
    assert!(early_b < 35, "b got {early_b} of the first 100: {early:?}");

    tokio::time::sleep_until((healthy_at + ramp).into()).await;
    let later = spread(&client, addr, "/", 200).await;
    let later_b = *later.get("b").unwrap_or(&0);
    assert!((80..=120).contains(&later_b), "after the ramp: {later:?}");
}

/// A group whose one target serves traffic on `port` but is checked on `checked_port`, where
/// one passing check makes it healthy; the next check is far away, so only requests move it
/// in between.
fn checked_elsewhere(arn: &str, port: u16, checked_port: u16) -> TargetGroupConfig {
    let mut config = group(
        arn,
        vec![TargetConfig {
            id: "127.0.0.1".into(),
            port,
            address: LOCALHOST,
        }],
    );
    config.health_check.port = Some(checked_port);
    config.health_check.interval = Duration::from_secs(30);
    config.health_check.healthy_threshold = 1;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_count_as_failed_checks() {
    // Health checks go to a working port; traffic goes to one that resets.
    let checked = Backend::start("checked").await;
    let (reset_addr, _reset) = broken_backend("reset").await;
    let lb = LoadBalancer::new(LOCALHOST);
    let recorder = Recorder::default();
    lb.observe_health(recorder.observer());
    // No check can end the run of failed requests below.
    lb.put_target_group(checked_elsewhere(
        "tg/1",
        reset_addr.port(),
        checked.addr.port(),
    ));
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    wait_state(&lb, "tg/1", reset_addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();
    // As many consecutive failed requests as the unhealthy threshold (2), with no success in
    // between, count as that many failed checks.
    for _ in 0..2 {
        assert_eq!(get(&client, addr, "/").await.status, 502);
    }
    let report = wait_state(&lb, "tg/1", reset_addr.port(), TargetState::Unhealthy).await;
    assert_eq!(report.reason, Some(TargetReason::FailedHealthChecks));
    assert!(recorder.history(reset_addr.port()).contains(&(
        TargetState::Unhealthy,
        Some(TargetReason::FailedHealthChecks)
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_hangs_gets_504s_that_count_as_timeouts_and_a_stalled_upload_does_not() {
    use tokio::io::AsyncWriteExt;
    let checked = Backend::start("checked").await;
    // HTTP/1.1 clients take the forwarding path of their own; h2c ones go through hyper.
    for (client, path) in [(http_client(), "HTTP/1.1"), (h2_client(), "h2c")] {
        let (hang_addr, _hang) = broken_backend("hang").await;
        let lb = LoadBalancer::new(LOCALHOST);
        let recorder = Recorder::default();
        lb.observe_health(recorder.observer());
        for (arn, port) in [
            ("tg/hang", hang_addr.port()),
            ("tg/ok", checked.addr.port()),
        ] {
            lb.put_target_group(checked_elsewhere(arn, port, checked.addr.port()));
        }
        let mut config = listener(
            "l/1",
            free_port(),
            vec![
                rule(
                    1,
                    vec![Condition::PathPattern(vec!["/hang".into()])],
                    forward("tg/hang"),
                ),
                default_rule(forward("tg/ok")),
            ],
        );
        config.idle_timeout = Duration::from_millis(300);
        lb.put_listener(config).unwrap();
        wait_state(&lb, "tg/hang", hang_addr.port(), TargetState::Healthy).await;
        wait_state(&lb, "tg/ok", checked.addr.port(), TargetState::Healthy).await;
        let addr = lb.listener_addr("l/1").unwrap();

        // As many unanswered requests as the unhealthy threshold (2): the target is
        // unhealthy, timed out.
        for _ in 0..2 {
            assert_eq!(get(&client, addr, "/hang").await.status, 504, "{path}");
        }
        let report = wait_state(&lb, "tg/hang", hang_addr.port(), TargetState::Unhealthy).await;
        assert_eq!(report.reason, Some(TargetReason::Timeout), "{path}");
        assert_eq!(
            report.description.as_deref(),
            Some("Request timed out"),
            "{path}"
        );

        // Uploads the client leaves half sent also end in 504s, but they are the client's
        // doing: the target stays healthy.
        for _ in 0..2 {
            let mut upload = tokio::net::TcpStream::connect(addr).await.unwrap();
            upload
                .write_all(b"POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: 60\r\n\r\nhalf")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                while let Ok(n) = upload.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    answer.extend_from_slice(&buf[..n]);
                }
            })
            .await;
            assert!(
                answer.starts_with(b"HTTP/1.1 504"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
        assert!(
            !recorder
                .history(checked.addr.port())
                .iter()
                .any(|(state, _)| *state == TargetState::Unhealthy),
            "{path}: a stalled upload counted against its target: {:?}",
            recorder.history(checked.addr.port())
        );
    }
}

/// A request body that sends one chunk and then nothing, never ending.
struct StallingBody(Option<bytes::Bytes>);

impl http_body::Body for StallingBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(chunk) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk)))),
            None => std::task::Poll::Pending,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upload_that_stalls_gets_a_504_and_does_not_count_against_its_target() {
    let backend = Backend::start("echo").await;
    let lb = LoadBalancer::new(LOCALHOST);
    let recorder = Recorder::default();
    lb.observe_health(recorder.observer());
    lb.put_target_group(checked_elsewhere(
        "tg/1",
        backend.addr.port(),
        backend.addr.port(),
    ));
    let mut config = listener("l/1", free_port(), vec![default_rule(forward("tg/1"))]);
    config.idle_timeout = Duration::from_millis(300);
    lb.put_listener(config).unwrap();
    wait_state(&lb, "tg/1", backend.addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    // h2c requests go through hyper's path; this one says how long it is, sends a part, and
    // stalls.
    let client: hyper_util::client::legacy::Client<_, StallingBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    for _ in 0..2 {
        let request = http::Request::post(format!("http://{addr}/echo"))
            .header("content-length", "60")
            .body(StallingBody(Some(bytes::Bytes::from_static(b"half"))))
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("an answer in time")
            .expect("an answer");
        assert_eq!(answer.status(), 504);
    }
    assert!(
        !recorder
            .history(backend.addr.port())
            .iter()
            .any(|(state, _)| *state == TargetState::Unhealthy),
        "a stalled h2c upload counted against its target: {:?}",
        recorder.history(backend.addr.port())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_answers_an_upload_early_and_stops_reading_is_not_counted_as_hung() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let checked = Backend::start("checked").await;
    // Answers 413 as soon as a request head arrives, then reads nothing more and keeps the
    // connection open.
    let early = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let early_addr = early.local_addr().unwrap();
    let _early = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = early.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
                .await;
            held.push(stream);
        }
    });
    let lb = LoadBalancer::new(LOCALHOST);
    let recorder = Recorder::default();
    lb.observe_health(recorder.observer());
    lb.put_target_group(checked_elsewhere(
        "tg/1",
        early_addr.port(),
        checked.addr.port(),
    ));
    let mut listener_config = listener("l/1", free_port(), vec![default_rule(forward("tg/1"))]);
    listener_config.idle_timeout = Duration::from_millis(300);
    lb.put_listener(listener_config).unwrap();
    wait_state(&lb, "tg/1", early_addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();

    // Uploads far larger than the sockets' buffers: the load balancer's writes to the target
    // stall once the target stops reading.
    const SIZE: usize = 64 << 20;
    for _ in 0..2 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let upload = tokio::spawn(async move {
            let head =
                format!("POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: {SIZE}\r\n\r\n");
            if writer.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..SIZE >> 20 {
                if writer.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
        upload.abort();
        assert!(
            answer.starts_with(b"HTTP/1.1 5"),
            "{}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    assert!(
        !recorder
            .history(early_addr.port())
            .iter()
            .any(|(state, _)| *state == TargetState::Unhealthy),
        "an early answer counted as a hang: {:?}",
        recorder.history(early_addr.port())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_groups_stop_at_once_and_re_registered_draining_targets_start_over() {
    let a = Backend::start("a").await;
    let lb = LoadBalancer::new(LOCALHOST);
    let recorder = Recorder::default();
    lb.observe_health(recorder.observer());
    let mut config = group("tg/1", vec![a.target()]);
    config.deregistration_delay = Duration::from_secs(30);
    lb.put_target_group(config.clone());
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    let pa = a.addr.port();
    wait_state(&lb, "tg/1", pa, TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();

    // Deregistered with a request in flight: draining; registered again: a fresh target.
    let _slow = tokio::spawn({
        let client = client.clone();
        async move { get(&client, addr, "/slow?ms=2000").await }
    });
    eventually(Duration::from_secs(5), "the slow request at a", || async {
        (a.active.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let mut without = config.clone();
    without.targets.clear();
    lb.put_target_group(without);
    assert_eq!(
        state_of(&lb, "tg/1", pa).unwrap().state,
        TargetState::Draining
    );
    assert_eq!(get(&client, addr, "/").await.status, 503, "no target left");
    lb.put_target_group(config);
    let health = lb.target_health("tg/1");
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!(health[0].state, TargetState::Initial);
    wait_state(&lb, "tg/1", pa, TargetState::Healthy).await;
    assert_eq!(get(&client, addr, "/").await.body, "a");

    // Removing the group stops its targets at once: no draining, requests get 503.
    lb.remove_target_group("tg/1");
    assert!(lb.target_health("tg/1").is_empty());
    assert_eq!(get(&client, addr, "/").await.status, 503);
    assert_eq!(
        recorder.history(pa).last(),
        Some(&(TargetState::Unused, Some(TargetReason::NotRegistered)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_named_with_weight_zero_is_in_use_and_checked_but_gets_no_requests() {
    let (a, zero) = (Backend::start("a").await, Backend::start("zero").await);
    let lb = LoadBalancer::new(LOCALHOST);
    lb.put_target_group(group("tg/a", vec![a.target()]));
    lb.put_target_group(group("tg/zero", vec![zero.target()]));
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(RuleAction::Forward {
            target_groups: vec![
                WeightedTargetGroup {
                    arn: "tg/a".into(),
                    weight: 1,
                },
                WeightedTargetGroup {
                    arn: "tg/zero".into(),
                    weight: 0,
                },
            ],
            stickiness: None,
        })],
    ))
    .unwrap();
    // ELBv2: a group a forward action names is in use whatever its weight.
    wait_state(&lb, "tg/a", a.addr.port(), TargetState::Healthy).await;
    wait_state(&lb, "tg/zero", zero.addr.port(), TargetState::Healthy).await;
    assert!(zero.health_requests.load(Ordering::SeqCst) >= 2);
    let addr = lb.listener_addr("l/1").unwrap();
    let counts = spread(&http_client(), addr, "/", 20).await;
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    assert_eq!(zero.requests.load(Ordering::SeqCst), 0);
}

/// A target that answers `/fail` by closing the connection without a response and anything
/// else with 200 (one request per connection).
async fn flaky_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !head.starts_with(b"GET /fail ") {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sporadic_failed_requests_between_answered_ones_leave_a_target_healthy() {
    let checked = Backend::start("checked").await;
    let (flaky_addr, _flaky) = flaky_backend().await;
    let lb = LoadBalancer::new(LOCALHOST);
    let recorder = Recorder::default();
    lb.observe_health(recorder.observer());
    let mut config = group(
        "tg/1",
        vec![TargetConfig {
            id: "127.0.0.1".into(),
            port: flaky_addr.port(),
            address: LOCALHOST,
        }],
    );
    config.health_check.port = Some(checked.addr.port());
    // Only the first check runs during the test: requests alone move the counts.
    config.health_check.interval = Duration::from_secs(30);
    config.health_check.healthy_threshold = 1;
    lb.put_target_group(config);
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    let port = flaky_addr.port();
    wait_state(&lb, "tg/1", port, TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    let client = http_client();
    for _ in 0..5 {
        assert_eq!(get(&client, addr, "/fail").await.status, 502);
        let answered = get(&client, addr, "/").await;
        assert_eq!(
            (answered.status.as_u16(), answered.body.as_str()),
            (200, "ok")
        );
    }
    assert_eq!(
        state_of(&lb, "tg/1", port).map(|r| r.state),
        Some(TargetState::Healthy)
    );
    assert_eq!(
        recorder.history(port).last(),
        Some(&(TargetState::Healthy, None))
    );
    // Two in a row still do.
    for _ in 0..2 {
        assert_eq!(get(&client, addr, "/fail").await.status, 502);
    }
    let report = wait_state(&lb, "tg/1", port, TargetState::Unhealthy).await;
    assert_eq!(report.reason, Some(TargetReason::FailedHealthChecks));
    // Unhealthy: answered requests do not bring it back, only checks would.
    for _ in 0..3 {
        assert_eq!(get(&client, addr, "/").await.status, 200);
    }
    assert_eq!(
        state_of(&lb, "tg/1", port).map(|r| r.state),
        Some(TargetState::Unhealthy)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_a_target_after_its_drain_has_finished() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = LoadBalancer::new(LOCALHOST);
    let pa = a.addr.port();
    // The requests `a` had answered when its drain was reported finished, per cycle.
    let at_finish: Arc<Mutex<Vec<usize>>> = Arc::default();
    lb.observe_health({
        let (at_finish, a_requests) = (at_finish.clone(), a.requests.clone());
        Box::new(move |report| {
            if report.port == pa && report.reason == Some(TargetReason::NotRegistered) {
                at_finish
                    .lock()
                    .unwrap()
                    .push(a_requests.load(Ordering::SeqCst));
            }
        })
    });
    // Checks disabled: a registered target is routable at once.
    let mut config = group("tg/1", vec![a.target(), b.target()]);
    config.health_check.enabled = false;
    config.deregistration_delay = Duration::from_secs(30);
    lb.put_target_group(config.clone());
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/1"))],
    ))
    .unwrap();
    let addr = lb.listener_addr("l/1").unwrap();
    let mut without_a = config.clone();
    without_a.targets = vec![b.target()];
    for cycle in 0..60 {
        let before = a.requests.load(Ordering::SeqCst);
        lb.put_target_group(config.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                let client = http_client();
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        statuses.push(get(&client, addr, "/").await.status.as_u16());
                    }
                    statuses
                })
            })
            .collect();
        eventually(Duration::from_secs(5), "a request at a", || async {
            (a.requests.load(Ordering::SeqCst) > before).then_some(())
        })
        .await;
        lb.put_target_group(without_a.clone());
        eventually(Duration::from_secs(5), "a's drain to finish", || async {
            (at_finish.lock().unwrap().len() > cycle).then_some(())
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            let statuses = client.await.unwrap();
            assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        }
        // Every request has been answered: none reached `a` after its drain finished.
        let finished_at = at_finish.lock().unwrap()[cycle];
        assert_eq!(
            a.requests.load(Ordering::SeqCst),
            finished_at,
            "cycle {cycle}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_put_after_the_listener_naming_it_is_in_use_and_duplicates_make_one_target() {
    let a = Backend::start("a").await;
    let lb = LoadBalancer::new(LOCALHOST);
    lb.put_listener(listener(
        "l/1",
        free_port(),
        vec![default_rule(forward("tg/late"))],
    ))
    .unwrap();
    let config = group("tg/late", vec![a.target(), a.target()]);
    lb.put_target_group(config.clone());
    let health = lb.target_health("tg/late");
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!(health[0].state, TargetState::Initial);
    wait_state(&lb, "tg/late", a.addr.port(), TargetState::Healthy).await;
    let addr = lb.listener_addr("l/1").unwrap();
    assert_eq!(get(&http_client(), addr, "/").await.body, "a");

    // Removed and put again while the listener still names it: checked again.
    lb.remove_target_group("tg/late");
    assert_eq!(get(&http_client(), addr, "/").await.status, 503);
    lb.put_target_group(config);
    wait_state(&lb, "tg/late", a.addr.port(), TargetState::Healthy).await;
    assert_eq!(get(&http_client(), addr, "/").await.body, "a");

    // A group no listener names is unused.
    lb.put_target_group(group("tg/spare", vec![a.target()]));
    let report = wait_state(&lb, "tg/spare", a.addr.port(), TargetState::Unused).await;
    assert_eq!(report.reason, Some(TargetReason::NotInUse));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checks_make_a_target_unhealthy_even_while_it_answers_requests() {
    let backend = Backend::start("busy").await;
    let lb = LoadBalancer::new(LOCALHOST);
    let mut tg = group("tg/busy", vec![backend.target()]);
    tg.health_check.interval = Duration::from_millis(300);
    tg.health_check.healthy_threshold = 2;
    tg.health_check.unhealthy_threshold = 2;
    lb.put_target_group(tg);
    lb.put_listener(listener(
        "l/busy",
        free_port(),
        vec![default_rule(forward("tg/busy"))],
    ))
    .unwrap();
    let port = backend.addr.port();
    wait_state(&lb, "tg/busy", port, TargetState::Healthy).await;
    let addr = lb.listener_addr("l/busy").unwrap();
    // Its health page fails while `/` keeps answering, and requests flow between the checks.
    backend.set_health(503);
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = loop {
        for _ in 0..4 {
            let _ = get(&client, addr, "/").await;
        }
        let state = state_of(&lb, "tg/busy", port);
        if state
            .as_ref()
            .is_some_and(|r| r.state == TargetState::Unhealthy)
            || Instant::now() > deadline
        {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let report = state.expect("the target is reported");
    assert_eq!(report.state, TargetState::Unhealthy, "{report:?}");
    assert_eq!(report.reason, Some(TargetReason::ResponseCodeMismatch));
}
