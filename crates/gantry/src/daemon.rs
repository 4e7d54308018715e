//! `gantry dev`, `gantry server` and `gantry agent`: wiring the library crates into running
//! processes.

use crate::credentials;
use clap::Args;
use gantry_control::logs::{LogLimits, LogStore};
use gantry_control::tls::TlsIdentity;
use gantry_control::{AuditLog, ControlConfig, ControlPlane, LoadBalancerDataPlaneHandle};
use gantry_model::ArnScope;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Address to serve the ECS API on.
    #[arg(long, default_value = crate::DEFAULT_LISTEN, env = "GANTRY_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for the embedded store (state.db), container logs (logs.db), the audit log,
    /// the master key and the credentials written on first start.
    #[arg(long, default_value = ".gantry", env = "GANTRY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Where the state lives: `sqlite:PATH` (default: <data-dir>/state.db) or
    /// `etcd://HOST:PORT,HOST:PORT,...[/NAMESPACE]`, an etcd v3 cluster that several
    /// `gantry server` replicas share (keys under NAMESPACE/, `gantry/` by default). Replicas
    /// on etcd need the same master key: set GANTRY_MASTER_KEY on each. See docs/HA.md.
    #[arg(long, value_name = "LOCATION", env = "GANTRY_STORE")]
    pub store: Option<gantry_store::StoreLocation>,
    /// The URL other replicas, clients and agents reach this replica's API at, as shown by
    /// `gantry status` (default: from --listen, with this host's name for 0.0.0.0).
    #[arg(long, value_name = "URL", env = "GANTRY_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// How long a replica's etcd lease lives without keep-alives, in seconds: the longest the
    /// controllers go without a leader when the leading replica dies.
    #[arg(long, value_name = "SECONDS", default_value_t = 3, hide = true,
          value_parser = clap::value_parser!(u64).range(2..=60))]
    pub lease_ttl: u64,
    /// Region written into ARNs and expected in request signatures.
    #[arg(long, default_value = "us-east-1", env = "GANTRY_REGION")]
    pub region: String,
    /// Account id written into ARNs.
    #[arg(long, default_value = "000000000000", env = "GANTRY_ACCOUNT_ID")]
    pub account_id: String,
    /// Most container output to keep in logs.db, in MiB. When new output would pass it, the
    /// oldest events (of any log group) are dropped first until the store is back under 90% of
    /// the cap; each drop is counted and logged as a warning naming the log groups.
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = 1024,
        env = "GANTRY_LOG_STORE_MAX_MIB",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub log_store_max_mib: u64,
    /// Seconds an instance's agent may stay disconnected before the instance is declared
    /// lost: its tasks are then STOPPED (stop code TerminationNotice) and services replace
    /// them on other instances. If the agent comes back later, it stops those tasks'
    /// containers.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        env = "GANTRY_LOST_HOST_AFTER",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub lost_host_after: u64,
    /// Accept unsigned requests and act on them as the account's administrator. Only for a
    /// control plane listening on a loopback address (refused otherwise): anyone who can
    /// reach the port could do anything.
    #[arg(long, env = "GANTRY_UNAUTHENTICATED")]
    pub unauthenticated: bool,
    /// Most API calls to keep in the audit log (audit.db); the oldest are dropped first.
    #[arg(
        long,
        value_name = "EVENTS",
        default_value_t = 1_000_000,
        env = "GANTRY_AUDIT_MAX_EVENTS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub audit_max_events: u64,
    /// The shortest session STS AssumeRole grants, in seconds (AWS: 900). For tests that
    /// watch a session expire.
    #[arg(long, default_value_t = 900, hide = true)]
    pub min_session_duration: i64,
    /// How long a task role's credentials are valid, in seconds (ECS: about six hours); agents
    /// fetch new ones when half of it has passed. For tests that watch a rotation.
    #[arg(long, value_name = "SECONDS", default_value_t = 6 * 3600, hide = true,
          value_parser = clap::value_parser!(i64).range(1..=12 * 3600))]
    pub task_credentials_duration: i64,
    /// Serve the API and the agent channel over TLS with this certificate (PEM; the chain,
    /// leaf first). Needs --tls-key.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        env = "GANTRY_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        env = "GANTRY_TLS_KEY"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve over TLS with a self-signed certificate, generated on first start in
    /// <data-dir>/tls/ and kept; its SHA-256 fingerprint is printed for agents to pin. This is
    /// the default when listening on anything but a loopback address.
    #[arg(long, conflicts_with = "no_tls")]
    pub tls: bool,
    /// Serve plain HTTP even on a non-loopback address (behind a TLS-terminating proxy).
    #[arg(long)]
    pub no_tls: bool,
    /// The address pool of awsvpc subnets: each subnet id named in a networkConfiguration
    /// gets the next free /24 of it on first use (all of it, when it is smaller), carried on every host as a Docker network.
    /// Choose a range no other network of your hosts uses.
    #[arg(
        long,
        value_name = "CIDR",
        default_value = "10.213.0.0/16",
        env = "GANTRY_AWSVPC_CIDR",
        value_parser = parse_awsvpc_cidr
    )]
    pub awsvpc_cidr: String,
    /// The address the load balancer's listeners are served on (each listener's port, as
    /// CreateListener names it). Loopback by default; 0.0.0.0 serves every interface.
    #[arg(
        long,
        value_name = "IP",
        default_value = "127.0.0.1",
        env = "GANTRY_LB_BIND"
    )]
    pub lb_bind: std::net::IpAddr,
}

fn parse_awsvpc_cidr(s: &str) -> Result<String, String> {
    match gantry_control::awsvpc::parse_cidr(s) {
        Some((network, len)) if len <= gantry_control::awsvpc::MAX_POOL_PREFIX => {
            Ok(gantry_control::awsvpc::format_cidr(network, len))
        }
        Some(_) => Err(format!(
            "the pool is too small: use a prefix of {} or less (each subnet gets a /{} of it, or all of a smaller pool)",
            gantry_control::awsvpc::MAX_POOL_PREFIX,
            gantry_control::awsvpc::SUBNET_PREFIX
        )),
        None => Err(format!(
            "'{s}' is not an IPv4 CIDR block such as 10.213.0.0/16"
        )),
    }
}

#[derive(Args, Clone)]
pub struct DevArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Give only this cluster a local instance (created if absent). By default the `default`
    /// cluster is created and every cluster, including those created later, gets one.
    #[arg(long)]
    pub cluster: Option<String>,
    /// CPU units the local agent registers (default: 1,024 per core).
    #[arg(long)]
    pub cpu: Option<i64>,
    /// Memory in MiB the local agent registers (default: the host's total).
    #[arg(long)]
    pub memory: Option<i64>,
    /// Most awsvpc tasks each local instance runs at once (its ENI limit; RESOURCE:ENI past
    /// it). Fargate capacity has no limit.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub awsvpc_task_limit: u32,
}

#[derive(Args, Clone)]
pub struct AgentArgs {
    /// The control plane's URL. For replicas of one control plane, several comma-separated
    /// (or the flag repeated): the agent uses one at a time for everything and moves to the
    /// next when it cannot be reached (refused, reset, timed out, a TLS failure, 502/503/504);
    /// running tasks are left alone.
    #[arg(
        long,
        env = "GANTRY_SERVER",
        value_name = "URL[,URL...]",
        required = true,
        value_delimiter = ',',
        value_parser = gantry_agent::servers::parse_server_url
    )]
    pub server: Vec<String>,
    /// Cluster to join (name or ARN).
    #[arg(long, default_value = "default", env = "GANTRY_CLUSTER")]
    pub cluster: String,
    /// Directory where the agent keeps its identity, so a restart adopts its containers.
    #[arg(long, default_value = ".gantry-agent", env = "GANTRY_AGENT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// CPU units to register (default: 1,024 per core).
    #[arg(long)]
    pub cpu: Option<i64>,
    /// Memory in MiB to register (default: the host's total).
    #[arg(long)]
    pub memory: Option<i64>,
    /// Value of the `ecs.availability-zone` attribute.
    #[arg(long)]
    pub availability_zone: Option<String>,
    /// Extra attribute as NAME=VALUE (repeatable), for memberOf constraints.
    #[arg(long = "attribute", value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
    /// Docker Engine address (default: DOCKER_HOST or the local socket).
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// The control plane's join token (print it on the server with `gantry token`). A new
    /// agent presents it once, at registration, and receives credentials bound to its
    /// container instance (kept in its data directory).
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Let tasks ask this host for privileged mode, host bind mounts, host PID or IPC
    /// namespaces, added Linux capabilities and devices. Off by default: a task that asks is
    /// not placed here (it needs the instance attribute this flag adds).
    #[arg(long)]
    pub allow_host_access: bool,
    /// Trust exactly the server certificate with this SHA-256 fingerprint (what `gantry
    /// server` prints for its self-signed certificate), for an https:// --server. Replicas
    /// with different self-signed certificates: several comma-separated, any of them accepted.
    #[arg(
        long,
        value_name = "SHA256[,SHA256...]",
        env = "GANTRY_TLS_FINGERPRINT",
        value_delimiter = ','
    )]
    pub tls_fingerprint: Vec<String>,
    /// Trust the CA certificates in this PEM file (besides the system's) for an https://
    /// --server.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Provide Fargate capacity to every cluster instead of joining one: FARGATE and
    /// FARGATE_SPOT tasks of any cluster run here, spread over the hosts' availability zones
    /// (--availability-zone). The host is no container instance of any user's cluster.
    #[arg(long, conflicts_with_all = ["capacity_provider"])]
    pub fargate: bool,
    /// The Auto Scaling group capacity provider this host belongs to: tasks that a capacity
    /// provider strategy sends to NAME run on the cluster's hosts that name it here (the
    /// instance attribute dev.gantry.capacity-provider; DescribeContainerInstances shows it as
    /// capacityProviderName).
    #[arg(long, value_name = "NAME")]
    pub capacity_provider: Option<String>,
    /// Most awsvpc tasks this host runs at once, as an EC2 instance type's ENI limit caps
    /// them; more are not placed here (RESOURCE:ENI). Fargate hosts have no limit.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub awsvpc_task_limit: u32,
}

fn parse_attribute(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected NAME=VALUE, got '{s}'"))
}

/// The TLS identity to serve with: the operator's certificate, or the self-signed one (asked
/// for, or because the address is not loopback), or none.
fn tls_identity(args: &ServerArgs) -> Result<Option<TlsIdentity>, String> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return gantry_control::tls::from_files(cert, key).map(Some);
    }
    if args.tls || (!args.listen.ip().is_loopback() && !args.no_tls) {
        return gantry_control::tls::self_signed(
            &args.data_dir.join("tls"),
            &gantry_control::tls::default_names(&args.listen),
        )
        .map(Some);
    }
    Ok(None)
}

async fn start_control_plane(
    args: &ServerArgs,
    local_capacity: bool,
) -> Result<
    (
        tokio::net::TcpListener,
        Arc<ControlPlane>,
        Option<TlsIdentity>,
    ),
    String,
> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        format!(
            "cannot create the data directory {}: {e}",
            args.data_dir.display()
        )
    })?;
    // The store holds access keys' secrets: the data directory is its owner's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) =
            std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))
        {
            tracing::warn!(
                "cannot make {} private (mode 0700): {e}; it holds access keys",
                args.data_dir.display()
            );
        }
    }
    let location = args
        .store
        .clone()
        .unwrap_or_else(|| gantry_store::StoreLocation::Sqlite(args.data_dir.join("state.db")));
    let cannot_open = |e: gantry_store::StoreError| {
        match &location {
        gantry_store::StoreLocation::Sqlite(path) => format!(
            "cannot open the store {}: {e}. Is another Gantry using it?",
            path.display()
        ),
        gantry_store::StoreLocation::Etcd(_) => format!(
            "cannot reach the store {location}: {e}. Check that a majority of the etcd members run and that this host can reach their client ports."
        ),
    }
    };
    // On etcd this process is one replica of several: it registers, and the leader election
    // decides whether it runs the deciding controllers.
    let (store, etcd): (Arc<dyn gantry_store::KvStore>, _) = match &location {
        gantry_store::StoreLocation::Etcd(config) => {
            let etcd = Arc::new(
                gantry_store::EtcdStore::connect(config)
                    .await
                    .map_err(cannot_open)?,
            );
            gantry_store::KvStore::revision(&*etcd)
                .await
                .map_err(cannot_open)?;
            (etcd.clone(), Some(etcd))
        }
        gantry_store::StoreLocation::Sqlite(_) => (
            gantry_store::open(&location).await.map_err(cannot_open)?,
            None,
        ),
    };
    let log_limits = LogLimits::with_max_bytes(args.log_store_max_mib.saturating_mul(1 << 20));
    let logs = LogStore::open_with(&args.data_dir.join("logs.db"), log_limits)
        .map_err(|e| format!("cannot open the log store: {e}"))?;
    if args.unauthenticated && !args.listen.ip().is_loopback() {
        return Err(format!(
            "--unauthenticated is only allowed on a loopback address, not {}: anyone who can reach it could run anything on every host. Listen on 127.0.0.1, or drop --unauthenticated and use the credentials Gantry writes to {}.",
            args.listen,
            args.data_dir.join("credentials").display()
        ));
    }
    let tls = tls_identity(args)?;
    let audit = AuditLog::open(&args.data_dir.join("audit.db"), args.audit_max_events)
        .map_err(|e| format!("cannot open the audit log: {e}"))?;
    let master_keys = std::env::var(gantry_vault::MASTER_KEY_ENV).ok();
    let key_file = args.data_dir.join("master.key");
    if matches!(location, gantry_store::StoreLocation::Etcd(_))
        && master_keys.as_deref().is_none_or(|k| k.trim().is_empty())
        && !key_file.exists()
    {
        // A key made up here would seal secrets no other replica can open.
        return Err(format!(
            "the store is shared (etcd), so every replica needs the same master key: set {env} to the same base64 key on each (make one with `head -c 32 /dev/urandom | base64`), or copy the master.key of the replica that made it to {}",
            key_file.display(),
            env = gantry_vault::MASTER_KEY_ENV
        ));
    }
    let vault =
        gantry_vault::Vault::load(&args.data_dir.join("master.key"), master_keys.as_deref())
            .map_err(|e| format!("cannot load the master key: {e}"))?;
    let config = ControlConfig {
        vault: Some(Arc::new(vault)),
        scope: ArnScope {
            region: args.region.clone(),
            account: args.account_id.clone(),
        },
        lost_host_after_secs: args.lost_host_after as f64,
        authenticate: !args.unauthenticated,
        secure_transport: tls.is_some(),
        min_session_secs: args.min_session_duration.max(1),
        task_credentials_secs: args.task_credentials_duration,
        awsvpc_cidr: args.awsvpc_cidr.clone(),
        local_capacity,
        // The Application Load Balancer's data plane runs in this process.
        load_balancer_data_plane: Some(LoadBalancerDataPlaneHandle(gantry_lb::LoadBalancer::new(
            args.lb_bind,
        ))),
        replication: match etcd {
            Some(store) => Some(gantry_control::replicas::Replication {
                store,
                replica_id: replica_id(&args.data_dir)?,
                address: advertised_url(args, tls.is_some()),
                tls_fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
                lease_ttl: std::time::Duration::from_secs(args.lease_ttl),
            }),
            None => None,
        },
        ..ControlConfig::default()
    };
    let plane = Arc::new(
        ControlPlane::open(config, store, logs, audit)
            .await
            .map_err(|e| format!("cannot load the state from the store: {e}"))?,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}. Pick another address with --listen.",
                args.listen
            )
        })?;
    Ok((listener, plane, tls))
}

/// This replica's id, kept in `<data-dir>/replica-id` so that a restarted replica is the same
/// one (its agents' instances name it).
fn replica_id(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join("replica-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Ok(id.to_string());
        }
    }
    let id = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    std::fs::write(&path, &id).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(id)
}

/// Where this replica's API is reached (for `gantry status` and the other replicas).
fn advertised_url(args: &ServerArgs, tls: bool) -> String {
    if let Some(url) = &args.advertise_url {
        return url.clone();
    }
    let scheme = if tls { "https" } else { "http" };
    if args.listen.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{scheme}://{host}:{}", args.listen.port())
    } else {
        format!("{scheme}://{}", args.listen)
    }
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

fn endpoint_of(listener: &tokio::net::TcpListener, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match listener.local_addr() {
        Ok(addr) => format!("{scheme}://{addr}"),
        Err(_) => crate::DEFAULT_ENDPOINT.to_string(),
    }
}

/// What start-up prints of the TLS certificate: its file, fingerprint and whether it is
/// self-signed.
type TlsSummary = (PathBuf, String, bool);

fn tls_summary(tls: Option<&TlsIdentity>) -> Option<TlsSummary> {
    tls.map(|t| (t.cert_path.clone(), t.fingerprint.clone(), t.self_signed))
}

/// How clients trust the server's certificate, printed at start.
fn print_tls(summary: Option<&TlsSummary>) {
    let Some((cert, fingerprint, self_signed)) = summary else {
        return;
    };
    let kind = if *self_signed {
        "self-signed certificate "
    } else {
        ""
    };
    println!("  TLS: {kind}{} (SHA-256 {fingerprint})", cert.display());
    println!(
        "       AWS CLI and SDKs: export AWS_CA_BUNDLE={}; Gantry CLI and agents: GANTRY_TLS_FINGERPRINT={fingerprint} (or --tls-fingerprint)",
        cert.display()
    );
}

/// What a client needs to reach this control plane, written on first start.
pub struct Access {
    /// `<data-dir>/credentials`, absolute (None with --unauthenticated).
    pub credentials_file: Option<PathBuf>,
    /// `None` on a replica that joined a shared store whose token another replica made.
    pub join_token: Option<String>,
    pub unauthenticated: bool,
}

/// Makes sure `<data-dir>/credentials` holds a working administrator key (creating the
/// `admin` user and a key on first start, or a new key if the file is missing or names a
/// key the store no longer has) and `<data-dir>/agent-token` the agents' join token.
async fn ensure_access(args: &ServerArgs, plane: &ControlPlane) -> Result<Access, String> {
    // On a shared store (etcd) another replica may have made the token and the
    // administrator's key already; a new one here would turn theirs invalid (the token) or
    // multiply keys (the administrator), so this replica uses what exists.
    let shared = matches!(args.store, Some(gantry_store::StoreLocation::Etcd(_)));
    let token_path = args.data_dir.join(credentials::TOKEN_FILE);
    let existing = std::fs::read_to_string(&token_path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let join_token = if shared && gantry_control::bootstrap::join_token_exists(plane) {
        // The store's token stands; this replica knows it only if its file holds it.
        match &existing {
            Some(t) if gantry_control::bootstrap::join_token_matches(plane, t) => Some(t.clone()),
            Some(_) => {
                tracing::warn!(
                    "{} does not hold the join token the other replicas use; leaving theirs",
                    token_path.display()
                );
                None
            }
            None => None,
        }
    } else {
        let token = gantry_control::bootstrap::ensure_join_token(plane, existing.as_deref())
            .await
            .map_err(|e| format!("cannot set up the agents' join token: {e}"))?;
        if existing.as_deref() != Some(token.as_str()) {
            credentials::write_private(&token_path, &format!("{token}\n"))?;
        }
        Some(token)
    };
    if args.unauthenticated {
        return Ok(Access {
            credentials_file: None,
            join_token,
            unauthenticated: true,
        });
    }
    let path = std::path::absolute(args.data_dir.join(credentials::CREDENTIALS_FILE))
        .unwrap_or_else(|_| args.data_dir.join(credentials::CREDENTIALS_FILE));
    let current = credentials::read_profile(&path, credentials::PROFILE);
    let usable = current
        .as_ref()
        .is_some_and(|c| gantry_control::bootstrap::access_key_exists(plane, &c.access_key_id));
    if !usable && shared && gantry_control::bootstrap::admin_has_key(plane) {
        return Ok(Access {
            credentials_file: None,
            join_token,
            unauthenticated: false,
        });
    }
    if !usable {
        let (id, secret) = gantry_control::bootstrap::new_admin_key(plane)
            .await
            .map_err(|e| format!("cannot create the administrator's access key: {e}"))?;
        credentials::write_private(
            &path,
            &credentials::render_profile(credentials::PROFILE, &id, &secret),
        )?;
        println!(
            "Created the administrator (IAM user `{}`) and its access key in {}",
            gantry_control::bootstrap::ADMIN_USER,
            path.display()
        );
    }
    Ok(Access {
        credentials_file: Some(path),
        join_token,
        unauthenticated: false,
    })
}

/// How to point the AWS CLI, the SDKs and the Gantry CLI at this control plane.
fn print_client_setup(access: &Access, endpoint: &str, region: &str) {
    match &access.credentials_file {
        Some(path) => {
            println!("Use it with the AWS CLI, the SDKs, Terraform or the Gantry CLI:");
            println!(
                "  export AWS_SHARED_CREDENTIALS_FILE={} AWS_PROFILE={} AWS_DEFAULT_REGION={region} AWS_ENDPOINT_URL={endpoint}",
                path.display(),
                credentials::PROFILE
            );
            println!("  aws ecs list-clusters");
        }
        None if !access.unauthenticated => {}
        None => {
            println!("Authentication is OFF (--unauthenticated): any request is accepted, signed or not.");
            println!(
                "  AWS_ACCESS_KEY_ID=any AWS_SECRET_ACCESS_KEY=any AWS_DEFAULT_REGION={region} aws --endpoint-url {endpoint} ecs list-clusters"
            );
        }
    }
}

pub async fn server(args: ServerArgs) -> Result<ExitCode, String> {
    let (listener, plane, tls) = start_control_plane(&args, false).await?;
    let access = ensure_access(&args, &plane).await?;
    let endpoint = endpoint_of(&listener, tls.is_some());
    println!("Gantry control plane listening on {endpoint}");
    println!("  data: {}", args.data_dir.display());
    print_tls(tls_summary(tls.as_ref()).as_ref());
    let pin = match &tls {
        Some(t) if t.self_signed => format!(" --tls-fingerprint {}", t.fingerprint),
        _ => String::new(),
    };
    match &access.join_token {
        Some(_) => println!(
            "  agents join with: gantry agent --server {endpoint}{pin} --token $(gantry token --data-dir {})",
            args.data_dir.display()
        ),
        None => println!(
            "  agents join with the token of the replica that made it (its <data-dir>/{}; copy it to {} to print it here)",
            credentials::TOKEN_FILE,
            args.data_dir.display()
        ),
    }
    if access.credentials_file.is_none() && !args.unauthenticated {
        println!(
            "  the administrator exists already: use the credentials the first replica wrote to its <data-dir>/{}",
            credentials::CREDENTIALS_FILE
        );
    }
    print_client_setup(&access, &endpoint, &args.region);
    gantry_control::serve_with(listener, plane, tls.as_ref(), shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn agent_config(args: &AgentArgs) -> gantry_agent::AgentConfig {
    let mut attributes = args.attributes.clone();
    if let Some(provider) = &args.capacity_provider {
        attributes.push((
            gantry_model::requirements::CAPACITY_PROVIDER_ATTRIBUTE.into(),
            provider.clone(),
        ));
    }
    let fargate = args.fargate || args.cluster == gantry_model::FARGATE_POOL;
    if !fargate {
        attributes.push((
            gantry_model::requirements::AWSVPC_TASK_LIMIT_ATTRIBUTE.into(),
            args.awsvpc_task_limit.to_string(),
        ));
    }
    gantry_agent::AgentConfig {
        server_urls: args.server.clone(),
        cluster: if fargate {
            gantry_model::FARGATE_POOL.into()
        } else {
            args.cluster.clone()
        },
        data_dir: args.data_dir.clone(),
        cpu: args.cpu,
        memory: args.memory,
        availability_zone: args.availability_zone.clone(),
        attributes,
        docker_host: args.docker_host.clone(),
        token: args.token.clone(),
        allow_host_access: args.allow_host_access,
        tls: gantry_agent::tls::TlsTrust {
            fingerprints: args.tls_fingerprint.clone(),
            ca_file: args.ca_cert.clone(),
        },
    }
}

pub async fn agent(args: AgentArgs) -> Result<ExitCode, String> {
    gantry_agent::run(agent_config(&args), shutdown_signal())
        .await
        .map_err(|e| format!("agent failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn dev(args: DevArgs) -> Result<ExitCode, String> {
    let (listener, plane, tls) = start_control_plane(&args.server, true).await?;
    let access = ensure_access(&args.server, &plane).await?;
    let first_cluster = args.cluster.clone().unwrap_or_else(|| "default".into());
    gantry_control::ensure_cluster(&plane, &first_cluster)
        .await
        .map_err(|e| format!("cannot create cluster {first_cluster}: {e}"))?;
    let endpoint = endpoint_of(&listener, tls.is_some());
    let agent_args = AgentArgs {
        server: vec![endpoint.clone()],
        cluster: first_cluster.clone(),
        data_dir: agent_dir(&args.server.data_dir),
        cpu: args.cpu,
        memory: args.memory,
        availability_zone: Some(format!("{}a", args.server.region)),
        attributes: Vec::new(),
        docker_host: None,
        token: access.join_token.clone(),
        // A laptop's own agent: tasks may use the host as `docker run` would let them.
        allow_host_access: true,
        tls_fingerprint: tls.iter().map(|t| t.fingerprint.clone()).collect(),
        ca_cert: None,
        fargate: false,
        capacity_provider: None,
        awsvpc_task_limit: args.awsvpc_task_limit,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let plane_for_agents = plane.clone();
    let summary = tls_summary(tls.as_ref());
    let server = tokio::spawn({
        let mut rx = stop_rx.clone();
        async move {
            gantry_control::serve_with(listener, plane, tls.as_ref(), async move {
                let _ = rx.changed().await;
            })
            .await
        }
    });
    let capacity = crate::dev_capacity::DevCapacity {
        template: agent_args,
        data_dir: args.server.data_dir.clone(),
        pinned: args.cluster.clone(),
    };
    let agent =
        tokio::spawn(capacity.run(plane_for_agents, first_cluster.clone(), stop_rx.clone()));
    println!("Gantry dev is running: ECS API on {endpoint}, local agents on Docker.");
    println!("  data:     {}", args.server.data_dir.display());
    match &args.cluster {
        Some(c) => println!("  cluster:  {c} (only this cluster gets a local instance)"),
        None => println!(
            "  clusters: {first_cluster}, and every cluster you create gets a local instance"
        ),
    }
    println!("  Fargate:  FARGATE and FARGATE_SPOT tasks of every cluster run here too");
    print_tls(summary.as_ref());
    println!();
    print_client_setup(&access, &endpoint, &args.server.region);
    println!("  gantry run examples/hello.json && gantry ps");
    println!("Press Ctrl-C to stop (containers keep running and are adopted on the next start).");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        r = agent => {
            let _ = stop_tx.send(true);
            return match r {
                Ok(Ok(())) => Ok(ExitCode::SUCCESS),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(format!("the local agents crashed: {e}")),
            };
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}

fn agent_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent")
}
