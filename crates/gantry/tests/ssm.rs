//! SSM Parameter Store against `gantry dev`: a parameter's whole life through the AWS CLI
//! (`aws ssm ...`: String, StringList, SecureString with and without decryption, versions,
//! labels, history, descriptions, tags, deletes and SSM's error codes), boto3 for paging by
//! path, labels, concurrent overwrites, the modelled exception classes and IAM policies on
//! parameter ARNs, and a scan of every file Gantry writes and of its output for a
//! SecureString's plaintext.

mod common;

use common::*;
use serde_json::{json, Value};

const ARN: &str = "arn:aws:ssm:us-east-1:000000000000:parameter";

fn names(list: &Value) -> Vec<String> {
    list["Parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("no Parameters in {list:#}"))
        .iter()
        .map(|p| p["Name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn parameters_through_their_whole_life_with_the_aws_cli() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let base = format!("/{}", unique("life"));
    let (url, hosts, password) = (
        format!("{base}/url"),
        format!("{base}/hosts"),
        format!("{base}/db/password"),
    );

    // Create each type; a second create is refused with SSM's words.
    let put = aws
        .ok(&[
            "ssm",
            "put-parameter",
            "--name",
            &url,
            "--value",
            "db.internal:5432",
            "--type",
            "String",
            "--description",
            "where the database is",
            "--tags",
            "Key=team,Value=core",
        ])
        .await;
    assert_eq!(put, json!({"Version": 1, "Tier": "Standard"}));
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &hosts,
        "--value",
        "a,b,c",
        "--type",
        "StringList",
    ])
    .await;
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &password,
        "--value",
        "hunter2-first",
        "--type",
        "SecureString",
    ])
    .await;
    let exists = fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            &url,
            "--value",
            "x",
            "--type",
            "String",
        ],
        "ParameterAlreadyExists",
    )
    .await;
    assert!(
        exists.contains("The parameter already exists. To overwrite this value, set the overwrite option in the request to true."),
        "{exists}"
    );

    // A SecureString reads as ciphertext unless decryption is asked for.
    let sealed = aws.ok(&["ssm", "get-parameter", "--name", &password]).await;
    let p = &sealed["Parameter"];
    assert_eq!(p["Type"], "SecureString");
    assert_ne!(p["Value"], "hunter2-first");
    assert!(
        !p["Value"].as_str().unwrap_or("").contains("hunter2"),
        "{p}"
    );
    assert_eq!(p["ARN"], format!("{ARN}{password}"));
    assert_eq!(p["DataType"], "text");
    let open = aws
        .ok(&[
            "ssm",
            "get-parameter",
            "--name",
            &password,
            "--with-decryption",
        ])
        .await;
    assert_eq!(open["Parameter"]["Value"], "hunter2-first");

    // Overwrite: a new version that keeps the type and the description.
    let v2 = aws
        .ok(&[
            "ssm",
            "put-parameter",
            "--name",
            &password,
            "--value",
            "hunter2-second",
            "--overwrite",
        ])
        .await;
    assert_eq!(v2["Version"], 2);
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &url,
        "--value",
        "db2.internal:5432",
        "--overwrite",
    ])
    .await;
    let latest = aws
        .ok(&[
            "ssm",
            "get-parameter",
            "--name",
            &format!("{ARN}{password}"),
            "--with-decryption",
        ])
        .await;
    assert_eq!(latest["Parameter"]["Value"], "hunter2-second");
    assert_eq!(latest["Parameter"]["Version"], 2);
    let first = aws
        .ok(&[
            "ssm",
            "get-parameter",
            "--name",
            &format!("{password}:1"),
            "--with-decryption",
        ])
        .await;
    assert_eq!(first["Parameter"]["Value"], "hunter2-first");
    assert_eq!(first["Parameter"]["Selector"], ":1");
    fails_with(
        &aws,
        &["ssm", "get-parameter", "--name", &format!("{password}:9")],
        "ParameterVersionNotFound",
    )
    .await;

    // Labels: attach to version 1, read by label, move to version 2; bad ones come back.
    let labelled = aws
        .ok(&[
            "ssm",
            "label-parameter-version",
            "--name",
            &password,
            "--parameter-version",
            "1",
            "--labels",
            "prod",
            "1st",
            "awsy",
        ])
        .await;
    assert_eq!(
        labelled,
        json!({"InvalidLabels": ["1st", "awsy"], "ParameterVersion": 1})
    );
    let by_label = aws
        .ok(&[
            "ssm",
            "get-parameter",
            "--name",
            &format!("{password}:prod"),
            "--with-decryption",
        ])
        .await;
    assert_eq!(by_label["Parameter"]["Value"], "hunter2-first");
    aws.ok(&[
        "ssm",
        "label-parameter-version",
        "--name",
        &password,
        "--labels",
        "prod",
    ])
    .await;
    let history = aws
        .ok(&["ssm", "get-parameter-history", "--name", &password])
        .await;
    let versions: Vec<(i64, Value)> = history["Parameters"]
        .as_array()
        .expect("history")
        .iter()
        .map(|v| (v["Version"].as_i64().unwrap_or(0), v["Labels"].clone()))
        .collect();
    assert_eq!(versions, vec![(1, json!([])), (2, json!(["prod"]))]);
    assert!(
        history["Parameters"]
            .as_array()
            .expect("history")
            .iter()
            .all(|v| !v["Value"].as_str().unwrap_or("").contains("hunter2")),
        "{history:#}"
    );

    // DescribeParameters: the metadata Terraform reads, and the filters.
    let described = aws
        .ok(&[
            "ssm",
            "describe-parameters",
            "--parameter-filters",
            &format!("Key=Name,Values={url}"),
        ])
        .await;
    let meta = &described["Parameters"][0];
    assert_eq!(meta["Name"], url.as_str());
    assert_eq!(meta["Description"], "where the database is");
    assert_eq!(meta["Version"], 2);
    assert_eq!(meta["Tier"], "Standard");
    assert_eq!(meta["DataType"], "text");
    assert!(meta.get("KeyId").is_none(), "{meta}");
    assert!(meta["LastModifiedUser"]
        .as_str()
        .unwrap_or("")
        .starts_with("arn:aws:iam::"));
    let secure = aws
        .ok(&[
            "ssm",
            "describe-parameters",
            "--parameter-filters",
            &format!("Key=Path,Option=Recursive,Values={base}"),
            "Key=Type,Values=SecureString",
        ])
        .await;
    assert_eq!(names(&secure), vec![password.clone()]);
    assert_eq!(secure["Parameters"][0]["KeyId"], "alias/aws/ssm");
    let one_level = aws
        .ok(&[
            "ssm",
            "describe-parameters",
            "--parameter-filters",
            &format!("Key=Path,Values={base}"),
        ])
        .await;
    assert_eq!(names(&one_level), vec![hosts.clone(), url.clone()]);
    let tagged = aws
        .ok(&[
            "ssm",
            "describe-parameters",
            "--parameter-filters",
            "Key=tag:team,Values=core",
        ])
        .await;
    assert_eq!(names(&tagged), vec![url.clone()]);
    fails_with(
        &aws,
        &[
            "ssm",
            "describe-parameters",
            "--parameter-filters",
            "Key=Label,Values=prod",
        ],
        "InvalidFilterKey",
    )
    .await;

    // Tags on an existing parameter, never with overwrite.
    let tags_and_overwrite = fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            &url,
            "--value",
            "x",
            "--overwrite",
            "--tags",
            "Key=a,Value=b",
        ],
        "ValidationException",
    )
    .await;
    assert!(
        tags_and_overwrite.contains("tags and overwrite can't be used together"),
        "{tags_and_overwrite}"
    );
    aws.ok(&[
        "ssm",
        "add-tags-to-resource",
        "--resource-type",
        "Parameter",
        "--resource-id",
        &url,
        "--tags",
        "Key=env,Value=test",
        "Key=team,Value=platform",
    ])
    .await;
    aws.ok(&[
        "ssm",
        "remove-tags-from-resource",
        "--resource-type",
        "Parameter",
        "--resource-id",
        &url,
        "--tag-keys",
        "env",
    ])
    .await;
    let tags = aws
        .ok(&[
            "ssm",
            "list-tags-for-resource",
            "--resource-type",
            "Parameter",
            "--resource-id",
            &url,
        ])
        .await;
    assert_eq!(
        tags["TagList"],
        json!([{"Key": "team", "Value": "platform"}])
    );
    fails_with(
        &aws,
        &[
            "ssm",
            "list-tags-for-resource",
            "--resource-type",
            "Parameter",
            "--resource-id",
            "/no/such/parameter",
        ],
        "InvalidResourceId",
    )
    .await;

    // Bad input, with SSM's codes.
    let unqualified = fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            "db/password",
            "--value",
            "x",
            "--type",
            "String",
        ],
        "ValidationException",
    )
    .await;
    assert!(
        unqualified.contains("Parameter name must be a fully qualified name."),
        "{unqualified}"
    );
    fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            "/ssm/x",
            "--value",
            "x",
            "--type",
            "String",
        ],
        "ValidationException",
    )
    .await;
    let deep = format!("{base}/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15");
    fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            &deep,
            "--value",
            "x",
            "--type",
            "String",
        ],
        "HierarchyLevelLimitExceededException",
    )
    .await;
    let enum_error = fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            &format!("{base}/n"),
            "--value",
            "x",
            "--type",
            "Number",
        ],
        "ValidationException",
    )
    .await;
    assert!(
        enum_error.contains("Value 'Number' at 'type' failed to satisfy constraint"),
        "{enum_error}"
    );
    fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            &format!("{base}/n"),
            "--value",
            "x",
        ],
        "ValidationException",
    )
    .await;
    let pattern = format!("{base}/port");
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &pattern,
        "--value",
        "8080",
        "--type",
        "String",
        "--allowed-pattern",
        r"\d{1,4}",
    ])
    .await;
    let mismatch = fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            &pattern,
            "--value",
            "10,000",
            "--overwrite",
        ],
        "ParameterPatternMismatchException",
    )
    .await;
    assert!(
        mismatch.contains(r"cannot be validated against allowedPattern: \d{1,4}"),
        "{mismatch}"
    );
    let big = "x".repeat(4097);
    fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            &format!("{base}/big"),
            "--value",
            &big,
            "--type",
            "String",
        ],
        "ValidationException",
    )
    .await;
    let advanced = aws
        .ok(&[
            "ssm",
            "put-parameter",
            "--name",
            &format!("{base}/big"),
            "--value",
            &big,
            "--type",
            "String",
            "--tier",
            "Intelligent-Tiering",
        ])
        .await;
    assert_eq!(advanced["Tier"], "Advanced");
    fails_with(
        &aws,
        &["ssm", "get-parameter", "--name", &format!("{base}/none")],
        "ParameterNotFound",
    )
    .await;

    // Deletes: one, then several with the missing ones reported.
    aws.ok(&["ssm", "delete-parameter", "--name", &hosts]).await;
    fails_with(
        &aws,
        &["ssm", "delete-parameter", "--name", &hosts],
        "ParameterNotFound",
    )
    .await;
    let deleted = aws
        .ok(&[
            "ssm",
            "delete-parameters",
            "--names",
            &url,
            &password,
            &hosts,
        ])
        .await;
    assert_eq!(deleted["DeletedParameters"], json!([url, password]));
    assert_eq!(deleted["InvalidParameters"], json!([hosts]));
    let left = aws
        .ok(&["ssm", "get-parameters", "--names", &url, &pattern])
        .await;
    assert_eq!(names(&left), vec![pattern.clone()]);
    assert_eq!(left["InvalidParameters"], json!([url]));
}

/// Paging by path (the paginator and by hand), labels, versions written concurrently, and
/// the exception classes boto3 generates from the model.
const BOTO3_SCRIPT: &str = r#"
import boto3, json, os, threading
ssm = boto3.session.Session(region_name="us-east-1", aws_access_key_id=os.environ["ID"],
    aws_secret_access_key=os.environ["SECRET"]).client("ssm", endpoint_url=os.environ["EP"])
base = os.environ["BASE"]
out = {}
for i in range(12):
    ssm.put_parameter(Name=f"{base}/svc/p{i:02}", Value=f"v{i}", Type="String")
for i in range(3):
    ssm.put_parameter(Name=f"{base}/svc/deep/d{i}", Value=f"d{i}", Type="SecureString")
ssm.put_parameter(Name=f"{base}/svcx", Value="outside", Type="String")

def walk(**kw):
    names, pages = [], 0
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=f"{base}/svc", **kw):
        pages += 1
        names += [p["Name"] for p in page["Parameters"]]
    return names, pages
flat, flat_pages = walk(PaginationConfig={"PageSize": 5})
out["one_level"] = [n.rsplit("/", 1)[1] for n in flat]
out["one_level_pages"] = flat_pages
deep, _ = walk(Recursive=True, WithDecryption=True, PaginationConfig={"PageSize": 4})
out["recursive"] = len(deep)
values = {p["Name"]: p["Value"] for p in ssm.get_parameters_by_path(Path=f"{base}/svc/deep", WithDecryption=True)["Parameters"]}
out["decrypted"] = sorted(values.values())
page = ssm.get_parameters_by_path(Path=f"{base}/svc/", MaxResults=10)
out["first_page"] = len(page["Parameters"])
rest = ssm.get_parameters_by_path(Path=f"{base}/svc/", MaxResults=10, NextToken=page["NextToken"])
out["second_page"] = len(rest["Parameters"])
out["second_has_token"] = "NextToken" in rest
described = []
for page in ssm.get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [f"{base}/svc"]}],
        PaginationConfig={"PageSize": 4}):
    described += [p["Name"] for p in page["Parameters"]]
out["described"] = [len(described), described == sorted(deep)]
begins = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": [f"{base}/svc/deep"]}])
out["begins_with"] = len(begins["Parameters"])
secure = ssm.get_parameters_by_path(Path=f"{base}/svc", Recursive=True,
    ParameterFilters=[{"Key": "Type", "Values": ["SecureString"]}])["Parameters"]
out["secure_only"] = len(secure)
out["ciphertext_hidden"] = all(p["Value"] not in ("d0", "d1", "d2") for p in secure)

# Versions and labels.
name = f"{base}/release"
ssm.put_parameter(Name=name, Value="r1", Type="String")
ssm.put_parameter(Name=name, Value="r2", Overwrite=True)
ssm.put_parameter(Name=name, Value="r3", Overwrite=True)
ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["stable"])
ssm.label_parameter_version(Name=name, ParameterVersion=3, Labels=["canary"])
got = ssm.get_parameters(Names=[f"{name}:stable", f"{name}:canary", f"{name}:2", f"{name}:missing"])
out["by_selector"] = sorted((p["Selector"], p["Value"]) for p in got["Parameters"])
out["invalid"] = got["InvalidParameters"]
labelled = ssm.get_parameters_by_path(Path=base, ParameterFilters=[{"Key": "Label", "Values": ["stable"]}])
out["label_filter"] = [(p["Name"] == name, p["Value"]) for p in labelled["Parameters"]]
ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["stable"])
out["moved"] = ssm.get_parameter(Name=f"{name}:stable")["Parameter"]["Value"]
try:
    ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=[f"l{i}" for i in range(10)])
except ssm.exceptions.ParameterVersionLabelLimitExceeded as e:
    out["label_limit"] = e.response["Error"]["Code"]
removed = ssm.unlabel_parameter_version(Name=name, ParameterVersion=2, Labels=["stable", "never"])
out["unlabel"] = [removed["RemovedLabels"], removed["InvalidLabels"]]

# Overwrites racing on one parameter: every one gets its own version.
race = f"{base}/race"
ssm.put_parameter(Name=race, Value="0", Type="String")
def writer(k):
    for j in range(5):
        ssm.put_parameter(Name=race, Value=f"{k}-{j}", Overwrite=True)
threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
for t in threads: t.start()
for t in threads: t.join()
hist = []
for page in ssm.get_paginator("get_parameter_history").paginate(Name=race, PaginationConfig={"PageSize": 7}):
    hist += [p["Version"] for p in page["Parameters"]]
out["race"] = [ssm.get_parameter(Name=race)["Parameter"]["Version"], hist == list(range(1, 32))]

# Modelled exceptions.
def code(call, **kw):
    try:
        call(**kw)
    except ssm.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return "no error"
out["codes"] = {
    "missing": code(ssm.get_parameter, Name=f"{base}/nope"),
    "exists": code(ssm.put_parameter, Name=name, Value="x", Type="String"),
    "version": code(ssm.get_parameter, Name=f"{name}:99"),
    "bad_token": code(ssm.get_parameters_by_path, Path=base, NextToken="garbage"),
    "bad_path": code(ssm.get_parameters_by_path, Path="relative/path"),
    "bad_filter_key": code(ssm.get_parameters_by_path, Path=base, ParameterFilters=[{"Key": "Name", "Values": ["x"]}]),
    "bad_filter_option": code(ssm.describe_parameters, ParameterFilters=[{"Key": "Path", "Option": "Equals", "Values": ["/x"]}]),
    "both_filters": code(ssm.describe_parameters, Filters=[{"Key": "Name", "Values": ["x"]}], ParameterFilters=[{"Key": "Name", "Values": ["x"]}]),
    "reserved": code(ssm.put_parameter, Name="awsThing", Value="x", Type="String"),
    "too_many_names": code(ssm.get_parameters, Names=[f"/n{i}" for i in range(11)]),
    "bad_tier": code(ssm.put_parameter, Name=f"{base}/t", Value="x", Type="String", Tier="Platinum"),
    "unsupported": code(ssm.describe_maintenance_windows),
}
try:
    ssm.get_parameter(Name=f"{base}/nope")
except ssm.exceptions.ParameterNotFound:
    out["modelled_class"] = True

# IAM: a user allowed on the svc subtree only; selectors do not change the ARN authorised.
session = boto3.session.Session(region_name="us-east-1", aws_access_key_id=os.environ["ID"],
    aws_secret_access_key=os.environ["SECRET"])
iam = session.client("iam", endpoint_url=os.environ["EP"])
iam.create_user(UserName="ssm-reader")
iam.put_user_policy(UserName="ssm-reader", PolicyName="p", PolicyDocument=json.dumps({
    "Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["ssm:GetParameter*", "ssm:PutParameter"],
        "Resource": f"arn:aws:ssm:us-east-1:000000000000:parameter{base}/svc*"}]}))
key = iam.create_access_key(UserName="ssm-reader")["AccessKey"]
reader = boto3.session.Session(region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
    aws_secret_access_key=key["SecretAccessKey"]).client("ssm", endpoint_url=os.environ["EP"])
out["iam"] = {
    "own": reader.get_parameter(Name=f"{base}/svc/p00")["Parameter"]["Value"],
    "by_selector": reader.get_parameter(Name=f"{base}/svc/p00:1")["Parameter"]["Value"],
    "by_path": len(reader.get_parameters_by_path(Path=f"{base}/svc")["Parameters"]),  # one page
    "other": code(reader.get_parameter, Name=f"{base}/release"),
    "other_path": code(reader.get_parameters_by_path, Path=base),
    "tag_on_create": code(reader.put_parameter, Name=f"{base}/svc/tagged", Value="x", Type="String",
        Tags=[{"Key": "k", "Value": "v"}]),
    "describe": code(reader.describe_parameters),
}
print(json.dumps(out))
"#;

#[tokio::test]
async fn boto3_pages_by_path_reads_labels_and_races_overwrites() {
    let dev = Dev::start().await;
    let base = format!("/{}", unique("b3"));
    let out = tokio::process::Command::new("python3")
        .args(["-c", BOTO3_SCRIPT])
        .env("EP", &dev.endpoint)
        .env("ID", &dev.keys.id)
        .env("SECRET", &dev.keys.secret)
        .env("BASE", &base)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .await
        .expect("python3 with boto3 (pip install boto3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim()).expect("JSON from the script");
    let twelve: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
    assert_eq!(r["one_level"], json!(twelve), "{r:#}");
    assert_eq!(r["one_level_pages"], 3, "{r:#}");
    assert_eq!(r["recursive"], 15, "{r:#}");
    assert_eq!(r["decrypted"], json!(["d0", "d1", "d2"]), "{r:#}");
    assert_eq!(r["first_page"], 10, "{r:#}");
    assert_eq!(r["second_page"], 2, "{r:#}");
    assert_eq!(r["second_has_token"], false, "{r:#}");
    assert_eq!(r["secure_only"], 3, "{r:#}");
    assert_eq!(r["described"], json!([15, true]), "{r:#}");
    assert_eq!(r["begins_with"], 3, "{r:#}");
    assert_eq!(r["ciphertext_hidden"], true, "{r:#}");
    assert_eq!(
        r["by_selector"],
        json!([[":2", "r2"], [":canary", "r3"], [":stable", "r1"]]),
        "{r:#}"
    );
    assert_eq!(r["invalid"], json!([format!("{base}/release:missing")]));
    assert_eq!(r["label_filter"], json!([[true, "r1"]]), "{r:#}");
    assert_eq!(r["moved"], "r2");
    assert_eq!(r["label_limit"], "ParameterVersionLabelLimitExceeded");
    assert_eq!(r["unlabel"], json!([["stable"], ["never"]]));
    assert_eq!(r["race"], json!([31, true]), "{r:#}");
    assert_eq!(
        r["codes"],
        json!({
            "missing": "ParameterNotFound",
            "exists": "ParameterAlreadyExists",
            "version": "ParameterVersionNotFound",
            "bad_token": "InvalidNextToken",
            "bad_path": "ValidationException",
            "bad_filter_key": "InvalidFilterKey",
            "bad_filter_option": "InvalidFilterOption",
            "both_filters": "ValidationException",
            "reserved": "ValidationException",
            "too_many_names": "ValidationException",
            "bad_tier": "ValidationException",
            "unsupported": "ValidationException",
        }),
        "{r:#}"
    );
    assert_eq!(r["modelled_class"], true);
    assert_eq!(
        r["iam"],
        json!({
            "own": "v0",
            "by_selector": "v0",
            "by_path": 10,
            "other": "AccessDeniedException",
            "other_path": "AccessDeniedException",
            "tag_on_create": "AccessDeniedException",
            "describe": "AccessDeniedException",
        }),
        "{r:#}"
    );
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn a_secure_string_never_reaches_the_store_the_logs_or_an_error_in_the_clear() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let base = format!("/{}", unique("seal"));
    let secret = format!("plaintext-{}", unique("marker"));
    let newer = format!("plaintext-{}", unique("newer"));
    let plain = format!("plain-{}", unique("control"));
    let name = format!("{base}/token");
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &name,
        "--value",
        &secret,
        "--type",
        "SecureString",
        "--allowed-pattern",
        "plaintext-.*",
    ])
    .await;
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &name,
        "--value",
        &newer,
        "--overwrite",
    ])
    .await;
    aws.ok(&[
        "ssm",
        "put-parameter",
        "--name",
        &format!("{base}/plain"),
        "--value",
        &plain,
        "--type",
        "String",
    ])
    .await;
    // Refusals that see the value say nothing of it.
    let refused = fails_with(
        &aws,
        &[
            "ssm",
            "put-parameter",
            "--name",
            &name,
            "--value",
            &format!("x{secret}"),
            "--overwrite",
        ],
        "ParameterPatternMismatchException",
    )
    .await;
    assert!(!refused.contains(&secret), "{refused}");
    let history = aws
        .ok(&["ssm", "get-parameter-history", "--name", &name])
        .await
        .to_string();
    assert!(
        !history.contains(&secret) && !history.contains(&newer),
        "{history}"
    );
    let open = aws
        .ok(&[
            "ssm",
            "get-parameters",
            "--names",
            &format!("{name}:1"),
            &name,
            "--with-decryption",
        ])
        .await;
    let values: Vec<&str> = open["Parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["Value"].as_str())
        .collect();
    assert_eq!(values, vec![secret.as_str(), newer.as_str()]);

    // The raw files: the store (and its WAL), the audit and log databases, the key file.
    let data = dev.dir.path().join("data");
    assert!(
        !files_containing(&data, plain.as_bytes()).is_empty(),
        "the scan finds a String parameter's value, so it would find a plaintext"
    );
    for value in [&secret, &newer] {
        assert_eq!(
            files_containing(&data, value.as_bytes()),
            Vec::<String>::new()
        );
        assert!(
            !dev.proc.output().contains(value.as_str()),
            "gantry's output has a value"
        );
    }
    // Deleting leaves nothing behind to open.
    aws.ok(&["ssm", "delete-parameter", "--name", &name]).await;
    fails_with(
        &aws,
        &["ssm", "get-parameter", "--name", &name, "--with-decryption"],
        "ParameterNotFound",
    )
    .await;
}
