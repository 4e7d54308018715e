//! `gantry bench lb`: requests/s and latency through Gantry's load balancer, nginx and HAProxy
//! to the same backend, measured by `wrk` in one run.
//!
//! One backend (nginx answering a 13-byte body from memory on a loopback port). Three reverse
//! proxies in front of it, each with keep-alive to the backend: nginx (`proxy_http_version
//! 1.1`, an upstream `keepalive` pool), HAProxy (`http-reuse always`), and Gantry's data plane
//! (`gantry_lb::LoadBalancer`, in this process, on this process's tokio runtime). Each proxy
//! runs with as many workers as the machine has cores. `wrk` drives each in turn, rounds
//! interleaved (nginx, HAProxy, Gantry, nginx, …) so that the machine's noise falls on all
//! alike; the figures are the medians over the rounds.
//!
//! Everything listens on 127.0.0.1; every run is bounded by `--duration` and `--rounds`.

use clap::Args;
use gantry_model::elbv2::{
    Algorithm, HealthCheckConfig, ListenerConfig, LoadBalancerDataPlane, RuleAction, RuleConfig,
    TargetConfig, TargetGroupConfig, TargetProtocolVersion, TargetType, WeightedTargetGroup,
};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

pub const AFTER_HELP: &str = "\
Needs nginx, haproxy and wrk on the PATH (Debian: apt-get install nginx-light haproxy wrk).
Build in release mode for figures worth recording. Reproduce the recorded figures
(docs/PERFORMANCE.md, \"Load balancer\") with:
  cargo run --release -p gantry -- bench lb --rounds 5 --duration 10";

#[derive(Args)]
pub struct LbArgs {
    /// Interleaved rounds; the medians over them are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of load per proxy per round.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Open client connections (wrk -c).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// wrk threads (wrk -t).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print exactly one JSON object with the figures instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct WrkResult {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// Requests completed in the run.
    requests: u64,
    /// The proxy's CPU time (user and system, its processes and threads together) per
    /// request, in microseconds: steadier than requests/s on a shared machine.
    cpu_us_per_request: f64,
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn need(program: &str) -> Result<(), String> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!(
            "{program} is not installed: apt-get install nginx-light haproxy wrk"
        ))
    }
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    /// SIGTERM first: nginx's master then takes its workers with it (SIGKILL would leave
    /// them running, orphaned). SIGKILL only if it is still there after a few seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn nginx_config(dir: &Path, body: &str) -> String {
    format!(
        "daemon off;\nworker_processes {workers};\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
         {body}\n}}\n",
        workers = cores(),
        dir = dir.display(),
    )
}

fn start_nginx(dir: &Path, name: &str, http_body: &str) -> Result<Process, String> {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(&conf, nginx_config(dir, http_body)).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .args(["-p", &dir.display().to_string(), "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    Ok(Process(child))
}

fn start_haproxy(dir: &Path, port: u16, backend: u16) -> Result<Process, String> {
    let conf = dir.join("haproxy.cfg");
    let text = format!(
        "global\n  nbthread {threads}\n  maxconn 4096\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  \
         option http-keep-alive\n  http-reuse always\n\
         frontend web\n  bind 127.0.0.1:{port}\n  default_backend app\n\
         backend app\n  server b1 127.0.0.1:{backend}\n",
        threads = cores(),
    );
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start haproxy: {e}"))?;
    Ok(Process(child))
}

/// Waits until `port` answers an HTTP request with 200.
async fn wait_http(port: u16, what: &str) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{what} on port {port} did not answer within 15 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses wrk's `--latency` report.
fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut result = WrkResult::default();
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            result.requests_per_sec = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            result.p50_ms = millis(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            result.p99_ms = millis(v.trim())?;
        } else if line.contains(" requests in ") {
            result.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if line.starts_with("Non-2xx or 3xx responses:") {
            result.errors += line.rsplit(' ').next()?.parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                result.errors += part.split_whitespace().last()?.parse::<u64>().ok()?;
            }
        }
    }
    (result.requests_per_sec > 0.0).then_some(result)
}

/// `812.00us`, `1.23ms`, `2.01s` → milliseconds.
fn millis(v: &str) -> Option<f64> {
    if let Some(n) = v.strip_suffix("us") {
        return n.parse::<f64>().ok().map(|n| n / 1000.0);
    }
    if let Some(n) = v.strip_suffix("ms") {
        return n.parse().ok();
    }
    if let Some(n) = v.strip_suffix('s') {
        return n.parse::<f64>().ok().map(|n| n * 1000.0);
    }
    None
}

async fn run_wrk(port: u16, args: &LbArgs) -> Result<WrkResult, String> {
    let out = tokio::process::Command::new("wrk")
        .args([
            "--latency",
            "-t",
            &args.threads.to_string(),
            "-c",
            &args.connections.to_string(),
            "-d",
            &format!("{}s", args.duration),
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .await
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).ok_or_else(|| format!("could not read wrk's report:\n{text}"))
}

/// CPU time (user and system) used so far by process `pid` (all its threads) and, with
/// `descendants`, its descendants, in clock ticks (`USER_HZ`, 1/100 s on Linux).
fn cpu_ticks(pid: u32, descendants: bool) -> u64 {
    let mut total = 0;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The fields after the command's closing parenthesis start with the 3rd (state);
            // utime and stime are the 14th and 15th.
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                for index in [11, 12] {
                    total += fields
                        .get(index)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        if !descendants {
            break;
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            pending.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

const TICKS_PER_SECOND: f64 = 100.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Gantry's data plane in this process: one listener forwarding everything to one target
/// group holding the backend.
fn start_gantry(
    port: u16,
    backend: u16,
) -> Result<std::sync::Arc<gantry_lb::LoadBalancer>, String> {
    let lb = gantry_lb::LoadBalancer::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let group =
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/bench/0000000000000001";
    lb.put_target_group(TargetGroupConfig {
        arn: group.into(),
        name: "bench".into(),
        target_type: TargetType::Ip,
        protocol_version: TargetProtocolVersion::Http1,
        health_check: HealthCheckConfig {
            enabled: true,
            path: "/".into(),
            port: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        },
        algorithm: Algorithm::RoundRobin,
        deregistration_delay: Duration::from_secs(5),
        slow_start: Duration::ZERO,
        stickiness: None,
        app_cookie: None,
        targets: vec![TargetConfig {
            id: "127.0.0.1".into(),
            port: backend,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }],
    });
    lb.put_listener(ListenerConfig {
        arn: "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/bench/0000000000000001/0000000000000001".into(),
        load_balancer_arn: "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/bench/0000000000000001".into(),
        load_balancer_name: "bench".into(),
        port,
        rules: vec![RuleConfig {
            arn: "default".into(),
            priority: None,
            conditions: Vec::new(),
            action: RuleAction::Forward {
                target_groups: vec![WeightedTargetGroup {
                    arn: group.into(),
                    weight: 1,
                }],
                stickiness: None,
            },
        }],
        idle_timeout: Duration::from_secs(60),
    })
    .map_err(|e| format!("cannot serve port {}: {}", e.port, e.message))?;
    Ok(lb)
}

pub async fn run(args: LbArgs) -> Result<ExitCode, String> {
    for program in ["nginx", "haproxy", "wrk"] {
        need(program)?;
    }
    if args.rounds == 0 || args.duration == 0 {
        return Err("--rounds and --duration must be above zero".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir_path: PathBuf = dir.path().to_path_buf();
    let [backend, nginx_port, haproxy_port, gantry_port] =
        [free_port()?, free_port()?, free_port()?, free_port()?];
    let _backend = start_nginx(
        &dir_path,
        "backend",
        &format!(
            "server {{ listen 127.0.0.1:{backend}; keepalive_requests 1000000; \
             location / {{ default_type text/plain; return 200 \"hello, world\\n\"; }} }}"
        ),
    )?;
    wait_http(backend, "the backend").await?;
    let nginx = start_nginx(
        &dir_path,
        "proxy",
        &format!(
            "upstream app {{ server 127.0.0.1:{backend}; keepalive 256; keepalive_requests 1000000; }}\n\
             server {{ listen 127.0.0.1:{nginx_port}; keepalive_requests 1000000; \
             location / {{ proxy_pass http://app; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}"
        ),
    )?;
    let haproxy = start_haproxy(&dir_path, haproxy_port, backend)?;
    let _gantry = start_gantry(gantry_port, backend)?;
    wait_http(nginx_port, "nginx").await?;
    wait_http(haproxy_port, "HAProxy").await?;
    wait_http(gantry_port, "Gantry's load balancer").await?;

    // nginx's CPU is its workers'. Gantry's data plane runs in this process (whose other
    // threads idle while wrk runs), without its children (wrk and the other servers).
    let proxies = [
        ("nginx", nginx_port, nginx.0.id(), true),
        ("haproxy", haproxy_port, haproxy.0.id(), true),
        ("gantry", gantry_port, std::process::id(), false),
    ];
    let mut results: Vec<Vec<WrkResult>> = vec![Vec::new(); proxies.len()];
    for round in 0..args.rounds {
        for (i, (name, port, pid, descendants)) in proxies.iter().enumerate() {
            let cpu_before = cpu_ticks(*pid, *descendants);
            let mut r = run_wrk(*port, &args).await?;
            let cpu =
                cpu_ticks(*pid, *descendants).saturating_sub(cpu_before) as f64 / TICKS_PER_SECOND;
            r.cpu_us_per_request = cpu * 1e6 / r.requests.max(1) as f64;
            if !args.json {
                eprintln!(
                    "round {}: {name:<8} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  CPU {:>5.1} µs/req  errors {}",
                    round + 1,
                    r.requests_per_sec,
                    r.p50_ms,
                    r.p99_ms,
                    r.cpu_us_per_request,
                    r.errors
                );
            }
            results[i].push(r);
        }
    }
    let summary: Vec<(&str, f64, f64, f64, f64, u64)> = proxies
        .iter()
        .zip(&results)
        .map(|((name, ..), rs)| {
            (
                *name,
                median(rs.iter().map(|r| r.requests_per_sec).collect()),
                median(rs.iter().map(|r| r.p50_ms).collect()),
                median(rs.iter().map(|r| r.p99_ms).collect()),
                median(rs.iter().map(|r| r.cpu_us_per_request).collect()),
                rs.iter().map(|r| r.errors).sum(),
            )
        })
        .collect();
    let best_peer = summary[..2].iter().map(|s| s.1).fold(0.0_f64, f64::max);
    let gantry = summary[2];
    let ratio = if best_peer > 0.0 {
        gantry.1 / best_peer
    } else {
        0.0
    };
    if args.json {
        let rows: Vec<_> = summary
            .iter()
            .map(|(name, rps, p50, p99, cpu, errors)| {
                json!({"proxy": name, "requests_per_sec": rps, "p50_ms": p50, "p99_ms": p99,
                       "cpu_us_per_request": cpu, "errors": errors})
            })
            .collect();
        println!(
            "{}",
            json!({
                "rounds": args.rounds, "duration_s": args.duration,
                "connections": args.connections, "threads": args.threads,
                "proxies": rows, "gantry_vs_best_peer_rps": ratio,
            })
        );
    } else {
        println!(
            "medians over {} rounds of {} s, wrk -t{} -c{}:",
            args.rounds, args.duration, args.threads, args.connections
        );
        println!(
            "{:<8} {:>12} {:>10} {:>10} {:>12} {:>8}",
            "proxy", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"
        );
        for (name, rps, p50, p99, cpu, errors) in &summary {
            println!("{name:<8} {rps:>12.0} {p50:>10.3} {p99:>10.3} {cpu:>12.1} {errors:>8}");
        }
        println!("gantry / best of nginx and HAProxy (req/s): {ratio:.2}x");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_report() {
        let out = "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n\
  Latency Distribution\n     50%  812.00us\n     75%    1.10ms\n     90%    1.50ms\n     99%    3.20ms\n\
  100000 requests in 5.00s, 15.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
  Non-2xx or 3xx responses: 4\nRequests/sec:  20000.50\nTransfer/sec:      3.00MB\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests_per_sec, 20000.5);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(r.p99_ms, 3.2);
        assert_eq!(r.errors, 7);
        assert_eq!(r.requests, 100000);
        assert!(parse_wrk("garbage").is_none());
    }
}
