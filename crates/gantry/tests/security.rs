//! Authentication and authorisation end to end against a real `gantry server`: SigV4 refusals
//! as AWS words them (unsigned, wrong secret, unknown or deleted key, another region or
//! service, outside the clock window, an expired session), IAM policies (action wildcards,
//! deny by resource, explicit deny, conditions, PassRole) driven through the AWS CLI and
//! boto3, STS sessions, agents' credentials bound to their own instance, the host-access
//! policy, and the audit log of it all.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const ECS: &str = "AmazonEC2ContainerServiceV20141113";

/// A raw awsJson1_1 call signed with `keys` for `region`/`service` at `now` (unix seconds).
async fn call_at(
    endpoint: &str,
    keys: Option<&Keys>,
    region: &str,
    service: &str,
    now: i64,
    target: &str,
    input: &Value,
) -> (u16, Value) {
    let req = signed_request(
        "POST",
        &format!("{endpoint}/"),
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ],
        input.to_string().into_bytes(),
        keys,
        region,
        service,
        now,
    );
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    gantry_auth::client::now()
}

async fn list_clusters(endpoint: &str, keys: Option<&Keys>) -> (u16, Value) {
    call_at(
        endpoint,
        keys,
        "us-east-1",
        "ecs",
        now(),
        &format!("{ECS}.ListClusters"),
        &json!({}),
    )
    .await
}

fn error_type(v: &Value) -> &str {
    v["__type"].as_str().unwrap_or("")
}

/// `aws iam create-user` + `create-access-key`; the new user's keys.
async fn new_user(aws: &Aws, name: &str) -> Keys {
    aws.ok(&["iam", "create-user", "--user-name", name]).await;
    let k = aws
        .ok(&["iam", "create-access-key", "--user-name", name])
        .await;
    Keys {
        id: k["AccessKey"]["AccessKeyId"]
            .as_str()
            .expect("key id")
            .to_string(),
        secret: k["AccessKey"]["SecretAccessKey"]
            .as_str()
            .expect("secret")
            .to_string(),
        session_token: None,
    }
}

async fn put_user_policy(aws: &Aws, user: &str, name: &str, doc: &Value) {
    aws.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        user,
        "--policy-name",
        name,
        "--policy-document",
        &doc.to_string(),
    ])
    .await;
}

/// Polls until the keys are accepted (or refused) as expected; a write is visible at once,
/// so this returns on the first try unless something is wrong.
async fn ecs_as(endpoint: &str, keys: &Keys, op: &str, input: Value) -> (u16, Value) {
    call_at(
        endpoint,
        Some(keys),
        "us-east-1",
        "ecs",
        now(),
        &format!("{ECS}.{op}"),
        &input,
    )
    .await
}

#[tokio::test]
async fn signatures_are_checked_as_aws_checks_them() {
    let split = Split::start(0).await;
    let e = &split.endpoint;
    let admin = &split.keys;

    let (status, ok) = list_clusters(e, Some(admin)).await;
    assert_eq!(status, 200, "{ok}");

    let (status, v) = list_clusters(e, None).await;
    assert_eq!(
        (status, error_type(&v)),
        (400, "MissingAuthenticationTokenException"),
        "{v}"
    );
    assert_eq!(v["message"], "Missing Authentication Token");

    let wrong_secret = Keys {
        secret: "not-the-secret".into(),
        ..admin.clone()
    };
    let (status, v) = list_clusters(e, Some(&wrong_secret)).await;
    assert_eq!(
        (status, error_type(&v)),
        (400, "InvalidSignatureException"),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("The request signature we calculated does not match"),
        "{v}"
    );

    let unknown = Keys {
        id: "AKIAUNKNOWNUNKNOWN00".into(),
        secret: "x".into(),
        session_token: None,
    };
    let (_, v) = list_clusters(e, Some(&unknown)).await;
    assert_eq!(error_type(&v), "UnrecognizedClientException", "{v}");
    assert_eq!(
        v["message"],
        "The security token included in the request is invalid."
    );

    let target = format!("{ECS}.ListClusters");
    let (_, v) = call_at(
        e,
        Some(admin),
        "eu-west-1",
        "ecs",
        now(),
        &target,
        &json!({}),
    )
    .await;
    assert_eq!(error_type(&v), "InvalidSignatureException", "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("region"),
        "{v}"
    );
    let (_, v) = call_at(
        e,
        Some(admin),
        "us-east-1",
        "logs",
        now(),
        &target,
        &json!({}),
    )
    .await;
    assert_eq!(error_type(&v), "InvalidSignatureException", "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("service"),
        "{v}"
    );

    // Replayed twenty minutes later: outside the ±15 minute window.
    let (_, v) = call_at(
        e,
        Some(admin),
        "us-east-1",
        "ecs",
        now() - 20 * 60,
        &target,
        &json!({}),
    )
    .await;
    assert_eq!(error_type(&v), "InvalidSignatureException", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Signature expired:"),
        "{v}"
    );

    // A presigned URL (STS GetCallerIdentity, as Vault and EKS-style authenticators send
    // it): accepted while valid, refused when tampered with or expired.
    let host = e.trim_start_matches("http://").to_string();
    let presign = |query: &str, at: i64, expires: i64| {
        gantry_auth::sigv4::presign(
            "GET",
            "/",
            query,
            &[("host".to_string(), host.clone())],
            &[],
            &gantry_auth::sigv4::Credentials {
                access_key_id: admin.id.clone(),
                secret_access_key: admin.secret.clone(),
                session_token: None,
            },
            "us-east-1",
            "sts",
            at,
            expires,
        )
    };
    let get = |q: String| async move {
        let resp = reqwest::get(format!("{e}/?{q}")).await.expect("GET");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    };
    let good = presign("Action=GetCallerIdentity&Version=2011-06-15", now(), 300);
    let (status, xml) = get(good.clone()).await;
    assert_eq!(status, 200, "{xml}");
    assert!(
        xml.contains("<Arn>arn:aws:iam::000000000000:user/admin</Arn>"),
        "{xml}"
    );
    let (status, xml) = get(good.replace("GetCallerIdentity", "GetCallerIdentitx")).await;
    assert_eq!(status, 403, "{xml}");
    assert!(xml.contains("<Code>SignatureDoesNotMatch</Code>"), "{xml}");
    let stale = presign(
        "Action=GetCallerIdentity&Version=2011-06-15",
        now() - 3600,
        60,
    );
    let (status, xml) = get(stale).await;
    assert_eq!(status, 403, "{xml}");
    assert!(xml.contains("expired"), "{xml}");

    // A deleted key stops working at once.
    let aws = Aws::at(e, admin);
    let carol = new_user(&aws, "carol").await;
    put_user_policy(
        &aws,
        "carol",
        "all",
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
    .await;
    assert_eq!(list_clusters(e, Some(&carol)).await.0, 200);
    aws.ok(&[
        "iam",
        "delete-access-key",
        "--user-name",
        "carol",
        "--access-key-id",
        &carol.id,
    ])
    .await;
    let (_, v) = list_clusters(e, Some(&carol)).await;
    assert_eq!(error_type(&v), "UnrecognizedClientException", "{v}");

    // The audit log saw the refusals, and never a secret.
    let (status, audit) = signed_json(
        e,
        admin,
        "ecs",
        "GantryV1.ListAuditEvents",
        &json!({"outcome": "AuthFailure"}),
    )
    .await;
    assert_eq!(status, 200, "{audit}");
    let events = audit["events"].as_array().cloned().unwrap_or_default();
    assert!(events.len() >= 5, "{audit:#}");
    assert!(events
        .iter()
        .any(|ev| ev["errorCode"] == "MissingAuthenticationTokenException"));
    let all = signed_json(e, admin, "ecs", "GantryV1.ListAuditEvents", &json!({}))
        .await
        .1
        .to_string();
    assert!(!all.contains(&admin.secret) && !all.contains(&carol.secret));
}

#[tokio::test]
async fn policies_decide_who_may_do_what() {
    let split = Split::start(0).await;
    let e = &split.endpoint;
    let aws = Aws::at(e, &split.keys);
    let cluster_arn = |name: &str| format!("arn:aws:ecs:us-east-1:000000000000:cluster/{name}");
    for c in ["blue", "green"] {
        aws.ok(&["ecs", "create-cluster", "--cluster-name", c])
            .await;
    }

    // Read-only by an AWS managed policy: Describe*/List* yes, anything else no.
    let reader = new_user(&aws, "reader").await;
    aws.ok(&[
        "iam",
        "attach-user-policy",
        "--user-name",
        "reader",
        "--policy-arn",
        "arn:aws:iam::aws:policy/ReadOnlyAccess",
    ])
    .await;
    let (status, _) = ecs_as(
        e,
        &reader,
        "DescribeClusters",
        json!({"clusters": ["blue"]}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, v) = ecs_as(e, &reader, "CreateCluster", json!({"clusterName": "red"})).await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");
    assert_eq!(
        v["message"],
        format!(
            "User: arn:aws:iam::000000000000:user/reader is not authorized to perform: ecs:CreateCluster on resource: {} because no identity-based policy allows the ecs:CreateCluster action",
            cluster_arn("red")
        )
    );

    // Allow by action wildcard, deny by resource, explicit deny beats allow.
    let ops = new_user(&aws, "ops").await;
    put_user_policy(
        &aws,
        "ops",
        "ecs",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:*Cluster*", "Resource": "*"},
            {"Effect": "Deny", "Action": "ecs:DeleteCluster", "Resource": cluster_arn("blue")}
        ]}),
    )
    .await;
    let (status, _) = ecs_as(e, &ops, "UpdateClusterSettings", json!({"cluster": "green", "settings": [{"name": "containerInsights", "value": "enabled"}]})).await;
    assert_eq!(status, 200);
    let (_, v) = ecs_as(e, &ops, "DeleteCluster", json!({"cluster": "blue"})).await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .ends_with("with an explicit deny in an identity-based policy"),
        "{v}"
    );
    let (status, v) = ecs_as(e, &ops, "DeleteCluster", json!({"cluster": "green"})).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = ecs_as(e, &ops, "ListTasks", json!({"cluster": "blue"})).await;
    assert_eq!(
        error_type(&v),
        "AccessDeniedException",
        "no ecs:ListTasks: {v}"
    );

    // Conditions: ecs:cluster and aws:SourceIp.
    let scoped = new_user(&aws, "scoped").await;
    put_user_policy(
        &aws,
        "scoped",
        "blue-only",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*",
             "Condition": {"StringEquals": {"ecs:cluster": cluster_arn("blue")}}},
            {"Effect": "Allow", "Action": "ecs:ListServices", "Resource": "*",
             "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
        ]}),
    )
    .await;
    assert_eq!(
        ecs_as(e, &scoped, "ListTasks", json!({"cluster": "blue"}))
            .await
            .0,
        200
    );
    let (_, v) = ecs_as(e, &scoped, "ListTasks", json!({"cluster": "green"})).await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");
    let (_, v) = ecs_as(e, &scoped, "ListServices", json!({"cluster": "blue"})).await;
    assert_eq!(
        error_type(&v),
        "AccessDeniedException",
        "from 127.0.0.1: {v}"
    );

    // PassRole: naming a task role needs iam:PassRole on it.
    let deployer = new_user(&aws, "deployer").await;
    put_user_policy(
        &aws,
        "deployer",
        "deploy",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:RegisterTaskDefinition", "Resource": "*"},
            {"Effect": "Allow", "Action": "iam:PassRole",
             "Resource": "arn:aws:iam::000000000000:role/app",
             "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}}
        ]}),
    )
    .await;
    let td = |role: &str| {
        json!({"family": "web", "taskRoleArn": format!("arn:aws:iam::000000000000:role/{role}"),
               "containerDefinitions": [{"name": "c", "image": IMAGE, "memory": 16}]})
    };
    let (status, v) = ecs_as(e, &deployer, "RegisterTaskDefinition", td("app")).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = ecs_as(e, &deployer, "RegisterTaskDefinition", td("admin")).await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("iam:PassRole on resource: arn:aws:iam::000000000000:role/admin"),
        "{v}"
    );

    // The audit log names who was refused what.
    let (_, audit) = signed_json(
        e,
        &split.keys,
        "ecs",
        "GantryV1.ListAuditEvents",
        &json!({"principal": "arn:aws:iam::000000000000:user/ops", "outcome": "AccessDenied"}),
    )
    .await;
    let events = audit["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|ev| ev["action"] == "ecs:DeleteCluster"
                && ev["resources"][0] == cluster_arn("blue")),
        "{audit:#}"
    );
}

#[tokio::test]
async fn roles_sessions_and_boto3() {
    let split = Split::start_with(0, &["--min-session-duration", "1"]).await;
    let e = &split.endpoint;
    let aws = Aws::at(e, &split.keys);
    let dev = new_user(&aws, "dev").await;
    put_user_policy(
        &aws,
        "dev",
        "assume",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}),
    )
    .await;
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::000000000000:user/dev"}, "Action": "sts:AssumeRole"}]});
    aws.ok(&[
        "iam",
        "create-role",
        "--role-name",
        "viewer",
        "--assume-role-policy-document",
        &trust.to_string(),
    ])
    .await;
    aws.ok(&[
        "iam",
        "attach-role-policy",
        "--role-name",
        "viewer",
        "--policy-arn",
        "arn:aws:iam::aws:policy/ReadOnlyAccess",
    ])
    .await;
    let role = aws.ok(&["iam", "get-role", "--role-name", "viewer"]).await;
    assert_eq!(role["Role"]["AssumeRolePolicyDocument"], trust, "{role:#}");
    let inline = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "logs:GetLogEvents", "Resource": "*"}]});
    aws.ok(&[
        "iam",
        "put-role-policy",
        "--role-name",
        "viewer",
        "--policy-name",
        "logs",
        "--policy-document",
        &inline.to_string(),
    ])
    .await;
    let listed = aws
        .ok(&["iam", "list-role-policies", "--role-name", "viewer"])
        .await;
    assert_eq!(listed["PolicyNames"], json!(["logs"]), "{listed:#}");
    let got = aws
        .ok(&[
            "iam",
            "get-role-policy",
            "--role-name",
            "viewer",
            "--policy-name",
            "logs",
        ])
        .await;
    assert_eq!(got["PolicyDocument"], inline, "{got:#}");
    let attached = aws
        .ok(&[
            "iam",
            "list-attached-role-policies",
            "--role-name",
            "viewer",
        ])
        .await;
    assert_eq!(
        attached["AttachedPolicies"][0]["PolicyArn"],
        "arn:aws:iam::aws:policy/ReadOnlyAccess"
    );

    // boto3 with the user's keys, then with a session's (session token included).
    let script = r#"
import boto3, json, os, sys
def session(**kw):
    return boto3.session.Session(region_name="us-east-1", **kw)
ep = os.environ["EP"]
user = session(aws_access_key_id=os.environ["ID"], aws_secret_access_key=os.environ["SECRET"])
me = user.client("sts", endpoint_url=ep).get_caller_identity()
creds = user.client("sts", endpoint_url=ep).assume_role(
    RoleArn="arn:aws:iam::000000000000:role/viewer", RoleSessionName="s1",
    DurationSeconds=int(sys.argv[1]))["Credentials"]
s = session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"])
who = s.client("sts", endpoint_url=ep).get_caller_identity()
clusters = s.client("ecs", endpoint_url=ep).list_clusters()
try:
    s.client("ecs", endpoint_url=ep).create_cluster(clusterName="nope")
    denied = ""
except Exception as e:
    denied = e.response["Error"]["Code"]
print(json.dumps({"me": me["Arn"], "who": who["Arn"], "clusters": clusters["clusterArns"],
                  "denied": denied, "creds": {k: creds[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}}))
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, "900"])
        .env("EP", e)
        .env("ID", &dev.id)
        .env("SECRET", &dev.secret)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
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
    assert_eq!(r["me"], "arn:aws:iam::000000000000:user/dev");
    assert_eq!(r["who"], "arn:aws:sts::000000000000:assumed-role/viewer/s1");
    assert_eq!(r["denied"], "AccessDeniedException");

    let boto_session = Keys {
        id: r["creds"]["AccessKeyId"].as_str().unwrap_or("").into(),
        secret: r["creds"]["SecretAccessKey"].as_str().unwrap_or("").into(),
        session_token: r["creds"]["SessionToken"].as_str().map(str::to_string),
    };
    assert_eq!(list_clusters(e, Some(&boto_session)).await.0, 200);

    // A session of two seconds (the server allows that short a session here; SDKs check for
    // 900 s themselves, so this AssumeRole is a form POST signed by hand) expires.
    let xml = assume_role_raw(e, &dev, "arn:aws:iam::000000000000:role/viewer", 2).await;
    let field = |name: &str| {
        xml.split(&format!("<{name}>"))
            .nth(1)
            .and_then(|rest| rest.split(&format!("</{name}>")).next())
            .unwrap_or_else(|| panic!("no {name} in {xml}"))
            .to_string()
    };
    let session = Keys {
        id: field("AccessKeyId"),
        secret: field("SecretAccessKey"),
        session_token: Some(field("SessionToken")),
    };
    let v = eventually(Duration::from_secs(10), "the session to expire", || {
        let session = session.clone();
        async move {
            let (_, v) = list_clusters(e, Some(&session)).await;
            (error_type(&v) == "ExpiredTokenException").then_some(v)
        }
    })
    .await
    .expect("expired");
    assert_eq!(
        v["message"],
        "The security token included in the request is expired"
    );
    // A session key without its token, or with another, is refused.
    let tokenless = Keys {
        session_token: None,
        ..session.clone()
    };
    assert_eq!(
        error_type(&list_clusters(e, Some(&tokenless)).await.1),
        "UnrecognizedClientException"
    );

    // A role that does not trust the caller cannot be assumed.
    let stranger_trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    aws.ok(&[
        "iam",
        "create-role",
        "--role-name",
        "tasks-only",
        "--assume-role-policy-document",
        &stranger_trust.to_string(),
    ])
    .await;
    let as_dev = Aws::at(e, &dev);
    let out = as_dev
        .run(&[
            "sts",
            "assume-role",
            "--role-arn",
            "arn:aws:iam::000000000000:role/tasks-only",
            "--role-session-name",
            "xy",
        ])
        .await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("AccessDenied"), "{}", out.stderr);
}

/// STS AssumeRole as an awsQuery form POST signed with `keys`; the XML answer.
async fn assume_role_raw(endpoint: &str, keys: &Keys, role_arn: &str, secs: i64) -> String {
    let url = format!("{endpoint}/");
    let body = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=short&DurationSeconds={secs}",
        gantry_auth::sigv4::percent_encode(role_arn)
    );
    let req = signed_request(
        "POST",
        &url,
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body.into_bytes(),
        Some(keys),
        "us-east-1",
        "sts",
        now(),
    );
    let resp = req.send().await.expect("AssumeRole");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{text}");
    text
}

/// Registers a container instance the way an agent does (join token in the header); its
/// ARN and the credentials the server issued.
async fn join(endpoint: &str, cluster: &str, token: Option<&str>) -> (u16, Value) {
    let body = json!({
        "cluster": cluster,
        "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}
        ]
    });
    let mut req = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("{ECS}.RegisterContainerInstance"));
    if let Some(t) = token {
        req = req.header("x-gantry-agent-token", t);
    }
    let resp = req.body(body.to_string()).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn issued(v: &Value) -> (String, Keys) {
    let arn = v["containerInstance"]["containerInstanceArn"]
        .as_str()
        .expect("instance ARN")
        .to_string();
    let c = &v["gantryAgentCredentials"];
    let keys = Keys {
        id: c["accessKeyId"].as_str().expect("key").to_string(),
        secret: c["secretAccessKey"].as_str().expect("secret").to_string(),
        session_token: None,
    };
    (arn, keys)
}

/// A signed GET of the agent channel; the status.
async fn open_channel(endpoint: &str, keys: Option<&Keys>, cluster: &str, instance: &str) -> u16 {
    channel(endpoint, keys, cluster, instance)
        .await
        .status()
        .as_u16()
}

/// A signed GET of the agent channel; the response (the channel stays open while it lives).
async fn channel(
    endpoint: &str,
    keys: Option<&Keys>,
    cluster: &str,
    instance: &str,
) -> reqwest::Response {
    let url = format!(
        "{endpoint}/agent/v1/channel?cluster={cluster}&containerInstance={}",
        gantry_auth::sigv4::percent_encode(instance)
    );
    let req = signed_request(
        "GET",
        &url,
        &[],
        Vec::new(),
        keys,
        "us-east-1",
        "ecs",
        now(),
    );
    req.send().await.expect("channel")
}

#[tokio::test]
async fn agents_act_only_for_their_own_instance() {
    let split = Split::start(0).await;
    let e = &split.endpoint;
    let cluster = &split.cluster;
    let token = join_token(&split.dir.path().join("server"));

    let (status, v) = join(e, cluster, None).await;
    assert_eq!(
        (status, error_type(&v)),
        (400, "MissingAuthenticationTokenException"),
        "{v}"
    );
    let (_, v) = join(e, cluster, Some("wrong-token")).await;
    assert_eq!(error_type(&v), "UnrecognizedClientException", "{v}");

    let (status, a) = join(e, cluster, Some(&token)).await;
    assert_eq!(status, 200, "{a}");
    let (arn_a, keys_a) = issued(&a);
    let (_, b) = join(e, cluster, Some(&token)).await;
    let (arn_b, keys_b) = issued(&b);

    // A join token cannot claim an existing instance's identity.
    let mut claim = json!({"cluster": cluster, "containerInstanceArn": arn_b,
        "totalResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 1},
                           {"name": "MEMORY", "type": "INTEGER", "integerValue": 1}]});
    let (_, v) = signed_json(
        e,
        &keys_a,
        "ecs",
        &format!("{ECS}.RegisterContainerInstance"),
        &claim,
    )
    .await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");
    claim["containerInstanceArn"] = json!(arn_a);
    let (status, v) = signed_json(
        e,
        &keys_a,
        "ecs",
        &format!("{ECS}.RegisterContainerInstance"),
        &claim,
    )
    .await;
    assert_eq!(status, 200, "an instance re-registers itself: {v}");

    // The channel opens only for the instance's own agent.
    assert_eq!(open_channel(e, None, cluster, &arn_a).await, 400);
    assert_eq!(open_channel(e, Some(&keys_a), cluster, &arn_b).await, 400);
    assert_eq!(
        open_channel(e, Some(&split.keys), cluster, &arn_a).await,
        400
    );

    // B's own agent opens its channel (and keeps it open): B is connected.
    let b_channel = channel(e, Some(&keys_b), cluster, &arn_b).await;
    assert_eq!(b_channel.status().as_u16(), 200);
    wait_connected(&split.client, cluster, 1)
        .await
        .expect("B connected");

    // A task placed on B: A may neither report on it nor ship its logs; B may.
    let td = signed_json(
        e,
        &split.keys,
        "ecs",
        &format!("{ECS}.RegisterTaskDefinition"),
        &json!({"family": "agent-auth", "containerDefinitions": [
            {"name": "c", "image": IMAGE, "memory": 16, "logConfiguration": {"logDriver": "awslogs",
                "options": {"awslogs-group": "/agent-auth/new", "awslogs-stream-prefix": "app",
                            "awslogs-create-group": "true"}}},
            {"name": "d", "image": IMAGE, "memory": 16, "logConfiguration": {"logDriver": "awslogs",
                "options": {"awslogs-group": "/agent-auth/missing", "awslogs-stream-prefix": "app"}}}]}),
    )
    .await
    .1;
    let td_arn = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("td")
        .to_string();
    let (status, started) = signed_json(
        e,
        &split.keys,
        "ecs",
        &format!("{ECS}.StartTask"),
        &json!({"cluster": cluster, "taskDefinition": td_arn, "containerInstances": [arn_b]}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let task_arn = started["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("no task started: {started:#}"))
        .to_string();
    let report = json!({"cluster": cluster, "task": task_arn, "status": "RUNNING"});
    let (_, v) = signed_json(
        e,
        &keys_a,
        "ecs",
        &format!("{ECS}.SubmitTaskStateChange"),
        &report,
    )
    .await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");
    let (status, v) = signed_json(
        e,
        &keys_b,
        "ecs",
        &format!("{ECS}.SubmitTaskStateChange"),
        &report,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // An agent's credentials are for agent calls only.
    let (_, v) = signed_json(
        e,
        &keys_b,
        "ecs",
        &format!("{ECS}.ListClusters"),
        &json!({}),
    )
    .await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");

    let task_id = task_arn.rsplit('/').next().unwrap_or("").to_string();
    let batch = json!({"events": [{"logGroup": "/agent-auth/new", "logStream": format!("app/c/{task_id}"),
        "timestamp": 1_700_000_000_000i64, "message": "hello"}]});
    let ship = |keys: Keys| {
        let url = format!("{e}/agent/v1/logs");
        let body = batch.to_string().into_bytes();
        async move {
            signed_request(
                "POST",
                &url,
                &[("content-type", "application/json")],
                body,
                Some(&keys),
                "us-east-1",
                "logs",
                now(),
            )
            .send()
            .await
            .expect("logs")
            .status()
            .as_u16()
        }
    };
    assert_eq!(ship(keys_a.clone()).await, 400, "A ships B's task's logs");
    let unsigned = reqwest::Client::new()
        .post(format!("{e}/agent/v1/logs"))
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .await
        .expect("logs");
    assert_eq!(unsigned.status().as_u16(), 400, "unsigned log lines");
    let (_, v) = call_at(
        e,
        None,
        "us-east-1",
        "ecs",
        now(),
        &format!("{ECS}.SubmitTaskStateChange"),
        &report,
    )
    .await;
    assert_eq!(error_type(&v), "MissingAuthenticationTokenException", "{v}");
    assert_eq!(ship(keys_b.clone()).await, 204);

    // A container's stream before it starts (awslogs): the same rights as shipping.
    let stream = format!("app/c/{task_id}");
    let ensure = |keys: Keys, group: &str, stream: &str, create: bool| {
        let url = format!("{e}/agent/v1/log-streams");
        let body = json!({"logGroupName": group, "logStreamName": stream, "createGroup": create})
            .to_string()
            .into_bytes();
        async move {
            let resp = signed_request(
                "POST",
                &url,
                &[("content-type", "application/json")],
                body,
                Some(&keys),
                "us-east-1",
                "logs",
                now(),
            )
            .send()
            .await
            .expect("log-streams");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, v) = ensure(keys_a.clone(), "/agent-auth/new", &stream, true).await;
    assert_eq!(
        (status, error_type(&v)),
        (400, "AccessDeniedException"),
        "{v}"
    );
    // Only where one of the task's containers sends its output: not another group under a
    // stream named after the task.
    let (status, v) = ensure(keys_b.clone(), "/agent-auth/other", &stream, true).await;
    assert_eq!(
        (status, error_type(&v)),
        (400, "AccessDeniedException"),
        "{v}"
    );
    // Container d's group is missing and its definition does not let it be created: asking
    // to create it changes nothing.
    let d_stream = format!("app/d/{task_id}");
    let (status, v) = ensure(keys_b.clone(), "/agent-auth/missing", &d_stream, true).await;
    assert_eq!(
        (status, error_type(&v)),
        (400, "ResourceNotFoundException"),
        "{v}"
    );
    let (status, v) = ensure(keys_b.clone(), "/agent-auth/new", &stream, true).await;
    assert_eq!(status, 200, "{v}");
    // Through the public Logs API too, an agent writes only to its own tasks' streams and
    // manages no groups.
    let put = json!({"logGroupName": "/agent-auth/new", "logStreamName": stream,
        "logEvents": [{"timestamp": now() * 1000, "message": "hi"}]});
    let (_, v) = signed_json(e, &keys_a, "logs", "Logs_20140328.PutLogEvents", &put).await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");
    let (status, v) = signed_json(e, &keys_b, "logs", "Logs_20140328.PutLogEvents", &put).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = signed_json(
        e,
        &keys_b,
        "logs",
        "Logs_20140328.CreateLogGroup",
        &json!({"logGroupName": "/agent-auth/other"}),
    )
    .await;
    assert_eq!(error_type(&v), "AccessDeniedException", "{v}");

    // Deregistering B cuts its agent off at once.
    let (status, v) = signed_json(
        e,
        &split.keys,
        "ecs",
        &format!("{ECS}.DeregisterContainerInstance"),
        &json!({"cluster": cluster, "containerInstance": arn_b, "force": true}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = signed_json(
        e,
        &keys_b,
        "ecs",
        &format!("{ECS}.SubmitTaskStateChange"),
        &report,
    )
    .await;
    assert_eq!(error_type(&v), "UnrecognizedClientException", "{v}");
    drop(b_channel);
}

#[tokio::test]
async fn an_agent_without_a_token_cannot_join_and_host_access_is_refused_on_a_server() {
    let mut split = Split::start(1).await;
    let e = split.endpoint.clone();
    let cluster = split.cluster.clone();

    // An agent without the token exits with advice.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("agent").display().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(gantry_bin())
            .args([
                "agent",
                "--server",
                &e,
                "--cluster",
                &cluster,
                "--data-dir",
                &data,
            ])
            .env_remove("GANTRY_TOKEN")
            .output(),
    )
    .await
    .expect("the agent gives up at once")
    .expect("run gantry agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--token"), "{stderr}");

    // A privileged task is not placed on an agent that does not allow host access.
    let privileged = split
        .client
        .register_task_definition()
        .family("privileged")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("c")
                .image(IMAGE)
                .memory(16)
                .privileged(true)
                .command("true")
                .build(),
        )
        .send()
        .await
        .expect("register");
    let td = privileged
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("arn")
        .to_string();
    let r = split
        .client
        .run_task()
        .cluster(&cluster)
        .task_definition(&td)
        .send()
        .await
        .expect("RunTask");
    assert!(r.tasks().is_empty(), "{r:?}");
    assert_eq!(
        r.failures()[0].reason(),
        Some("MemberOf placement constraint unsatisfied.")
    );

    // An ordinary task still runs there.
    let plain = register(
        &split.client,
        "plain",
        vec![busybox_container("c", &["sleep", "30"])],
    )
    .await;
    let arn = run_one(&split.client, &cluster, &plain).await;
    wait_task(
        &split.client,
        &cluster,
        &arn,
        "RUNNING",
        Duration::from_secs(60),
    )
    .await;
    split.agents[0].kill9();
}

#[tokio::test]
async fn deleting_the_token_file_and_restarting_changes_the_join_token() {
    let mut split = Split::start(0).await;
    let data = split.dir.path().join("server");
    let old = join_token(&data);
    let (status, v) = join(&split.endpoint, &split.cluster, Some(&old)).await;
    assert_eq!(status, 200, "{v}");
    let (_, registered) = issued(&v);

    std::fs::remove_file(data.join("agent-token")).expect("remove the token file");
    split.restart_server().await;
    let new = join_token(&data);
    assert_ne!(new, old);
    let e = split.endpoint.clone();
    let cluster = split.cluster.clone();
    // The server writes the token file after it has bound its port: it answers now.
    let (_, v) = join(&e, &cluster, Some(&old)).await;
    assert_eq!(error_type(&v), "UnrecognizedClientException", "{v}");
    let (status, v) = join(&e, &cluster, Some(&new)).await;
    assert_eq!(status, 200, "{v}");
    // An instance registered with the old token keeps its own credentials.
    let (_, v) = signed_json(
        &e,
        &registered,
        "ecs",
        &format!("{ECS}.DiscoverPollEndpoint"),
        &json!({"cluster": cluster}),
    )
    .await;
    assert!(v.get("endpoint").is_some(), "{v}");
}
