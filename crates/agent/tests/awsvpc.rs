//! awsvpc task networking against the real Docker engine: the pause image, one network
//! namespace per task on the subnet's Docker network at the task's address (held by a pause
//! container when the task has several containers, which share it, and by the task's container
//! itself when it has one), the host and other tasks reaching the task at its address, the
//! address freed before STOPPED is reported, restart adoption, restart policies, a subnet
//! Docker refuses, and the start time against `docker run`. Docker must be reachable: these
//! tests fail (they do not skip) when it is not.
//!
//! Each test uses its own /24 under 10.213.240.0/20 (unlikely to collide with anything on a
//! host) and a unique subnet id, and removes the Docker networks it creates.

mod common;

use common::*;
use gantry_agent::docker::DockerDriver;
use gantry_agent::pause::{PauseImage, PAUSE_IMAGE};
use gantry_agent::spec::CreateSpec;
use gantry_model::agent_protocol::{
    labels, subnet_network_name, SubmitTaskStateChange, TaskAssignment, TaskNetworkInterface,
};
use gantry_model::status;
use gantry_model::types::{ContainerDefinition, PortMapping, TaskDefinition};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test subnet: a unique id, a /24 of its own, and a guard that removes its Docker network
/// (and anything still attached to it) when the test ends.
struct Subnet {
    docker: DockerDriver,
    id: String,
    /// `10.213.<n>`
    prefix: String,
}

impl Subnet {
    async fn new(d: &DockerDriver, third_octet: u8) -> Subnet {
        let s = Subnet {
            docker: d.clone(),
            id: format!("subnet-gtest{}", &unique()[..12]),
            prefix: format!("10.213.{third_octet}"),
        };
        // Networks an earlier, interrupted run of this test left on the same range.
        purge_test_networks(d, &s.cidr()).await;
        s
    }

    fn cidr(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }

    fn network(&self) -> String {
        subnet_network_name(&self.id)
    }

    /// The interface the control plane would give a task at `.host`.
    fn eni(&self, host: u8) -> TaskNetworkInterface {
        let ip = self.ip(host);
        let octets: Vec<u8> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
        TaskNetworkInterface {
            attachment_id: unique(),
            subnet_id: self.id.clone(),
            subnet_cidr: self.cidr(),
            gateway: self.ip(1),
            private_ipv4_address: ip.clone(),
            // Not Docker's own choice (02:42 + the IPv4 address), so the test sees it applied.
            mac_address: format!(
                "02:6a:{:02x}:{:02x}:{:02x}:{:02x}",
                octets[0], octets[1], octets[2], octets[3]
            ),
            private_dns_name: format!("ip-{}.us-east-1.compute.internal", ip.replace('.', "-")),
            security_groups: Vec::new(),
        }
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        let d = self.docker.clone();
        let name = self.network();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(purge_network(&d, &name));
            }
        })
        .join();
    }
}

/// Removes a network and every container still attached to it.
async fn purge_network(d: &DockerDriver, name: &str) {
    if let Ok(n) = d.raw().inspect_network(name, None).await {
        for id in n.containers.unwrap_or_default().into_keys() {
            let _ = d.remove_container(&id).await;
        }
    }
    let _ = d.remove_network(name).await;
}

/// Removes test-made networks (names `gantry-subnet-gtest…`, `gtest-…`) on `cidr`.
async fn purge_test_networks(d: &DockerDriver, cidr: &str) {
    let Ok(nets) = d.raw().list_networks(None).await else {
        return;
    };
    for n in nets {
        let name = n.name.clone().unwrap_or_default();
        let on_range = n
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .iter()
            .any(|c| c.subnet.as_deref() == Some(cidr));
        if on_range && (name.starts_with("gantry-subnet-gtest") || name.starts_with("gtest-")) {
            purge_network(d, &name).await;
        }
    }
}

fn awsvpc_td(family: &str, containers: Vec<ContainerDefinition>) -> TaskDefinition {
    TaskDefinition {
        family: family.into(),
        revision: Some(1),
        network_mode: Some("awsvpc".into()),
        container_definitions: containers,
        ..Default::default()
    }
}

fn awsvpc_task(
    task: &str,
    td: TaskDefinition,
    eni: TaskNetworkInterface,
    desired: &str,
) -> TaskAssignment {
    let mut a = assignment(task, td, desired);
    a.network_interface = Some(eni);
    a
}

fn shell(name: &str, script: &str) -> ContainerDefinition {
    ContainerDefinition {
        name: Some(name.into()),
        image: Some(IMAGE.into()),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        stop_timeout: Some(1),
        ..Default::default()
    }
}

/// busybox httpd in the foreground on `port`, serving `body` at `/`.
fn web_server(name: &str, port: u16, body: &str) -> ContainerDefinition {
    let mut c = shell(
        name,
        &format!(
            "mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www"
        ),
    );
    // Only the task's address serves it: the mapping must not become a host port binding.
    c.port_mappings = Some(vec![PortMapping {
        container_port: Some(i32::from(port)),
        ..Default::default()
    }]);
    c.hostname = Some("ignored-in-awsvpc".into());
    c
}

/// A shell script that fetches `http://host:port/` until it answers `expect` (exit 0), or
/// gives up after about 20 s (exit 1). (busybox `nc`: the test image's static `wget` cannot
/// resolve anything.)
fn fetch_script(host: &str, port: u16, expect: &str) -> String {
    format!(
        "i=0; while [ $i -lt 100 ]; do \
           if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {host} {port} > /tmp/out \
              && [ \"$(busybox tail -n 1 /tmp/out)\" = {expect} ]; then exit 0; fi; \
           i=$((i+1)); sleep 0.2; \
         done; exit 1"
    )
}

fn fetcher(name: &str, host: &str, port: u16, expect: &str) -> ContainerDefinition {
    shell(name, &fetch_script(host, port, expect))
}

/// A second, non-essential container that only sleeps: with it a task has two containers, so
/// its namespace is held by a pause container.
fn sidecar() -> ContainerDefinition {
    let mut c = shell("sidecar", "exec sleep 300");
    c.essential = Some(false);
    c
}

fn task_status(r: &SubmitTaskStateChange, task: &str, st: &str) -> bool {
    r.task.as_deref() == Some(task) && r.status.as_deref() == Some(st)
}

/// The pause containers labelled with `task`.
async fn pause_ids(d: &DockerDriver, task: &str) -> Vec<String> {
    d.list_container_ids(&[
        format!("{}={task}", labels::TASK_ARN),
        format!("{}=true", labels::PAUSE),
    ])
    .await
    .expect("list pause containers")
}

/// The body of `GET http://addr/`, or why not.
async fn http_get(addr: &str) -> Result<String, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: task\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).to_string();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or(text))
}

/// Polls `GET http://addr/` until it answers `expect`.
async fn wait_http(addr: &str, expect: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let r = http_get(addr).await;
        if r.as_deref() == Ok(expect) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "http://{addr}/ did not answer {expect:?} within {within:?}; last: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A (running) container's address, MAC address and hostname on `network`, from Docker.
async fn network_facts(d: &DockerDriver, id: &str, network: &str) -> (String, String, String) {
    let raw = d
        .raw()
        .inspect_container(id, None)
        .await
        .expect("inspect container");
    let ep = raw
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(network))
        .unwrap_or_else(|| panic!("container {id} is not on {network}"));
    (
        ep.ip_address.unwrap_or_default(),
        ep.mac_address.unwrap_or_default(),
        raw.config.and_then(|c| c.hostname).unwrap_or_default(),
    )
}

/// The containers attached to `network` and their addresses there, from the network's side.
async fn attached(d: &DockerDriver, network: &str) -> HashMap<String, String> {
    let n = d
        .raw()
        .inspect_network(network, None)
        .await
        .expect("inspect network");
    n.containers
        .unwrap_or_default()
        .into_iter()
        .map(|(id, c)| (id, c.ipv4_address.unwrap_or_default()))
        .collect()
}

/// Whether some container on `network` holds `ip` (the network's addresses carry a prefix
/// length: `10.213.x.y/24`).
async fn address_held(d: &DockerDriver, network: &str, ip: &str) -> bool {
    attached(d, network)
        .await
        .values()
        .any(|a| a.split('/').next() == Some(ip))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_image_runs_stays_running_and_is_removed_by_force() {
    let (d, arn, _guard) = fresh_instance().await;
    // Two callers at once: one import at most, both see the image.
    let pause = PauseImage::new();
    let (a, b) = tokio::join!(pause.ensure(&d), pause.ensure(&d));
    a.expect("pause image");
    b.expect("pause image");
    assert!(pause.is_ready());
    let img = d.raw().inspect_image(PAUSE_IMAGE).await.expect("inspect");
    let cmd = img.config.and_then(|c| c.cmd).unwrap_or_default();
    assert_eq!(cmd, vec!["/pause".to_string()]);
    // A fresh handle finds it without importing again.
    PauseImage::new().ensure(&d).await.expect("present");

    let spec = CreateSpec {
        name: format!("gtest-pause-{}", &unique()[..12]),
        body: bollard::models::ContainerCreateBody {
            image: Some(PAUSE_IMAGE.into()),
            labels: Some(HashMap::from([(
                labels::INSTANCE_ARN.to_string(),
                arn.clone(),
            )])),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let id = d.create_container(&spec).await.expect("create");
    d.start_container(&id).await.expect("start");
    // It keeps running (an executable that returned or crashed would be gone at once), and
    // SIGTERM does nothing to it (PID 1 with the default handler).
    let until = Instant::now() + Duration::from_millis(800);
    let mut sent_term = false;
    while Instant::now() < until {
        let s = d.inspect_container(&id).await.expect("inspect");
        assert!(s.running, "pause exited: {s:?}");
        if !sent_term {
            let opts = bollard::query_parameters::KillContainerOptionsBuilder::default()
                .signal("SIGTERM")
                .build();
            d.raw()
                .kill_container(&id, Some(opts))
                .await
                .expect("SIGTERM");
            sent_term = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    d.remove_container(&id).await.expect("remove --force");
    let took = started.elapsed();
    eprintln!("pause container removed by force in {took:?}");
    assert!(took < Duration::from_secs(5), "force removal took {took:?}");
    assert!(d.inspect_container(&id).await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_an_awsvpc_task_share_localhost_and_the_task_hostname() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 250).await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let eni = subnet.eni(10);
    // Exit 2 when the container does not see the task's hostname.
    let mut client = shell(
        "client",
        &format!(
            "[ \"$(cat /proc/sys/kernel/hostname)\" = {} ] || exit 2; {}",
            eni.private_dns_name,
            fetch_script("127.0.0.1", 8080, "hello-localhost")
        ),
    );
    client.essential = Some(false);
    let task = task_arn();
    let t = awsvpc_td(
        "gantry-test-awsvpc-local",
        vec![web_server("server", 8080, "hello-localhost"), client],
    );
    h.apply(vec![awsvpc_task(
        &task,
        t.clone(),
        eni.clone(),
        status::RUNNING,
    )])
    .await;
    let running = h
        .wait_report(Duration::from_secs(60), "RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    let server = container(&running, "server");
    assert_eq!(server.network_bindings, None, "awsvpc reports no bindings");

    // One pause container, on the subnet's network at the task's address and MAC.
    let pauses = pause_ids(&d, &task).await;
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    let (ip, mac, hostname) = network_facts(&d, &pauses[0], &subnet.network()).await;
    assert_eq!(ip, eni.private_ipv4_address);
    assert_eq!(mac, eni.mac_address);
    assert_eq!(hostname, eni.private_dns_name);
    let pause = d.inspect_container(&pauses[0]).await.unwrap();
    assert!(pause.running);
    assert_eq!(pause.label(labels::INSTANCE_ARN), Some(arn.as_str()));
    assert_eq!(pause.label(labels::CLUSTER), Some(CLUSTER_ARN));
    assert_eq!(
        pause.label(labels::TASK_FAMILY),
        Some("gantry-test-awsvpc-local")
    );
    // The task's containers are in its namespace.
    let server_s = d
        .inspect_container(server.runtime_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(
        server_s.network_mode.as_deref(),
        Some(format!("container:{}", pauses[0]).as_str())
    );
    // The subnet's network: the range, the gateway, the label.
    let net = d
        .inspect_network(&subnet.network())
        .await
        .unwrap()
        .expect("subnet network");
    assert_eq!(
        net.subnets,
        vec![(subnet.cidr(), Some(subnet.ip(1)))],
        "{net:?}"
    );
    assert_eq!(
        net.labels.get(labels::SUBNET_ID).map(String::as_str),
        Some(subnet.id.as_str())
    );

    // The client reached the server over localhost and saw the task's hostname.
    let r = h
        .wait_report(Duration::from_secs(40), "client exited", |r| {
            r.task.as_deref() == Some(task.as_str())
                && container(r, "client").status.as_deref() == Some(status::STOPPED)
        })
        .await;
    assert_eq!(
        container(&r, "client").exit_code,
        Some(0),
        "client: 0 = reached localhost, 1 = did not, 2 = wrong hostname"
    );
    assert_eq!(r.status.as_deref(), Some(status::RUNNING));

    h.apply(vec![awsvpc_task(&task, t, eni, status::STOPPED)])
        .await;
    h.wait_report(Duration::from_secs(30), "STOPPED", |r| {
        task_status(r, &task, status::STOPPED)
    })
    .await;
    assert!(pause_ids(&d, &task).await.is_empty(), "pause left behind");
    h.kill().await;
}

/// Through the pause container (two containers); a one-container task: see
/// `a_one_container_task_holds_its_address_itself_without_a_pause_container`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_reaches_an_awsvpc_task_at_its_address() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 251).await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let eni = subnet.eni(10);
    let task = task_arn();
    h.apply(vec![awsvpc_task(
        &task,
        awsvpc_td(
            "gantry-test-awsvpc-host",
            vec![web_server("web", 8080, "hello-host"), sidecar()],
        ),
        eni.clone(),
        status::RUNNING,
    )])
    .await;
    let running = h
        .wait_report(Duration::from_secs(60), "RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    assert_eq!(container(&running, "web").network_bindings, None);
    assert_eq!(pause_ids(&d, &task).await.len(), 1);
    wait_http(
        &format!("{}:8080", eni.private_ipv4_address),
        "hello-host",
        Duration::from_secs(20),
    )
    .await;
    // No host port was published.
    let web = d
        .inspect_container(container(&running, "web").runtime_id.as_deref().unwrap())
        .await
        .unwrap();
    assert!(
        web.ports
            .as_ref()
            .is_none_or(|p| p.values().all(|b| b.is_none())),
        "{:?}",
        web.ports
    );
    h.kill().await;
}

/// The server task has two containers (a pause container holds its address), the client task
/// one (its container holds its address itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_one_subnet_reach_each_other_by_address() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 252).await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let server_eni = subnet.eni(10);
    let server = task_arn();
    let client = task_arn();
    h.apply(vec![awsvpc_task(
        &server,
        awsvpc_td(
            "gantry-test-awsvpc-peer-server",
            vec![web_server("web", 8080, "hello-peer"), sidecar()],
        ),
        server_eni.clone(),
        status::RUNNING,
    )])
    .await;
    h.wait_report(Duration::from_secs(60), "server RUNNING", |r| {
        task_status(r, &server, status::RUNNING)
    })
    .await;
    let client_assignment = awsvpc_task(
        &client,
        awsvpc_td(
            "gantry-test-awsvpc-peer-client",
            vec![fetcher(
                "fetch",
                &server_eni.private_ipv4_address,
                8080,
                "hello-peer",
            )],
        ),
        subnet.eni(11),
        status::RUNNING,
    );
    h.apply(vec![
        awsvpc_task(
            &server,
            awsvpc_td(
                "gantry-test-awsvpc-peer-server",
                vec![web_server("web", 8080, "hello-peer"), sidecar()],
            ),
            server_eni.clone(),
            status::RUNNING,
        ),
        client_assignment,
    ])
    .await;
    let stopped = h
        .wait_report(Duration::from_secs(60), "client STOPPED", |r| {
            task_status(r, &client, status::STOPPED)
        })
        .await;
    assert_eq!(
        container(&stopped, "fetch").exit_code,
        Some(0),
        "the client task did not reach the server task at {}",
        server_eni.private_ipv4_address
    );
    assert!(pause_ids(&d, &client).await.is_empty());
    assert_eq!(pause_ids(&d, &server).await.len(), 1);
    h.kill().await;
}

/// With a pause container (two containers); then a one-container task takes the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_task_frees_its_address_before_stopped_is_reported() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 253).await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let eni = subnet.eni(10);
    let first = task_arn();
    let first_td = awsvpc_td(
        "gantry-test-awsvpc-reuse",
        vec![web_server("web", 8080, "first"), sidecar()],
    );
    h.apply(vec![awsvpc_task(
        &first,
        first_td.clone(),
        eni.clone(),
        status::RUNNING,
    )])
    .await;
    h.wait_report(Duration::from_secs(60), "first RUNNING", |r| {
        task_status(r, &first, status::RUNNING)
    })
    .await;
    assert_eq!(pause_ids(&d, &first).await.len(), 1);
    let addr = format!("{}:8080", eni.private_ipv4_address);
    wait_http(&addr, "first", Duration::from_secs(20)).await;

    h.apply(vec![awsvpc_task(
        &first,
        first_td.clone(),
        eni.clone(),
        status::STOPPED,
    )])
    .await;
    h.wait_report(Duration::from_secs(30), "first STOPPED", |r| {
        task_status(r, &first, status::STOPPED)
    })
    .await;
    // Checked the moment STOPPED is reported: the address is already free.
    assert!(
        pause_ids(&d, &first).await.is_empty(),
        "the pause container outlived the STOPPED report"
    );
    assert!(!address_held(&d, &subnet.network(), &eni.private_ipv4_address).await);
    // The task's stopped containers stay for the cleanup wait; only the pause is gone.
    assert!(!d
        .list_container_ids(&[format!("{}={first}", labels::TASK_ARN)])
        .await
        .unwrap()
        .is_empty());

    // The control plane hands the address to a new task at once.
    let second = task_arn();
    let started = Instant::now();
    h.apply(vec![
        awsvpc_task(&first, first_td, eni.clone(), status::STOPPED),
        awsvpc_task(
            &second,
            awsvpc_td(
                "gantry-test-awsvpc-reuse",
                vec![web_server("web", 8080, "second")],
            ),
            eni.clone(),
            status::RUNNING,
        ),
    ])
    .await;
    h.wait_report(Duration::from_secs(60), "second RUNNING", |r| {
        task_status(r, &second, status::RUNNING)
    })
    .await;
    eprintln!(
        "second task on the reused address RUNNING after {:?}",
        started.elapsed()
    );
    wait_http(&addr, "second", Duration::from_secs(20)).await;

    // A task that fails to start removes its pause container too.
    let broken = task_arn();
    let mut bad = shell("bad", "true");
    bad.command = Some(vec!["/does/not/exist".into()]);
    h.apply(vec![awsvpc_task(
        &broken,
        awsvpc_td("gantry-test-awsvpc-broken", vec![bad, sidecar()]),
        subnet.eni(12),
        status::RUNNING,
    )])
    .await;
    let r = h
        .wait_report(Duration::from_secs(60), "broken STOPPED", |r| {
            task_status(r, &broken, status::STOPPED)
        })
        .await;
    let reason = r.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("CannotStartContainerError: "),
        "{reason}"
    );
    assert!(
        pause_ids(&d, &broken).await.is_empty(),
        "failed task kept its pause"
    );
    assert!(!address_held(&d, &subnet.network(), &subnet.ip(12)).await);
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_the_pause_container() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 254).await;
    let eni = subnet.eni(10);
    let task = task_arn();
    let a = awsvpc_task(
        &task,
        awsvpc_td(
            "gantry-test-awsvpc-adopt",
            vec![web_server("web", 8080, "adopted"), sidecar()],
        ),
        eni.clone(),
        status::RUNNING,
    );
    let addr = format!("{}:8080", eni.private_ipv4_address);

    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![a.clone()]).await;
    let running = h
        .wait_report(Duration::from_secs(60), "RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    let web_id = container(&running, "web").runtime_id.clone().unwrap();
    let pauses = pause_ids(&d, &task).await;
    assert_eq!(pauses.len(), 1);
    wait_http(&addr, "adopted", Duration::from_secs(20)).await;
    h.kill().await;

    // The next run adopts the same pause container: no second one, the same address.
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![a.clone()]).await;
    let adopted = h
        .wait_report(Duration::from_secs(30), "adopted RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    assert_eq!(
        container(&adopted, "web").runtime_id.as_deref(),
        Some(web_id.as_str())
    );
    assert_eq!(
        pause_ids(&d, &task).await,
        pauses,
        "pause container replaced"
    );
    assert!(d.inspect_container(&pauses[0]).await.unwrap().running);
    wait_http(&addr, "adopted", Duration::from_secs(20)).await;
    h.kill().await;

    // A run whose control plane no longer lists the task stops it and removes its pause
    // before reporting STOPPED.
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![]).await;
    h.wait_report(Duration::from_secs(30), "unassigned task STOPPED", |r| {
        task_status(r, &task, status::STOPPED)
    })
    .await;
    assert!(pause_ids(&d, &task).await.is_empty(), "pause left behind");
    // Taken away while running: its containers go at once too.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = d
            .list_container_ids(&[format!("{}={task}", labels::TASK_ARN)])
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not cleaned up: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restarted_in_place_keeps_the_task_namespace() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 248).await;
    let config = gantry_agent::supervisor::SupervisorConfig {
        cleanup_wait: Duration::from_secs(600),
        restart_attempt_period: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut h = Harness::start_with(&d, &arn, config, None).await;
    let eni = subnet.eni(10);
    // Serves for 2 s, then fails: restarted in place each time.
    let mut web = shell(
        "web",
        "mkdir -p /tmp/www && echo restarted > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && sleep 2; exit 3",
    );
    web.extra.insert(
        "restartPolicy".into(),
        serde_json::json!({"enabled": true, "restartAttemptPeriod": 60}),
    );
    let task = task_arn();
    h.apply(vec![awsvpc_task(
        &task,
        awsvpc_td("gantry-test-awsvpc-restart", vec![web, sidecar()]),
        eni.clone(),
        status::RUNNING,
    )])
    .await;
    let running = h
        .wait_report(Duration::from_secs(60), "RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    let id = container(&running, "web").runtime_id.clone().unwrap();
    let pauses = pause_ids(&d, &task).await;
    assert_eq!(pauses.len(), 1);
    let mut starts = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while starts.len() < 3 {
        if let Some(t) = d.inspect_container(&id).await.unwrap().started_at_ns {
            starts.insert(t);
        }
        assert!(Instant::now() < deadline, "not restarted twice: {starts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same namespace throughout: same pause container, still running, same address.
    assert_eq!(pause_ids(&d, &task).await, pauses);
    assert!(d.inspect_container(&pauses[0]).await.unwrap().running);
    wait_http(
        &format!("{}:8080", eni.private_ipv4_address),
        "restarted",
        Duration::from_secs(20),
    )
    .await;
    while let Ok(r) = h.reports.try_recv() {
        h.seen.push(r);
    }
    assert!(
        h.seen
            .iter()
            .all(|r| r.status.as_deref() != Some(status::STOPPED)),
        "the task stopped"
    );
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_pause_container_dies_is_stopped() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 245).await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let task = task_arn();
    h.apply(vec![awsvpc_task(
        &task,
        awsvpc_td(
            "gantry-test-awsvpc-pause-dies",
            vec![shell("app", "exec sleep 300"), sidecar()],
        ),
        subnet.eni(10),
        status::RUNNING,
    )])
    .await;
    h.wait_report(Duration::from_secs(60), "RUNNING", |r| {
        task_status(r, &task, status::RUNNING)
    })
    .await;
    let pauses = pause_ids(&d, &task).await;
    assert_eq!(pauses.len(), 1);
    d.kill_container(&pauses[0]).await.expect("kill the pause");
    let stopped = h
        .wait_report(Duration::from_secs(30), "STOPPED", |r| {
            task_status(r, &task, status::STOPPED)
        })
        .await;
    assert_eq!(
        stopped.reason.as_deref(),
        Some(gantry_agent::awsvpc::REASON_PAUSE_EXITED)
    );
    assert_eq!(
        container(&stopped, "app").status.as_deref(),
        Some(status::STOPPED)
    );
    assert!(
        pause_ids(&d, &task).await.is_empty(),
        "dead pause left behind"
    );
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runners_racing_to_create_a_subnet_network_all_succeed() {
    let d = docker().await;
    let subnet = Subnet::new(&d, 244).await;
    let eni = subnet.eni(10);
    let results = futures::future::join_all(
        (0..4).map(|_| gantry_agent::awsvpc::ensure_subnet_network(&d, &eni)),
    )
    .await;
    for r in &results {
        assert_eq!(r, &Ok(()), "{results:?}");
    }
    // One network of that name, with the range.
    let nets = d.raw().list_networks(None).await.expect("list networks");
    let same: Vec<_> = nets
        .iter()
        .filter(|n| n.name.as_deref() == Some(subnet.network().as_str()))
        .collect();
    assert_eq!(same.len(), 1, "{same:?}");
    // And again, now that it exists.
    gantry_agent::awsvpc::ensure_subnet_network(&d, &eni)
        .await
        .expect("idempotent");
    // Another agent on the engine creating it at the same moment (no lock shared with it).
    let subnet2 = Subnet::new(&d, 242).await;
    let eni2 = subnet2.eni(10);
    let (theirs, ours) = tokio::join!(
        d.create_network(gantry_agent::awsvpc::subnet_network_request(&eni2)),
        gantry_agent::awsvpc::ensure_subnet_network(&d, &eni2)
    );
    assert_eq!(ours, Ok(()), "the other agent's create: {theirs:?}");
    let nets = d.raw().list_networks(None).await.expect("list networks");
    assert_eq!(
        nets.iter()
            .filter(|n| n.name.as_deref() == Some(subnet2.network().as_str()))
            .count(),
        1
    );
    // A different range under the same subnet id (a network left by another control plane):
    // while a container runs on it, refused with a reason; unused, replaced.
    let user = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--network",
            &subnet.network(),
            IMAGE,
            "sleep",
            "60",
        ])
        .output()
        .expect("docker run");
    assert!(user.status.success(), "{user:?}");
    let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
    let mut other = eni.clone();
    other.subnet_cidr = "10.213.243.0/24".into();
    other.gateway = "10.213.243.1".into();
    let err = gantry_agent::awsvpc::ensure_subnet_network(&d, &other)
        .await
        .unwrap_err();
    assert!(
        err.starts_with("ResourceInitializationError: ") && err.contains(&subnet.cidr()),
        "{err}"
    );
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", &user])
        .output()
        .expect("docker rm");
    assert!(removed.status.success(), "{removed:?}");
    gantry_agent::awsvpc::ensure_subnet_network(&d, &other)
        .await
        .expect("an unused network with another range is replaced");
    let replaced = d
        .inspect_network(&subnet.network())
        .await
        .expect("inspect")
        .expect("the network");
    assert_eq!(replaced.subnets[0].0, other.subnet_cidr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_range_docker_refuses_fails_the_task_with_resource_initialization_error() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 255).await;
    // Something else on the host already uses the range.
    let blocker = format!("gtest-overlap-{}", &unique()[..12]);
    d.create_network(bollard::models::NetworkCreateRequest {
        name: blocker.clone(),
        driver: Some("bridge".into()),
        ipam: Some(bollard::models::Ipam {
            config: Some(vec![bollard::models::IpamConfig {
                subnet: Some(subnet.cidr()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        labels: Some(HashMap::from([(TEST_LABEL.to_string(), "1".to_string())])),
        ..Default::default()
    })
    .await
    .expect("create the overlapping network");
    struct Blocker(DockerDriver, String);
    impl Drop for Blocker {
        fn drop(&mut self) {
            let (d, name) = (self.0.clone(), self.1.clone());
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(purge_network(&d, &name));
                }
            })
            .join();
        }
    }
    let _blocker = Blocker(d.clone(), blocker.clone());

    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let task = task_arn();
    h.apply(vec![awsvpc_task(
        &task,
        awsvpc_td(
            "gantry-test-awsvpc-overlap",
            vec![web_server("web", 8080, "never")],
        ),
        subnet.eni(10),
        status::RUNNING,
    )])
    .await;
    let stopped = h
        .wait_report(Duration::from_secs(60), "STOPPED", |r| {
            task_status(r, &task, status::STOPPED)
        })
        .await;
    let reason = stopped.reason.clone().unwrap_or_default();
    eprintln!("reason: {reason}");
    assert!(
        reason.starts_with("ResourceInitializationError: "),
        "{reason}"
    );
    assert!(
        reason.contains(&subnet.id) && reason.contains(&subnet.cidr()),
        "the reason names the subnet and its range: {reason}"
    );
    assert!(reason.contains("overlap"), "says what to do: {reason}");
    assert_eq!(
        container(&stopped, "web").reason.as_deref(),
        Some(reason.as_str())
    );
    assert!(d
        .list_container_ids(&[format!("{}={task}", labels::TASK_ARN)])
        .await
        .unwrap()
        .is_empty());
    h.kill().await;
}

/// The containers labelled with `task`.
async fn task_container_ids(d: &DockerDriver, task: &str) -> Vec<String> {
    d.list_container_ids(&[format!("{}={task}", labels::TASK_ARN)])
        .await
        .expect("list task containers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_container_task_holds_its_address_itself_without_a_pause_container() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 249).await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let eni = subnet.eni(10);
    let task = task_arn();
    let t = awsvpc_td(
        "gantry-test-awsvpc-single",
        vec![web_server("web", 8080, "hello-single")],
    );
    h.apply(vec![awsvpc_task(
        &task,
        t.clone(),
        eni.clone(),
        status::RUNNING,
    )])
    .await;
    let running = h
        .wait_report(Duration::from_secs(60), "RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    let web = container(&running, "web");
    assert_eq!(web.network_bindings, None, "awsvpc reports no bindings");
    let id = web.runtime_id.clone().unwrap();

    // No pause container: the task's only container is the whole task on the engine.
    assert!(pause_ids(&d, &task).await.is_empty(), "a pause container");
    assert_eq!(task_container_ids(&d, &task).await, vec![id.clone()]);
    // On the subnet's network at the task's address and MAC, with the task's hostname (not the
    // definition's).
    let (ip, mac, hostname) = network_facts(&d, &id, &subnet.network()).await;
    assert_eq!(ip, eni.private_ipv4_address);
    assert_eq!(mac, eni.mac_address);
    assert_eq!(hostname, eni.private_dns_name);
    let snap = d.inspect_container(&id).await.unwrap();
    assert_eq!(
        snap.network_mode.as_deref(),
        Some(subnet.network().as_str())
    );
    assert_eq!(
        snap.ipv4_addresses,
        std::collections::BTreeMap::from([(subnet.network(), eni.private_ipv4_address.clone())]),
        "on the subnet's network only"
    );
    // The host reaches it at the task's address; no host port was published.
    wait_http(
        &format!("{}:8080", eni.private_ipv4_address),
        "hello-single",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        snap.ports
            .as_ref()
            .is_none_or(|p| p.values().all(|b| b.is_none())),
        "{:?}",
        snap.ports
    );
    let raw = d.raw().inspect_container(&id, None).await.unwrap();
    assert!(
        raw.host_config
            .and_then(|h| h.port_bindings)
            .is_none_or(|b| b.is_empty()),
        "port bindings"
    );

    h.apply(vec![awsvpc_task(&task, t, eni.clone(), status::STOPPED)])
        .await;
    let stopped = h
        .wait_report(Duration::from_secs(30), "STOPPED", |r| {
            task_status(r, &task, status::STOPPED)
        })
        .await;
    assert_eq!(container(&stopped, "web").network_bindings, None);
    assert!(!address_held(&d, &subnet.network(), &eni.private_ipv4_address).await);
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_container_task_frees_its_address_before_stopped_is_reported() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 246).await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let eni = subnet.eni(10);
    let addr = format!("{}:8080", eni.private_ipv4_address);
    let first = task_arn();
    let first_td = awsvpc_td(
        "gantry-test-awsvpc-single-reuse",
        vec![web_server("web", 8080, "first")],
    );
    h.apply(vec![awsvpc_task(
        &first,
        first_td.clone(),
        eni.clone(),
        status::RUNNING,
    )])
    .await;
    let running = h
        .wait_report(Duration::from_secs(60), "first RUNNING", |r| {
            task_status(r, &first, status::RUNNING)
        })
        .await;
    let first_id = container(&running, "web").runtime_id.clone().unwrap();
    wait_http(&addr, "first", Duration::from_secs(20)).await;

    h.apply(vec![awsvpc_task(
        &first,
        first_td.clone(),
        eni.clone(),
        status::STOPPED,
    )])
    .await;
    h.wait_report(Duration::from_secs(30), "first STOPPED", |r| {
        task_status(r, &first, status::STOPPED)
    })
    .await;
    // Checked the moment STOPPED is reported: the stopped container still exists (it waits
    // for the cleanup) but holds no address; nothing on the network does.
    let snap = d.inspect_container(&first_id).await.expect("still there");
    assert!(!snap.running);
    assert!(snap.ipv4_addresses.is_empty(), "{:?}", snap.ipv4_addresses);
    assert!(!address_held(&d, &subnet.network(), &eni.private_ipv4_address).await);

    // The control plane hands the address to a new task at once.
    let second = task_arn();
    let second_td = awsvpc_td(
        "gantry-test-awsvpc-single-reuse",
        vec![web_server("web", 8080, "second")],
    );
    let started = Instant::now();
    h.apply(vec![
        awsvpc_task(&first, first_td, eni.clone(), status::STOPPED),
        awsvpc_task(&second, second_td, eni.clone(), status::RUNNING),
    ])
    .await;
    let running = h
        .wait_report(Duration::from_secs(60), "second RUNNING", |r| {
            task_status(r, &second, status::RUNNING)
        })
        .await;
    eprintln!(
        "second task on the reused address RUNNING after {:?}",
        started.elapsed()
    );
    let second_id = container(&running, "web").runtime_id.clone().unwrap();
    let (ip, _, _) = network_facts(&d, &second_id, &subnet.network()).await;
    assert_eq!(ip, eni.private_ipv4_address);
    wait_http(&addr, "second", Duration::from_secs(20)).await;

    // A one-container task whose container fails to start holds no address: the next task
    // given that address runs.
    let broken_eni = subnet.eni(12);
    let broken = task_arn();
    let mut bad = shell("bad", "true");
    bad.command = Some(vec!["/does/not/exist".into()]);
    let broken_td = awsvpc_td("gantry-test-awsvpc-single-broken", vec![bad]);
    h.apply(vec![awsvpc_task(
        &broken,
        broken_td.clone(),
        broken_eni.clone(),
        status::RUNNING,
    )])
    .await;
    let r = h
        .wait_report(Duration::from_secs(60), "broken STOPPED", |r| {
            task_status(r, &broken, status::STOPPED)
        })
        .await;
    let reason = r.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("CannotStartContainerError: "),
        "{reason}"
    );
    assert!(!address_held(&d, &subnet.network(), &broken_eni.private_ipv4_address).await);
    let after = task_arn();
    h.apply(vec![
        awsvpc_task(&broken, broken_td, broken_eni.clone(), status::STOPPED),
        awsvpc_task(
            &after,
            awsvpc_td(
                "gantry-test-awsvpc-single-reuse",
                vec![web_server("web", 8080, "after-broken")],
            ),
            broken_eni.clone(),
            status::RUNNING,
        ),
    ])
    .await;
    h.wait_report(Duration::from_secs(60), "after-broken RUNNING", |r| {
        task_status(r, &after, status::RUNNING)
    })
    .await;
    wait_http(
        &format!("{}:8080", broken_eni.private_ipv4_address),
        "after-broken",
        Duration::from_secs(20),
    )
    .await;
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_a_one_container_task() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 241).await;
    let eni = subnet.eni(10);
    let task = task_arn();
    let a = awsvpc_task(
        &task,
        awsvpc_td(
            "gantry-test-awsvpc-single-adopt",
            vec![web_server("web", 8080, "adopted-single")],
        ),
        eni.clone(),
        status::RUNNING,
    );
    let addr = format!("{}:8080", eni.private_ipv4_address);

    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![a.clone()]).await;
    let running = h
        .wait_report(Duration::from_secs(60), "RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    let web_id = container(&running, "web").runtime_id.clone().unwrap();
    let started_at = d.inspect_container(&web_id).await.unwrap().started_at_ns;
    wait_http(&addr, "adopted-single", Duration::from_secs(20)).await;
    h.kill().await;

    // The next run adopts the container as it is: not replaced, not restarted, no pause
    // container, the same address.
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![a.clone()]).await;
    let adopted = h
        .wait_report(Duration::from_secs(30), "adopted RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    assert_eq!(
        container(&adopted, "web").runtime_id.as_deref(),
        Some(web_id.as_str())
    );
    assert_eq!(container(&adopted, "web").network_bindings, None);
    assert_eq!(task_container_ids(&d, &task).await, vec![web_id.clone()]);
    let snap = d.inspect_container(&web_id).await.unwrap();
    assert!(snap.running);
    assert_eq!(snap.started_at_ns, started_at, "restarted");
    let (ip, mac, _) = network_facts(&d, &web_id, &subnet.network()).await;
    assert_eq!(
        (ip, mac),
        (eni.private_ipv4_address.clone(), eni.mac_address.clone())
    );
    wait_http(&addr, "adopted-single", Duration::from_secs(20)).await;
    h.kill().await;

    // A run whose control plane no longer lists the task stops it, the address free by the
    // STOPPED report.
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    h.apply(vec![]).await;
    h.wait_report(Duration::from_secs(30), "unassigned task STOPPED", |r| {
        task_status(r, &task, status::STOPPED)
    })
    .await;
    assert!(!address_held(&d, &subnet.network(), &eni.private_ipv4_address).await);
    h.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_container_task_restarted_in_place_keeps_its_address() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 240).await;
    let config = gantry_agent::supervisor::SupervisorConfig {
        cleanup_wait: Duration::from_secs(600),
        restart_attempt_period: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut h = Harness::start_with(&d, &arn, config, None).await;
    let eni = subnet.eni(10);
    // Serves for 2 s, then fails: restarted in place each time.
    let mut web = shell(
        "web",
        "mkdir -p /tmp/www && echo restarted-single > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && sleep 2; exit 3",
    );
    web.extra.insert(
        "restartPolicy".into(),
        serde_json::json!({"enabled": true, "restartAttemptPeriod": 60}),
    );
    let task = task_arn();
    h.apply(vec![awsvpc_task(
        &task,
        awsvpc_td("gantry-test-awsvpc-single-restart", vec![web]),
        eni.clone(),
        status::RUNNING,
    )])
    .await;
    let running = h
        .wait_report(Duration::from_secs(60), "RUNNING", |r| {
            task_status(r, &task, status::RUNNING)
        })
        .await;
    let id = container(&running, "web").runtime_id.clone().unwrap();
    assert!(pause_ids(&d, &task).await.is_empty());
    // Every run of the container (at least three) is at the task's address and MAC address.
    let mut starts = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while starts.len() < 3 {
        let raw = d.raw().inspect_container(&id, None).await.unwrap();
        let state = raw.state.clone().unwrap_or_default();
        if state.running == Some(true) {
            let ep = raw
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|mut n| n.remove(&subnet.network()))
                .expect("on the subnet's network");
            starts.insert(
                state.started_at.unwrap_or_default(),
                (
                    ep.ip_address.unwrap_or_default(),
                    ep.mac_address.unwrap_or_default(),
                ),
            );
        }
        assert!(Instant::now() < deadline, "not restarted twice: {starts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (started, (ip, mac)) in &starts {
        assert_eq!(
            (ip.as_str(), mac.as_str()),
            (eni.private_ipv4_address.as_str(), eni.mac_address.as_str()),
            "run started at {started}"
        );
    }
    // The same container throughout, and still reached at the task's address.
    assert_eq!(task_container_ids(&d, &task).await, vec![id.clone()]);
    wait_http(
        &format!("{}:8080", eni.private_ipv4_address),
        "restarted-single",
        Duration::from_secs(20),
    )
    .await;
    while let Ok(r) = h.reports.try_recv() {
        h.seen.push(r);
    }
    assert!(
        h.seen
            .iter()
            .all(|r| r.status.as_deref() != Some(status::STOPPED)),
        "the task stopped"
    );
    h.kill().await;
}

/// Median of a few samples.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// RunTask → RUNNING of awsvpc tasks against `docker run -d --network <net>` of the same image:
/// a one-container task (no pause container; the goal: at most 1.2×) and a two-container task
/// (a pause container first), measured in the same rounds. Prints all three; fails only when
/// awsvpc is grossly slower (a shared CI host is too noisy for a tight bound). A benchmark,
/// not run with the suite: `cargo test -p gantry-agent --test awsvpc -- --ignored --nocapture
/// awsvpc_task_start_time` (the end-to-end figure is `cargo bench -p gantry --bench awsvpc`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn awsvpc_task_start_time_compared_with_docker_run() {
    let (d, arn, _guard) = fresh_instance().await;
    let subnet = Subnet::new(&d, 247).await;
    let mut h = Harness::start(&d, &arn, Duration::from_secs(600), None).await;
    let sleeper = |name: &str| {
        let mut c = shell(name, "exec sleep 300");
        c.command = Some(vec!["sleep".into(), "300".into()]);
        c
    };
    let one = || awsvpc_td("gantry-test-awsvpc-speed", vec![sleeper("app")]);
    let two = || {
        awsvpc_td(
            "gantry-test-awsvpc-speed2",
            vec![sleeper("app"), sleeper("side")],
        )
    };
    // Warm up: the pause image and the subnet's network exist before anything is timed.
    // (Task addresses are high in the range, away from those `docker run` gets from Docker.)
    let mut desired = Vec::new();
    for (i, td) in [one(), two()].into_iter().enumerate() {
        let warm = task_arn();
        desired.push(awsvpc_task(
            &warm,
            td,
            subnet.eni(200 + i as u8),
            status::RUNNING,
        ));
        h.apply(desired.clone()).await;
        h.wait_report(Duration::from_secs(60), "warm-up RUNNING", |r| {
            task_status(r, &warm, status::RUNNING)
        })
        .await;
    }

    let rounds = 7u8;
    let mut one_container = Vec::new();
    let mut two_containers = Vec::new();
    let mut docker_run = Vec::new();
    for i in 0..rounds {
        // docker run -d --network <net> (the CLI, as a user would).
        let net = subnet.network();
        let label = format!("{}={arn}", labels::INSTANCE_ARN);
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("docker")
                .args([
                    "run",
                    "-d",
                    "--network",
                    &net,
                    "--label",
                    &label,
                    IMAGE,
                    "sleep",
                    "300",
                ])
                .output()
        })
        .await
        .expect("join")
        .expect("the docker CLI");
        docker_run.push(started.elapsed());
        assert!(out.status.success(), "docker run: {out:?}");

        for (td, host, samples) in [
            (one(), 100 + i, &mut one_container),
            (two(), 150 + i, &mut two_containers),
        ] {
            let task = task_arn();
            desired.push(awsvpc_task(&task, td, subnet.eni(host), status::RUNNING));
            let started = Instant::now();
            h.apply(desired.clone()).await;
            h.wait_report(Duration::from_secs(60), "RUNNING", |r| {
                task_status(r, &task, status::RUNNING)
            })
            .await;
            samples.push(started.elapsed());
        }
    }
    let r = median(docker_run.clone());
    let (a1, a2) = (
        median(one_container.clone()),
        median(two_containers.clone()),
    );
    let (ratio1, ratio2) = (
        a1.as_secs_f64() / r.as_secs_f64(),
        a2.as_secs_f64() / r.as_secs_f64(),
    );
    eprintln!("docker run -d --network: median {r:?} (samples {docker_run:?})");
    eprintln!(
        "awsvpc, one container (no pause): RunTask→RUNNING median {a1:?} (samples {one_container:?}); ratio {ratio1:.2}"
    );
    eprintln!(
        "awsvpc, two containers (pause): RunTask→RUNNING median {a2:?} (samples {two_containers:?}); ratio {ratio2:.2}"
    );
    assert!(
        ratio1 < 2.0,
        "one-container awsvpc task start {a1:?} vs docker run {r:?}"
    );
    assert!(
        ratio2 < 2.5,
        "two-container awsvpc task start {a2:?} vs docker run {r:?}"
    );
    h.kill().await;
}
