//! The ELBv2 API end to end against a real `gantry server` (no load balancer data plane
//! installed): the lifecycle of load balancers, target groups, targets, listeners and rules
//! through the AWS CLI (`aws elbv2 ...`) and through boto3 (a script that calls every
//! operation, so botocore parses every XML response), ELBv2's error codes, paging, tags,
//! attribute round-trips, rule priorities, target groups refused deletion while in use,
//! instance targets resolved to Gantry container instances (`gantry dev`), and
//! authorisation of `elasticloadbalancing:*` actions.

mod common;

use common::*;
use serde_json::{json, Value};

/// `aws elbv2 <args>`, required to fail with ELBv2 error `code`; the CLI's message.
async fn fails(aws: &Aws, args: &[&str], code: &str) -> String {
    let mut full = vec!["elbv2"];
    full.extend_from_slice(args);
    let out = aws.run(&full).await;
    assert!(
        !out.status.success(),
        "`aws {}` succeeded, expected {code}:\n{}",
        full.join(" "),
        out.stdout
    );
    assert!(
        out.stderr.contains(&format!("({code})")),
        "`aws {}`: expected {code}, got:\n{}",
        full.join(" "),
        out.stderr
    );
    out.stderr
}

async fn elb(aws: &Aws, args: &[&str]) -> Value {
    let mut full = vec!["elbv2"];
    full.extend_from_slice(args);
    aws.ok(&full).await
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn attribute<'a>(attrs: &'a Value, key: &str) -> &'a str {
    attrs["Attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["Key"] == key))
        .and_then(|x| x["Value"].as_str())
        .unwrap_or_else(|| panic!("no attribute {key} in {attrs:#}"))
}

#[tokio::test]
async fn cli_lifecycle_errors_paging_and_tags() {
    let split = Split::start(0).await;
    let aws = Aws::at(&split.endpoint, &split.keys);
    // The server's data plane binds listeners' ports on loopback: free ones.
    let (port_a, port_b) = (free_port(), free_port());
    let (pa, pb) = (port_a.to_string(), port_b.to_string());

    // --- Load balancer ---
    let created = elb(
        &aws,
        &[
            "create-load-balancer",
            "--name",
            "web",
            "--subnets",
            "subnet-1",
            "subnet-2",
            "--security-groups",
            "sg-1",
            "--tags",
            "Key=env,Value=test",
        ],
    )
    .await;
    let lb = &created["LoadBalancers"][0];
    let lb_arn = s(&lb["LoadBalancerArn"]);
    let lb_id = lb_arn.rsplit('/').next().unwrap().to_string();
    assert!(
        lb_arn.starts_with(
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/"
        ),
        "{lb_arn}"
    );
    assert_eq!(lb_id.len(), 16, "{lb_arn}");
    assert_eq!(
        lb["DNSName"],
        format!("web-{lb_id}.us-east-1.elb.localhost")
    );
    assert_eq!(lb["Scheme"], "internet-facing");
    assert_eq!(lb["State"]["Code"], "active");
    assert_eq!(lb["Type"], "application");
    assert_eq!(lb["IpAddressType"], "ipv4");
    assert_eq!(lb["SecurityGroups"], json!(["sg-1"]));
    assert_eq!(lb["AvailabilityZones"][1]["SubnetId"], "subnet-2");
    assert_eq!(lb["AvailabilityZones"][1]["ZoneName"], "us-east-1b");
    // The same settings again return the same load balancer; other settings are refused.
    let again = elb(
        &aws,
        &[
            "create-load-balancer",
            "--name",
            "web",
            "--subnets",
            "subnet-1",
            "subnet-2",
            "--security-groups",
            "sg-1",
        ],
    )
    .await;
    assert_eq!(
        again["LoadBalancers"][0]["LoadBalancerArn"],
        lb_arn.as_str()
    );
    fails(
        &aws,
        &[
            "create-load-balancer",
            "--name",
            "web",
            "--scheme",
            "internal",
        ],
        "DuplicateLoadBalancerName",
    )
    .await;
    let msg = fails(
        &aws,
        &["create-load-balancer", "--name", "nlb", "--type", "network"],
        "ValidationError",
    )
    .await;
    assert!(msg.contains("application load balancers only"), "{msg}");
    fails(
        &aws,
        &["create-load-balancer", "--name=-bad"],
        "ValidationError",
    )
    .await;
    fails(
        &aws,
        &["create-load-balancer", "--name", "internal-x"],
        "ValidationError",
    )
    .await;
    fails(
        &aws,
        &["create-load-balancer", "--name", &"x".repeat(33)],
        "ValidationError",
    )
    .await;

    // Attributes: defaults, a round trip, bad keys and values.
    let attrs = elb(
        &aws,
        &[
            "describe-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
        ],
    )
    .await;
    assert_eq!(attribute(&attrs, "idle_timeout.timeout_seconds"), "60");
    assert_eq!(attribute(&attrs, "routing.http2.enabled"), "true");
    assert_eq!(
        attribute(&attrs, "routing.http.desync_mitigation_mode"),
        "defensive"
    );
    assert_eq!(
        attribute(&attrs, "routing.http.xff_header_processing.mode"),
        "append"
    );
    assert_eq!(attribute(&attrs, "client_keep_alive.seconds"), "3600");
    assert_eq!(attribute(&attrs, "deletion_protection.enabled"), "false");
    let modified = elb(
        &aws,
        &[
            "modify-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
            "--attributes",
            "Key=idle_timeout.timeout_seconds,Value=120",
            "Key=deletion_protection.enabled,Value=true",
        ],
    )
    .await;
    assert_eq!(attribute(&modified, "idle_timeout.timeout_seconds"), "120");
    let attrs = elb(
        &aws,
        &[
            "describe-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
        ],
    )
    .await;
    assert_eq!(attribute(&attrs, "idle_timeout.timeout_seconds"), "120");
    fails(
        &aws,
        &[
            "modify-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
            "--attributes",
            "Key=no.such.key,Value=1",
        ],
        "ValidationError",
    )
    .await;
    fails(
        &aws,
        &[
            "modify-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
            "--attributes",
            "Key=idle_timeout.timeout_seconds,Value=0",
        ],
        "ValidationError",
    )
    .await;

    // --- Target group ---
    let tg = elb(
        &aws,
        &[
            "create-target-group",
            "--name",
            "api",
            "--protocol",
            "HTTP",
            "--port",
            "8080",
            "--vpc-id",
            "vpc-1",
            "--target-type",
            "ip",
        ],
    )
    .await;
    let tg0 = &tg["TargetGroups"][0];
    let tg_arn = s(&tg0["TargetGroupArn"]);
    assert!(tg_arn.contains(":targetgroup/api/"), "{tg_arn}");
    assert_eq!(tg0["HealthCheckProtocol"], "HTTP");
    assert_eq!(tg0["HealthCheckPort"], "traffic-port");
    assert_eq!(tg0["HealthCheckPath"], "/");
    assert_eq!(tg0["HealthCheckIntervalSeconds"], 30);
    assert_eq!(tg0["HealthCheckTimeoutSeconds"], 5);
    assert_eq!(tg0["HealthyThresholdCount"], 5);
    assert_eq!(tg0["UnhealthyThresholdCount"], 2);
    assert_eq!(tg0["Matcher"]["HttpCode"], "200");
    assert_eq!(tg0["HealthCheckEnabled"], true);
    assert_eq!(tg0["ProtocolVersion"], "HTTP1");
    assert_eq!(tg0["TargetType"], "ip");
    assert_eq!(tg0["LoadBalancerArns"], json!([]));
    fails(
        &aws,
        &[
            "create-target-group",
            "--name",
            "api",
            "--protocol",
            "HTTP",
            "--port",
            "9090",
            "--vpc-id",
            "vpc-1",
        ],
        "DuplicateTargetGroupName",
    )
    .await;
    fails(
        &aws,
        &[
            "create-target-group",
            "--name",
            "g",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--protocol-version",
            "GRPC",
        ],
        "ValidationError",
    )
    .await;
    fails(
        &aws,
        &[
            "create-target-group",
            "--name",
            "l",
            "--target-type",
            "lambda",
        ],
        "ValidationError",
    )
    .await;
    fails(
        &aws,
        &[
            "create-target-group",
            "--name",
            "t",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--health-check-timeout-seconds",
            "30",
            "--health-check-interval-seconds",
            "10",
        ],
        "ValidationError",
    )
    .await;
    fails(
        &aws,
        &[
            "create-target-group",
            "--name",
            "t",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--healthy-threshold-count",
            "11",
        ],
        "ValidationError",
    )
    .await;
    let modified = elb(
        &aws,
        &[
            "modify-target-group",
            "--target-group-arn",
            &tg_arn,
            "--health-check-path",
            "/healthz",
            "--matcher",
            "HttpCode=200-299",
            "--health-check-interval-seconds",
            "10",
        ],
    )
    .await;
    assert_eq!(modified["TargetGroups"][0]["HealthCheckPath"], "/healthz");
    assert_eq!(
        modified["TargetGroups"][0]["Matcher"]["HttpCode"],
        "200-299"
    );
    let tga = elb(
        &aws,
        &[
            "describe-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
        ],
    )
    .await;
    assert_eq!(
        attribute(&tga, "deregistration_delay.timeout_seconds"),
        "300"
    );
    assert_eq!(attribute(&tga, "stickiness.enabled"), "false");
    assert_eq!(attribute(&tga, "stickiness.type"), "lb_cookie");
    assert_eq!(
        attribute(&tga, "stickiness.lb_cookie.duration_seconds"),
        "86400"
    );
    assert_eq!(attribute(&tga, "slow_start.duration_seconds"), "0");
    assert_eq!(
        attribute(&tga, "load_balancing.algorithm.type"),
        "round_robin"
    );
    assert_eq!(
        attribute(&tga, "load_balancing.cross_zone.enabled"),
        "use_load_balancer_configuration"
    );
    let tga = elb(
        &aws,
        &[
            "modify-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=5",
            "Key=load_balancing.algorithm.type,Value=least_outstanding_requests",
        ],
    )
    .await;
    assert_eq!(attribute(&tga, "deregistration_delay.timeout_seconds"), "5");
    fails(
        &aws,
        &[
            "modify-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
            "--attributes",
            "Key=slow_start.duration_seconds,Value=10",
        ],
        "ValidationError",
    )
    .await;

    // Targets: IPs only in an ip group; twice is once.
    elb(
        &aws,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            "Id=10.0.0.5",
            "Id=10.0.0.6,Port=9000",
            "Id=10.0.0.5",
        ],
    )
    .await;
    fails(
        &aws,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            "Id=gantry-000000000000",
        ],
        "InvalidTarget",
    )
    .await;
    let health = elb(
        &aws,
        &["describe-target-health", "--target-group-arn", &tg_arn],
    )
    .await;
    let rows = health["TargetHealthDescriptions"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{health:#}");
    assert_eq!(rows[0]["Target"], json!({"Id": "10.0.0.5", "Port": 8080}));
    assert_eq!(rows[0]["HealthCheckPort"], "8080");
    assert_eq!(rows[0]["TargetHealth"]["State"], "unused");
    assert_eq!(rows[0]["TargetHealth"]["Reason"], "Target.NotInUse");
    let unknown = elb(
        &aws,
        &[
            "describe-target-health",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            "Id=10.9.9.9",
        ],
    )
    .await;
    assert_eq!(
        unknown["TargetHealthDescriptions"][0]["TargetHealth"]["Reason"],
        "Target.NotRegistered"
    );

    // --- Listener ---
    let listener = elb(
        &aws,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &pa,
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ],
    )
    .await;
    let l0 = &listener["Listeners"][0];
    let listener_arn = s(&l0["ListenerArn"]);
    assert!(
        listener_arn.contains(&format!(":listener/app/web/{lb_id}/")),
        "{listener_arn}"
    );
    assert_eq!(l0["Port"], port_a);
    assert_eq!(l0["Protocol"], "HTTP");
    assert_eq!(l0["DefaultActions"][0]["Type"], "forward");
    assert_eq!(l0["DefaultActions"][0]["TargetGroupArn"], tg_arn.as_str());
    assert_eq!(
        l0["DefaultActions"][0]["ForwardConfig"]["TargetGroups"][0]["Weight"],
        1
    );
    // Now the group is in use: its targets are initial, the group names its load balancer.
    let health = elb(
        &aws,
        &["describe-target-health", "--target-group-arn", &tg_arn],
    )
    .await;
    assert_eq!(
        health["TargetHealthDescriptions"][0]["TargetHealth"]["State"],
        "initial"
    );
    // The data plane starts checking at once: either initial reason may show.
    let reason = s(&health["TargetHealthDescriptions"][0]["TargetHealth"]["Reason"]);
    assert!(
        ["Elb.RegistrationInProgress", "Elb.InitialHealthChecking"].contains(&reason.as_str()),
        "{reason}"
    );
    let groups = elb(
        &aws,
        &["describe-target-groups", "--load-balancer-arn", &lb_arn],
    )
    .await;
    assert_eq!(
        groups["TargetGroups"][0]["LoadBalancerArns"],
        json!([lb_arn.clone()])
    );
    fails(
        &aws,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--port",
            &pa,
            "--default-actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=404}",
        ],
        "DuplicateListener",
    )
    .await;
    let msg = fails(
        &aws,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTPS",
            "--port",
            "443",
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ],
        "UnsupportedProtocol",
    )
    .await;
    assert!(msg.contains("certificates"), "{msg}");
    fails(
        &aws,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--port",
            &pb,
            "--default-actions",
            &format!(
                "Type=forward,TargetGroupArn={}",
                tg_arn.replace("/api/", "/nope/")
            ),
        ],
        "TargetGroupNotFound",
    )
    .await;
    fails(
        &aws,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--port",
            &pb,
            "--default-actions",
            "Type=authenticate-oidc",
        ],
        "InvalidLoadBalancerAction",
    )
    .await;
    // Another load balancer cannot take the same port: all share the host's address.
    let other = elb(&aws, &["create-load-balancer", "--name", "other"]).await;
    let other_arn = s(&other["LoadBalancers"][0]["LoadBalancerArn"]);
    let msg = fails(
        &aws,
        &[
            "create-listener",
            "--load-balancer-arn",
            &other_arn,
            "--port",
            &pa,
            "--default-actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=503}",
        ],
        "DuplicateListener",
    )
    .await;
    assert!(msg.contains(&listener_arn), "{msg}");
    let described = elb(
        &aws,
        &["describe-listeners", "--load-balancer-arn", &lb_arn],
    )
    .await;
    assert_eq!(described["Listeners"].as_array().unwrap().len(), 1);
    let la = elb(
        &aws,
        &[
            "describe-listener-attributes",
            "--listener-arn",
            &listener_arn,
        ],
    )
    .await;
    assert_eq!(
        attribute(&la, "routing.http.response.server.enabled"),
        "true"
    );

    // --- Rules ---
    let rule1 = elb(
        &aws,
        &[
            "create-rule",
            "--listener-arn",
            &listener_arn,
            "--priority",
            "10",
            "--conditions",
            "Field=path-pattern,Values=/api/*",
            "--actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ],
    )
    .await;
    let r1 = &rule1["Rules"][0];
    let rule1_arn = s(&r1["RuleArn"]);
    assert!(rule1_arn.contains(":listener-rule/app/web/"), "{rule1_arn}");
    assert_eq!(r1["Priority"], "10");
    assert_eq!(r1["IsDefault"], false);
    assert_eq!(r1["Conditions"][0]["Field"], "path-pattern");
    assert_eq!(r1["Conditions"][0]["Values"], json!(["/api/*"]));
    assert_eq!(
        r1["Conditions"][0]["PathPatternConfig"]["Values"],
        json!(["/api/*"])
    );
    let conditions = aws.file(
        "conditions.json",
        &json!([
            {"Field": "host-header", "HostHeaderConfig": {"Values": ["*.example.com"]}},
            {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["prod"]}},
            {"Field": "query-string", "QueryStringConfig": {"Values": [{"Key": "v", "Value": "2"}]}}
        ]),
    );
    let rule2 = elb(
        &aws,
        &[
            "create-rule",
            "--listener-arn",
            &listener_arn,
            "--priority",
            "20",
            "--conditions",
            &conditions,
            "--actions",
            "Type=redirect,RedirectConfig={Protocol=HTTPS,Port=443,StatusCode=HTTP_301}",
        ],
    )
    .await;
    let r2 = &rule2["Rules"][0];
    let rule2_arn = s(&r2["RuleArn"]);
    assert!(r2["Conditions"][0].get("Values").is_none(), "{r2:#}");
    assert_eq!(
        r2["Conditions"][1]["HttpHeaderConfig"]["HttpHeaderName"],
        "X-Env"
    );
    assert_eq!(
        r2["Conditions"][2]["QueryStringConfig"]["Values"][0],
        json!({"Key": "v", "Value": "2"})
    );
    assert_eq!(r2["Actions"][0]["RedirectConfig"]["Host"], "#{host}");
    assert_eq!(r2["Actions"][0]["RedirectConfig"]["Path"], "/#{path}");
    fails(
        &aws,
        &[
            "create-rule",
            "--listener-arn",
            &listener_arn,
            "--priority",
            "10",
            "--conditions",
            "Field=path-pattern,Values=/x",
            "--actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=200}",
        ],
        "PriorityInUse",
    )
    .await;
    fails(
        &aws,
        &[
            "create-rule",
            "--listener-arn",
            &listener_arn,
            "--priority",
            "50001",
            "--conditions",
            "Field=path-pattern,Values=/x",
            "--actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=200}",
        ],
        "ValidationError",
    )
    .await;
    fails(
        &aws,
        &[
            "create-rule",
            "--listener-arn",
            &listener_arn,
            "--priority",
            "30",
            "--conditions",
            "Field=source-ip,Values=10.0.0.0/99",
            "--actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=200}",
        ],
        "ValidationError",
    )
    .await;
    fails(
        &aws,
        &[
            "create-rule",
            "--listener-arn",
            &listener_arn,
            "--priority",
            "30",
            "--conditions",
            "Field=path-pattern,Values=/x",
            "--actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=302}",
        ],
        "ValidationError",
    )
    .await;
    // Swap the priorities; the same priority twice is refused and changes nothing.
    let swapped = elb(
        &aws,
        &[
            "set-rule-priorities",
            "--rule-priorities",
            &format!("RuleArn={rule1_arn},Priority=20"),
            &format!("RuleArn={rule2_arn},Priority=10"),
        ],
    )
    .await;
    assert_eq!(swapped["Rules"].as_array().unwrap().len(), 2);
    fails(
        &aws,
        &[
            "set-rule-priorities",
            "--rule-priorities",
            &format!("RuleArn={rule1_arn},Priority=10"),
        ],
        "PriorityInUse",
    )
    .await;
    let rules = elb(&aws, &["describe-rules", "--listener-arn", &listener_arn]).await;
    let rules = rules["Rules"].as_array().unwrap().clone();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0]["RuleArn"], rule2_arn.as_str());
    assert_eq!(rules[0]["Priority"], "10");
    assert_eq!(rules[1]["RuleArn"], rule1_arn.as_str());
    assert_eq!(rules[2]["Priority"], "default");
    assert_eq!(rules[2]["IsDefault"], true);
    assert_eq!(rules[2]["Actions"][0]["TargetGroupArn"], tg_arn.as_str());
    let default_rule_arn = s(&rules[2]["RuleArn"]);
    fails(
        &aws,
        &["delete-rule", "--rule-arn", &default_rule_arn],
        "OperationNotPermitted",
    )
    .await;
    let modified = elb(
        &aws,
        &["modify-rule", "--rule-arn", &rule1_arn, "--actions", "Type=fixed-response,FixedResponseConfig={StatusCode=503,ContentType=text/plain,MessageBody=down}"],
    )
    .await;
    assert_eq!(
        modified["Rules"][0]["Actions"][0]["FixedResponseConfig"]["MessageBody"],
        "down"
    );
    assert_eq!(
        modified["Rules"][0]["Conditions"][0]["Field"],
        "path-pattern"
    );

    // The group is forwarded to by the default rule: it cannot be deleted.
    let msg = fails(
        &aws,
        &["delete-target-group", "--target-group-arn", &tg_arn],
        "ResourceInUse",
    )
    .await;
    assert!(msg.contains(&lb_arn), "{msg}");

    // --- Tags ---
    elb(
        &aws,
        &[
            "add-tags",
            "--resource-arns",
            &lb_arn,
            &tg_arn,
            &listener_arn,
            &rule1_arn,
            "--tags",
            "Key=team,Value=core",
            "Key=env,Value=prod",
        ],
    )
    .await;
    elb(
        &aws,
        &[
            "remove-tags",
            "--resource-arns",
            &tg_arn,
            "--tag-keys",
            "env",
        ],
    )
    .await;
    let tags = elb(
        &aws,
        &[
            "describe-tags",
            "--resource-arns",
            &lb_arn,
            &tg_arn,
            &listener_arn,
            &rule1_arn,
        ],
    )
    .await;
    let td = tags["TagDescriptions"].as_array().unwrap();
    assert_eq!(td.len(), 4);
    assert_eq!(td[0]["ResourceArn"], lb_arn.as_str());
    assert_eq!(
        td[0]["Tags"],
        json!([{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "core"}])
    );
    assert_eq!(td[1]["Tags"], json!([{"Key": "team", "Value": "core"}]));
    assert_eq!(td[3]["Tags"].as_array().unwrap().len(), 2);
    let fifty: Vec<String> = (0..50).map(|i| format!("Key=k{i},Value=v")).collect();
    let mut args = vec!["add-tags", "--resource-arns", &tg_arn, "--tags"];
    args.extend(fifty.iter().map(String::as_str));
    fails(&aws, &args, "TooManyTags").await;
    fails(
        &aws,
        &[
            "add-tags",
            "--resource-arns",
            &tg_arn,
            "--tags",
            "Key=a,Value=1",
            "Key=a,Value=2",
        ],
        "DuplicateTagKeys",
    )
    .await;
    fails(
        &aws,
        &[
            "add-tags",
            "--resource-arns",
            &tg_arn,
            "--tags",
            "Key=aws:x,Value=1",
        ],
        "ValidationError",
    )
    .await;

    // --- Paging ---
    for name in ["page-a", "page-b", "page-c"] {
        elb(&aws, &["create-load-balancer", "--name", name]).await;
    }
    // The CLI's --page-size is ELBv2's own PageSize here (the CLI then stops paginating):
    // walk the markers by hand.
    let mut names: Vec<String> = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["describe-load-balancers", "--page-size", "2"];
        if let Some(m) = &marker {
            args.extend(["--marker", m.as_str()]);
        }
        let page = elb(&aws, &args).await;
        pages += 1;
        let items = page["LoadBalancers"].as_array().unwrap();
        assert!(items.len() <= 2, "{page:#}");
        names.extend(items.iter().map(|l| s(&l["LoadBalancerName"])));
        match page.get("NextMarker") {
            Some(m) => marker = Some(s(m)),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["other", "page-a", "page-b", "page-c", "web"]);
    // The CLI's own paging: --max-items truncates, --starting-token resumes.
    let first = elb(&aws, &["describe-load-balancers", "--max-items", "2"]).await;
    assert_eq!(first["LoadBalancers"].as_array().unwrap().len(), 2);
    let token = s(&first["NextToken"]);
    let rest = elb(
        &aws,
        &["describe-load-balancers", "--starting-token", &token],
    )
    .await;
    assert_eq!(rest["LoadBalancers"].as_array().unwrap().len(), 3);
    let by_name = elb(
        &aws,
        &["describe-load-balancers", "--names", "page-b", "web"],
    )
    .await;
    assert_eq!(
        by_name["LoadBalancers"][1]["LoadBalancerArn"],
        lb_arn.as_str()
    );
    fails(
        &aws,
        &["describe-load-balancers", "--names", "nope"],
        "LoadBalancerNotFound",
    )
    .await;
    fails(
        &aws,
        &["describe-load-balancers", "--page-size", "401"],
        "ValidationError",
    )
    .await;

    // --- Not found and malformed ARNs ---
    let missing_lb = lb_arn.replace(&lb_id, "0000000000000000");
    fails(
        &aws,
        &[
            "describe-load-balancers",
            "--load-balancer-arns",
            &missing_lb,
        ],
        "LoadBalancerNotFound",
    )
    .await;
    fails(
        &aws,
        &[
            "describe-listeners",
            "--listener-arns",
            &listener_arn.replace("/web/", "/gone/"),
        ],
        "ListenerNotFound",
    )
    .await;
    fails(
        &aws,
        &[
            "describe-rules",
            "--rule-arns",
            &rule1_arn.replace("/web/", "/gone/"),
        ],
        "RuleNotFound",
    )
    .await;
    fails(
        &aws,
        &["describe-target-groups", "--names", "nope"],
        "TargetGroupNotFound",
    )
    .await;
    fails(
        &aws,
        &["describe-target-health", "--target-group-arn", "not-an-arn"],
        "ValidationError",
    )
    .await;
    fails(&aws, &["describe-listeners"], "ValidationError").await;

    // --- Deletion ---
    let msg = fails(
        &aws,
        &["delete-load-balancer", "--load-balancer-arn", &lb_arn],
        "OperationNotPermitted",
    )
    .await;
    assert!(msg.contains("deletion protection"), "{msg}");
    elb(
        &aws,
        &[
            "modify-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
            "--attributes",
            "Key=deletion_protection.enabled,Value=false",
        ],
    )
    .await;
    elb(&aws, &["delete-rule", "--rule-arn", &rule2_arn]).await;
    fails(
        &aws,
        &["delete-rule", "--rule-arn", &rule2_arn],
        "RuleNotFound",
    )
    .await;
    elb(
        &aws,
        &["delete-load-balancer", "--load-balancer-arn", &lb_arn],
    )
    .await;
    // Its listeners and rules went with it; deleting it again succeeds, as on AWS.
    fails(
        &aws,
        &["describe-listeners", "--listener-arns", &listener_arn],
        "ListenerNotFound",
    )
    .await;
    fails(
        &aws,
        &["describe-rules", "--rule-arns", &rule1_arn],
        "RuleNotFound",
    )
    .await;
    elb(
        &aws,
        &["delete-load-balancer", "--load-balancer-arn", &lb_arn],
    )
    .await;
    // Now free, the group can go, and the port can be used by another load balancer.
    let groups = elb(
        &aws,
        &["describe-target-groups", "--target-group-arns", &tg_arn],
    )
    .await;
    assert_eq!(groups["TargetGroups"][0]["LoadBalancerArns"], json!([]));
    elb(
        &aws,
        &["delete-target-group", "--target-group-arn", &tg_arn],
    )
    .await;
    fails(
        &aws,
        &["describe-target-groups", "--target-group-arns", &tg_arn],
        "TargetGroupNotFound",
    )
    .await;
    elb(
        &aws,
        &[
            "create-listener",
            "--load-balancer-arn",
            &other_arn,
            "--port",
            &pa,
            "--default-actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=503}",
        ],
    )
    .await;
}

/// Every operation through boto3: botocore parses each XML response against the model, and
/// the script checks what it reads.
const BOTO3_SCRIPT: &str = r#"
import boto3, json, os
elb = boto3.session.Session(region_name="us-east-1", aws_access_key_id=os.environ["ID"],
    aws_secret_access_key=os.environ["SECRET"]).client("elbv2", endpoint_url=os.environ["EP"])
out = {}
def code(call, **kw):
    try:
        call(**kw)
    except elb.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return "no error"

lb = elb.create_load_balancer(Name="b3", Subnets=["subnet-a", "subnet-b"], Scheme="internal",
    Tags=[{"Key": "k", "Value": "v"}])["LoadBalancers"][0]
lb_arn = lb["LoadBalancerArn"]
out["dns_internal"] = lb["DNSName"].startswith("internal-b3-")
out["created_time_is_datetime"] = hasattr(lb["CreatedTime"], "year")
out["lbs"] = len(elb.describe_load_balancers(LoadBalancerArns=[lb_arn])["LoadBalancers"])
attrs = elb.modify_load_balancer_attributes(LoadBalancerArn=lb_arn,
    Attributes=[{"Key": "routing.http2.enabled", "Value": "false"}])["Attributes"]
out["http2"] = {a["Key"]: a["Value"] for a in attrs}["routing.http2.enabled"]
out["lb_attrs"] = len(elb.describe_load_balancer_attributes(LoadBalancerArn=lb_arn)["Attributes"]) >= 20
out["sgs"] = elb.set_security_groups(LoadBalancerArn=lb_arn, SecurityGroups=["sg-9"])["SecurityGroupIds"]
out["zones"] = [z["SubnetId"] for z in elb.set_subnets(LoadBalancerArn=lb_arn, Subnets=["subnet-c"])["AvailabilityZones"]]
out["ip_type"] = elb.set_ip_address_type(LoadBalancerArn=lb_arn, IpAddressType="ipv4")["IpAddressType"]
elb.describe_capacity_reservation(LoadBalancerArn=lb_arn)
out["limits"] = len(elb.describe_account_limits()["Limits"]) > 0
out["trust_stores"] = elb.describe_trust_stores()["TrustStores"]
out["ssl_policies"] = elb.describe_ssl_policies()["SslPolicies"]

tg = elb.create_target_group(Name="b3-tg", Protocol="HTTP", Port=80, VpcId="vpc-1", TargetType="ip",
    ProtocolVersion="HTTP2", HealthCheckPath="/up", Matcher={"HttpCode": "200,204"})["TargetGroups"][0]
tg_arn = tg["TargetGroupArn"]
tg2_arn = elb.create_target_group(Name="b3-tg2", Protocol="HTTP", Port=81, VpcId="vpc-1", TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
out["tg_protocol_version"] = tg["ProtocolVersion"]
out["tg_by_name"] = elb.describe_target_groups(Names=["b3-tg"])["TargetGroups"][0]["TargetGroupArn"] == tg_arn
elb.modify_target_group(TargetGroupArn=tg_arn, HealthyThresholdCount=3)
elb.modify_target_group_attributes(TargetGroupArn=tg_arn, Attributes=[
    {"Key": "stickiness.enabled", "Value": "true"}, {"Key": "stickiness.type", "Value": "lb_cookie"}])
tga = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(TargetGroupArn=tg_arn)["Attributes"]}
out["stickiness"] = tga["stickiness.enabled"]
elb.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": "10.1.0.1", "Port": 8080}, {"Id": "10.1.0.2"}])
elb.deregister_targets(TargetGroupArn=tg_arn, Targets=[{"Id": "10.1.0.2"}])
th = elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
out["targets"] = [(t["Target"]["Id"], t["Target"]["Port"], t["TargetHealth"]["State"]) for t in th]

ln = elb.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=PORT_A,
    DefaultActions=[{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": tg_arn, "Weight": 3}, {"TargetGroupArn": tg2_arn, "Weight": 1}],
        "TargetGroupStickinessConfig": {"Enabled": True, "DurationSeconds": 60}}}])["Listeners"][0]
ln_arn = ln["ListenerArn"]
fc = ln["DefaultActions"][0]["ForwardConfig"]
out["weights"] = [g["Weight"] for g in fc["TargetGroups"]]
out["group_stickiness"] = fc["TargetGroupStickinessConfig"]
out["listeners"] = len(elb.describe_listeners(ListenerArns=[ln_arn])["Listeners"])
ln = elb.modify_listener(ListenerArn=ln_arn, Port=PORT_B)["Listeners"][0]
out["moved_port"] = ln["Port"]
elb.modify_listener_attributes(ListenerArn=ln_arn, Attributes=[
    {"Key": "routing.http.response.server.enabled", "Value": "false"}])
la = {a["Key"]: a["Value"] for a in elb.describe_listener_attributes(ListenerArn=ln_arn)["Attributes"]}
out["server_header"] = la["routing.http.response.server.enabled"]
out["certificates"] = elb.describe_listener_certificates(ListenerArn=ln_arn)["Certificates"]
th = elb.describe_target_health(TargetGroupArn=tg_arn, Targets=[{"Id": "10.1.0.1", "Port": 8080}])["TargetHealthDescriptions"]
out["in_use_state"] = th[0]["TargetHealth"]["State"]

rule = elb.create_rule(ListenerArn=ln_arn, Priority=5, Conditions=[
    {"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": ["GET", "HEAD"]}},
    {"Field": "source-ip", "SourceIpConfig": {"Values": ["10.0.0.0/8"]}}],
    Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200", "ContentType": "application/json", "MessageBody": "{}"}}],
    Tags=[{"Key": "r", "Value": "1"}])["Rules"][0]
rule_arn = rule["RuleArn"]
out["methods"] = rule["Conditions"][0]["HttpRequestMethodConfig"]["Values"]
rule = elb.modify_rule(RuleArn=rule_arn, Conditions=[{"Field": "host-header", "Values": ["a.example"]}])["Rules"][0]
out["modified_condition"] = rule["Conditions"][0]["HostHeaderConfig"]["Values"]
out["set_priorities"] = [r["Priority"] for r in elb.set_rule_priorities(RulePriorities=[{"RuleArn": rule_arn, "Priority": 7}])["Rules"]]
rules = elb.describe_rules(ListenerArn=ln_arn)["Rules"]
out["rules"] = [(r["Priority"], r["IsDefault"]) for r in rules]
page = elb.describe_rules(ListenerArn=ln_arn, PageSize=1)
out["rules_page"] = (len(page["Rules"]), "NextMarker" in page)
elb.add_tags(ResourceArns=[ln_arn, tg_arn], Tags=[{"Key": "x", "Value": "y"}])
elb.remove_tags(ResourceArns=[lb_arn], TagKeys=["k"])
td = elb.describe_tags(ResourceArns=[lb_arn, ln_arn, rule_arn])["TagDescriptions"]
out["tags"] = [[t["Key"] for t in d["Tags"]] for d in td]

out["errors"] = {
    "lb_not_found": code(elb.describe_load_balancers, Names=["none"]),
    "tg_in_use": code(elb.delete_target_group, TargetGroupArn=tg2_arn),
    "dup_listener": code(elb.create_listener, LoadBalancerArn=lb_arn, Protocol="HTTP", Port=PORT_B,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}]),
    "weight": code(elb.modify_listener, ListenerArn=ln_arn, DefaultActions=[{"Type": "forward",
        "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": tg_arn, "Weight": 1000}]}}]),
    "priority_in_use": code(elb.create_rule, ListenerArn=ln_arn, Priority=7,
        Conditions=[{"Field": "path-pattern", "Values": ["/"]}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}]),
}
# The modelled exception classes catch them too.
try:
    elb.describe_target_groups(Names=["none"])
except elb.exceptions.TargetGroupNotFoundException:
    out["modelled_exception"] = True

elb.delete_rule(RuleArn=rule_arn)
elb.delete_listener(ListenerArn=ln_arn)
elb.delete_target_group(TargetGroupArn=tg_arn)
elb.delete_target_group(TargetGroupArn=tg2_arn)
elb.delete_load_balancer(LoadBalancerArn=lb_arn)
out["left"] = (len(elb.describe_load_balancers()["LoadBalancers"]), len(elb.describe_target_groups()["TargetGroups"]))
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
async fn boto3_calls_every_operation() {
    let split = Split::start(0).await;
    let (port_a, port_b) = (free_port(), free_port());
    let script = BOTO3_SCRIPT
        .replace("PORT_A", &port_a.to_string())
        .replace("PORT_B", &port_b.to_string());
    let r = run_python(&split.endpoint, &split.keys, &script).await;
    assert_eq!(
        r,
        json!({
            "dns_internal": true,
            "created_time_is_datetime": true,
            "lbs": 1,
            "http2": "false",
            "lb_attrs": true,
            "sgs": ["sg-9"],
            "zones": ["subnet-c"],
            "ip_type": "ipv4",
            "limits": true,
            "trust_stores": [],
            "ssl_policies": [],
            "tg_protocol_version": "HTTP2",
            "tg_by_name": true,
            "stickiness": "true",
            "targets": [["10.1.0.1", 8080, "unused"]],
            "weights": [3, 1],
            "group_stickiness": {"Enabled": true, "DurationSeconds": 60},
            "listeners": 1,
            "moved_port": port_b,
            "server_header": "false",
            "certificates": [],
            "in_use_state": "initial",
            "methods": ["GET", "HEAD"],
            "modified_condition": ["a.example"],
            "set_priorities": ["7"],
            "rules": [["7", false], ["default", true]],
            "rules_page": [1, true],
            "tags": [[], ["x"], ["r"]],
            "errors": {
                "lb_not_found": "LoadBalancerNotFound",
                "tg_in_use": "ResourceInUse",
                "dup_listener": "DuplicateListener",
                "weight": "ValidationError",
                "priority_in_use": "PriorityInUse",
            },
            "modelled_exception": true,
            "left": [0, 0],
        })
    );
}

#[tokio::test]
async fn instance_targets_are_gantry_container_instances() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let instances = aws
        .ok(&[
            "ecs",
            "describe-container-instances",
            "--cluster",
            &dev.cluster,
            "--container-instances",
            &{
                let list = aws
                    .ok(&["ecs", "list-container-instances", "--cluster", &dev.cluster])
                    .await;
                s(&list["containerInstanceArns"][0])
            },
        ])
        .await;
    let ci = &instances["containerInstances"][0];
    let ci_arn = s(&ci["containerInstanceArn"]);
    let ec2_id = s(&ci["ec2InstanceId"]);
    assert!(ec2_id.starts_with("gantry-"), "{ec2_id}");
    let tg = elb(
        &aws,
        &[
            "create-target-group",
            "--name",
            "inst",
            "--protocol",
            "HTTP",
            "--port",
            "8080",
        ],
    )
    .await;
    let tg_arn = s(&tg["TargetGroups"][0]["TargetGroupArn"]);
    assert_eq!(tg["TargetGroups"][0]["TargetType"], "instance");
    // By ec2InstanceId, by ARN (the same instance: one target), by id with another port.
    elb(
        &aws,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            &format!("Id={ec2_id}"),
        ],
    )
    .await;
    elb(
        &aws,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            &format!("Id={ci_arn}"),
        ],
    )
    .await;
    let ci_id = ci_arn.rsplit('/').next().unwrap().to_string();
    elb(
        &aws,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            &format!("Id={ci_id},Port=9090"),
        ],
    )
    .await;
    let health = elb(
        &aws,
        &["describe-target-health", "--target-group-arn", &tg_arn],
    )
    .await;
    let targets: Vec<(String, i64)> = health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (s(&t["Target"]["Id"]), t["Target"]["Port"].as_i64().unwrap()))
        .collect();
    assert_eq!(targets, [(ec2_id.clone(), 8080), (ec2_id.clone(), 9090)]);
    let msg = fails(
        &aws,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            "Id=gantry-ffffffffffff",
        ],
        "InvalidTarget",
    )
    .await;
    assert!(msg.contains("gantry-ffffffffffff"), "{msg}");
    fails(
        &aws,
        &[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            "Id=10.0.0.1",
        ],
        "InvalidTarget",
    )
    .await;
    elb(
        &aws,
        &[
            "deregister-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            &format!("Id={ec2_id},Port=9090"),
        ],
    )
    .await;
    let health = elb(
        &aws,
        &["describe-target-health", "--target-group-arn", &tg_arn],
    )
    .await;
    assert_eq!(
        health["TargetHealthDescriptions"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn users_need_elasticloadbalancing_permissions() {
    let mut split = Split::start(0).await;
    let admin = Aws::at(&split.endpoint, &split.keys);
    admin
        .ok(&["iam", "create-user", "--user-name", "reader"])
        .await;
    let k = admin
        .ok(&["iam", "create-access-key", "--user-name", "reader"])
        .await;
    let keys = Keys {
        id: s(&k["AccessKey"]["AccessKeyId"]),
        secret: s(&k["AccessKey"]["SecretAccessKey"]),
        session_token: None,
    };
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "elasticloadbalancing:Describe*", "Resource": "*"}]});
    admin
        .ok(&[
            "iam",
            "put-user-policy",
            "--user-name",
            "reader",
            "--policy-name",
            "read",
            "--policy-document",
            &policy.to_string(),
        ])
        .await;
    let created = elb(&admin, &["create-load-balancer", "--name", "guarded"]).await;
    let lb_arn = s(&created["LoadBalancers"][0]["LoadBalancerArn"]);
    let reader = Aws::at(&split.endpoint, &keys);
    let seen = elb(&reader, &["describe-load-balancers"]).await;
    assert_eq!(seen["LoadBalancers"][0]["LoadBalancerArn"], lb_arn.as_str());
    let msg = fails(
        &reader,
        &["create-load-balancer", "--name", "mine"],
        "AccessDenied",
    )
    .await;
    assert!(
        msg.contains("elasticloadbalancing:CreateLoadBalancer"),
        "{msg}"
    );
    let msg = fails(
        &reader,
        &["delete-load-balancer", "--load-balancer-arn", &lb_arn],
        "AccessDenied",
    )
    .await;
    assert!(msg.contains(&lb_arn), "{msg}");
    // Nothing was deleted, and the records outlive a restart of the server.
    split.restart_server().await;
    let body = format!(
        "Action=DescribeLoadBalancers&Version=2015-12-01&LoadBalancerArns.member.1={}",
        lb_arn.replace(':', "%3A").replace('/', "%2F")
    );
    let after = eventually(
        std::time::Duration::from_secs(30),
        "the restarted server to describe the load balancer",
        || {
            let (endpoint, keys, body) = (split.endpoint.clone(), split.keys.clone(), body.clone());
            async move {
                let request = signed_request(
                    "POST",
                    &format!("{endpoint}/"),
                    &[("content-type", "application/x-www-form-urlencoded")],
                    body.into_bytes(),
                    Some(&keys),
                    "us-east-1",
                    "elasticloadbalancing",
                    gantry_auth::client::now(),
                );
                let response = request.send().await.ok()?;
                (response.status() == 200).then_some(())?;
                response.text().await.ok()
            }
        },
    )
    .await
    .expect("describe after restart");
    assert!(
        after.contains("<LoadBalancerName>guarded</LoadBalancerName>"),
        "{after}"
    );
}

/// A raw awsQuery call to ELBv2, signed for `elasticloadbalancing`: (status, body).
async fn raw_query(endpoint: &str, keys: &Keys, body: &str) -> (u16, String) {
    let req = signed_request(
        "POST",
        &format!("{endpoint}/"),
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body.as_bytes().to_vec(),
        Some(keys),
        "us-east-1",
        "elasticloadbalancing",
        gantry_auth::client::now(),
    );
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn malformed_requests_get_elbv2_xml_errors() {
    let split = Split::start(0).await;
    let (e, k) = (&split.endpoint, &split.keys);
    let error = |code: &str| {
        format!("<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>{code}</Code>")
    };
    let (status, body) = raw_query(e, k, "Action=DescribeNothing&Version=2015-12-01").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with(&error("InvalidAction")), "{body}");
    let (status, body) = raw_query(e, k, "Action=CreateLoadBalancer&Version=2015-12-01").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with(&error("ValidationError")), "{body}");
    assert!(body.contains("Value null at &apos;name&apos;"), "{body}");
    let (status, body) = raw_query(
        e,
        k,
        "Action=DescribeTargetGroups&Version=2015-12-01&TargetGroupArns.member.1=arn%3Aaws%3Aec2%3A%3A%3Ax",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a valid target group ARN"), "{body}");
    let (status, body) = raw_query(
        e,
        k,
        "Action=DescribeLoadBalancers&Version=2015-12-01&PageSize=abc",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with(&error("ValidationError")), "{body}");
    let (status, body) = raw_query(
        e,
        k,
        "Action=DescribeLoadBalancers&Version=2015-12-01&Marker=%zz",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("<Code>MalformedQueryString</Code>"), "{body}");
    // A well-formed empty answer keeps its Result element and request id.
    let (status, body) = raw_query(e, k, "Action=DescribeLoadBalancers&Version=2015-12-01").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(
            "<DescribeLoadBalancersResult><LoadBalancers/></DescribeLoadBalancersResult>"
        ),
        "{body}"
    );
    assert!(body.contains("<ResponseMetadata><RequestId>"), "{body}");
}
