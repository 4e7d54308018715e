//! ECS account settings against a real `gantry server`, through the AWS SDK for Rust and the
//! AWS CLI: what a fresh account reports, the account default against a principal's own
//! value, ListAccountSettings' filters and pages, ECS's errors for bad names, values and
//! principals, `containerInsights` given to new clusters, and `tagResourceAuthorization`
//! asking for `ecs:TagResource` on a tagged create.

mod common;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{
    ClusterField, ClusterSetting, ClusterSettingName, Setting, SettingName, Tag,
};
use aws_sdk_ecs::Client;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const ROOT: &str = "arn:aws:iam::000000000000:root";
const ADMIN: &str = "arn:aws:iam::000000000000:user/admin";
const ECS: &str = "AmazonEC2ContainerServiceV20141113";

fn name(n: &str) -> SettingName {
    SettingName::from(n)
}

/// Every page of ListAccountSettings with `max` per page (the SDK's own call per page).
async fn list_all(
    c: &Client,
    principal: Option<&str>,
    effective: bool,
    max: Option<i32>,
) -> (Vec<Setting>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let page = c
            .list_account_settings()
            .set_principal_arn(principal.map(str::to_string))
            .effective_settings(effective)
            .set_max_results(max)
            .set_next_token(token.take())
            .send()
            .await
            .expect("ListAccountSettings");
        pages += 1;
        all.extend(page.settings().iter().cloned());
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return (all, pages),
        }
    }
}

/// name → (value, principalArn, type)
fn by_name(settings: &[Setting]) -> BTreeMap<String, (String, String, String)> {
    settings
        .iter()
        .map(|s| {
            (
                s.name().map(|n| n.as_str().to_string()).unwrap_or_default(),
                (
                    s.value().unwrap_or("").to_string(),
                    s.principal_arn().unwrap_or("").to_string(),
                    s.r#type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                ),
            )
        })
        .collect()
}

fn expect_code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, E>,
    code: &str,
    what: &str,
) -> String {
    match result {
        Ok(v) => panic!("{what}: expected {code}, but the call succeeded: {v:#?}"),
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{what}: wrong error: {e:?}");
            let m = e.message().unwrap_or("").to_string();
            assert!(!m.is_empty(), "{what}: {code} without a message");
            m
        }
    }
}

#[tokio::test]
async fn a_fresh_account_reports_aws_defaults_and_principals_override_them() {
    let split = Split::start(0).await;
    let c = &split.client;

    // Nothing set by anyone: only the effective view has entries, the account's defaults.
    let (own, _) = list_all(c, None, false, None).await;
    assert!(own.is_empty(), "nothing set yet: {own:?}");
    let (effective, pages) = list_all(c, None, true, None).await;
    assert_eq!(pages, 2, "12 settings, 10 a page");
    let got = by_name(&effective);
    assert_eq!(got.len(), 12, "{got:?}");
    for (n, v) in [
        ("serviceLongArnFormat", "enabled"),
        ("taskLongArnFormat", "enabled"),
        ("containerInstanceLongArnFormat", "enabled"),
        ("awsvpcTrunking", "disabled"),
        ("containerInsights", "disabled"),
        ("dualStackIPv6", "disabled"),
        ("fargateFIPSMode", "disabled"),
        ("tagResourceAuthorization", "on"),
        ("fargateTaskRetirementWaitPeriod", "7"),
        ("guardDutyActivate", "off"),
        ("defaultLogDriverMode", "non-blocking"),
        ("fargateEventWindows", "disabled"),
    ] {
        let (value, principal, kind) = &got[n];
        assert_eq!(value, v, "{n}");
        assert_eq!(principal, ROOT, "{n}: the default is the root user's");
        let want = if n == "guardDutyActivate" {
            "aws_managed"
        } else {
            "user"
        };
        assert_eq!(kind, want, "{n}");
    }
    // Pages of 3 walk the same list in the same order.
    let (paged, pages) = list_all(c, None, true, Some(3)).await;
    assert_eq!(pages, 4);
    assert_eq!(paged, effective);

    // The account default, then the administrator's own value over it.
    let d = c
        .put_account_setting_default()
        .name(name("containerInsights"))
        .value("enhanced")
        .send()
        .await
        .expect("PutAccountSettingDefault");
    let s = d.setting().expect("setting");
    assert_eq!(
        (s.value(), s.principal_arn()),
        (Some("enhanced"), Some(ROOT))
    );
    let p = c
        .put_account_setting()
        .name(name("containerInsights"))
        .value("disabled")
        .send()
        .await
        .expect("PutAccountSetting");
    let s = p.setting().expect("setting");
    assert_eq!(
        (s.value(), s.principal_arn(), s.r#type().map(|t| t.as_str())),
        (Some("disabled"), Some(ADMIN), Some("user")),
        "without principalArn, the caller's own"
    );
    let mine = c
        .list_account_settings()
        .name(name("containerInsights"))
        .effective_settings(true)
        .send()
        .await
        .expect("list");
    assert_eq!(
        by_name(mine.settings())["containerInsights"],
        ("disabled".into(), ADMIN.into(), "user".into())
    );
    let roots = c
        .list_account_settings()
        .name(name("containerInsights"))
        .principal_arn(ROOT)
        .send()
        .await
        .expect("list root");
    assert_eq!(by_name(roots.settings())["containerInsights"].0, "enhanced");

    // A value filter needs the name, and matches the value exactly.
    for (value, n) in [("disabled", 1), ("enabled", 0)] {
        let l = c
            .list_account_settings()
            .name(name("containerInsights"))
            .value(value)
            .effective_settings(true)
            .send()
            .await
            .expect("list by value");
        assert_eq!(l.settings().len(), n, "value {value}");
    }

    // Another principal, named by ARN, has its own settings; everyone else sees the default.
    let carol = "arn:aws:iam::000000000000:user/team/carol";
    c.put_account_setting()
        .name(name("awsvpcTrunking"))
        .value("enabled")
        .principal_arn(carol)
        .send()
        .await
        .expect("PutAccountSetting for carol");
    let (hers, _) = list_all(c, Some(carol), false, None).await;
    assert_eq!(
        by_name(&hers),
        BTreeMap::from([(
            "awsvpcTrunking".to_string(),
            ("enabled".to_string(), carol.to_string(), "user".to_string())
        )])
    );
    let (her_effective, _) = list_all(c, Some(carol), true, None).await;
    let her_effective = by_name(&her_effective);
    assert_eq!(her_effective["awsvpcTrunking"].1, carol);
    assert_eq!(
        her_effective["containerInsights"],
        ("enhanced".into(), ROOT.into(), "user".into())
    );

    // Deleting one's own value falls back to the default, and answers what was deleted.
    let del = c
        .delete_account_setting()
        .name(name("containerInsights"))
        .send()
        .await
        .expect("DeleteAccountSetting");
    let s = del.setting().expect("setting");
    assert_eq!(
        (s.value(), s.principal_arn()),
        (Some("disabled"), Some(ADMIN))
    );
    let after = c
        .list_account_settings()
        .name(name("containerInsights"))
        .effective_settings(true)
        .send()
        .await
        .expect("list");
    assert_eq!(
        by_name(after.settings())["containerInsights"],
        ("enhanced".into(), ROOT.into(), "user".into())
    );

    // Account-wide settings: the default, or the root user named as principal.
    c.put_account_setting()
        .name(name("fargateTaskRetirementWaitPeriod"))
        .value("14")
        .principal_arn(ROOT)
        .send()
        .await
        .expect("the root user's retirement wait");
    let (now, _) = list_all(c, None, true, None).await;
    assert_eq!(by_name(&now)["fargateTaskRetirementWaitPeriod"].0, "14");
}

#[tokio::test]
async fn bad_names_values_and_principals_get_ecs_errors() {
    let split = Split::start(0).await;
    let c = &split.client;
    let put = |n: &str, v: &str, p: Option<&str>| {
        c.put_account_setting()
            .name(name(n))
            .value(v)
            .set_principal_arn(p.map(str::to_string))
            .send()
    };
    let m = expect_code(
        put("noSuchSetting", "enabled", None).await,
        "InvalidParameterException",
        "unknown name",
    );
    assert!(m.contains("noSuchSetting"), "{m}");
    let m = expect_code(
        put("taskLongArnFormat", "disabled", None).await,
        "InvalidParameterException",
        "long ARNs off",
    );
    assert!(m.contains("can no longer be disabled"), "{m}");
    let m = expect_code(
        put("containerInsights", "on", None).await,
        "InvalidParameterException",
        "insights on",
    );
    assert!(m.contains("enabled, disabled, enhanced"), "{m}");
    expect_code(
        put("fargateTaskRetirementWaitPeriod", "3", Some(ROOT)).await,
        "InvalidParameterException",
        "3 days",
    );
    let m = expect_code(
        put("fargateTaskRetirementWaitPeriod", "0", None).await,
        "InvalidParameterException",
        "retirement wait for a user",
    );
    assert!(m.contains("whole account"), "{m}");
    expect_code(
        put("fargateFIPSMode", "enabled", None).await,
        "InvalidParameterException",
        "FIPS for a user",
    );
    c.put_account_setting_default()
        .name(name("fargateFIPSMode"))
        .value("enabled")
        .send()
        .await
        .expect("FIPS by default");
    expect_code(
        put("guardDutyActivate", "on", None).await,
        "InvalidParameterException",
        "GuardDuty's setting",
    );
    expect_code(
        c.delete_account_setting()
            .name(name("guardDutyActivate"))
            .send()
            .await,
        "InvalidParameterException",
        "delete GuardDuty's setting",
    );
    let m = expect_code(
        put(
            "containerInsights",
            "enabled",
            Some("arn:aws:iam::111111111111:user/bob"),
        )
        .await,
        "InvalidParameterException",
        "another account",
    );
    assert!(m.contains("principalArn"), "{m}");
    expect_code(
        put("containerInsights", "enabled", Some("bob")).await,
        "InvalidParameterException",
        "not an ARN",
    );
    expect_code(
        c.list_account_settings().value("enabled").send().await,
        "InvalidParameterException",
        "value without name",
    );
    expect_code(
        c.list_account_settings().max_results(11).send().await,
        "InvalidParameterException",
        "11 a page",
    );
    expect_code(
        c.list_account_settings()
            .next_token("not-a-token")
            .send()
            .await,
        "InvalidParameterException",
        "a made-up token",
    );
    // Nothing refused was written.
    let (own, _) = list_all(c, None, false, None).await;
    assert!(own.is_empty(), "{own:?}");
    let (roots, _) = list_all(c, Some(ROOT), false, None).await;
    assert_eq!(
        by_name(&roots).keys().collect::<Vec<_>>(),
        vec!["fargateFIPSMode"]
    );
}

async fn insights(c: &Client, cluster: &str) -> String {
    let d = c
        .describe_clusters()
        .clusters(cluster)
        .include(ClusterField::Settings)
        .send()
        .await
        .expect("DescribeClusters");
    let cl = d.clusters().first().expect("cluster");
    let s = cl
        .settings()
        .iter()
        .find(|s| s.name() == Some(&ClusterSettingName::ContainerInsights))
        .unwrap_or_else(|| panic!("no containerInsights in {cl:?}"));
    s.value().unwrap_or("").to_string()
}

#[tokio::test]
async fn new_clusters_get_the_effective_container_insights_and_the_cli_sees_it() {
    let split = Split::start(0).await;
    let c = &split.client;
    let aws = Aws::at(&split.endpoint, &split.keys);
    let create = |n: &str| c.create_cluster().cluster_name(n).send();
    create("before").await.expect("create");

    let set = aws
        .ok(&[
            "ecs",
            "put-account-setting-default",
            "--name",
            "containerInsights",
            "--value",
            "enhanced",
        ])
        .await;
    assert_eq!(
        set["setting"],
        json!({"name": "containerInsights", "value": "enhanced", "principalArn": ROOT, "type": "user"})
    );
    let listed = aws
        .ok(&[
            "ecs",
            "list-account-settings",
            "--effective-settings",
            "--name",
            "containerInsights",
        ])
        .await;
    assert_eq!(
        listed["settings"],
        json!([{"name": "containerInsights", "value": "enhanced", "principalArn": ROOT, "type": "user"}])
    );
    let everything = aws
        .ok(&["ecs", "list-account-settings", "--effective-settings"])
        .await;
    assert_eq!(
        everything["settings"].as_array().map(Vec::len),
        Some(12),
        "the CLI follows nextToken: {everything}"
    );

    create("after").await.expect("create");
    c.create_cluster()
        .cluster_name("explicit")
        .settings(
            ClusterSetting::builder()
                .name(ClusterSettingName::ContainerInsights)
                .value("disabled")
                .build(),
        )
        .send()
        .await
        .expect("create with a setting");
    assert_eq!(
        insights(c, "before").await,
        "disabled",
        "existing clusters keep theirs"
    );
    assert_eq!(insights(c, "after").await, "enhanced");
    assert_eq!(
        insights(c, "explicit").await,
        "disabled",
        "what was asked wins"
    );

    // The creator's own value wins over the account default.
    c.put_account_setting()
        .name(name("containerInsights"))
        .value("enabled")
        .send()
        .await
        .expect("own setting");
    create("mine").await.expect("create");
    assert_eq!(insights(c, "mine").await, "enabled");
}

/// `aws iam create-user` + `create-access-key` + an inline policy; the user's keys.
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

#[tokio::test]
async fn tagged_creates_need_tag_resource_while_tag_resource_authorization_is_on() {
    let split = Split::start(0).await;
    let e = &split.endpoint;
    let admin = &split.client;
    let aws = Aws::at(e, &split.keys);
    let maker_keys = user_with_policy(
        &aws,
        "maker",
        json!([{"Effect": "Allow", "Action": ["ecs:CreateCluster", "ecs:RegisterTaskDefinition"], "Resource": "*"}]),
    )
    .await;
    let maker = client_for(e, &maker_keys).await;
    let tag = Tag::builder().key("team").value("blue").build();
    let tagged = |n: &str| {
        maker
            .create_cluster()
            .cluster_name(n)
            .tags(tag.clone())
            .send()
    };

    // On by default: the tagged create is refused for want of ecs:TagResource, naming it.
    let m = expect_code(
        tagged("t1").await,
        "AccessDeniedException",
        "tagged create without ecs:TagResource",
    );
    assert_eq!(
        m,
        "User: arn:aws:iam::000000000000:user/maker is not authorized to perform: ecs:TagResource on resource: arn:aws:ecs:us-east-1:000000000000:cluster/t1 because no identity-based policy allows the ecs:TagResource action"
    );
    let described = admin
        .describe_clusters()
        .clusters("t1")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        described.failures().first().and_then(|f| f.reason()),
        Some("MISSING"),
        "a refused create creates nothing"
    );
    maker
        .create_cluster()
        .cluster_name("plain")
        .send()
        .await
        .expect("an untagged create needs no ecs:TagResource");
    let (status, v) = signed_json(
        e,
        &maker_keys,
        "ecs",
        &format!("{ECS}.RegisterTaskDefinition"),
        &json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64}],
                "tags": [{"key": "team", "value": "blue"}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains(
            "ecs:TagResource on resource: arn:aws:ecs:us-east-1:000000000000:task-definition/web:*"
        ),
        "{v}"
    );

    // Off for the account: tags need nothing more.
    admin
        .put_account_setting_default()
        .name(name("tagResourceAuthorization"))
        .value("off")
        .send()
        .await
        .expect("off");
    tagged("t2")
        .await
        .expect("tagged create with the check off");

    // On for maker alone (its own value over the account's off).
    admin
        .put_account_setting()
        .name(name("tagResourceAuthorization"))
        .value("on")
        .principal_arn("arn:aws:iam::000000000000:user/maker")
        .send()
        .await
        .expect("on for maker");
    expect_code(
        tagged("t3").await,
        "AccessDeniedException",
        "maker's own on",
    );

    // Granted, for cluster creates only (the ecs:CreateAction condition).
    aws.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "maker",
        "--policy-name",
        "tag-on-create",
        "--policy-document",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:TagResource", "Resource": "*",
             "Condition": {"StringEquals": {"ecs:CreateAction": "CreateCluster"}}}
        ]})
        .to_string(),
    ])
    .await;
    tagged("t4").await.expect("granted");
    let tags = admin
        .list_tags_for_resource()
        .resource_arn("arn:aws:ecs:us-east-1:000000000000:cluster/t4")
        .send()
        .await
        .expect("tags");
    assert_eq!(tags.tags().len(), 1);

    // The account-setting condition key scopes who may change which setting.
    let tuner_keys = user_with_policy(
        &aws,
        "tuner",
        json!([{"Effect": "Allow", "Action": "ecs:PutAccountSetting", "Resource": "*",
                "Condition": {"StringEquals": {"ecs:account-setting": "containerInsights"}}}]),
    )
    .await;
    let tuner = client_for(e, &tuner_keys).await;
    tuner
        .put_account_setting()
        .name(name("containerInsights"))
        .value("enabled")
        .send()
        .await
        .expect("its own containerInsights");
    expect_code(
        tuner
            .put_account_setting()
            .name(name("tagResourceAuthorization"))
            .value("off")
            .send()
            .await,
        "AccessDeniedException",
        "another setting",
    );
    // Naming another principal (the root's setting is the account default) takes the
    // account-level right too: the tuner may not change anyone's containerInsights but its own.
    for other in [
        "arn:aws:iam::000000000000:root",
        "arn:aws:iam::000000000000:user/someone-else",
    ] {
        expect_code(
            tuner
                .put_account_setting()
                .name(name("containerInsights"))
                .value("disabled")
                .principal_arn(other)
                .send()
                .await,
            "AccessDeniedException",
            "another principal's setting",
        );
    }
    tuner
        .put_account_setting()
        .name(name("containerInsights"))
        .value("disabled")
        .principal_arn("arn:aws:iam::000000000000:user/tuner")
        .send()
        .await
        .expect("its own setting, named");
    // CloudWatch Logs has the same rule for a log group created with tags, whatever the
    // setting: logs:TagResource (or logs:TagLogGroup) on the group besides CreateLogGroup.
    let logger_keys = user_with_policy(
        &aws,
        "logger",
        json!([{"Effect": "Allow", "Action": "logs:CreateLogGroup", "Resource": "*"}]),
    )
    .await;
    let logger = Aws::at(e, &logger_keys);
    let denied = logger
        .run(&[
            "logs",
            "create-log-group",
            "--log-group-name",
            "/t/tagged",
            "--tags",
            "a=b",
        ])
        .await;
    assert!(!denied.status.success(), "{}", denied.stdout);
    assert!(
        denied.stderr.contains("AccessDeniedException")
            && denied.stderr.contains("logs:TagResource"),
        "{}",
        denied.stderr
    );
    logger
        .ok(&["logs", "create-log-group", "--log-group-name", "/t/plain"])
        .await;

    // The account-level right is checked with the setting's name, so a policy scoped by
    // `ecs:account-setting` decides it too.
    let insights_keys = user_with_policy(
        &aws,
        "insights-admin",
        json!([{"Effect": "Allow",
                "Action": ["ecs:PutAccountSetting", "ecs:PutAccountSettingDefault"],
                "Resource": "*",
                "Condition": {"StringEquals": {"ecs:account-setting": "containerInsights"}}}]),
    )
    .await;
    let insights_admin = client_for(e, &insights_keys).await;
    insights_admin
        .put_account_setting()
        .name(name("containerInsights"))
        .value("disabled")
        .principal_arn("arn:aws:iam::000000000000:root")
        .send()
        .await
        .expect("the account default of the setting its policy names");

    // The administrator may name anyone.
    admin
        .put_account_setting()
        .name(name("containerInsights"))
        .value("enabled")
        .principal_arn("arn:aws:iam::000000000000:user/someone-else")
        .send()
        .await
        .expect("the administrator names another principal");
}
