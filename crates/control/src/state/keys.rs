//! Where each record lives in the store (all values are JSON):
//! - `clusters/<name>`                    → `Cluster` (tags included)
//! - `taskdefs/<family>/<revision:010>`  → `TaskDefinitionRecord`
//! - `taskdef-revisions/<family>`         → last revision number handed out
//! - `tasks/<cluster>/<task id>`          → `TaskRecord` (tags included)
//! - `instances/<cluster>/<id>`           → `ContainerInstance` (tags included)
//! - `run-tokens/<cluster>/<clientToken>` → `RunTokenRecord`
//! - `services/<cluster>/<name>`          → `ServiceRecord` (deployments, events, history)
//! - `capacity-providers/<name>`          → capacity provider record (`capacity_providers.rs`)
//! - `capacity-provider-asgs/<asg name>`  → the name of the capacity provider using that Auto
//!   Scaling group (at most one ACTIVE provider per group)
//! - `account-settings/<name>/<principal ARN>` → `AccountSettingRecord`: one ECS account
//!   setting of one principal; the root user's (`arn:aws:iam::<account>:root`) is the
//!   account default (`account_settings.rs`)
//! - `secretsmanager/secrets/<name>`      → a Secrets Manager secret with its versions, values
//!   sealed by the vault (`secretsmanager/records.rs`); the name may hold `/`
//! - `ssm/parameters/<name without its leading slash>` → an SSM parameter with its versions
//!   and tags (`crate::ssm`, which owns the prefix: `ssm::STORE_PREFIX`)

use gantry_model::arn::last_segment;

pub const CLUSTERS: &str = "clusters/";
pub const TASKDEFS: &str = "taskdefs/";
pub const TASKDEF_REVISIONS: &str = "taskdef-revisions/";
pub const TASKS: &str = "tasks/";
pub const INSTANCES: &str = "instances/";
pub const RUN_TOKENS: &str = "run-tokens/";
pub const SERVICES: &str = "services/";
/// awsvpc subnets: `subnets/<subnet id>` (its range), and `subnet-ranges/<network>` claiming
/// a range for one subnet.
pub const SUBNETS: &str = "subnets/";
pub const SUBNET_RANGES: &str = "subnet-ranges/";
pub const CAPACITY_PROVIDERS: &str = "capacity-providers/";
pub const CAPACITY_PROVIDER_ASGS: &str = "capacity-provider-asgs/";
pub const ACCOUNT_SETTINGS: &str = "account-settings/";
pub const SECRETSMANAGER_SECRETS: &str = "secretsmanager/secrets/";

pub fn cluster_key(name: &str) -> String {
    format!("{CLUSTERS}{name}")
}
pub fn taskdef_prefix(family: &str) -> String {
    format!("{TASKDEFS}{family}/")
}
pub fn taskdef_key(family: &str, revision: i64) -> String {
    format!("{TASKDEFS}{family}/{revision:010}")
}
pub fn taskdef_revision_key(family: &str) -> String {
    format!("{TASKDEF_REVISIONS}{family}")
}
pub fn tasks_prefix(cluster: &str) -> String {
    format!("{TASKS}{cluster}/")
}
pub fn task_key(cluster: &str, id: &str) -> String {
    format!("{TASKS}{cluster}/{id}")
}
pub fn instances_prefix(cluster: &str) -> String {
    format!("{INSTANCES}{cluster}/")
}
pub fn instance_key(cluster: &str, id: &str) -> String {
    format!("{INSTANCES}{cluster}/{id}")
}
pub fn run_token_key(cluster: &str, token: &str) -> String {
    format!("{RUN_TOKENS}{cluster}/{token}")
}

pub fn subnet_key(subnet_id: &str) -> String {
    format!("{SUBNETS}{subnet_id}")
}
/// `10.213.4.0/24` → `subnet-ranges/10.213.4.0-24` (no `/` inside the last segment).
pub fn subnet_range_key(cidr: &str) -> String {
    format!("{SUBNET_RANGES}{}", cidr.replace('/', "-"))
}

pub fn services_prefix(cluster: &str) -> String {
    format!("{SERVICES}{cluster}/")
}
pub fn service_key(cluster: &str, name: &str) -> String {
    format!("{SERVICES}{cluster}/{name}")
}

pub fn capacity_provider_key(name: &str) -> String {
    format!("{CAPACITY_PROVIDERS}{name}")
}
pub fn capacity_provider_asg_key(asg: &str) -> String {
    format!("{CAPACITY_PROVIDER_ASGS}{asg}")
}

pub fn secret_key(name: &str) -> String {
    format!("{SECRETSMANAGER_SECRETS}{name}")
}

/// The setting name first: a principal ARN may hold `/` (a user's path), a name never does.
pub fn account_setting_key(name: &str, principal_arn: &str) -> String {
    format!("{ACCOUNT_SETTINGS}{name}/{principal_arn}")
}

/// `(cluster, id)` of a key `<prefix><cluster>/<id>`.
pub fn split<'k>(key: &'k str, prefix: &str) -> Option<(&'k str, &'k str)> {
    key.strip_prefix(prefix)?.split_once('/')
}

/// The store key for an instance named by id or ARN within `cluster`.
pub fn instance_key_for(cluster: &str, given: &str) -> String {
    instance_key(cluster, last_segment(given))
}
