//! The operations against an in-memory store and a real vault: staging labels, idempotency,
//! the forms of `SecretId`, deletion and the janitor's purge, rotation's rewrap, and that no
//! record ever holds a plaintext.

use super::records::SecretRecord;
use super::*;
use crate::plane::{AuditLog, ControlConfig};
use base64::Engine;
use gantry_model::EcsError;
use serde_json::json;
use std::sync::Arc;

const KEY_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes, base64

async fn plane_with(vault: Option<Arc<gantry_vault::Vault>>) -> ControlPlane {
    let store = gantry_store::SqliteStore::open_in_memory().expect("store");
    ControlPlane::open(
        ControlConfig {
            vault,
            ..ControlConfig::default()
        },
        Arc::new(store),
        crate::logs::LogStore::open_in_memory().expect("logs"),
        AuditLog::in_memory(10).expect("audit"),
    )
    .await
    .expect("plane")
}

async fn plane() -> ControlPlane {
    let vault = gantry_vault::Vault::from_env(KEY_A).expect("vault");
    plane_with(Some(Arc::new(vault))).await
}

async fn call(plane: &ControlPlane, op: &str, input: Value) -> Value {
    dispatch(plane, op, input.clone())
        .await
        .unwrap_or_else(|e| panic!("{op} {input}: {e}"))
}

async fn fails(plane: &ControlPlane, op: &str, input: Value) -> EcsError {
    match dispatch(plane, op, input.clone()).await {
        Ok(out) => panic!("{op} {input} succeeded: {out}"),
        Err(e) => e,
    }
}

/// Every raw record under the store's whole key space.
async fn raw_records(plane: &ControlPlane) -> Vec<(String, Vec<u8>)> {
    let (kvs, _) = plane.store.range("").await.expect("range");
    kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn token(n: u8) -> String {
    format!("{:0>32}", format!("token-{n}"))
}

#[tokio::test]
async fn versions_move_awscurrent_and_awsprevious_and_tokens_are_idempotent() {
    let plane = plane().await;
    let created = call(
        &plane,
        "CreateSecret",
        json!({"Name": "app/db", "SecretString": "first", "ClientRequestToken": token(1)}),
    )
    .await;
    let arn = created["ARN"].as_str().expect("ARN").to_string();
    assert!(
        arn.starts_with("arn:aws:secretsmanager:us-east-1:000000000000:secret:app/db-"),
        "{arn}"
    );
    let suffix = &arn[arn.len() - 6..];
    assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()), "{arn}");
    assert_eq!(created["VersionId"], token(1));

    let put = call(
        &plane,
        "PutSecretValue",
        json!({"SecretId": "app/db", "SecretString": "second", "ClientRequestToken": token(2)}),
    )
    .await;
    assert_eq!(put["VersionStages"], json!(["AWSCURRENT"]));
    let current = call(&plane, "GetSecretValue", json!({"SecretId": "app/db"})).await;
    assert_eq!(current["SecretString"], "second");
    assert_eq!(current["VersionId"], token(2));
    let previous = call(
        &plane,
        "GetSecretValue",
        json!({"SecretId": "app/db", "VersionStage": "AWSPREVIOUS"}),
    )
    .await;
    assert_eq!(previous["SecretString"], "first");
    assert_eq!(previous["VersionStages"], json!(["AWSPREVIOUS"]));

    // A retry with the same token and value changes nothing; another value is refused.
    let again = call(
        &plane,
        "PutSecretValue",
        json!({"SecretId": "app/db", "SecretString": "second", "ClientRequestToken": token(2)}),
    )
    .await;
    assert_eq!(again["VersionId"], token(2));
    let e = fails(
        &plane,
        "PutSecretValue",
        json!({"SecretId": "app/db", "SecretString": "other", "ClientRequestToken": token(2)}),
    )
    .await;
    assert_eq!(e.code, "ResourceExistsException");
    assert!(!e.message.contains("other"), "{}", e.message);

    // A third version: the first becomes deprecated (no label) but stays readable by id.
    call(
        &plane,
        "UpdateSecret",
        json!({"SecretId": arn, "SecretString": "third", "Description": "the db"}),
    )
    .await;
    let described = call(&plane, "DescribeSecret", json!({"SecretId": "app/db"})).await;
    let stages = described["VersionIdsToStages"].as_object().expect("stages");
    assert_eq!(stages.len(), 2, "{described}");
    assert_eq!(stages[&token(2)], json!(["AWSPREVIOUS"]));
    assert_eq!(described["Description"], "the db");
    let first = call(
        &plane,
        "GetSecretValue",
        json!({"SecretId": "app/db", "VersionId": token(1)}),
    )
    .await;
    assert_eq!(first["SecretString"], "first");
    assert_eq!(first["VersionStages"], json!([]));
    let e = fails(
        &plane,
        "GetSecretValue",
        json!({"SecretId": "app/db", "VersionId": token(1), "VersionStage": "AWSCURRENT"}),
    )
    .await;
    assert_eq!(e.code, "InvalidRequestException");
    let e = fails(
        &plane,
        "GetSecretValue",
        json!({"SecretId": "app/db", "VersionStage": "NOPE"}),
    )
    .await;
    assert_eq!(
        e.message,
        "Secrets Manager can't find the specified secret value for staging label: NOPE"
    );

    // ListSecretVersionIds: the labelled versions, the deprecated one only when asked for,
    // newest first, in pages that neither skip nor repeat.
    let listed = call(
        &plane,
        "ListSecretVersionIds",
        json!({"SecretId": "app/db"}),
    )
    .await;
    let ids = |page: &Value| -> Vec<String> {
        page["Versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| v["VersionId"].as_str().expect("id").to_string())
            .collect()
    };
    let mut labelled = ids(&listed);
    labelled.sort();
    assert_eq!(labelled.len(), 2, "{listed}");
    assert!(!labelled.contains(&token(1)), "{listed}");
    assert_eq!(listed["ARN"], arn.as_str());
    assert!(listed.get("NextToken").is_none(), "{listed}");
    let first_page = call(
        &plane,
        "ListSecretVersionIds",
        json!({"SecretId": arn, "IncludeDeprecated": true, "MaxResults": 2}),
    )
    .await;
    let token_2 = first_page["NextToken"].as_str().expect("a second page");
    let second_page = call(
        &plane,
        "ListSecretVersionIds",
        json!({"SecretId": arn, "IncludeDeprecated": true, "MaxResults": 2, "NextToken": token_2}),
    )
    .await;
    assert!(second_page.get("NextToken").is_none(), "{second_page}");
    let mut all = ids(&first_page);
    all.extend(ids(&second_page));
    let third = labelled
        .iter()
        .find(|id| **id != token(2))
        .expect("the third version")
        .clone();
    assert_eq!(all, [third, token(2), token(1)], "newest first");
    assert!(
        second_page["Versions"][0].get("VersionStages").is_none(),
        "a deprecated version has no labels: {second_page}"
    );
    let e = fails(
        &plane,
        "ListSecretVersionIds",
        json!({"SecretId": "app/db", "NextToken": "bm9wZQ=="}),
    )
    .await;
    assert_eq!(e.code, "InvalidNextTokenException");

    // A custom label, moved by hand; AWSCURRENT cannot be dropped, only moved.
    call(
        &plane,
        "UpdateSecretVersionStage",
        json!({"SecretId": "app/db", "VersionStage": "BLUE", "MoveToVersionId": token(1)}),
    )
    .await;
    let blue = call(
        &plane,
        "GetSecretValue",
        json!({"SecretId": "app/db", "VersionStage": "BLUE"}),
    )
    .await;
    assert_eq!(blue["SecretString"], "first");
    let e = fails(
        &plane,
        "UpdateSecretVersionStage",
        json!({"SecretId": "app/db", "VersionStage": "AWSCURRENT", "MoveToVersionId": token(1)}),
    )
    .await;
    assert!(e.message.contains("RemoveFromVersionId"), "{}", e.message);
    let current_id = call(&plane, "GetSecretValue", json!({"SecretId": "app/db"})).await
        ["VersionId"]
        .as_str()
        .expect("id")
        .to_string();
    call(
        &plane,
        "UpdateSecretVersionStage",
        json!({"SecretId": "app/db", "VersionStage": "AWSCURRENT",
               "RemoveFromVersionId": current_id, "MoveToVersionId": token(1)}),
    )
    .await;
    let rolled_back = call(&plane, "GetSecretValue", json!({"SecretId": "app/db"})).await;
    assert_eq!(rolled_back["SecretString"], "first");
    let previous = call(
        &plane,
        "GetSecretValue",
        json!({"SecretId": "app/db", "VersionStage": "AWSPREVIOUS"}),
    )
    .await;
    assert_eq!(previous["SecretString"], "third");
}

#[tokio::test]
async fn the_store_never_holds_a_plaintext() {
    let plane = plane().await;
    let string_value = "correct horse battery staple 8c1f";
    let binary_value: Vec<u8> = b"\x00\x01binary-secret-5e2a\xff".to_vec();
    let binary_b64 = base64::engine::general_purpose::STANDARD.encode(&binary_value);
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "plain", "SecretString": string_value, "Description": "not secret"}),
    )
    .await;
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "bin", "SecretBinary": binary_b64}),
    )
    .await;
    call(
        &plane,
        "PutSecretValue",
        json!({"SecretId": "plain", "SecretString": format!("{string_value} v2")}),
    )
    .await;
    call(
        &plane,
        "UpdateSecret",
        json!({"SecretId": "plain", "SecretString": format!("{string_value} v3")}),
    )
    .await;
    let records = raw_records(&plane).await;
    assert!(records
        .iter()
        .any(|(k, _)| k == "secretsmanager/secrets/plain"));
    for (key, value) in &records {
        for needle in [
            string_value.as_bytes(),
            b"binary-secret-5e2a",
            binary_b64.as_bytes(),
        ] {
            assert!(!contains(value, needle), "{key} holds a plaintext");
        }
        assert!(!contains(key.as_bytes(), b"horse"));
    }
    // And the values still open.
    let got = call(&plane, "GetSecretValue", json!({"SecretId": "bin"})).await;
    assert_eq!(got["SecretBinary"], binary_b64);
    assert!(got.get("SecretString").is_none());
    let resolved = secret_value(&plane, "plain", None, None)
        .await
        .expect("value");
    assert_eq!(
        resolved.string.as_ref().and_then(|p| p.as_str()),
        Some("correct horse battery staple 8c1f v3")
    );
    assert!(resolved.binary.is_none());
    assert!(!format!("{resolved:?}").contains("horse"));
    let resolved = secret_value(&plane, "bin", None, None)
        .await
        .expect("value");
    assert_eq!(
        resolved.binary.as_ref().map(|p| p.as_bytes()),
        Some(&binary_value[..])
    );
}

#[tokio::test]
async fn a_value_moved_to_another_record_does_not_open() {
    let plane = plane().await;
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "a", "SecretString": "value-a"}),
    )
    .await;
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "b", "SecretString": "value-b"}),
    )
    .await;
    let key_a = repo::secret_key("a");
    let key_b = repo::secret_key("b");
    let (a, _) = repo::get::<SecretRecord>(&*plane.store, &key_a)
        .await
        .expect("get")
        .expect("a");
    let (mut b, rev_b) = repo::get::<SecretRecord>(&*plane.store, &key_b)
        .await
        .expect("get")
        .expect("b");
    b.versions[0].sealed = a.versions[0].sealed.clone();
    assert!(repo::commit(
        &*plane.store,
        vec![repo::unchanged_since(&key_b, rev_b)],
        vec![repo::put_op(&key_b, &b).expect("encode")],
    )
    .await
    .expect("commit"));
    let e = fails(&plane, "GetSecretValue", json!({"SecretId": "b"})).await;
    assert_eq!(e.code, "DecryptionFailure");
    assert!(!e.message.contains("value-"), "{}", e.message);
}

#[tokio::test]
async fn a_secret_is_found_by_name_full_arn_and_partial_arn_only() {
    let plane = plane().await;
    let arn = call(
        &plane,
        "CreateSecret",
        json!({"Name": "svc/key-abc", "SecretString": "v"}),
    )
    .await["ARN"]
        .as_str()
        .expect("ARN")
        .to_string();
    let partial = arn[..arn.len() - 7].to_string();
    for id in ["svc/key-abc", arn.as_str(), partial.as_str()] {
        assert_eq!(secret_arn(&plane, id).await.expect(id), arn, "{id}");
    }
    for id in [
        "svc/key",
        "svc/key-ab",
        "arn:aws:secretsmanager:eu-west-1:000000000000:secret:svc/key-abc",
        "arn:aws:secretsmanager:us-east-1:000000000000:secret:svc/key-abc-XXXXXX",
    ] {
        let e = secret_arn(&plane, id).await.expect_err(id);
        assert_eq!(e.code, "ResourceNotFoundException", "{id}");
        assert_eq!(
            e.message,
            "Secrets Manager can't find the specified secret."
        );
    }
    // Made again after a force delete: a new suffix, and the old ARN no longer resolves.
    call(
        &plane,
        "DeleteSecret",
        json!({"SecretId": arn, "ForceDeleteWithoutRecovery": true}),
    )
    .await;
    let again = call(&plane, "CreateSecret", json!({"Name": "svc/key-abc"})).await;
    assert_ne!(again["ARN"], json!(arn));
    assert!(secret_arn(&plane, &arn).await.is_err());
    assert!(again.get("VersionId").is_none(), "no value, no version");
    let e = fails(&plane, "GetSecretValue", json!({"SecretId": "svc/key-abc"})).await;
    assert_eq!(
        e.message,
        "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT"
    );
}

#[tokio::test]
async fn deletion_refuses_reads_until_restored_and_the_janitor_purges_after_the_window() {
    let plane = plane().await;
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "gone", "SecretString": "v"}),
    )
    .await;
    let e = fails(
        &plane,
        "DeleteSecret",
        json!({"SecretId": "gone", "RecoveryWindowInDays": 6}),
    )
    .await;
    assert_eq!(
        e.message,
        "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
    );
    let e = fails(
        &plane,
        "DeleteSecret",
        json!({"SecretId": "gone", "RecoveryWindowInDays": 7, "ForceDeleteWithoutRecovery": true}),
    )
    .await;
    assert_eq!(e.code, "InvalidParameterException");
    let deleted = call(
        &plane,
        "DeleteSecret",
        json!({"SecretId": "gone", "RecoveryWindowInDays": 7}),
    )
    .await;
    let in_a_week = now_epoch() + 7.0 * 86_400.0;
    let date = deleted["DeletionDate"].as_f64().expect("DeletionDate");
    assert!((date - in_a_week).abs() < 60.0, "{deleted}");

    for (op, input) in [
        ("GetSecretValue", json!({"SecretId": "gone"})),
        (
            "PutSecretValue",
            json!({"SecretId": "gone", "SecretString": "x"}),
        ),
        (
            "UpdateSecret",
            json!({"SecretId": "gone", "Description": "x"}),
        ),
        (
            "TagResource",
            json!({"SecretId": "gone", "Tags": [{"Key": "k", "Value": "v"}]}),
        ),
        ("DeleteSecret", json!({"SecretId": "gone"})),
    ] {
        let e = fails(&plane, op, input).await;
        assert_eq!(e.code, "InvalidRequestException", "{op}");
        assert_eq!(
            e.message,
            "You can't perform this operation on the secret because it was marked for deletion.",
            "{op}"
        );
    }
    let e = secret_value(&plane, "gone", None, None)
        .await
        .expect_err("deleted");
    assert_eq!(e.code, "InvalidRequestException");
    let described = call(&plane, "DescribeSecret", json!({"SecretId": "gone"})).await;
    assert!(described["DeletedDate"].as_f64().is_some(), "{described}");
    let e = fails(&plane, "CreateSecret", json!({"Name": "gone"})).await;
    assert_eq!(
        e.message,
        "You can't create this secret because a secret with this name is already scheduled for deletion."
    );
    let listed = call(&plane, "ListSecrets", json!({})).await;
    assert_eq!(listed["SecretList"], json!([]));
    let listed = call(
        &plane,
        "ListSecrets",
        json!({"IncludePlannedDeletion": true}),
    )
    .await;
    assert_eq!(listed["SecretList"].as_array().map(Vec::len), Some(1));

    call(&plane, "RestoreSecret", json!({"SecretId": "gone"})).await;
    let got = call(&plane, "GetSecretValue", json!({"SecretId": "gone"})).await;
    assert_eq!(got["SecretString"], "v");
    assert!(call(&plane, "DescribeSecret", json!({"SecretId": "gone"}))
        .await
        .get("DeletedDate")
        .is_none());

    // Past its window, a deleted secret is gone at once and purged by the janitor's sweep.
    call(&plane, "DeleteSecret", json!({"SecretId": "gone"})).await;
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "kept", "SecretString": "v"}),
    )
    .await;
    let key = repo::secret_key("gone");
    repo::update::<SecretRecord, _>(&*plane.store, &key, |s| {
        s.deletion_date = Some(now_epoch() - 1.0);
        Ok(())
    })
    .await
    .expect("update")
    .expect("present");
    let e = fails(&plane, "DescribeSecret", json!({"SecretId": "gone"})).await;
    assert_eq!(e.code, "ResourceNotFoundException");
    assert_eq!(purge_expired(&plane).await.expect("purge"), 1);
    let keys: Vec<String> = raw_records(&plane)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![repo::secret_key("kept")]);
    // The name is free again.
    call(&plane, "CreateSecret", json!({"Name": "gone"})).await;

    // Forcing works on a secret already scheduled for deletion, and frees the name at once.
    call(&plane, "DeleteSecret", json!({"SecretId": "kept"})).await;
    call(
        &plane,
        "DeleteSecret",
        json!({"SecretId": "kept", "ForceDeleteWithoutRecovery": true}),
    )
    .await;
    let e = fails(&plane, "DescribeSecret", json!({"SecretId": "kept"})).await;
    assert_eq!(e.code, "ResourceNotFoundException");
}

#[tokio::test]
async fn creating_twice_is_resource_exists_unless_it_is_the_same_retry() {
    let plane = plane().await;
    let input = json!({"Name": "once", "SecretString": "v", "ClientRequestToken": token(7)});
    let first = call(&plane, "CreateSecret", input.clone()).await;
    let retry = call(&plane, "CreateSecret", input).await;
    assert_eq!(first, retry);
    let e = fails(
        &plane,
        "CreateSecret",
        json!({"Name": "once", "SecretString": "v"}),
    )
    .await;
    assert_eq!(e.code, "ResourceExistsException");
    assert_eq!(
        e.message,
        "The operation failed because the secret once already exists."
    );
}

#[tokio::test]
async fn list_filters_sorts_and_pages() {
    let plane = plane().await;
    for (i, (name, team)) in [("b-svc", "core"), ("a-svc", "edge"), ("c-other", "core")]
        .into_iter()
        .enumerate()
    {
        call(
            &plane,
            "CreateSecret",
            json!({"Name": name, "Tags": [{"Key": "team", "Value": team}]}),
        )
        .await;
        // Creation times a second apart, whatever the clock's resolution.
        repo::update::<SecretRecord, _>(&*plane.store, &repo::secret_key(name), |s| {
            s.created_date = 1_000.0 + i as f64;
            Ok(())
        })
        .await
        .expect("update");
    }
    let names = |v: &Value| -> Vec<String> {
        v["SecretList"]
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s["Name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let by_name = call(
        &plane,
        "ListSecrets",
        json!({"SortBy": "name", "SortOrder": "asc"}),
    )
    .await;
    assert_eq!(names(&by_name), ["a-svc", "b-svc", "c-other"]);
    let newest_first = call(&plane, "ListSecrets", json!({})).await;
    assert_eq!(names(&newest_first), ["c-other", "a-svc", "b-svc"]);
    let core = call(
        &plane,
        "ListSecrets",
        json!({"Filters": [{"Key": "tag-value", "Values": ["core"]}], "SortOrder": "asc"}),
    )
    .await;
    assert_eq!(names(&core), ["b-svc", "c-other"]);
    let svc_not_edge = call(
        &plane,
        "ListSecrets",
        json!({"Filters": [{"Key": "name", "Values": ["a", "b"]},
                           {"Key": "tag-value", "Values": ["!edge"]}]}),
    )
    .await;
    assert_eq!(names(&svc_not_edge), ["b-svc"]);

    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut input = json!({"MaxResults": 2, "SortBy": "name", "SortOrder": "asc"});
        if let Some(t) = &next {
            input["NextToken"] = json!(t);
        }
        let page = call(&plane, "ListSecrets", input).await;
        seen.extend(names(&page));
        match page["NextToken"].as_str() {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["a-svc", "b-svc", "c-other"]);
    let e = fails(&plane, "ListSecrets", json!({"NextToken": "nonsense"})).await;
    assert_eq!(e.code, "InvalidNextTokenException");
}

#[tokio::test]
async fn tags_and_the_resource_policy_round_trip() {
    let plane = plane().await;
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "t", "Tags": [{"Key": "a", "Value": "1"}]}),
    )
    .await;
    // Any change is a change: LastChangedDate moves with tags too.
    repo::update::<SecretRecord, _>(&*plane.store, &repo::secret_key("t"), |s| {
        s.last_changed_date = 1.0;
        Ok(())
    })
    .await
    .expect("update");
    call(
        &plane,
        "TagResource",
        json!({"SecretId": "t", "Tags": [{"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}]}),
    )
    .await;
    let d = call(&plane, "DescribeSecret", json!({"SecretId": "t"})).await;
    assert!(
        d["LastChangedDate"].as_f64().is_some_and(|t| t > 1.0),
        "{d}"
    );
    call(
        &plane,
        "UntagResource",
        json!({"SecretId": "t", "TagKeys": ["b", "zz"]}),
    )
    .await;
    let d = call(&plane, "DescribeSecret", json!({"SecretId": "t"})).await;
    assert_eq!(d["Tags"], json!([{"Key": "a", "Value": "2"}]));

    let none = call(&plane, "GetResourcePolicy", json!({"SecretId": "t"})).await;
    assert!(none.get("ResourcePolicy").is_none(), "{none}");
    let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
    call(
        &plane,
        "PutResourcePolicy",
        json!({"SecretId": "t", "ResourcePolicy": policy}),
    )
    .await;
    let got = call(&plane, "GetResourcePolicy", json!({"SecretId": "t"})).await;
    assert_eq!(got["ResourcePolicy"], policy);
    let e = fails(
        &plane,
        "PutResourcePolicy",
        json!({"SecretId": "t", "ResourcePolicy": "{not json"}),
    )
    .await;
    assert_eq!(e.code, "MalformedPolicyDocumentException");
    call(&plane, "DeleteResourcePolicy", json!({"SecretId": "t"})).await;
    let none = call(&plane, "GetResourcePolicy", json!({"SecretId": "t"})).await;
    assert!(none.get("ResourcePolicy").is_none(), "{none}");
}

#[tokio::test]
async fn a_rotation_rewraps_every_value_and_they_still_open() {
    let path = std::env::temp_dir().join(format!("gantry-sm-{}.key", uuid::Uuid::new_v4()));
    let vault = Arc::new(gantry_vault::Vault::open_or_create(&path).expect("vault"));
    let plane = plane_with(Some(vault.clone())).await;
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "r1", "SecretString": "one"}),
    )
    .await;
    call(
        &plane,
        "PutSecretValue",
        json!({"SecretId": "r1", "SecretString": "two"}),
    )
    .await;
    call(
        &plane,
        "CreateSecret",
        json!({"Name": "r2", "SecretBinary": "AQID"}),
    )
    .await;
    call(&plane, "CreateSecret", json!({"Name": "empty"})).await;
    let old = vault.primary();
    assert_eq!(rewrap_all(&plane).await.expect("nothing to do"), 0);
    let new = vault.begin_rotation().expect("rotate");
    assert_ne!(old, new);
    assert_eq!(rewrap_all(&plane).await.expect("rewrap"), 3);
    assert_eq!(rewrap_all(&plane).await.expect("again"), 0);
    for (_, value) in raw_records(&plane).await {
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains(&old), "a value still names {old}");
    }
    vault.finish_rotation().expect("finish");
    let _ = std::fs::remove_file(&path);
    let one = call(
        &plane,
        "GetSecretValue",
        json!({"SecretId": "r1", "VersionStage": "AWSPREVIOUS"}),
    )
    .await;
    assert_eq!(one["SecretString"], "one");
    let two = call(&plane, "GetSecretValue", json!({"SecretId": "r2"})).await;
    assert_eq!(two["SecretBinary"], "AQID");
}

#[tokio::test]
async fn without_a_master_key_secrets_are_refused_as_internal_service_error() {
    let plane = plane_with(None).await;
    let e = fails(
        &plane,
        "CreateSecret",
        json!({"Name": "x", "SecretString": "v"}),
    )
    .await;
    assert_eq!(e.code, "InternalServiceError");
    assert!(e.message.contains("master key"), "{}", e.message);
    assert!(raw_records(&plane).await.is_empty());
}

#[tokio::test]
async fn random_passwords_come_back_in_the_output() {
    let plane = plane().await;
    let out = call(
        &plane,
        "GetRandomPassword",
        json!({"PasswordLength": 20, "ExcludePunctuation": true}),
    )
    .await;
    let p = out["RandomPassword"].as_str().expect("password");
    assert_eq!(p.len(), 20);
    assert!(p.chars().all(|c| c.is_ascii_alphanumeric()), "{p}");
}
