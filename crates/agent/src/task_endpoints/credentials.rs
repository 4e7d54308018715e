//! A task role's credentials on the agent: fetched from the control plane before the task's
//! containers are created, served in ECS's shape, and fetched again when half of their
//! lifetime has passed (AWS SDKs refresh container credentials in the last minutes before
//! they expire, so they always find fresh ones here).

use futures::future::BoxFuture;
use gantry_model::agent_protocol::TaskRoleCredentials;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

use crate::api_client::ApiError;
use crate::util::Backoff;

/// Where task role credentials come from: the control plane (`EcsClient`), or a test double.
/// Object-safe: the endpoints hold one as `Arc<dyn CredentialsSource>`.
pub trait CredentialsSource: Send + Sync + 'static {
    fn fetch(&self, task_arn: &str) -> BoxFuture<'_, Result<TaskRoleCredentials, ApiError>>;
}

/// ECS's credentials document, as `GET /v2/credentials/<id>` answers it.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "RoleArn")]
    role_arn: &'a str,
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "Token")]
    token: &'a str,
    #[serde(rename = "Expiration")]
    expiration: String,
}

/// The document for `c` (its `Expiration` in RFC 3339, UTC, to the second, as ECS writes it).
pub fn document(c: &TaskRoleCredentials) -> Vec<u8> {
    let doc = Document {
        role_arn: &c.role_arn,
        access_key_id: &c.access_key_id,
        secret_access_key: &c.secret_access_key,
        token: &c.session_token,
        expiration: rfc3339_seconds(c.expiration),
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// `2025-01-02T03:04:05Z` for unix seconds `t`.
pub fn rfc3339_seconds(t: f64) -> String {
    let secs = t.floor() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// How long to wait before fetching new credentials: half of what is left of `c`'s lifetime
/// at `now` (unix seconds), and at least `floor`.
pub fn refresh_delay(c: &TaskRoleCredentials, now: f64, floor: Duration) -> Duration {
    // The expiration comes from the control plane: a value no duration can hold (or NaN)
    // waits a day rather than panic the refresher.
    let left = (c.expiration - now).max(0.0);
    Duration::try_from_secs_f64(left / 2.0)
        .unwrap_or(Duration::from_secs(86_400))
        .max(floor)
}

/// Fetches credentials, retrying for `patience` while the control plane cannot answer. A
/// refusal (a 4xx) is final: its message is the reason, as the control plane words it (ECS's
/// "ECS was unable to assume the role …").
pub async fn fetch_patiently(
    source: &dyn CredentialsSource,
    task_arn: &str,
    patience: Duration,
) -> Result<TaskRoleCredentials, String> {
    let deadline = Instant::now() + patience;
    let mut backoff = Backoff::standard();
    loop {
        let error = match source.fetch(task_arn).await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        if let ApiError::Service { message, .. } = &error {
            if error.is_client_error() {
                return Err(message.clone());
            }
        }
        if !error.is_retryable() || Instant::now() >= deadline {
            return Err(format!(
                "ResourceInitializationError: unable to get the task role's credentials from the control plane: {error}"
            ));
        }
        tracing::debug!(task = %task_arn, "cannot get the task role's credentials yet: {error}; retrying");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn creds(expiration: f64) -> TaskRoleCredentials {
        TaskRoleCredentials {
            role_arn: "arn:aws:iam::000000000000:role/app".into(),
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expiration,
        }
    }

    #[test]
    fn the_document_has_ecs_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&document(&creds(1_700_000_000.5))).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "RoleArn": "arn:aws:iam::000000000000:role/app",
                "AccessKeyId": "ASIAEXAMPLE",
                "SecretAccessKey": "secret",
                "Token": "token",
                "Expiration": "2023-11-14T22:13:20Z",
            })
        );
        // The secret never shows in Debug.
        let debug = format!("{:?}", creds(1.0));
        assert!(
            !debug.contains("secret") && !debug.contains("token"),
            "{debug}"
        );
    }

    #[test]
    fn refreshes_at_half_the_remaining_lifetime() {
        let c = creds(1000.0);
        assert_eq!(
            refresh_delay(&c, 0.0, Duration::from_secs(1)),
            Duration::from_secs(500)
        );
        assert_eq!(
            refresh_delay(&c, 999.0, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            refresh_delay(&c, 2000.0, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    struct Answers {
        calls: AtomicUsize,
        answers: Mutex<Vec<Result<TaskRoleCredentials, ApiError>>>,
    }

    impl CredentialsSource for Answers {
        fn fetch(&self, _: &str) -> BoxFuture<'_, Result<TaskRoleCredentials, ApiError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut a = self.answers.lock().expect("answers");
            let answer = if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            };
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn retries_while_unreachable_and_stops_at_a_refusal() {
        let down = ApiError::Transport {
            url: "x".into(),
            message: "refused".into(),
        };
        let s = Answers {
            calls: AtomicUsize::new(0),
            answers: Mutex::new(vec![Err(down.clone()), Ok(creds(10.0))]),
        };
        let got = fetch_patiently(&s, "t", Duration::from_secs(5)).await;
        assert_eq!(got.map(|c| c.expiration), Ok(10.0));
        assert_eq!(s.calls.load(Ordering::SeqCst), 2);

        let refusal = ApiError::Service {
            status: 400,
            code: "ClientException".into(),
            message: "ECS was unable to assume the role 'r' that was provided for this task."
                .into(),
        };
        let s = Answers {
            calls: AtomicUsize::new(0),
            answers: Mutex::new(vec![Err(refusal)]),
        };
        assert_eq!(
            fetch_patiently(&s, "t", Duration::from_secs(5)).await.err(),
            Some("ECS was unable to assume the role 'r' that was provided for this task.".into())
        );
        assert_eq!(s.calls.load(Ordering::SeqCst), 1);

        let s = Answers {
            calls: AtomicUsize::new(0),
            answers: Mutex::new(vec![Err(down)]),
        };
        let err = fetch_patiently(&s, "t", Duration::from_millis(250))
            .await
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("ResourceInitializationError: "), "{err}");
    }
}
