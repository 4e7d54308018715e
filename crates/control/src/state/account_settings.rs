//! ECS account settings as stored: one record per (setting, principal) at
//! `account-settings/<name>/<principal ARN>`, the root user's record being the account
//! default; the catalogue of settings with the values AWS reports for a fresh account; and
//! the effective value of a setting for a principal (its own record, else the account
//! default, else the built-in default). The API is `account_settings.rs`; CreateCluster and
//! the tag-on-create check read the effective values from here.

use super::repo;
use gantry_model::EcsResult;
use gantry_store::KvStore;
use serde::{Deserialize, Serialize};

pub const CONTAINER_INSIGHTS: &str = "containerInsights";
pub const TAG_RESOURCE_AUTHORIZATION: &str = "tagResourceAuthorization";

/// Who may hold a value of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Any principal, with the root user's value as the account default.
    Principal,
    /// The account only: PutAccountSettingDefault, or PutAccountSetting naming the root user.
    Account,
    /// Set by AWS on the account's behalf (`settingType: aws_managed`); only
    /// PutAccountSettingDefault changes it (what GuardDuty calls).
    AwsManaged,
}

/// One account setting: its name, what a fresh account reports, the values it accepts.
#[derive(Debug)]
pub struct SettingSpec {
    pub name: &'static str,
    pub default: &'static str,
    pub values: &'static [&'static str],
    pub scope: Scope,
}

const ENABLED_DISABLED: &[&str] = &["enabled", "disabled"];

/// Every setting, in the order ListAccountSettings answers (the model's enum order, with
/// `dualStackIPv6`, which AWS documents and accepts, after `containerInsights`).
pub const CATALOGUE: &[SettingSpec] = &[
    SettingSpec {
        name: "serviceLongArnFormat",
        default: "enabled",
        values: ENABLED_DISABLED,
        scope: Scope::Principal,
    },
    SettingSpec {
        name: "taskLongArnFormat",
        default: "enabled",
        values: ENABLED_DISABLED,
        scope: Scope::Principal,
    },
    SettingSpec {
        name: "containerInstanceLongArnFormat",
        default: "enabled",
        values: ENABLED_DISABLED,
        scope: Scope::Principal,
    },
    SettingSpec {
        name: "awsvpcTrunking",
        default: "disabled",
        values: ENABLED_DISABLED,
        scope: Scope::Principal,
    },
    SettingSpec {
        name: CONTAINER_INSIGHTS,
        default: "disabled",
        values: &["enabled", "disabled", "enhanced"],
        scope: Scope::Principal,
    },
    SettingSpec {
        name: "dualStackIPv6",
        default: "disabled",
        values: ENABLED_DISABLED,
        scope: Scope::Principal,
    },
    SettingSpec {
        name: "fargateFIPSMode",
        default: "disabled",
        values: ENABLED_DISABLED,
        scope: Scope::Account,
    },
    SettingSpec {
        name: TAG_RESOURCE_AUTHORIZATION,
        default: "on",
        values: &["on", "off"],
        scope: Scope::Principal,
    },
    SettingSpec {
        name: "fargateTaskRetirementWaitPeriod",
        default: "7",
        values: &["0", "7", "14"],
        scope: Scope::Account,
    },
    SettingSpec {
        name: "guardDutyActivate",
        default: "off",
        values: &["on", "off"],
        scope: Scope::AwsManaged,
    },
    SettingSpec {
        name: "defaultLogDriverMode",
        default: "non-blocking",
        values: &["blocking", "non-blocking"],
        scope: Scope::Principal,
    },
    SettingSpec {
        name: "fargateEventWindows",
        default: "disabled",
        values: ENABLED_DISABLED,
        scope: Scope::Principal,
    },
];

pub fn spec(name: &str) -> Option<&'static SettingSpec> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// One principal's value of one setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSettingRecord {
    pub name: String,
    pub value: String,
    pub principal_arn: String,
    #[serde(default)]
    pub updated_at: f64,
}

/// The account's root user, whose settings are the account defaults.
pub fn root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

/// What `principal` has set for `name` itself, if anything.
pub async fn stored(
    store: &dyn KvStore,
    name: &str,
    principal: &str,
) -> EcsResult<Option<AccountSettingRecord>> {
    Ok(
        repo::get::<AccountSettingRecord>(store, &repo::account_setting_key(name, principal))
            .await?
            .map(|(r, _)| r),
    )
}

/// The value of `spec` for `principal`: its own, else the account default (the root user's),
/// else the built-in default. The record says whose value it is.
pub async fn effective(
    store: &dyn KvStore,
    account: &str,
    principal: &str,
    spec: &SettingSpec,
) -> EcsResult<AccountSettingRecord> {
    let root = root_arn(account);
    if principal != root {
        if let Some(own) = stored(store, spec.name, principal).await? {
            return Ok(own);
        }
    }
    if let Some(default) = stored(store, spec.name, &root).await? {
        return Ok(default);
    }
    Ok(AccountSettingRecord {
        name: spec.name.to_string(),
        value: spec.default.to_string(),
        principal_arn: root,
        updated_at: 0.0,
    })
}

/// [`effective`] for a setting of the catalogue by name (its built-in default if the name is
/// unknown, which only a programming error could cause).
pub async fn effective_value(
    store: &dyn KvStore,
    account: &str,
    principal: &str,
    name: &str,
) -> EcsResult<String> {
    match spec(name) {
        Some(spec) => Ok(effective(store, account, principal, spec).await?.value),
        None => Err(gantry_model::EcsError::server(format!(
            "Unknown account setting {name}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_defaults_are_values_it_accepts() {
        for s in CATALOGUE {
            assert!(s.values.contains(&s.default), "{}", s.name);
        }
        let mut names: Vec<&str> = CATALOGUE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
    }

    #[tokio::test]
    async fn own_value_then_account_default_then_built_in() {
        let store = gantry_store::SqliteStore::open_in_memory().expect("store");
        let account = "000000000000";
        let user = "arn:aws:iam::000000000000:user/alice";
        let insights = spec(CONTAINER_INSIGHTS).expect("known");
        let e = effective(&store, account, user, insights)
            .await
            .expect("read");
        assert_eq!(
            (e.value.as_str(), e.principal_arn.as_str()),
            ("disabled", "arn:aws:iam::000000000000:root")
        );
        let put = |principal: &str, value: &str| {
            let r = AccountSettingRecord {
                name: CONTAINER_INSIGHTS.into(),
                value: value.into(),
                principal_arn: principal.into(),
                updated_at: 1.0,
            };
            repo::put_op(&repo::account_setting_key(&r.name, principal), &r).expect("encode")
        };
        let root = root_arn(account);
        repo::commit(&store, vec![], vec![put(&root, "enabled")])
            .await
            .expect("write");
        let e = effective(&store, account, user, insights)
            .await
            .expect("read");
        assert_eq!(e.value, "enabled");
        repo::commit(&store, vec![], vec![put(user, "enhanced")])
            .await
            .expect("write");
        let e = effective(&store, account, user, insights)
            .await
            .expect("read");
        assert_eq!(
            (e.value.as_str(), e.principal_arn.as_str()),
            ("enhanced", user)
        );
        let other = "arn:aws:iam::000000000000:role/ops";
        assert_eq!(
            effective_value(&store, account, other, CONTAINER_INSIGHTS)
                .await
                .expect("read"),
            "enabled"
        );
    }
}
