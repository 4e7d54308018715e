//! A task's secrets at start: the container `secrets` (Secrets Manager and SSM Parameter
//! Store values) and `repositoryCredentials`, resolved by the control plane with the task's
//! execution role just before its images are pulled, as ECS's agent does.
//!
//! The values live only in the runner's memory and in the containers' environment (Docker
//! keeps a container's environment, as it does on ECS). They are never logged: the types'
//! `Debug` shows names only, and a failure's reason comes from the control plane, which names
//! the secret and never its value.

use crate::api_client::ApiError;
use crate::util::Backoff;
use futures::future::BoxFuture;
use gantry_model::agent_protocol::{
    RegistryAuth, SecretVariable, TaskSecrets, RESOURCE_INITIALIZATION_ERROR,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where a task's secrets come from (the control plane). Object-safe: the runner environment
/// holds one as `Arc<dyn TaskSecretsSource>`.
pub trait TaskSecretsSource: Send + Sync + std::fmt::Debug + 'static {
    fn fetch<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<TaskSecrets, ApiError>>;
}

/// How long [`resolve`] keeps trying while the control plane cannot answer.
pub const RESOLVE_PATIENCE: Duration = Duration::from_secs(30);

/// What each container of the task gets, by container name.
#[derive(Default)]
pub struct ResolvedSecrets {
    environment: HashMap<String, Vec<SecretVariable>>,
    registry_auth: HashMap<String, RegistryAuth>,
}

impl ResolvedSecrets {
    /// The secret variables of one container.
    pub fn environment(&self, container: &str) -> &[SecretVariable] {
        self.environment
            .get(container)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The credentials one container's image is pulled with.
    pub fn registry_auth(&self, container: &str) -> Option<&RegistryAuth> {
        self.registry_auth.get(container)
    }
}

impl From<TaskSecrets> for ResolvedSecrets {
    fn from(secrets: TaskSecrets) -> Self {
        let mut resolved = ResolvedSecrets::default();
        for c in secrets.containers {
            if let Some(auth) = c.registry_auth {
                resolved
                    .registry_auth
                    .insert(c.container_name.clone(), auth);
            }
            resolved.environment.insert(c.container_name, c.environment);
        }
        resolved
    }
}

/// Asks for the task's secrets; on failure, the task's stopped reason
/// (`ResourceInitializationError: unable to pull secrets or registry auth: ...`). An
/// unreachable or failing control plane is tried again for [`RESOLVE_PATIENCE`] first.
pub async fn resolve(
    source: &dyn TaskSecretsSource,
    task_arn: &str,
) -> Result<ResolvedSecrets, String> {
    let deadline = Instant::now() + RESOLVE_PATIENCE;
    let mut backoff = Backoff::standard();
    loop {
        let error = match source.fetch(task_arn).await {
            Ok(secrets) => return Ok(secrets.into()),
            Err(e) => e,
        };
        if !error.is_retryable() || Instant::now() >= deadline {
            return Err(stopped_reason(&error));
        }
        tracing::debug!(task = %task_arn, "cannot get the task's secrets yet: {error}");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The stopped reason for a failed resolution: the control plane's own words for a
/// `ResourceInitializationError`, else ECS's prefix with what went wrong.
fn stopped_reason(error: &ApiError) -> String {
    match error {
        ApiError::Service { code, message, .. } if code == RESOURCE_INITIALIZATION_ERROR => {
            format!("{RESOURCE_INITIALIZATION_ERROR}: {message}")
        }
        ApiError::Service { code, message, .. } => format!(
            "{RESOURCE_INITIALIZATION_ERROR}: unable to pull secrets or registry auth: execution resource retrieval failed: {code}: {message}"
        ),
        other => format!(
            "{RESOURCE_INITIALIZATION_ERROR}: unable to pull secrets or registry auth: execution resource retrieval failed: {other}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_model::agent_protocol::ContainerSecrets;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Answers {
        calls: AtomicUsize,
        failures_first: usize,
        failure: ApiError,
    }

    impl TaskSecretsSource for Answers {
        fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<TaskSecrets, ApiError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = if n < self.failures_first {
                Err(self.failure.clone())
            } else {
                Ok(TaskSecrets {
                    containers: vec![ContainerSecrets {
                        container_name: "app".into(),
                        environment: vec![SecretVariable {
                            name: "DB_PASSWORD".into(),
                            value: "s3cr3t".into(),
                        }],
                        registry_auth: Some(RegistryAuth {
                            username: "u".into(),
                            password: "p4ss".into(),
                        }),
                    }],
                })
            };
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn a_refusal_is_the_stopped_reason_at_once() {
        let source = Answers {
            calls: AtomicUsize::new(0),
            failures_first: usize::MAX,
            failure: ApiError::Service {
                status: 400,
                code: RESOURCE_INITIALIZATION_ERROR.into(),
                message: "unable to pull secrets or registry auth: x".into(),
            },
        };
        let reason = resolve(&source, "arn:task").await.err().unwrap();
        assert_eq!(
            reason,
            "ResourceInitializationError: unable to pull secrets or registry auth: x"
        );
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_is_tried_again() {
        let source = Answers {
            calls: AtomicUsize::new(0),
            failures_first: 2,
            failure: ApiError::Transport {
                url: "http://x".into(),
                message: "refused".into(),
            },
        };
        let resolved = resolve(&source, "arn:task").await.unwrap();
        assert_eq!(resolved.environment("app")[0].name, "DB_PASSWORD");
        assert_eq!(resolved.registry_auth("app").unwrap().username, "u");
        assert!(resolved.environment("other").is_empty());
        // Nothing a log line could print shows a value.
        let shown = format!(
            "{:?} {:?}",
            resolved.environment("app"),
            resolved.registry_auth("app")
        );
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("p4ss"),
            "{shown}"
        );
    }
}
