//! ECS container restart policies (`restartPolicy` on a container definition): when a
//! container exits, the agent may start the same container again in place instead of letting
//! its exit stop the task.
//!
//! The decision is [`decide`], a pure function, so that every rule of ECS's
//! `ContainerRestartPolicy` is tested without Docker; the runner supplies the facts (exit code,
//! how long the container ran, whether the agent itself is stopping it) and does the restart.
//! Docker's own restart policy is deliberately not used: the agent must see every exit to
//! report it, to honour `restartAttemptPeriod`, and to never restart what it is stopping.

use gantry_model::types::ContainerDefinition;
use serde::Deserialize;
use std::time::Duration;

/// ECS's default `restartAttemptPeriod`.
pub const DEFAULT_ATTEMPT_PERIOD: Duration = Duration::from_secs(300);
/// The bounds ECS accepts for `restartAttemptPeriod`.
pub const MIN_ATTEMPT_PERIOD: Duration = Duration::from_secs(60);
pub const MAX_ATTEMPT_PERIOD: Duration = Duration::from_secs(1800);

/// A container's restart policy as the agent applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    pub enabled: bool,
    /// Exits with these codes are never restarted.
    pub ignored_exit_codes: Vec<i64>,
    /// The container must have run this long since its last (re)start to be restarted.
    pub attempt_period: Duration,
}

/// `restartPolicy` as ECS spells it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePolicy {
    enabled: bool,
    #[serde(default)]
    ignored_exit_codes: Option<Vec<i64>>,
    #[serde(default)]
    restart_attempt_period: Option<i64>,
}

impl RestartPolicy {
    /// The definition's `restartPolicy` (kept in its `extra` members, which Gantry's model
    /// does not type), or `None` when it has none. `period_override` replaces every
    /// container's `restartAttemptPeriod` (the `GANTRY_RESTART_ATTEMPT_PERIOD_SECS` test knob).
    ///
    /// A malformed policy is ignored with a warning rather than failing the task: ECS would
    /// have refused it at registration, and running the container without restarts is the
    /// behaviour the task had before restart policies existed.
    pub fn from_definition(
        def: &ContainerDefinition,
        period_override: Option<Duration>,
    ) -> Option<RestartPolicy> {
        let raw = def.extra.get("restartPolicy")?;
        if raw.is_null() {
            return None;
        }
        let wire: WirePolicy = match serde_json::from_value(raw.clone()) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    container = def.name.as_deref().unwrap_or(""),
                    "ignoring the malformed restartPolicy: {e}"
                );
                return None;
            }
        };
        let attempt_period = match period_override {
            Some(p) => p,
            // ECS only accepts 60..=1800 s; a value outside (the control plane does not check
            // it) is brought within bounds so that a tiny period cannot make a crashing
            // container restart in a tight loop.
            None => wire
                .restart_attempt_period
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(DEFAULT_ATTEMPT_PERIOD)
                .clamp(MIN_ATTEMPT_PERIOD, MAX_ATTEMPT_PERIOD),
        };
        Some(RestartPolicy {
            enabled: wire.enabled,
            ignored_exit_codes: wire.ignored_exit_codes.unwrap_or_default(),
            attempt_period,
        })
    }
}

/// What to do about a container that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the same container again; the task keeps running.
    Restart,
    /// Let the exit stand (the usual rules apply: an essential container's exit stops the task).
    Keep(KeepReason),
}

/// Why an exited container is not restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    NoPolicy,
    Disabled,
    /// The agent itself stopped it (the task is stopping): never restarted.
    AgentStopping,
    /// Docker gave no exit code: there is nothing to match against the ignored codes.
    NoExitCode,
    IgnoredExitCode,
    /// It ran for less than `restartAttemptPeriod` since its last (re)start, or for an
    /// unknown time.
    ExitedTooEarly,
}

impl KeepReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::NoPolicy => "no restart policy",
            KeepReason::Disabled => "restart policy disabled",
            KeepReason::AgentStopping => "stopped by the agent",
            KeepReason::NoExitCode => "no exit code",
            KeepReason::IgnoredExitCode => "exit code is in ignoredExitCodes",
            KeepReason::ExitedTooEarly => "exited before running for restartAttemptPeriod",
        }
    }
}

/// ECS's rule for an exited container: restart it when its policy is enabled, the agent is not
/// the one stopping it, its exit code is not ignored, and it ran for at least the attempt
/// period since its last (re)start. `ran_for` is `None` when unknown, which counts as too
/// early: restarting without knowing could loop on a container that crashes at once.
pub fn decide(
    policy: Option<&RestartPolicy>,
    exit_code: Option<i64>,
    ran_for: Option<Duration>,
    agent_stopping: bool,
) -> Decision {
    let Some(policy) = policy else {
        return Decision::Keep(KeepReason::NoPolicy);
    };
    if !policy.enabled {
        return Decision::Keep(KeepReason::Disabled);
    }
    if agent_stopping {
        return Decision::Keep(KeepReason::AgentStopping);
    }
    let Some(code) = exit_code else {
        return Decision::Keep(KeepReason::NoExitCode);
    };
    if policy.ignored_exit_codes.contains(&code) {
        return Decision::Keep(KeepReason::IgnoredExitCode);
    }
    match ran_for {
        Some(d) if d >= policy.attempt_period => Decision::Restart,
        _ => Decision::Keep(KeepReason::ExitedTooEarly),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(ignored: &[i64], period_secs: u64) -> RestartPolicy {
        RestartPolicy {
            enabled: true,
            ignored_exit_codes: ignored.to_vec(),
            attempt_period: Duration::from_secs(period_secs),
        }
    }

    const LONG: Option<Duration> = Some(Duration::from_secs(120));

    #[test]
    fn no_policy_or_disabled_never_restarts() {
        assert_eq!(
            decide(None, Some(1), LONG, false),
            Decision::Keep(KeepReason::NoPolicy)
        );
        let mut p = policy(&[], 60);
        p.enabled = false;
        assert_eq!(
            decide(Some(&p), Some(1), LONG, false),
            Decision::Keep(KeepReason::Disabled)
        );
    }

    #[test]
    fn ignored_exit_code_is_not_restarted() {
        let p = policy(&[0, 3], 60);
        assert_eq!(
            decide(Some(&p), Some(3), LONG, false),
            Decision::Keep(KeepReason::IgnoredExitCode)
        );
        assert_eq!(
            decide(Some(&p), Some(0), LONG, false),
            Decision::Keep(KeepReason::IgnoredExitCode)
        );
        // A code not in the list is restarted, including a signal's (137).
        assert_eq!(decide(Some(&p), Some(137), LONG, false), Decision::Restart);
    }

    #[test]
    fn ran_long_enough_is_restarted() {
        let p = policy(&[], 60);
        assert_eq!(
            decide(Some(&p), Some(1), Some(Duration::from_secs(60)), false),
            Decision::Restart
        );
        // Exit code 0 is restarted too unless ignored (ECS ignores no code by default).
        assert_eq!(decide(Some(&p), Some(0), LONG, false), Decision::Restart);
    }

    #[test]
    fn exited_too_early_is_not_restarted() {
        let p = policy(&[], 60);
        assert_eq!(
            decide(
                Some(&p),
                Some(1),
                Some(Duration::from_millis(59_999)),
                false
            ),
            Decision::Keep(KeepReason::ExitedTooEarly)
        );
        assert_eq!(
            decide(Some(&p), Some(1), None, false),
            Decision::Keep(KeepReason::ExitedTooEarly)
        );
    }

    #[test]
    fn agent_initiated_stop_is_never_restarted() {
        let p = policy(&[], 60);
        assert_eq!(
            decide(Some(&p), Some(137), LONG, true),
            Decision::Keep(KeepReason::AgentStopping)
        );
        assert_eq!(
            decide(Some(&p), Some(0), LONG, true),
            Decision::Keep(KeepReason::AgentStopping)
        );
    }

    #[test]
    fn missing_exit_code_is_not_restarted() {
        let p = policy(&[], 60);
        assert_eq!(
            decide(Some(&p), None, LONG, false),
            Decision::Keep(KeepReason::NoExitCode)
        );
    }

    fn def_with(policy: serde_json::Value) -> ContainerDefinition {
        serde_json::from_value(json!({"name": "app", "restartPolicy": policy})).unwrap()
    }

    #[test]
    fn reads_the_policy_from_the_definition() {
        let d = def_with(
            json!({"enabled": true, "ignoredExitCodes": [0, 2], "restartAttemptPeriod": 90}),
        );
        assert_eq!(
            RestartPolicy::from_definition(&d, None),
            Some(policy(&[0, 2], 90))
        );
        // Defaults: no ignored codes, 300 s.
        let d = def_with(json!({"enabled": true}));
        assert_eq!(
            RestartPolicy::from_definition(&d, None),
            Some(policy(&[], 300))
        );
        let d = def_with(json!({"enabled": false}));
        assert!(!RestartPolicy::from_definition(&d, None).unwrap().enabled);
        // Out-of-range periods are brought within ECS's bounds.
        let d = def_with(json!({"enabled": true, "restartAttemptPeriod": 1}));
        assert_eq!(
            RestartPolicy::from_definition(&d, None).map(|p| p.attempt_period),
            Some(MIN_ATTEMPT_PERIOD)
        );
        let d = def_with(json!({"enabled": true, "restartAttemptPeriod": 99999}));
        assert_eq!(
            RestartPolicy::from_definition(&d, None).map(|p| p.attempt_period),
            Some(MAX_ATTEMPT_PERIOD)
        );
        // The test knob overrides the period, below ECS's minimum too.
        let d = def_with(json!({"enabled": true, "restartAttemptPeriod": 600}));
        assert_eq!(
            RestartPolicy::from_definition(&d, Some(Duration::from_secs(1)))
                .map(|p| p.attempt_period),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn absent_or_malformed_policy_is_none() {
        let d: ContainerDefinition = serde_json::from_value(json!({"name": "app"})).unwrap();
        assert_eq!(RestartPolicy::from_definition(&d, None), None);
        assert_eq!(
            RestartPolicy::from_definition(&def_with(json!(null)), None),
            None
        );
        assert_eq!(
            RestartPolicy::from_definition(&def_with(json!({"ignoredExitCodes": [1]})), None),
            None
        );
        assert_eq!(
            RestartPolicy::from_definition(&def_with(json!({"enabled": "yes"})), None),
            None
        );
    }
}
