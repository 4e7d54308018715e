//! Secrets Manager against `gantry server`, through real clients: the AWS CLI (version 1)
//! for a secret's whole life (create, read by name, ARN and partial ARN, new versions and
//! their staging labels, binary values, tags, list filters, delete, restore, force delete),
//! the errors bad input gets, and IAM policies naming secrets by ARN; boto3 for
//! GetRandomPassword, paging and binary values. Afterwards every file of the server's data
//! directory and its whole output are searched for the values: none may hold one.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

async fn sm(aws: &Aws, args: &[&str]) -> Value {
    let mut all = vec!["secretsmanager"];
    all.extend_from_slice(args);
    aws.ok(&all).await
}

async fn sm_fails(aws: &Aws, args: &[&str], code: &str) -> String {
    let mut all = vec!["secretsmanager"];
    all.extend_from_slice(args);
    fails_with(aws, &all, code).await
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// No file under `dir` holds any of `values` (raw bytes: the store, its WAL, the audit and
/// log databases, the process output).
fn assert_nowhere(dir: &Path, values: &[&[u8]]) {
    let mut all = Vec::new();
    files(dir, &mut all);
    assert!(
        all.iter().any(|p| p.ends_with("state.db")),
        "no store in {all:?}"
    );
    for path in all {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for v in values {
            assert!(
                !bytes.windows(v.len()).any(|w| w == *v),
                "{} holds the secret value {:?}",
                path.display(),
                String::from_utf8_lossy(v)
            );
        }
    }
}

/// `aws iam create-user` + an inline policy + `create-access-key`; the user's keys.
async fn user_with_policy(aws: &Aws, user: &str, statements: Value) -> Keys {
    aws.ok(&["iam", "create-user", "--user-name", user]).await;
    aws.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        user,
        "--policy-name",
        "p",
        "--policy-document",
        &json!({"Version": "2012-10-17", "Statement": statements}).to_string(),
    ])
    .await;
    let k = aws
        .ok(&["iam", "create-access-key", "--user-name", user])
        .await;
    Keys {
        id: s(&k["AccessKey"]["AccessKeyId"]),
        secret: s(&k["AccessKey"]["SecretAccessKey"]),
        session_token: None,
    }
}

#[tokio::test]
async fn cli_lifecycle_versions_deletion_errors_and_no_plaintext_at_rest() {
    let split = Split::start(0).await;
    let aws = Aws::at(&split.endpoint, &split.keys);
    let (v1, v2, v3) = (
        "sm-value-one-7f3a9c",
        "sm-value-two-0b81de",
        "sm-value-three-c24e55",
    );
    let binary: Vec<u8> = b"\x00\xffsm-binary-value-91aa\x10".to_vec();

    // Create with a value, a description and tags.
    let created = sm(
        &aws,
        &[
            "create-secret",
            "--name",
            "app/db",
            "--secret-string",
            v1,
            "--description",
            "the database",
            "--tags",
            "Key=team,Value=core",
        ],
    )
    .await;
    let arn = s(&created["ARN"]);
    assert!(
        arn.starts_with("arn:aws:secretsmanager:us-east-1:000000000000:secret:app/db-")
            && arn.len()
                == "arn:aws:secretsmanager:us-east-1:000000000000:secret:app/db-".len() + 6,
        "{arn}"
    );
    let first_version = s(&created["VersionId"]);
    assert_eq!(created["Name"], "app/db");

    // Read by name, full ARN and partial ARN.
    let partial = &arn[..arn.len() - 7];
    for id in ["app/db", arn.as_str(), partial] {
        let got = sm(&aws, &["get-secret-value", "--secret-id", id]).await;
        assert_eq!(got["SecretString"], v1, "{id}");
        assert_eq!(got["VersionStages"], json!(["AWSCURRENT"]), "{id}");
        assert_eq!(got["ARN"], arn.as_str());
    }

    // A new version moves AWSCURRENT; the old one is AWSPREVIOUS.
    let put = sm(
        &aws,
        &[
            "put-secret-value",
            "--secret-id",
            "app/db",
            "--secret-string",
            v2,
        ],
    )
    .await;
    assert_eq!(put["VersionStages"], json!(["AWSCURRENT"]));
    let second_version = s(&put["VersionId"]);
    let current = sm(&aws, &["get-secret-value", "--secret-id", "app/db"]).await;
    assert_eq!(current["SecretString"], v2);
    let previous = sm(
        &aws,
        &[
            "get-secret-value",
            "--secret-id",
            "app/db",
            "--version-stage",
            "AWSPREVIOUS",
        ],
    )
    .await;
    assert_eq!(previous["SecretString"], v1);
    assert_eq!(previous["VersionId"], first_version.as_str());

    // UpdateSecret with a value makes a third version; the first is deprecated.
    let updated = sm(
        &aws,
        &[
            "update-secret",
            "--secret-id",
            &arn,
            "--secret-string",
            v3,
            "--description",
            "the main database",
        ],
    )
    .await;
    let third_version = s(&updated["VersionId"]);
    let described = sm(&aws, &["describe-secret", "--secret-id", partial]).await;
    assert_eq!(described["Description"], "the main database");
    assert_eq!(
        described["VersionIdsToStages"],
        json!({ third_version.clone(): ["AWSCURRENT"], second_version.clone(): ["AWSPREVIOUS"] })
    );
    assert_eq!(described["Tags"], json!([{"Key": "team", "Value": "core"}]));
    assert!(described["CreatedDate"].is_number() || described["CreatedDate"].is_string());
    assert!(described.get("DeletedDate").is_none());
    let by_id = sm(
        &aws,
        &[
            "get-secret-value",
            "--secret-id",
            "app/db",
            "--version-id",
            &first_version,
        ],
    )
    .await;
    assert_eq!(by_id["SecretString"], v1);

    // A binary secret, from a file.
    let bin_path = aws.home.path().join("secret.bin");
    std::fs::write(&bin_path, &binary).expect("write");
    sm(
        &aws,
        &[
            "create-secret",
            "--name",
            "app/cert",
            "--secret-binary",
            &format!("fileb://{}", bin_path.display()),
        ],
    )
    .await;
    let got = sm(&aws, &["get-secret-value", "--secret-id", "app/cert"]).await;
    // base64 of `binary` (the CLI prints blobs in base64).
    assert_eq!(got["SecretBinary"], "AP9zbS1iaW5hcnktdmFsdWUtOTFhYRA=");
    assert!(got.get("SecretString").is_none());

    // Tags and list filters.
    sm(&aws, &["create-secret", "--name", "other/key"]).await;
    sm(
        &aws,
        &[
            "tag-resource",
            "--secret-id",
            "app/cert",
            "--tags",
            "Key=team,Value=edge",
            "Key=tmp,Value=x",
        ],
    )
    .await;
    sm(
        &aws,
        &[
            "untag-resource",
            "--secret-id",
            "app/cert",
            "--tag-keys",
            "tmp",
        ],
    )
    .await;
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v["SecretList"]
            .as_array()
            .unwrap_or_else(|| panic!("no SecretList: {v}"))
            .iter()
            .map(|e| s(&e["Name"]))
            .collect();
        n.sort();
        n
    };
    let listed = sm(&aws, &["list-secrets", "--filters", "Key=name,Values=app/"]).await;
    assert_eq!(names(&listed), ["app/cert", "app/db"]);
    let listed = sm(
        &aws,
        &["list-secrets", "--filters", "Key=tag-value,Values=edge"],
    )
    .await;
    assert_eq!(names(&listed), ["app/cert"]);
    let entry = &listed["SecretList"][0];
    assert_eq!(entry["Tags"], json!([{"Key": "team", "Value": "edge"}]));
    assert!(entry["SecretVersionsToStages"].is_object(), "{entry}");
    let listed = sm(
        &aws,
        &["list-secrets", "--filters", "Key=all,Values=main database"],
    )
    .await;
    assert_eq!(names(&listed), ["app/db"]);

    // IAM: a user allowed to read `app/*` reads app/db, not other/key, and cannot list.
    let reader = user_with_policy(
        &aws,
        "reader",
        json!([{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                "Resource": "arn:aws:secretsmanager:us-east-1:000000000000:secret:app/*"}]),
    )
    .await;
    let as_reader = Aws::at(&split.endpoint, &reader);
    let got = sm(&as_reader, &["get-secret-value", "--secret-id", "app/db"]).await;
    assert_eq!(got["SecretString"], v3);
    sm_fails(
        &as_reader,
        &["get-secret-value", "--secret-id", "other/key"],
        "AccessDeniedException",
    )
    .await;
    sm_fails(&as_reader, &["list-secrets"], "AccessDeniedException").await;

    // Errors for bad input, as Secrets Manager types them.
    let exists = sm_fails(
        &aws,
        &["create-secret", "--name", "app/db"],
        "ResourceExistsException",
    )
    .await;
    assert!(
        exists.contains("The operation failed because the secret app/db already exists."),
        "{exists}"
    );
    sm_fails(
        &aws,
        &["create-secret", "--name", "bad name!"],
        "ValidationException",
    )
    .await;
    let missing = sm_fails(
        &aws,
        &["get-secret-value", "--secret-id", "nope"],
        "ResourceNotFoundException",
    )
    .await;
    assert!(
        missing.contains("Secrets Manager can't find the specified secret."),
        "{missing}"
    );
    sm_fails(
        &aws,
        &["put-secret-value", "--secret-id", "app/db"],
        "InvalidRequestException",
    )
    .await;
    sm_fails(
        &aws,
        &[
            "delete-secret",
            "--secret-id",
            "app/db",
            "--recovery-window-in-days",
            "3",
        ],
        "InvalidParameterException",
    )
    .await;
    sm_fails(
        &aws,
        &[
            "delete-secret",
            "--secret-id",
            "app/db",
            "--recovery-window-in-days",
            "7",
            "--force-delete-without-recovery",
        ],
        "InvalidParameterException",
    )
    .await;
    let rotate = sm_fails(
        &aws,
        &["rotate-secret", "--secret-id", "app/db"],
        "InvalidRequestException",
    )
    .await;
    assert!(rotate.contains("does not support RotateSecret"), "{rotate}");

    // Delete with a recovery window: reads refused, described with DeletedDate; restored.
    let deleted = sm(
        &aws,
        &[
            "delete-secret",
            "--secret-id",
            "app/db",
            "--recovery-window-in-days",
            "7",
        ],
    )
    .await;
    assert!(deleted.get("DeletionDate").is_some(), "{deleted}");
    let refused = sm_fails(
        &aws,
        &["get-secret-value", "--secret-id", "app/db"],
        "InvalidRequestException",
    )
    .await;
    assert!(refused.contains("marked for deletion"), "{refused}");
    let described = sm(&aws, &["describe-secret", "--secret-id", "app/db"]).await;
    assert!(described.get("DeletedDate").is_some(), "{described}");
    let listed = sm(&aws, &["list-secrets", "--filters", "Key=name,Values=app/"]).await;
    assert_eq!(names(&listed), ["app/cert"]);
    let listed = sm(
        &aws,
        &[
            "list-secrets",
            "--include-planned-deletion",
            "--filters",
            "Key=name,Values=app/",
        ],
    )
    .await;
    assert_eq!(names(&listed), ["app/cert", "app/db"]);
    sm(&aws, &["restore-secret", "--secret-id", "app/db"]).await;
    let got = sm(&aws, &["get-secret-value", "--secret-id", "app/db"]).await;
    assert_eq!(got["SecretString"], v3);

    // Force delete: gone at once, and the name is free for a new secret with a new ARN.
    sm(
        &aws,
        &[
            "delete-secret",
            "--secret-id",
            "app/db",
            "--force-delete-without-recovery",
        ],
    )
    .await;
    sm_fails(
        &aws,
        &["describe-secret", "--secret-id", "app/db"],
        "ResourceNotFoundException",
    )
    .await;
    let again = sm(&aws, &["create-secret", "--name", "app/db"]).await;
    assert_ne!(s(&again["ARN"]), arn);

    // Nothing at rest or in any output of the server holds a value.
    let mut values: Vec<&[u8]> = vec![v1.as_bytes(), v2.as_bytes(), v3.as_bytes()];
    values.push(b"sm-binary-value-91aa");
    values.push(b"AP9zbS1iaW5hcnktdmFsdWUtOTFhYRA=");
    assert_nowhere(split.dir.path(), &values);
}

const BOTO3_SCRIPT: &str = r#"
import base64, json, os, boto3
from botocore.exceptions import ClientError
sm = boto3.client("secretsmanager", endpoint_url=os.environ["EP"], region_name="us-east-1",
                  aws_access_key_id=os.environ["ID"], aws_secret_access_key=os.environ["SECRET"])
out = {}
def code(f):
    try:
        f()
        return None
    except ClientError as e:
        return e.response["Error"]["Code"]

p = sm.get_random_password()["RandomPassword"]
out["default_len"] = len(p)
p = sm.get_random_password(PasswordLength=64, ExcludePunctuation=True, ExcludeUppercase=True,
                           ExcludeCharacters="abcdef", IncludeSpace=True)["RandomPassword"]
out["custom_ok"] = len(p) == 64 and all(c.islower() or c.isdigit() or c == " " for c in p) \
    and not any(c in "abcdef" for c in p) and " " in p
out["too_short"] = code(lambda: sm.get_random_password(PasswordLength=2))
out["too_long"] = code(lambda: sm.get_random_password(PasswordLength=5000))
out["nothing_left"] = code(lambda: sm.get_random_password(ExcludeNumbers=True,
    ExcludePunctuation=True, ExcludeUppercase=True, ExcludeLowercase=True))

for i in range(5):
    sm.create_secret(Name="page/s%d" % i, SecretString="v%d" % i)
names = []
for page in sm.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "name", "Values": ["page/"]}], SortOrder="asc",
        PaginationConfig={"PageSize": 2}):
    out.setdefault("page_sizes", []).append(len(page["SecretList"]))
    names += [s["Name"] for s in page["SecretList"]]
out["paged"] = names
out["bad_token"] = code(lambda: sm.list_secrets(NextToken="garbage"))

blob = bytes(range(256))
sm.create_secret(Name="blob", SecretBinary=blob)
got = sm.get_secret_value(SecretId="blob")
out["blob_round_trip"] = got["SecretBinary"] == blob and "SecretString" not in got
v2 = sm.put_secret_value(SecretId="blob", SecretBinary=b"\x01\x02")
out["put_stages"] = v2["VersionStages"]
out["previous_blob"] = sm.get_secret_value(SecretId="blob", VersionStage="AWSPREVIOUS")["SecretBinary"] == blob
out["both"] = code(lambda: sm.put_secret_value(SecretId="blob", SecretString="x", SecretBinary=b"x"))
out["same_token_other_value"] = code(lambda: sm.put_secret_value(
    SecretId="blob", SecretBinary=b"\x09", ClientRequestToken=v2["VersionId"]))
out["same_token_same_value"] = sm.put_secret_value(
    SecretId="blob", SecretBinary=b"\x01\x02", ClientRequestToken=v2["VersionId"])["VersionId"] == v2["VersionId"]
out["missing_id"] = code(lambda: sm.describe_secret(SecretId="does-not-exist"))
out["unknown_version"] = code(lambda: sm.get_secret_value(SecretId="blob", VersionId="x" * 32))
sm.delete_secret(SecretId="blob")
out["deleted_read"] = code(lambda: sm.get_secret_value(SecretId="blob"))
out["deleted_create"] = code(lambda: sm.create_secret(Name="blob"))
out["policy_empty"] = "ResourcePolicy" not in sm.get_resource_policy(SecretId="page/s0")
sm.put_resource_policy(SecretId="page/s0", ResourcePolicy=json.dumps({"Version": "2012-10-17", "Statement": []}))
out["policy_kept"] = json.loads(sm.get_resource_policy(SecretId="page/s0")["ResourcePolicy"])["Version"]
print(json.dumps(out))
"#;

async fn run_python(endpoint: &str, keys: &Keys, script: &str) -> Value {
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("EP", endpoint)
        .env("ID", &keys.id)
        .env("SECRET", &keys.secret)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .expect("python3 with boto3 (pip install boto3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("JSON from the script")
}

#[tokio::test]
async fn boto3_passwords_paging_binary_values_and_error_codes() {
    let split = Split::start(0).await;
    let r = run_python(&split.endpoint, &split.keys, BOTO3_SCRIPT).await;
    assert_eq!(
        r,
        json!({
            "default_len": 32,
            "custom_ok": true,
            "too_short": "InvalidParameterException",
            "too_long": "ValidationException",
            "nothing_left": "InvalidParameterException",
            "page_sizes": [2, 2, 1],
            "paged": ["page/s0", "page/s1", "page/s2", "page/s3", "page/s4"],
            "bad_token": "InvalidNextTokenException",
            "blob_round_trip": true,
            "put_stages": ["AWSCURRENT"],
            "previous_blob": true,
            "both": "InvalidParameterException",
            "same_token_other_value": "ResourceExistsException",
            "same_token_same_value": true,
            "missing_id": "ResourceNotFoundException",
            "unknown_version": "ResourceNotFoundException",
            "deleted_read": "InvalidRequestException",
            "deleted_create": "InvalidRequestException",
            "policy_empty": true,
            "policy_kept": "2012-10-17",
        })
    );
}
