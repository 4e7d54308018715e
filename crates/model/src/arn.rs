//! ARNs in ECS's long format, and the parsing that lets every call accept a name or an ARN.

/// Region and account that every ARN Gantry mints carries. Configurable so that clients
/// that check ARNs against their own account (Terraform does) see what they expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnScope {
    pub region: String,
    pub account: String,
}

impl Default for ArnScope {
    fn default() -> Self {
        ArnScope {
            region: "us-east-1".into(),
            account: "000000000000".into(),
        }
    }
}

impl ArnScope {
    fn prefix(&self) -> String {
        format!("arn:aws:ecs:{}:{}:", self.region, self.account)
    }
    pub fn cluster(&self, name: &str) -> String {
        format!("{}cluster/{name}", self.prefix())
    }
    pub fn task_definition(&self, family: &str, revision: i64) -> String {
        format!("{}task-definition/{family}:{revision}", self.prefix())
    }
    pub fn task(&self, cluster: &str, id: &str) -> String {
        format!("{}task/{cluster}/{id}", self.prefix())
    }
    pub fn container(&self, cluster: &str, task_id: &str, container_id: &str) -> String {
        format!(
            "{}container/{cluster}/{task_id}/{container_id}",
            self.prefix()
        )
    }
    pub fn container_instance(&self, cluster: &str, id: &str) -> String {
        format!("{}container-instance/{cluster}/{id}", self.prefix())
    }
    pub fn service(&self, cluster: &str, name: &str) -> String {
        format!("{}service/{cluster}/{name}", self.prefix())
    }
    pub fn service_deployment(&self, cluster: &str, service: &str, id: &str) -> String {
        format!(
            "{}service-deployment/{cluster}/{service}/{id}",
            self.prefix()
        )
    }
    pub fn service_revision(&self, cluster: &str, service: &str, id: &str) -> String {
        format!("{}service-revision/{cluster}/{service}/{id}", self.prefix())
    }
    /// A task set's id is `ecs-svc/<digits>`, so its ARN ends in two segments.
    pub fn task_set(&self, cluster: &str, service: &str, id: &str) -> String {
        format!("{}task-set/{cluster}/{service}/{id}", self.prefix())
    }
    pub fn capacity_provider(&self, name: &str) -> String {
        format!("{}capacity-provider/{name}", self.prefix())
    }
    /// A CloudWatch Logs group's ARN, without the `:*` that `DescribeLogGroups`' `arn` adds.
    pub fn log_group(&self, name: &str) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{name}",
            self.region, self.account
        )
    }
}

/// `(region, account, name)` of a log group's ARN,
/// `arn:aws:logs:<region>:<account>:log-group:<name>`, with or without a trailing `:*`.
pub fn log_group_of_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let bare = arn.strip_suffix(":*").unwrap_or(arn);
    match bare.splitn(7, ':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "logs", region, account, "log-group", name] if !name.is_empty() => {
            Some((region, account, name))
        }
        _ => None,
    }
}

/// `(cluster, service, id)` of a task set's ARN, `…:task-set/<cluster>/<service>/<id>`, the
/// id being `ecs-svc/<digits>`.
pub fn task_set_of_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let rest = arn_resource(arn)?.strip_prefix("task-set/")?;
    let mut parts = rest.splitn(3, '/');
    let (cluster, service, id) = (parts.next()?, parts.next()?, parts.next()?);
    (!cluster.is_empty() && !service.is_empty() && !id.is_empty()).then_some((cluster, service, id))
}

/// The resource part of an ARN (`task/c1/abc`), or `None` when `s` is not an ARN.
pub fn arn_resource(s: &str) -> Option<&str> {
    if !s.starts_with("arn:") {
        return None;
    }
    // arn:partition:service:region:account:resource — the resource may contain ':'.
    let mut rest = s;
    for _ in 0..5 {
        let i = rest.find(':')?;
        rest = &rest[i + 1..];
    }
    Some(rest)
}

/// A cluster name from a name or a cluster ARN.
pub fn cluster_name(s: &str) -> &str {
    match arn_resource(s) {
        Some(r) => r.strip_prefix("cluster/").unwrap_or(r),
        None => s,
    }
}

/// The last path segment of an ARN's resource (a task id from a task ARN, a container
/// instance id from its ARN), or the input itself when it is not an ARN.
pub fn last_segment(s: &str) -> &str {
    match arn_resource(s) {
        Some(r) => r.rsplit('/').next().unwrap_or(r),
        None => s,
    }
}

/// The cluster name embedded in a long-format task, container-instance or service ARN.
pub fn cluster_of_arn(s: &str) -> Option<&str> {
    let r = arn_resource(s)?;
    let mut parts = r.split('/');
    let _kind = parts.next()?;
    let cluster = parts.next()?;
    parts.next()?;
    Some(cluster)
}

/// `(cluster, service, id)` of a `service-deployment/…` or `service-revision/…` ARN, whose
/// resource part is `<kind>/<cluster>/<service>/<id>`.
pub fn service_child_of_arn<'a>(s: &'a str, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let rest = arn_resource(s)?.strip_prefix(kind)?.strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    let (cluster, service, id) = (parts.next()?, parts.next()?, parts.next()?);
    if cluster.is_empty() || service.is_empty() || id.is_empty() || id.contains('/') {
        return None;
    }
    Some((cluster, service, id))
}

/// A task definition reference: `family`, `family:revision`, or an ARN of either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitionRef {
    pub family: String,
    pub revision: Option<i64>,
}

impl TaskDefinitionRef {
    pub fn parse(s: &str) -> Option<Self> {
        let body = match arn_resource(s) {
            Some(r) => r.strip_prefix("task-definition/")?,
            None => s,
        };
        let (family, revision) = match body.rsplit_once(':') {
            Some((f, r)) => (f, Some(r.parse::<i64>().ok()?)),
            None => (body, None),
        };
        if family.is_empty() {
            return None;
        }
        Some(TaskDefinitionRef {
            family: family.to_string(),
            revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_group_and_task_set_arns_parse_back() {
        let scope = ArnScope::default();
        let group = scope.log_group("/ecs/web");
        assert_eq!(
            log_group_of_arn(&group),
            Some(("us-east-1", "000000000000", "/ecs/web"))
        );
        assert_eq!(
            log_group_of_arn(&format!("{group}:*")).map(|g| g.2),
            Some("/ecs/web")
        );
        assert_eq!(log_group_of_arn("arn:aws:ecs:us-east-1:0:cluster/x"), None);
        let set = scope.task_set("prod", "web", "ecs-svc/123");
        assert_eq!(task_set_of_arn(&set), Some(("prod", "web", "ecs-svc/123")));
        assert_eq!(task_set_of_arn("ecs-svc/123"), None);
    }

    #[test]
    fn names_and_arns_resolve_alike() {
        let scope = ArnScope::default();
        assert_eq!(cluster_name(&scope.cluster("prod")), "prod");
        assert_eq!(cluster_name("prod"), "prod");
        let t = scope.task("prod", "abc");
        assert_eq!(last_segment(&t), "abc");
        assert_eq!(cluster_of_arn(&t), Some("prod"));
        assert_eq!(cluster_of_arn("abc"), None);
        let td = TaskDefinitionRef::parse(&scope.task_definition("web", 3)).unwrap();
        assert_eq!((td.family.as_str(), td.revision), ("web", Some(3)));
        assert_eq!(TaskDefinitionRef::parse("web").unwrap().revision, None);
        assert!(TaskDefinitionRef::parse("web:x").is_none());
        assert!(TaskDefinitionRef::parse(":3").is_none());
        let sd = scope.service_deployment("prod", "web", "Xy12");
        assert_eq!(
            service_child_of_arn(&sd, "service-deployment"),
            Some(("prod", "web", "Xy12"))
        );
        assert_eq!(service_child_of_arn(&sd, "service-revision"), None);
        assert_eq!(service_child_of_arn("web", "service-revision"), None);
    }
}
