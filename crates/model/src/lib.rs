//! ECS types as they travel on the wire, ARNs, the ECS error type, and the small protocol the
//! control plane and the agent share. No I/O lives here.

pub mod agent_protocol;
pub mod arn;
pub mod elbv2;
pub mod error;
pub mod fargate;
pub mod requirements;
pub mod services;
pub mod types;

pub use arn::ArnScope;

/// The hidden cluster that Fargate hosts (`gantry agent --fargate`) register in. Its name
/// holds a `.`, which ECS cluster names cannot, so no user cluster can collide with it; the
/// API never lists or resolves it, and Fargate tasks never show its instances.
pub const FARGATE_POOL: &str = "gantry.fargate";
pub use error::{EcsError, EcsResult};

/// Task and container statuses, with ECS's exact strings.
pub mod status {
    pub const PROVISIONING: &str = "PROVISIONING";
    pub const PENDING: &str = "PENDING";
    pub const RUNNING: &str = "RUNNING";
    pub const STOPPING: &str = "STOPPING";
    pub const STOPPED: &str = "STOPPED";
    pub const ACTIVE: &str = "ACTIVE";
    pub const INACTIVE: &str = "INACTIVE";
    pub const DRAINING: &str = "DRAINING";
    pub const HEALTHY: &str = "HEALTHY";
    pub const UNHEALTHY: &str = "UNHEALTHY";
    pub const UNKNOWN: &str = "UNKNOWN";
}

/// `Task.stopCode` values.
pub mod stop_code {
    pub const TASK_FAILED_TO_START: &str = "TaskFailedToStart";
    pub const ESSENTIAL_CONTAINER_EXITED: &str = "EssentialContainerExited";
    pub const USER_INITIATED: &str = "UserInitiated";
    pub const SERVICE_SCHEDULER_INITIATED: &str = "ServiceSchedulerInitiated";
    pub const SPOT_INTERRUPTION: &str = "SpotInterruption";
    /// The host the task ran on went away; Gantry uses it for tasks of a lost host.
    pub const TERMINATION_NOTICE: &str = "TerminationNotice";
}

/// Seconds since the Unix epoch, with millisecond precision, as ECS timestamps travel.
pub fn now_epoch() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}
