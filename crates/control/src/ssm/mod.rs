//! SSM Parameter Store (awsJson1_1, `X-Amz-Target: AmazonSSM.<Operation>`, signing name
//! `ssm`): String, StringList and SecureString parameters with versions, labels, tiers,
//! hierarchies and tags, and the reads other parts of Gantry make (a task's `secrets`, a
//! master-key rotation).
//!
//! - `names.rs`: name rules, references (`name`, ARN, `:version`, `:label`), paths, labels,
//!   where a parameter lives in the store;
//! - `record.rs`: the stored record (every version, the tags) and the shapes answered;
//! - `filters.rs`: DescribeParameters' and GetParametersByPath's filters;
//! - `api.rs`: the operations on one named parameter; `listing.rs`: the listings;
//!   `tags.rs`: the tagging calls; `input.rs`: decoding and paging tokens;
//!   `errors.rs`: SSM's error codes and wording.
//!
//! A SecureString's value is sealed with the plane's vault before it is written (additional
//! authenticated data `<ARN>/<version>`): the store never holds its plaintext, and no error,
//! log line, `Debug` output or audit record carries a value. Only GetParameter,
//! GetParameters, GetParametersByPath and GetParameterHistory with `WithDecryption` (and
//! [`parameter_value`]) open one; without it they show the ciphertext, as AWS shows its KMS
//! ciphertext.

mod api;
mod errors;
mod filters;
mod input;
mod listing;
mod names;
mod record;
mod tags;

use crate::auth::Caller;
use crate::plane::ControlPlane;
use crate::state::repo;
use gantry_model::{EcsError, EcsResult};
use serde_json::Value;

pub use names::{arn_of_reference, STORE_PREFIX};

/// A parameter's value as [`parameter_value`] resolves it, always decrypted.
#[derive(Debug)]
pub struct ResolvedParameter {
    pub arn: String,
    /// As the parameter was created (with or without a single-level name's leading slash).
    pub name: String,
    pub parameter_type: String,
    pub value: gantry_vault::Plaintext,
}

/// The value `reference` names: a name (with or without the leading slash of a single-level
/// one), an ARN, or either with a `:version` or `:label` selector; SecureStrings decrypted.
/// Errors are SSM's: `ParameterNotFound` (no such parameter or label, or an ARN of another
/// account or region), `ParameterVersionNotFound`, `ValidationException` for a malformed
/// reference; their messages name the reference, never a value.
pub async fn parameter_value(
    plane: &ControlPlane,
    reference: &str,
) -> EcsResult<ResolvedParameter> {
    let given = reference.trim();
    let parsed = names::parse_reference(plane.scope(), given)?;
    if !parsed.local {
        return Err(errors::not_found(given));
    }
    let (record, _) = record::read(plane, &parsed.name)
        .await?
        .ok_or_else(|| errors::not_found(given))?;
    let version = record.select(&parsed.selector, given)?;
    let arn = names::arn(plane.scope(), &record.name);
    let value = record::open(plane, &arn, version)?;
    Ok(ResolvedParameter {
        arn,
        name: record.name.clone(),
        parameter_type: version.parameter_type.clone(),
        value,
    })
}

/// The ARN `reference` names (to authorise a task's execution role on it), whether or not the
/// parameter exists: the canonical `arn:aws:ssm:<region>:<account>:parameter/<name without
/// its leading slash>` for a name, an ARN as given; selectors dropped.
pub fn parameter_arn(plane: &ControlPlane, reference: &str) -> String {
    names::arn_of_reference(plane.scope(), reference)
}

/// Rewraps the data key of every SecureString version still wrapped by a master key other
/// than the primary (step two of a rotation, see `gantry-vault`): the ciphertexts stay as
/// they are and no plaintext is produced. Each record is rewritten with compare-and-swap.
/// Returns how many values were rewrapped.
pub async fn rewrap_all(plane: &ControlPlane) -> EcsResult<usize> {
    let vault = plane.vault().map_err(errors::fault)?;
    let (kvs, _) = plane
        .store
        .range(STORE_PREFIX)
        .await
        .map_err(repo::store_error)
        .map_err(errors::fault)?;
    let mut total = 0;
    for kv in &kvs {
        let parameter: record::ParameterRecord = repo::decode(kv).map_err(errors::fault)?;
        let stale = |p: &record::ParameterRecord| {
            p.versions.iter().any(
                |v| matches!(&v.value, record::StoredValue::Sealed(s) if vault.needs_rewrap(s)),
            )
        };
        if !stale(&parameter) {
            continue;
        }
        let mut rewrapped = 0;
        let updated = repo::update::<record::ParameterRecord, _>(&*plane.store, &kv.key, |p| {
            rewrapped = 0;
            for v in &mut p.versions {
                if let record::StoredValue::Sealed(s) = &mut v.value {
                    if vault.needs_rewrap(s) {
                        *s = vault.rewrap(s).map_err(errors::vault)?;
                        rewrapped += 1;
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(errors::fault)?;
        if updated.is_some() {
            total += rewrapped;
        }
    }
    Ok(total)
}

/// One SSM operation. Faults come back as SSM's `InternalServerError`.
pub(crate) async fn dispatch(
    plane: &ControlPlane,
    caller: &Caller,
    op: &str,
    input: Value,
) -> EcsResult<Value> {
    // Reads that open SecureStrings hold the sealing lock shared, so a master key rotation
    // retires its old keys only when none is between reading a value and opening it.
    // (PutParameter takes it itself, from its seal to its commit.)
    let _sealing = match op {
        "GetParameter" | "GetParameters" | "GetParameterHistory" | "GetParametersByPath" => {
            Some(plane.sealing.read().await)
        }
        _ => None,
    };
    let result = match op {
        "PutParameter" => api::put(plane, caller, input).await,
        "GetParameter" => api::get(plane, input).await,
        "GetParameters" => api::get_many(plane, input).await,
        "DeleteParameter" => api::delete(plane, input).await,
        "DeleteParameters" => api::delete_many(plane, input).await,
        "LabelParameterVersion" => api::label(plane, input).await,
        "UnlabelParameterVersion" => api::unlabel(plane, input).await,
        "GetParameterHistory" => api::history(plane, input).await,
        "GetParametersByPath" => listing::by_path(plane, input).await,
        "DescribeParameters" => listing::describe(plane, input).await,
        "ListTagsForResource" => tags::list(plane, input).await,
        "AddTagsToResource" => tags::add(plane, input).await,
        "RemoveTagsFromResource" => tags::remove(plane, input).await,
        _ => Err(EcsError::unknown_operation(op)),
    };
    result.map_err(errors::fault)
}

/// The operations [`dispatch`] serves (what `access.rs` gives an IAM action).
pub const OPERATIONS: &[&str] = &[
    "PutParameter",
    "GetParameter",
    "GetParameters",
    "DeleteParameter",
    "DeleteParameters",
    "LabelParameterVersion",
    "UnlabelParameterVersion",
    "GetParameterHistory",
    "GetParametersByPath",
    "DescribeParameters",
    "ListTagsForResource",
    "AddTagsToResource",
    "RemoveTagsFromResource",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::plane::ControlConfig;
    use serde_json::json;
    use std::sync::Arc;

    /// A plane over an in-memory store whose vault keeps its keys in a file (so that it can
    /// rotate), and the file to remove afterwards.
    async fn plane() -> (ControlPlane, std::path::PathBuf) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key_file = std::env::temp_dir().join(format!(
            "gantry-ssm-test-{}-{nanos}.key",
            std::process::id()
        ));
        let vault = gantry_vault::Vault::open_or_create(&key_file).expect("vault");
        let config = ControlConfig {
            vault: Some(Arc::new(vault)),
            ..ControlConfig::default()
        };
        let plane = ControlPlane::open(
            config,
            Arc::new(gantry_store::SqliteStore::open_in_memory().expect("store")),
            crate::logs::LogStore::open_in_memory().expect("logs"),
            crate::audit::AuditLog::in_memory(10).expect("audit"),
        )
        .await
        .expect("plane");
        (plane, key_file)
    }

    fn caller() -> Caller {
        Caller {
            principal: Principal::Unauthenticated,
            access_key_id: None,
            source_ip: None,
            secure_transport: false,
        }
    }

    async fn call(plane: &ControlPlane, op: &str, input: Value) -> EcsResult<Value> {
        dispatch(plane, &caller(), op, input).await
    }

    fn text(p: &ResolvedParameter) -> &str {
        p.value.as_str().unwrap_or("")
    }

    #[tokio::test]
    async fn parameter_value_resolves_every_kind_of_reference() {
        let (plane, key_file) = plane().await;
        let put = |name: &str, value: &str, ty: &str, overwrite: bool| json!({"Name": name, "Value": value, "Type": ty, "Overwrite": overwrite});
        call(
            &plane,
            "PutParameter",
            put("/app/db", "one", "SecureString", false),
        )
        .await
        .unwrap();
        call(
            &plane,
            "PutParameter",
            put("/app/db", "two", "SecureString", true),
        )
        .await
        .unwrap();
        call(&plane, "PutParameter", put("top", "plain", "String", false))
            .await
            .unwrap();
        call(
            &plane,
            "LabelParameterVersion",
            json!({"Name": "/app/db", "ParameterVersion": 1, "Labels": ["stable"]}),
        )
        .await
        .unwrap();

        let arn = "arn:aws:ssm:us-east-1:000000000000:parameter/app/db";
        for (reference, want) in [
            ("/app/db", "two"),
            ("/app/db:1", "one"),
            ("/app/db:stable", "one"),
            (arn, "two"),
            (
                "arn:aws:ssm:us-east-1:000000000000:parameter/app/db:stable",
                "one",
            ),
        ] {
            let p = parameter_value(&plane, reference).await.unwrap();
            assert_eq!(text(&p), want, "{reference}");
            assert_eq!(p.arn, arn);
            assert_eq!(p.name, "/app/db");
            assert_eq!(p.parameter_type, "SecureString");
            assert!(!format!("{p:?}").contains(want), "{p:?}");
        }
        // A single-level name, spelled either way.
        for reference in ["top", "/top"] {
            let p = parameter_value(&plane, reference).await.unwrap();
            assert_eq!((p.name.as_str(), text(&p)), ("top", "plain"));
        }
        for (reference, code) in [
            ("/app/nope", "ParameterNotFound"),
            ("/app/db:9", "ParameterVersionNotFound"),
            ("/app/db:canary", "ParameterNotFound"),
            (
                "arn:aws:ssm:eu-west-1:111111111111:parameter/app/db",
                "ParameterNotFound",
            ),
            ("bad name", "ValidationException"),
        ] {
            let e = parameter_value(&plane, reference).await.unwrap_err();
            assert_eq!(e.code, code, "{reference}");
            assert!(
                !e.message.contains("one") && !e.message.contains("two"),
                "{e}"
            );
        }
        assert_eq!(parameter_arn(&plane, "/app/db:stable"), arn);
        assert_eq!(
            parameter_arn(&plane, "top"),
            "arn:aws:ssm:us-east-1:000000000000:parameter/top"
        );
        let _ = std::fs::remove_file(key_file);
    }

    #[tokio::test]
    async fn a_rotation_rewraps_every_secure_string_and_keeps_it_readable() {
        let (plane, key_file) = plane().await;
        for (name, ty) in [
            ("/r/a", "SecureString"),
            ("/r/b", "SecureString"),
            ("/r/c", "String"),
        ] {
            call(
                &plane,
                "PutParameter",
                json!({"Name": name, "Value": format!("value of {name}"), "Type": ty}),
            )
            .await
            .unwrap();
        }
        call(
            &plane,
            "PutParameter",
            json!({"Name": "/r/a", "Value": "newer", "Overwrite": true}),
        )
        .await
        .unwrap();
        assert_eq!(rewrap_all(&plane).await.unwrap(), 0, "nothing to do yet");
        let vault = plane.vault().unwrap();
        let old = vault.primary();
        let new = vault.begin_rotation().unwrap();
        assert_ne!(old, new);
        // Three sealed versions: /r/a's two and /r/b's one.
        assert_eq!(rewrap_all(&plane).await.unwrap(), 3);
        assert_eq!(rewrap_all(&plane).await.unwrap(), 0);
        assert_eq!(vault.finish_rotation().unwrap(), vec![old]);
        let a1 = parameter_value(&plane, "/r/a:1").await.unwrap();
        assert_eq!(text(&a1), "value of /r/a");
        let b = parameter_value(&plane, "/r/b").await.unwrap();
        assert_eq!(text(&b), "value of /r/b");
        let _ = std::fs::remove_file(key_file);
    }

    #[tokio::test]
    async fn the_store_holds_only_ciphertext_and_a_moved_ciphertext_does_not_open() {
        let (plane, key_file) = plane().await;
        let secret = "correct horse battery staple";
        for name in ["/m/a", "/m/b"] {
            call(
                &plane,
                "PutParameter",
                json!({"Name": name, "Value": secret, "Type": "SecureString"}),
            )
            .await
            .unwrap();
        }
        let (kvs, _) = plane.store.range(STORE_PREFIX).await.unwrap();
        assert_eq!(kvs.len(), 2);
        for kv in &kvs {
            let raw = String::from_utf8_lossy(&kv.value);
            assert!(!raw.contains(secret), "{raw}");
            assert!(
                !raw.contains("Y29ycmVjdCBob3JzZ"),
                "base64 of the plaintext: {raw}"
            );
        }
        // /m/b's sealed value copied into /m/a's record: its AAD names another parameter.
        let b: record::ParameterRecord = repo::decode(&kvs[1]).unwrap();
        let key_a = names::store_key("/m/a");
        repo::update::<record::ParameterRecord, _>(&*plane.store, &key_a, |a| {
            a.versions[0].value = b.versions[0].value.clone();
            Ok(())
        })
        .await
        .unwrap();
        let e = parameter_value(&plane, "/m/a").await.unwrap_err();
        assert_eq!(e.code, "InternalServerError");
        assert!(!e.message.contains(secret), "{e}");
        let _ = std::fs::remove_file(key_file);
    }
}
