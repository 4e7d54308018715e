//! The one place where each API operation names the IAM action it is and the resources (ARNs)
//! it touches. The dispatcher authorises every call with this before the handler runs, so a
//! new operation is authorised from its first line by adding one arm here: an operation with
//! no arm is unknown to the dispatcher too (tests check that every dispatched operation has
//! one).
//!
//! Resources follow the ECS and CloudWatch Logs service authorization reference where it
//! names one: RunTask acts on the task definition with the cluster as the `ecs:cluster`
//! condition key, StopTask and DescribeTasks on the tasks, service calls on the service,
//! list and register calls that AWS gives no resource to on `*`. Names the client sent are
//! turned into the ARNs a policy would name (a bare `default` cluster, a task id, a
//! `family:revision`).

use crate::auth::{Access, Caller, Owned, Principal};
use crate::plane::ControlPlane;
use crate::query_wire::QueryRequest;
use gantry_model::ArnScope;
use serde_json::Value;

fn s<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str)
}

fn strings<'a>(input: &'a Value, key: &str) -> Vec<&'a str> {
    input
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The cluster's name from a name or an ARN (`default` when absent, as ECS does).
fn cluster_name(input: &Value) -> String {
    let given = s(input, "cluster").unwrap_or("default");
    gantry_model::arn::cluster_name(given).to_string()
}

struct Names<'a> {
    scope: &'a ArnScope,
    cluster: String,
}

impl Names<'_> {
    fn cluster_arn(&self) -> String {
        self.scope.cluster(&self.cluster)
    }
    fn cluster_of(&self, given: &str) -> String {
        if given.starts_with("arn:") {
            given.to_string()
        } else {
            self.scope.cluster(given)
        }
    }
    /// The task's ARN as the handlers will find it: the call's cluster and the id (the last
    /// segment of whatever the client sent), rebuilt in canonical form so that a policy naming
    /// `task/<cluster>/<id>` matches however the client spelled it. Handlers look tasks up by
    /// the call's cluster and the id, and refuse an ARN naming another cluster.
    fn task(&self, given: &str) -> String {
        self.scope
            .task(&self.cluster, gantry_model::arn::last_segment(given.trim()))
    }
    fn instance(&self, given: &str) -> String {
        if given.starts_with("arn:") {
            given.to_string()
        } else {
            self.scope.container_instance(&self.cluster, given)
        }
    }
    /// A task set's ARN from its ARN or its id (`ecs-svc/…`) and the service the call names.
    fn task_set(&self, service: &str, given: &str) -> String {
        if given.starts_with("arn:") {
            given.to_string()
        } else {
            let service = gantry_model::arn::last_segment(service);
            self.scope.task_set(&self.cluster, service, given)
        }
    }
    fn service(&self, given: &str) -> String {
        if given.starts_with("arn:") {
            // The short form `service/<name>` names the cluster the call names.
            match gantry_model::arn::arn_resource(given)
                .and_then(|r| r.strip_prefix("service/"))
                .filter(|rest| !rest.contains('/'))
            {
                Some(name) => self.scope.service(&self.cluster, name),
                None => given.to_string(),
            }
        } else {
            self.scope.service(&self.cluster, given)
        }
    }
    /// `family`, `family:revision` or an ARN; a bare family stands for all its revisions.
    fn task_definition(&self, given: &str) -> String {
        if given.starts_with("arn:") {
            return given.to_string();
        }
        match given.split_once(':') {
            Some((family, rev)) => format!(
                "arn:aws:ecs:{}:{}:task-definition/{family}:{rev}",
                self.scope.region, self.scope.account
            ),
            None => format!(
                "arn:aws:ecs:{}:{}:task-definition/{given}:*",
                self.scope.region, self.scope.account
            ),
        }
    }
    fn log_group(&self, group: &str) -> String {
        self.scope.log_group(group)
    }
    fn log_stream(&self, group: &str, stream: &str) -> String {
        format!("{}:log-stream:{stream}", self.log_group(group))
    }
}

fn all() -> Vec<String> {
    vec!["*".to_string()]
}

/// Roles a task definition or its overrides hand to ECS.
fn roles(input: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for holder in [Some(input), input.get("overrides")].into_iter().flatten() {
        for key in ["taskRoleArn", "executionRoleArn"] {
            if let Some(r) = s(holder, key).filter(|r| !r.is_empty()) {
                out.push(r.to_string());
            }
        }
    }
    if let Some(r) = s(input, "role").filter(|r| r.starts_with("arn:")) {
        out.push(r.to_string());
    }
    out
}

/// What an ECS operation (`AmazonEC2ContainerServiceV20141113.<op>`) is and touches; `None`
/// for an operation Gantry does not serve.
pub fn ecs(scope: &ArnScope, op: &str, input: &Value) -> Option<Access> {
    let n = Names {
        scope,
        cluster: cluster_name(input),
    };
    let action = format!("ecs:{op}");
    let on_cluster = |action: String| {
        Access::new(action, vec![n.cluster_arn()]).condition("ecs:cluster", n.cluster_arn())
    };
    let access = match op {
        "CreateCluster" => {
            let name = s(input, "clusterName").unwrap_or("default");
            Access::new(action, vec![scope.cluster(name)])
        }
        "DescribeClusters" => {
            let given = strings(input, "clusters");
            let arns = if given.is_empty() {
                vec![scope.cluster("default")]
            } else {
                given.iter().map(|c| n.cluster_of(c)).collect()
            };
            Access::new(action, arns)
        }
        "ListClusters" => Access::new(action, all()),
        "UpdateCluster" | "UpdateClusterSettings" | "DeleteCluster" => Access::new(
            action,
            vec![n.cluster_of(s(input, "cluster").unwrap_or("default"))],
        ),

        "RegisterTaskDefinition" => Access::new(action, all()).passing(roles(input)),
        "DescribeTaskDefinition" | "ListTaskDefinitions" | "ListTaskDefinitionFamilies" => {
            Access::new(action, all())
        }
        "DeregisterTaskDefinition" => Access::new(action, all()),
        "DeleteTaskDefinitions" => Access::new(
            action,
            strings(input, "taskDefinitions")
                .iter()
                .map(|t| n.task_definition(t))
                .collect(),
        ),

        // A registration names the instance it re-registers, if any: an agent may only
        // re-register its own, and a join token may only register a new one.
        "RegisterContainerInstance" => on_cluster(action).owning([Owned::Instance(
            s(input, "containerInstanceArn").unwrap_or("").to_string(),
        )]),
        "ListContainerInstances" => on_cluster(action),
        "DescribeContainerInstances" | "UpdateContainerInstancesState" => {
            let arns: Vec<String> = strings(input, "containerInstances")
                .iter()
                .map(|i| n.instance(i))
                .collect();
            Access::new(action, if arns.is_empty() { all() } else { arns })
                .condition("ecs:cluster", n.cluster_arn())
        }
        "DeregisterContainerInstance" => Access::new(
            action,
            vec![n.instance(s(input, "containerInstance").unwrap_or(""))],
        )
        .condition("ecs:cluster", n.cluster_arn()),
        "DiscoverPollEndpoint" => Access::new(action, all()),

        "PutAttributes" | "ListAttributes" | "DeleteAttributes" => on_cluster(action),

        "RunTask" | "StartTask" => {
            let td = n.task_definition(s(input, "taskDefinition").unwrap_or(""));
            Access::new(action, vec![td])
                .condition("ecs:cluster", n.cluster_arn())
                .passing(roles(input))
        }
        "StopTask" => Access::new(action, vec![n.task(s(input, "task").unwrap_or(""))])
            .condition("ecs:cluster", n.cluster_arn()),
        "DescribeTasks" => {
            let arns: Vec<String> = strings(input, "tasks").iter().map(|t| n.task(t)).collect();
            Access::new(action, if arns.is_empty() { all() } else { arns })
                .condition("ecs:cluster", n.cluster_arn())
        }
        "ListTasks" => on_cluster(action),
        // An agent reports only on tasks placed on its own instance.
        "SubmitTaskStateChange" | "SubmitContainerStateChange" => {
            on_cluster(action).owning([Owned::Task {
                cluster: s(input, "cluster").unwrap_or("default").to_string(),
                task: s(input, "task").unwrap_or("").to_string(),
            }])
        }

        "CreateService" => Access::new(
            action,
            vec![n.service(s(input, "serviceName").unwrap_or(""))],
        )
        .condition("ecs:cluster", n.cluster_arn())
        .passing(roles(input)),
        "UpdateService" | "DeleteService" => {
            Access::new(action, vec![n.service(s(input, "service").unwrap_or(""))])
                .condition("ecs:cluster", n.cluster_arn())
        }
        "DescribeServices" => {
            let arns: Vec<String> = strings(input, "services")
                .iter()
                .map(|x| n.service(x))
                .collect();
            Access::new(action, if arns.is_empty() { all() } else { arns })
                .condition("ecs:cluster", n.cluster_arn())
        }
        "ListServices" => on_cluster(action),
        // Task sets: creating one and choosing the primary act on the service; the others on
        // the task sets they name (DescribeTaskSets naming none, on the service).
        "CreateTaskSet" | "UpdateServicePrimaryTaskSet" => {
            Access::new(action, vec![n.service(s(input, "service").unwrap_or(""))])
                .condition("ecs:cluster", n.cluster_arn())
        }
        "UpdateTaskSet" | "DeleteTaskSet" => {
            let service = s(input, "service").unwrap_or("");
            Access::new(
                action,
                vec![n.task_set(service, s(input, "taskSet").unwrap_or(""))],
            )
            .condition("ecs:cluster", n.cluster_arn())
        }
        "DescribeTaskSets" => {
            let service = s(input, "service").unwrap_or("");
            let arns: Vec<String> = strings(input, "taskSets")
                .iter()
                .map(|t| n.task_set(service, t))
                .collect();
            let arns = if arns.is_empty() {
                vec![n.service(service)]
            } else {
                arns
            };
            Access::new(action, arns).condition("ecs:cluster", n.cluster_arn())
        }
        "ListServicesByNamespace" => Access::new(action, all()),
        "ListServiceDeployments" => {
            Access::new(action, vec![n.service(s(input, "service").unwrap_or(""))])
                .condition("ecs:cluster", n.cluster_arn())
        }
        "DescribeServiceDeployments" | "StopServiceDeployment" | "DescribeServiceRevisions" => {
            let mut arns: Vec<&str> = strings(input, "serviceDeploymentArns");
            arns.extend(strings(input, "serviceRevisionArns"));
            if let Some(a) = s(input, "serviceDeploymentArn") {
                arns.push(a);
            }
            let arns: Vec<String> = arns.into_iter().map(str::to_string).collect();
            Access::new(action, if arns.is_empty() { all() } else { arns })
        }

        // Capacity providers: the capacity-provider ARN (`capacity-provider/<name>`), as the
        // service authorization reference gives; PutClusterCapacityProviders acts on the
        // cluster.
        "CreateCapacityProvider" | "UpdateCapacityProvider" | "DeleteCapacityProvider" => {
            let given = s(input, "name")
                .or_else(|| s(input, "capacityProvider"))
                .unwrap_or("");
            let arn = if given.starts_with("arn:") {
                given.to_string()
            } else {
                scope.capacity_provider(given)
            };
            Access::new(action, vec![arn])
        }
        "DescribeCapacityProviders" => {
            let arns: Vec<String> = strings(input, "capacityProviders")
                .iter()
                .map(|p| {
                    if p.starts_with("arn:") {
                        p.to_string()
                    } else {
                        scope.capacity_provider(p)
                    }
                })
                .collect();
            Access::new(action, if arns.is_empty() { all() } else { arns })
        }
        "PutClusterCapacityProviders" => Access::new(
            action,
            vec![n.cluster_of(s(input, "cluster").unwrap_or("default"))],
        ),

        "TagResource" | "UntagResource" | "ListTagsForResource" => Access::new(
            action,
            vec![s(input, "resourceArn").unwrap_or("*").to_string()],
        ),

        // Account settings have no resource; `ecs:account-setting` names the setting (what
        // AWS's GuardDuty service role is scoped by).
        "PutAccountSetting"
        | "PutAccountSettingDefault"
        | "DeleteAccountSetting"
        | "ListAccountSettings" => {
            let a = Access::new(action, all());
            match s(input, "name") {
                Some(name) => a.condition("ecs:account-setting", name),
                None => a,
            }
        }

        "UpdateTaskProtection" | "GetTaskProtection" => {
            let arns: Vec<String> = strings(input, "tasks").iter().map(|t| n.task(t)).collect();
            Access::new(action, if arns.is_empty() { all() } else { arns })
                .condition("ecs:cluster", n.cluster_arn())
        }
        _ => return None,
    };
    Some(access)
}

/// The second authorisation of a create that tags what it creates (when the caller's
/// `tagResourceAuthorization` account setting is `on`, as ECS does): `ecs:TagResource` on
/// the new resource, with `ecs:CreateAction` naming the create. `None` when the call carries
/// no tags or creates nothing taggable. Resources whose ARN is not known before the create
/// (a task's id, a task definition's revision) are named with a wildcard.
pub fn tag_on_create(scope: &ArnScope, op: &str, input: &Value) -> Option<Access> {
    let tagged = input
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if !tagged {
        return None;
    }
    let n = Names {
        scope,
        cluster: cluster_name(input),
    };
    let resource = match op {
        "CreateCluster" => scope.cluster(s(input, "clusterName").unwrap_or("default")),
        "RegisterTaskDefinition" => {
            n.task_definition(&format!("{}:*", s(input, "family").unwrap_or("")))
        }
        "CreateService" => n.service(s(input, "serviceName").unwrap_or("")),
        "RunTask" | "StartTask" => n.task("*"),
        "CreateCapacityProvider" => scope.capacity_provider(s(input, "name").unwrap_or("")),
        "RegisterContainerInstance" => n.instance("*"),
        "CreateTaskSet" => scope.task_set(
            &n.cluster,
            gantry_model::arn::last_segment(s(input, "service").unwrap_or("")),
            "*",
        ),
        _ => return None,
    };
    let access = Access::new("ecs:TagResource", vec![resource]).condition("ecs:CreateAction", op);
    Some(match op {
        "CreateCluster" | "RegisterTaskDefinition" | "CreateCapacityProvider" => access,
        _ => access.condition("ecs:cluster", n.cluster_arn()),
    })
}

/// The log group a Logs call names: `logGroupName`, or `logGroupIdentifier` (a name or the
/// group's ARN, with or without `:*`).
fn logs_group(input: &Value) -> &str {
    let given = s(input, "logGroupName")
        .or_else(|| s(input, "logGroupIdentifier"))
        .unwrap_or("");
    gantry_model::arn::log_group_of_arn(given)
        .map(|(_, _, name)| name)
        .unwrap_or(given)
}

/// What a CloudWatch Logs operation (`Logs_20140328.<op>`) is and touches: the log group's
/// ARN, or the stream's for calls on one stream, `*` for DescribeLogGroups (which AWS does
/// not authorise per group). Writes to a stream name its task as something an agent must
/// own: agents may write to the streams of their own tasks only, as with log shipping.
pub fn logs(scope: &ArnScope, op: &str, input: &Value) -> Option<Access> {
    let n = Names {
        scope,
        cluster: String::new(),
    };
    let action = format!("logs:{op}");
    let group = logs_group(input);
    let stream = s(input, "logStreamName").unwrap_or("");
    let access = match op {
        "GetLogEvents" => Access::new(action, vec![n.log_stream(group, stream)]),
        "CreateLogStream" | "PutLogEvents" => {
            Access::new(action, vec![n.log_stream(group, stream)]).owning([Owned::Task {
                cluster: String::new(),
                task: stream.rsplit('/').next().unwrap_or("").to_string(),
            }])
        }
        "DeleteLogStream" => Access::new(action, vec![n.log_stream(group, stream)]),
        "FilterLogEvents"
        | "DescribeLogStreams"
        | "CreateLogGroup"
        | "DeleteLogGroup"
        | "PutRetentionPolicy"
        | "DeleteRetentionPolicy"
        | "TagLogGroup"
        | "UntagLogGroup"
        | "ListTagsLogGroup" => Access::new(action, vec![n.log_group(group)]),
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            let arn = s(input, "resourceArn").unwrap_or("");
            let resource = match gantry_model::arn::log_group_of_arn(arn) {
                Some((_, _, name)) => n.log_group(name),
                None => arn.to_string(),
            };
            Access::new(action, vec![resource])
        }
        "DescribeLogGroups" => Access::new(action, all()),
        _ => return None,
    };
    Some(access)
}

/// The ARN a Secrets Manager call acts on: `known` (the secret's ARN, looked up from its
/// `SecretId`), else what the client gave when it is an ARN, else the ARN a secret of that
/// name would have, with `??????` standing for the random suffix not known yet (so a policy
/// naming `secret:db-*` or `secret:db-??????` matches; one naming another secret does not).
fn secret_resource(scope: &ArnScope, input: &Value, known: Option<&str>) -> String {
    if let Some(arn) = known {
        return arn.to_string();
    }
    let given = s(input, "SecretId")
        .or_else(|| s(input, "Name"))
        .unwrap_or("");
    if given.starts_with("arn:") {
        return given.to_string();
    }
    format!(
        "arn:aws:secretsmanager:{}:{}:secret:{given}-??????",
        scope.region, scope.account
    )
}

/// What a Secrets Manager operation (`secretsmanager.<op>`) is and touches: the secret's ARN
/// (`known` when the dispatcher found the secret `SecretId` names), or `*` for ListSecrets
/// and GetRandomPassword, which act on no secret.
pub fn secretsmanager(
    scope: &ArnScope,
    op: &str,
    input: &Value,
    known: Option<&str>,
) -> Option<Access> {
    let action = format!("secretsmanager:{op}");
    let access = match op {
        "ListSecrets" | "GetRandomPassword" => Access::new(action, all()),
        "CreateSecret"
        | "GetSecretValue"
        | "PutSecretValue"
        | "UpdateSecret"
        | "UpdateSecretVersionStage"
        | "DescribeSecret"
        | "ListSecretVersionIds"
        | "DeleteSecret"
        | "RestoreSecret"
        | "TagResource"
        | "UntagResource"
        | "GetResourcePolicy"
        | "PutResourcePolicy"
        | "DeleteResourcePolicy" => Access::new(action, vec![secret_resource(scope, input, known)]),
        _ => return None,
    };
    Some(access)
}

/// CreateSecret with `Tags` also needs `secretsmanager:TagResource` on the new secret, as
/// Secrets Manager documents.
pub fn secretsmanager_tag_on_create(scope: &ArnScope, op: &str, input: &Value) -> Option<Access> {
    let tagged = input
        .get("Tags")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    (op == "CreateSecret" && tagged).then(|| {
        Access::new(
            "secretsmanager:TagResource",
            vec![secret_resource(scope, input, None)],
        )
    })
}

/// What an SSM Parameter Store operation (`AmazonSSM.<op>`) is and touches: the parameter's
/// ARN (`arn:aws:ssm:<region>:<account>:parameter/<name without its leading slash>`, selectors
/// dropped), each one for the batch calls, the path's for GetParametersByPath (`parameter/app`
/// for `/app` or `/app/`: a policy on `parameter/app*` covers the path and what is under it),
/// `*` for DescribeParameters.
pub fn ssm(scope: &ArnScope, op: &str, input: &Value) -> Option<Access> {
    let action = format!("ssm:{op}");
    let parameter = |key: &str| crate::ssm::arn_of_reference(scope, s(input, key).unwrap_or(""));
    let access = match op {
        "PutParameter"
        | "GetParameter"
        | "DeleteParameter"
        | "LabelParameterVersion"
        | "UnlabelParameterVersion"
        | "GetParameterHistory" => Access::new(action, vec![parameter("Name")]),
        "GetParameters" | "DeleteParameters" => Access::new(
            action,
            strings(input, "Names")
                .into_iter()
                .map(|n| crate::ssm::arn_of_reference(scope, n))
                .collect(),
        ),
        "GetParametersByPath" => {
            let path = s(input, "Path").unwrap_or("/").trim_end_matches('/');
            let path = if path.is_empty() { "/" } else { path };
            Access::new(action, vec![crate::ssm::arn_of_reference(scope, path)])
        }
        "DescribeParameters" => Access::new(action, all()),
        "ListTagsForResource" | "AddTagsToResource" | "RemoveTagsFromResource" => {
            let id = s(input, "ResourceId").unwrap_or("");
            let resource = match s(input, "ResourceType").unwrap_or("") {
                "Parameter" => crate::ssm::arn_of_reference(scope, id),
                other => format!(
                    "arn:aws:ssm:{}:{}:{}/{id}",
                    scope.region,
                    scope.account,
                    other.to_ascii_lowercase()
                ),
            };
            Access::new(action, vec![resource])
        }
        _ => return None,
    };
    Some(access)
}

/// PutParameter with `Tags` also needs `ssm:AddTagsToResource` on the parameter, as SSM
/// documents for tagging on create.
pub fn ssm_tag_on_create(scope: &ArnScope, op: &str, input: &Value) -> Option<Access> {
    let tagged = input
        .get("Tags")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    (op == "PutParameter" && tagged).then(|| {
        Access::new(
            "ssm:AddTagsToResource",
            vec![crate::ssm::arn_of_reference(
                scope,
                s(input, "Name").unwrap_or(""),
            )],
        )
    })
}

/// What one of Gantry's own operations (`GantryV1.<op>`) is and touches.
pub fn gantry(scope: &ArnScope, op: &str, input: &Value) -> Option<Access> {
    let n = Names {
        scope,
        cluster: cluster_name(input),
    };
    let action = format!("gantry:{op}");
    let access = match op {
        "ExplainPlacement" => {
            Access::new(action, vec![n.cluster_arn()]).condition("ecs:cluster", n.cluster_arn())
        }
        "ListAuditEvents" => Access::new(action, all()),
        // The master keys encrypt every secret: administrators only, in practice.
        "RotateMasterKey" | "DescribeMasterKeys" => Access::new(action, all()),
        "DescribeReplicas" => Access::new(action, all()),
        "InterruptSpotTask" => Access::new(action, vec![n.task(s(input, "task").unwrap_or(""))])
            .condition("ecs:cluster", n.cluster_arn()),
        _ => return None,
    };
    Some(access)
}

/// The user an IAM call names, or the caller itself when it names none (GetUser,
/// CreateAccessKey and ListAccessKeys act on the caller by default, as on AWS).
pub fn iam_user_name(caller: &Caller, request: &QueryRequest) -> Option<String> {
    match request.get("UserName") {
        Some(u) => Some(u.to_string()),
        None => match &caller.principal {
            Principal::User { name, .. } => Some(name.clone()),
            _ => None,
        },
    }
}

/// What an IAM operation (awsQuery, `Version=2010-05-08`) is and touches: the user, role or
/// policy ARN (as stored, with its path, when it exists), or `*` for lists and creates of
/// policies.
pub fn iam(
    plane: &ControlPlane,
    caller: &Caller,
    op: &str,
    request: &QueryRequest,
) -> Option<Access> {
    let account = &plane.scope().account;
    let user_arn = |name: &str| {
        plane
            .cache
            .iam(|i| i.users.get(name).map(|u| u.record.arn.clone()))
            .unwrap_or_else(|| format!("arn:aws:iam::{account}:user/{name}"))
    };
    let role_arn = |name: &str| {
        plane
            .cache
            .iam(|i| i.roles.get(name).map(|r| r.record.arn.clone()))
            .unwrap_or_else(|| format!("arn:aws:iam::{account}:role/{name}"))
    };
    let named = |key: &str| request.get(key).unwrap_or("").to_string();
    let action = format!("iam:{op}");
    let resources = match op {
        "CreateUser" => {
            let path = request.get("Path").unwrap_or("/");
            vec![format!(
                "arn:aws:iam::{account}:user{path}{}",
                named("UserName")
            )]
        }
        "GetUser" | "CreateAccessKey" | "ListAccessKeys" | "DeleteAccessKey"
        | "UpdateAccessKey" => vec![user_arn(
            &iam_user_name(caller, request).unwrap_or_default(),
        )],
        "DeleteUser"
        | "TagUser"
        | "UntagUser"
        | "ListUserTags"
        | "ListGroupsForUser"
        | "PutUserPolicy"
        | "GetUserPolicy"
        | "DeleteUserPolicy"
        | "ListUserPolicies"
        | "AttachUserPolicy"
        | "DetachUserPolicy"
        | "ListAttachedUserPolicies"
        | "ListMFADevices"
        | "ListSSHPublicKeys"
        | "ListServiceSpecificCredentials"
        | "ListSigningCertificates"
        | "GetLoginProfile"
        | "DeleteLoginProfile" => {
            vec![user_arn(&named("UserName"))]
        }
        "CreateRole" => {
            let path = request.get("Path").unwrap_or("/");
            vec![format!(
                "arn:aws:iam::{account}:role{path}{}",
                named("RoleName")
            )]
        }
        "GetRole"
        | "DeleteRole"
        | "UpdateRole"
        | "UpdateRoleDescription"
        | "UpdateAssumeRolePolicy"
        | "TagRole"
        | "UntagRole"
        | "ListRoleTags"
        | "ListInstanceProfilesForRole"
        | "PutRolePolicy"
        | "GetRolePolicy"
        | "DeleteRolePolicy"
        | "ListRolePolicies"
        | "AttachRolePolicy"
        | "DetachRolePolicy"
        | "ListAttachedRolePolicies" => vec![role_arn(&named("RoleName"))],
        "CreatePolicy" => {
            let path = request.get("Path").unwrap_or("/");
            vec![format!(
                "arn:aws:iam::{account}:policy{path}{}",
                named("PolicyName")
            )]
        }
        "GetPolicy"
        | "DeletePolicy"
        | "CreatePolicyVersion"
        | "GetPolicyVersion"
        | "DeletePolicyVersion"
        | "ListPolicyVersions"
        | "SetDefaultPolicyVersion"
        | "ListEntitiesForPolicy"
        | "TagPolicy"
        | "UntagPolicy"
        | "ListPolicyTags" => {
            vec![named("PolicyArn")]
        }
        "ListUsers" | "ListRoles" | "ListPolicies" | "GetAccountSummary" => all(),
        _ => return None,
    };
    Some(Access::new(action, resources))
}

/// What an ELBv2 operation (awsQuery, `Version=2015-12-01`) is and touches, as the Elastic
/// Load Balancing authorization reference names it: creates act on the ARN being made (its id
/// a wildcard), calls on one resource on its ARN, Describe calls on `*`.
pub fn elbv2(plane: &ControlPlane, op: &str, request: &QueryRequest) -> Option<Access> {
    let scope = plane.scope();
    let prefix = format!(
        "arn:aws:elasticloadbalancing:{}:{}:",
        scope.region, scope.account
    );
    let named = |key: &str| vec![request.get(key).unwrap_or("").to_string()];
    let resources = match op {
        "CreateLoadBalancer" => vec![format!(
            "{prefix}loadbalancer/app/{}/*",
            request.get("Name").unwrap_or("")
        )],
        "CreateTargetGroup" => vec![format!(
            "{prefix}targetgroup/{}/*",
            request.get("Name").unwrap_or("")
        )],
        "DeleteLoadBalancer"
        | "ModifyLoadBalancerAttributes"
        | "SetSecurityGroups"
        | "SetSubnets"
        | "SetIpAddressType"
        | "ModifyCapacityReservation"
        | "CreateListener" => named("LoadBalancerArn"),
        "ModifyTargetGroup"
        | "DeleteTargetGroup"
        | "ModifyTargetGroupAttributes"
        | "RegisterTargets"
        | "DeregisterTargets" => named("TargetGroupArn"),
        "ModifyListener"
        | "DeleteListener"
        | "ModifyListenerAttributes"
        | "CreateRule"
        | "AddListenerCertificates" => named("ListenerArn"),
        "ModifyRule" | "DeleteRule" => named("RuleArn"),
        "SetRulePriorities" => request
            .struct_list("RulePriorities")
            .iter()
            .map(|p| p.get("RuleArn").unwrap_or("").to_string())
            .collect(),
        "AddTags" | "RemoveTags" => request.string_list("ResourceArns"),
        "DescribeLoadBalancers"
        | "DescribeLoadBalancerAttributes"
        | "DescribeCapacityReservation"
        | "DescribeTargetGroups"
        | "DescribeTargetGroupAttributes"
        | "DescribeTargetHealth"
        | "DescribeListeners"
        | "DescribeListenerAttributes"
        | "DescribeListenerCertificates"
        | "DescribeRules"
        | "DescribeTags"
        | "DescribeTrustStores"
        | "DescribeSSLPolicies"
        | "DescribeAccountLimits" => all(),
        _ => return None,
    };
    let resources = if resources.is_empty() {
        all()
    } else {
        resources
    };
    Some(Access::new(format!("elasticloadbalancing:{op}"), resources))
}

/// What an STS operation (awsQuery, `Version=2011-06-15`) is and touches.
pub fn sts(_plane: &ControlPlane, op: &str, request: &QueryRequest) -> Option<Access> {
    let action = format!("sts:{op}");
    match op {
        "GetCallerIdentity" => Some(Access::new(action, all())),
        "AssumeRole" => Some(Access::new(
            action,
            vec![request.get("RoleArn").unwrap_or("").to_string()],
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> ArnScope {
        ArnScope::default()
    }

    #[test]
    fn names_become_the_arns_a_policy_would_name() {
        let a = ecs(
            &scope(),
            "RunTask",
            &json!({"cluster": "prod", "taskDefinition": "web:3",
                    "overrides": {"taskRoleArn": "arn:aws:iam::000000000000:role/app"}}),
        )
        .expect("known");
        assert_eq!(a.action, "ecs:RunTask");
        assert_eq!(
            a.resources,
            vec!["arn:aws:ecs:us-east-1:000000000000:task-definition/web:3"]
        );
        assert_eq!(
            a.conditions,
            vec![(
                "ecs:cluster",
                "arn:aws:ecs:us-east-1:000000000000:cluster/prod".to_string()
            )]
        );
        assert_eq!(a.passes_roles, vec!["arn:aws:iam::000000000000:role/app"]);

        let stop = ecs(&scope(), "StopTask", &json!({"task": "abc"})).expect("known");
        assert_eq!(
            stop.resources,
            vec!["arn:aws:ecs:us-east-1:000000000000:task/default/abc"]
        );
        let svc = ecs(
            &scope(),
            "UpdateService",
            &json!({"cluster": "arn:aws:ecs:us-east-1:000000000000:cluster/c", "service": "web"}),
        )
        .expect("known");
        assert_eq!(
            svc.resources,
            vec!["arn:aws:ecs:us-east-1:000000000000:service/c/web"]
        );
        let family = ecs(&scope(), "RunTask", &json!({"taskDefinition": "web"})).expect("known");
        assert_eq!(
            family.resources,
            vec!["arn:aws:ecs:us-east-1:000000000000:task-definition/web:*"]
        );
    }

    #[test]
    fn task_set_calls_act_on_the_service_or_the_task_set() {
        let create = ecs(
            &scope(),
            "CreateTaskSet",
            &json!({"cluster": "prod", "service": "web", "taskDefinition": "web:1"}),
        )
        .expect("known");
        assert_eq!(
            create.resources,
            vec!["arn:aws:ecs:us-east-1:000000000000:service/prod/web"]
        );
        assert_eq!(
            create.conditions,
            vec![(
                "ecs:cluster",
                "arn:aws:ecs:us-east-1:000000000000:cluster/prod".to_string()
            )]
        );
        let delete = ecs(
            &scope(),
            "DeleteTaskSet",
            &json!({"cluster": "prod", "service": "web", "taskSet": "ecs-svc/1234567890123456789"}),
        )
        .expect("known");
        assert_eq!(
            delete.resources,
            vec![
                "arn:aws:ecs:us-east-1:000000000000:task-set/prod/web/ecs-svc/1234567890123456789"
            ]
        );
        let describe = ecs(
            &scope(),
            "DescribeTaskSets",
            &json!({"cluster": "prod", "service": "arn:aws:ecs:us-east-1:000000000000:service/prod/web"}),
        )
        .expect("known");
        assert_eq!(
            describe.resources,
            vec!["arn:aws:ecs:us-east-1:000000000000:service/prod/web"]
        );
        for op in ["UpdateTaskSet", "UpdateServicePrimaryTaskSet"] {
            assert!(ecs(&scope(), op, &json!({})).is_some(), "{op}");
        }
    }

    #[test]
    fn tagged_creates_also_need_tag_resource() {
        let a = tag_on_create(
            &scope(),
            "CreateService",
            &json!({"cluster": "prod", "serviceName": "web", "tags": [{"key": "k", "value": "v"}]}),
        )
        .expect("tagged");
        assert_eq!(a.action, "ecs:TagResource");
        assert_eq!(
            a.resources,
            vec!["arn:aws:ecs:us-east-1:000000000000:service/prod/web"]
        );
        assert!(a
            .conditions
            .contains(&("ecs:CreateAction", "CreateService".to_string())));
        let td = tag_on_create(
            &scope(),
            "RegisterTaskDefinition",
            &json!({"family": "web", "tags": [{"key": "k", "value": "v"}]}),
        )
        .expect("tagged");
        assert_eq!(
            td.resources,
            vec!["arn:aws:ecs:us-east-1:000000000000:task-definition/web:*"]
        );
        assert!(tag_on_create(&scope(), "CreateCluster", &json!({"clusterName": "c"})).is_none());
        assert!(tag_on_create(
            &scope(),
            "CreateCluster",
            &json!({"clusterName": "c", "tags": []})
        )
        .is_none());
        assert!(tag_on_create(
            &scope(),
            "TagResource",
            &json!({"resourceArn": "x", "tags": [{"key": "k", "value": "v"}]})
        )
        .is_none());
    }

    #[test]
    fn logs_calls_name_the_group_or_stream_arn() {
        let group_arn = "arn:aws:logs:us-east-1:000000000000:log-group:/app/web";
        let create = logs(
            &scope(),
            "CreateLogGroup",
            &json!({"logGroupName": "/app/web"}),
        )
        .expect("known");
        assert_eq!(create.action, "logs:CreateLogGroup");
        assert_eq!(create.resources, vec![group_arn]);
        let put = logs(
            &scope(),
            "PutLogEvents",
            &json!({"logGroupName": "/app/web", "logStreamName": "web/app/abc"}),
        )
        .expect("known");
        assert_eq!(
            put.resources,
            vec![format!("{group_arn}:log-stream:web/app/abc")]
        );
        assert_eq!(
            put.owned,
            vec![Owned::Task {
                cluster: String::new(),
                task: "abc".into()
            }]
        );
        for arn in [group_arn.to_string(), format!("{group_arn}:*")] {
            let tag = logs(&scope(), "TagResource", &json!({"resourceArn": arn})).expect("known");
            assert_eq!(tag.resources, vec![group_arn]);
        }
        let by_arn = logs(
            &scope(),
            "DescribeLogStreams",
            &json!({"logGroupIdentifier": format!("{group_arn}:*")}),
        )
        .expect("known");
        assert_eq!(by_arn.resources, vec![group_arn]);
        let all = logs(&scope(), "DescribeLogGroups", &json!({})).expect("known");
        assert_eq!(all.resources, vec!["*"]);
    }

    #[test]
    fn a_task_is_named_canonically_however_the_client_spells_it() {
        let want = "arn:aws:ecs:us-east-1:000000000000:task/prod/abc";
        for given in [
            "abc",
            " abc ",
            want,
            "arn:aws:ecs:us-east-1:000000000000:service/prod/abc",
            "arn:aws:ecs:us-east-1:000000000000:task/prod/x/abc",
            // Another cluster's ARN is authorised as the call's cluster's task, the one the
            // handler would act on (it refuses the mismatch).
            "arn:aws:ecs:us-east-1:000000000000:task/dev/abc",
        ] {
            for op in ["StopTask", "UpdateTaskProtection"] {
                let input = json!({"cluster": "prod", "task": given, "tasks": [given]});
                let a = ecs(&scope(), op, &input).expect("known");
                assert_eq!(a.resources, vec![want], "{op} {given:?}");
            }
        }
    }

    #[test]
    fn secrets_manager_calls_name_the_secret_arn() {
        let arn = "arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf";
        let get = secretsmanager(
            &scope(),
            "GetSecretValue",
            &json!({"SecretId": "db"}),
            Some(arn),
        )
        .expect("known");
        assert_eq!(get.action, "secretsmanager:GetSecretValue");
        assert_eq!(get.resources, vec![arn]);
        let create =
            secretsmanager(&scope(), "CreateSecret", &json!({"Name": "db"}), None).expect("known");
        assert_eq!(
            create.resources,
            vec!["arn:aws:secretsmanager:us-east-1:000000000000:secret:db-??????"]
        );
        let by_arn = secretsmanager(&scope(), "DescribeSecret", &json!({"SecretId": arn}), None)
            .expect("known");
        assert_eq!(by_arn.resources, vec![arn]);
        for op in ["ListSecrets", "GetRandomPassword"] {
            let a = secretsmanager(&scope(), op, &json!({}), None).expect("known");
            assert_eq!(a.resources, vec!["*"], "{op}");
        }
        assert!(secretsmanager(&scope(), "RotateSecret", &json!({}), None).is_none());
        let tagging = secretsmanager_tag_on_create(
            &scope(),
            "CreateSecret",
            &json!({"Name": "db", "Tags": [{"Key": "k", "Value": "v"}]}),
        )
        .expect("tagged");
        assert_eq!(tagging.action, "secretsmanager:TagResource");
        assert!(
            secretsmanager_tag_on_create(&scope(), "CreateSecret", &json!({"Name": "db"}))
                .is_none()
        );
    }

    #[test]
    fn ssm_calls_name_the_parameter_arns() {
        let arn = |n: &str| format!("arn:aws:ssm:us-east-1:000000000000:parameter/{n}");
        for (op, input) in [
            ("PutParameter", json!({"Name": "/app/db"})),
            ("GetParameter", json!({"Name": "/app/db:3"})),
            ("GetParameter", json!({"Name": arn("app/db:prod")})),
            ("DeleteParameter", json!({"Name": "/app/db"})),
            ("LabelParameterVersion", json!({"Name": "/app/db"})),
            ("GetParameterHistory", json!({"Name": "/app/db"})),
            (
                "AddTagsToResource",
                json!({"ResourceType": "Parameter", "ResourceId": "/app/db"}),
            ),
            ("GetParametersByPath", json!({"Path": "/app/db/"})),
        ] {
            let a = ssm(&scope(), op, &input).expect("known");
            assert_eq!(a.action, format!("ssm:{op}"));
            assert_eq!(a.resources, vec![arn("app/db")], "{op} {input}");
        }
        let many = ssm(
            &scope(),
            "GetParameters",
            &json!({"Names": ["top", "/top:2", "/a/b"]}),
        )
        .expect("known");
        assert_eq!(many.resources, vec![arn("top"), arn("top"), arn("a/b")]);
        let root = ssm(&scope(), "GetParametersByPath", &json!({"Path": "/"})).expect("known");
        assert_eq!(root.resources, vec![arn("")]);
        let all = ssm(&scope(), "DescribeParameters", &json!({})).expect("known");
        assert_eq!(all.resources, vec!["*"]);
        for op in crate::ssm::OPERATIONS {
            assert!(ssm(&scope(), op, &json!({})).is_some(), "{op}");
        }
        assert!(ssm(&scope(), "SendCommand", &json!({})).is_none());
        let tagging = ssm_tag_on_create(
            &scope(),
            "PutParameter",
            &json!({"Name": "/x", "Tags": [{"Key": "k", "Value": "v"}]}),
        )
        .expect("tagged");
        assert_eq!(tagging.action, "ssm:AddTagsToResource");
        assert_eq!(tagging.resources, vec![arn("x")]);
        assert!(ssm_tag_on_create(&scope(), "PutParameter", &json!({"Name": "/x"})).is_none());
    }

    #[test]
    fn unknown_operations_have_no_access() {
        assert!(ecs(&scope(), "LaunchRockets", &json!({})).is_none());
        assert!(logs(&scope(), "LaunchRockets", &json!({})).is_none());
        assert!(gantry(&scope(), "LaunchRockets", &json!({})).is_none());
    }

    #[tokio::test]
    async fn elbv2_calls_name_the_arns_they_touch() {
        let store = gantry_store::SqliteStore::open_in_memory().expect("store");
        let audit = crate::audit::AuditLog::in_memory(10).expect("audit");
        let logs = crate::logs::LogStore::open_in_memory().expect("logs");
        let plane = ControlPlane::open(
            crate::plane::ControlConfig::default(),
            std::sync::Arc::new(store),
            logs,
            audit,
        )
        .await
        .expect("plane");
        let q =
            |pairs: &[(&str, &str)]| QueryRequest::from_pairs(pairs.iter().map(|(k, v)| (*k, *v)));
        let prefix = "arn:aws:elasticloadbalancing:us-east-1:000000000000:";
        let a = elbv2(&plane, "CreateLoadBalancer", &q(&[("Name", "web")])).expect("known");
        assert_eq!(a.action, "elasticloadbalancing:CreateLoadBalancer");
        assert_eq!(a.resources, [format!("{prefix}loadbalancer/app/web/*")]);
        let l = format!("{prefix}listener/app/web/0123456789abcdef/aaaaaaaaaaaaaaaa");
        let a = elbv2(&plane, "CreateRule", &q(&[("ListenerArn", &l)])).expect("known");
        assert_eq!(a.resources, [l]);
        let a = elbv2(
            &plane,
            "SetRulePriorities",
            &q(&[
                ("RulePriorities.member.1.RuleArn", "r1"),
                ("RulePriorities.member.2.RuleArn", "r2"),
            ]),
        )
        .expect("known");
        assert_eq!(a.resources, ["r1", "r2"]);
        let a = elbv2(
            &plane,
            "AddTags",
            &q(&[
                ("ResourceArns.member.1", "a"),
                ("ResourceArns.member.2", "b"),
            ]),
        )
        .expect("known");
        assert_eq!(a.resources, ["a", "b"]);
        let a = elbv2(&plane, "DescribeTargetHealth", &q(&[])).expect("known");
        assert_eq!(a.resources, ["*"]);
        assert!(elbv2(&plane, "LaunchRockets", &q(&[])).is_none());
    }
}
