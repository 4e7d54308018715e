//! PutAccountSetting, PutAccountSettingDefault, DeleteAccountSetting and ListAccountSettings:
//! ECS account settings, per principal (an IAM user or role, or the root user) with the root
//! user's value as the account default. Records, the catalogue of settings and the effective
//! value live in `state/account_settings.rs`.
//!
//! - `principalArn` names the root user (`arn:aws:iam::<account>:root`), an IAM user or an
//!   IAM role of the account; omitted, the caller itself (an assumed role's session speaks for
//!   its role; a call without authentication for the root user). AWS lets only the root user
//!   or the principal itself name a `principalArn`; Gantry has no root sign-in, so the IAM
//!   policy decides (the action with the `ecs:account-setting` condition key).
//! - The long ARN formats accept only `enabled` (AWS no longer lets them be turned off);
//!   `fargateFIPSMode` and `fargateTaskRetirementWaitPeriod` are account-wide (the default, or
//!   the root user's value); `guardDutyActivate` is `aws_managed`: only
//!   PutAccountSettingDefault changes it, as GuardDuty does.
//! - ListAccountSettings lists what the principal has set itself, or with `effectiveSettings`
//!   every setting as it applies to the principal (its own value, else the account default
//!   with the root user as `principalArn`).

use crate::auth::{self, Access, Caller, Principal};
use crate::pagination;
use crate::plane::ControlPlane;
use crate::state::account_settings::{
    effective, effective_value, root_arn, spec, stored, AccountSettingRecord, Scope, SettingSpec,
    CATALOGUE,
};
use crate::state::repo;
use crate::wire::parse;
use gantry_model::{now_epoch, EcsError, EcsResult};
use gantry_store::TxnOp;
use serde::Deserialize;
use serde_json::{json, Value};

/// ListAccountSettings pages: "This value can be between 1 and 10", 10 by default.
const PAGE_LIMIT: i32 = 10;

const LONG_ARN_FORMATS: [&str; 3] = [
    "serviceLongArnFormat",
    "taskLongArnFormat",
    "containerInstanceLongArnFormat",
];

fn invalid(message: impl Into<String>) -> EcsError {
    EcsError::invalid_parameter(message)
}

/// The principal a call speaks for when it names none.
pub fn principal_of(plane: &ControlPlane, caller: &Caller) -> String {
    match &caller.principal {
        Principal::User { arn, .. } => arn.clone(),
        Principal::AssumedRole { role_arn, .. } => role_arn.clone(),
        _ => root_arn(&plane.scope().account),
    }
}

/// The value of setting `name` for the caller (see `state::account_settings::effective`).
pub async fn effective_for(plane: &ControlPlane, caller: &Caller, name: &str) -> EcsResult<String> {
    effective_value(
        &*plane.store,
        &plane.scope().account,
        &principal_of(plane, caller),
        name,
    )
    .await
}

fn setting(name: &str) -> EcsResult<&'static SettingSpec> {
    spec(name).ok_or_else(|| {
        let names: Vec<&str> = CATALOGUE.iter().map(|s| s.name).collect();
        invalid(format!(
            "Invalid account setting name '{name}'. Valid names: {}.",
            names.join(", ")
        ))
    })
}

/// `value` is one `spec` accepts.
fn check_value(spec: &SettingSpec, value: &str) -> EcsResult<()> {
    if LONG_ARN_FORMATS.contains(&spec.name) && value == "disabled" {
        return Err(invalid(format!(
            "The {} account setting can no longer be disabled: resources always use the long ARN format.",
            spec.name
        )));
    }
    if spec.values.contains(&value) {
        return Ok(());
    }
    Err(invalid(format!(
        "Invalid value '{value}' for account setting {}: use {}.",
        spec.name,
        spec.values.join(", ")
    )))
}

/// `principalArn` as given: the root user, an IAM user or an IAM role of this account.
fn check_principal(plane: &ControlPlane, given: &str) -> EcsResult<String> {
    let account = &plane.scope().account;
    let rest = given.strip_prefix(&format!("arn:aws:iam::{account}:"));
    let ok = match rest {
        Some("root") => true,
        Some(r) => ["user/", "role/"]
            .iter()
            .any(|kind| r.strip_prefix(kind).is_some_and(|name| !name.is_empty())),
        None => false,
    };
    if ok {
        Ok(given.to_string())
    } else {
        Err(invalid(format!(
            "Invalid principalArn '{given}': name the root user (arn:aws:iam::{account}:root), an IAM user or an IAM role of account {account}."
        )))
    }
}

/// The principal a call names, or the caller. On AWS only the root user or the principal
/// itself may name a principal; Gantry has no root sign-in, so naming anyone but oneself
/// (the root's setting is the account default) takes the account-level right to change the
/// defaults, `ecs:PutAccountSettingDefault`, besides the call's own action.
fn principal(
    plane: &ControlPlane,
    caller: &Caller,
    given: Option<&str>,
    setting: Option<&str>,
) -> EcsResult<String> {
    let own = principal_of(plane, caller);
    let Some(named) = given.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(own);
    };
    let named = check_principal(plane, named)?;
    if named != own {
        // With the setting's name as PutAccountSettingDefault itself carries it, so a policy
        // scoped by `ecs:account-setting` applies here too.
        let mut access = Access::new("ecs:PutAccountSettingDefault", vec!["*".to_string()]);
        if let Some(name) = setting {
            access = access.condition("ecs:account-setting", name);
        }
        auth::authorize(plane, caller, &access, gantry_auth::client::now())
            .map_err(|d| d.to_ecs())?;
    }
    Ok(named)
}

fn render(r: &AccountSettingRecord) -> Value {
    let managed = spec(&r.name).is_some_and(|s| s.scope == Scope::AwsManaged);
    json!({
        "name": r.name,
        "value": r.value,
        "principalArn": r.principal_arn,
        "type": if managed { "aws_managed" } else { "user" },
    })
}

async fn write(plane: &ControlPlane, record: &AccountSettingRecord) -> EcsResult<()> {
    let key = repo::account_setting_key(&record.name, &record.principal_arn);
    repo::commit(&*plane.store, vec![], vec![repo::put_op(&key, record)?]).await?;
    Ok(())
}

fn aws_managed(spec: &SettingSpec, op: &str) -> EcsError {
    invalid(format!(
        "The {} account setting is managed by AWS on the account's behalf (settingType aws_managed): {op} cannot change it.",
        spec.name
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutInput {
    name: String,
    value: String,
    principal_arn: Option<String>,
}

/// PutAccountSetting: the value of one setting for one principal (the caller by default).
pub async fn put(plane: &ControlPlane, caller: &Caller, input: Value) -> EcsResult<Value> {
    let req: PutInput = parse(input)?;
    let spec = setting(&req.name)?;
    check_value(spec, &req.value)?;
    let principal = principal(plane, caller, req.principal_arn.as_deref(), Some(spec.name))?;
    let root = root_arn(&plane.scope().account);
    match spec.scope {
        Scope::AwsManaged => return Err(aws_managed(spec, "PutAccountSetting")),
        Scope::Account if principal != root => {
            return Err(invalid(format!(
                "The {} account setting applies to the whole account: set it with PutAccountSettingDefault, or with PutAccountSetting and principalArn {root}.",
                spec.name
            )))
        }
        _ => {}
    }
    let record = AccountSettingRecord {
        name: spec.name.to_string(),
        value: req.value,
        principal_arn: principal,
        updated_at: now_epoch(),
    };
    write(plane, &record).await?;
    Ok(json!({ "setting": render(&record) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutDefaultInput {
    name: String,
    value: String,
}

/// PutAccountSettingDefault: the account default of one setting (the root user's value).
pub async fn put_default(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: PutDefaultInput = parse(input)?;
    let spec = setting(&req.name)?;
    check_value(spec, &req.value)?;
    let record = AccountSettingRecord {
        name: spec.name.to_string(),
        value: req.value,
        principal_arn: root_arn(&plane.scope().account),
        updated_at: now_epoch(),
    };
    write(plane, &record).await?;
    Ok(json!({ "setting": render(&record) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteInput {
    name: String,
    principal_arn: Option<String>,
}

/// DeleteAccountSetting: the principal's own value goes (the root user's: back to the
/// built-in default). Answers the value deleted, or, when the principal had set none, the
/// value that applies to it.
pub async fn delete(plane: &ControlPlane, caller: &Caller, input: Value) -> EcsResult<Value> {
    let req: DeleteInput = parse(input)?;
    let spec = setting(&req.name)?;
    if spec.scope == Scope::AwsManaged {
        return Err(aws_managed(spec, "DeleteAccountSetting"));
    }
    let principal = principal(plane, caller, req.principal_arn.as_deref(), Some(spec.name))?;
    let key = repo::account_setting_key(spec.name, &principal);
    // The value answered is the one deleted: a Put landing in between is not removed unseen.
    for _ in 0..16 {
        let Some((record, rev)) = repo::get::<AccountSettingRecord>(&*plane.store, &key).await?
        else {
            let now = effective(&*plane.store, &plane.scope().account, &principal, spec).await?;
            return Ok(json!({ "setting": render(&now) }));
        };
        if repo::commit(
            &*plane.store,
            vec![repo::unchanged_since(&key, rev)],
            vec![TxnOp::Delete { key: key.clone() }],
        )
        .await?
        {
            return Ok(json!({ "setting": render(&record) }));
        }
    }
    Err(EcsError::server(
        "The account setting kept changing while it was being deleted; retry the call.",
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    name: Option<String>,
    value: Option<String>,
    principal_arn: Option<String>,
    effective_settings: Option<bool>,
    next_token: Option<String>,
    max_results: Option<i32>,
}

/// ListAccountSettings, filtered by `name` and `value` (which needs `name`), paged by
/// `maxResults` (1–10) and `nextToken`.
pub async fn list(plane: &ControlPlane, caller: &Caller, input: Value) -> EcsResult<Value> {
    let req: ListInput = parse(input)?;
    let only = match req.name.as_deref() {
        Some(n) => Some(setting(n)?),
        None => None,
    };
    if req.value.is_some() && only.is_none() {
        return Err(invalid(
            "value can only be used together with name: specify the account setting to filter.",
        ));
    }
    let principal = principal(
        plane,
        caller,
        req.principal_arn.as_deref(),
        only.map(|spec| spec.name),
    )?;
    let account = &plane.scope().account;
    let mut found = Vec::new();
    for spec in CATALOGUE
        .iter()
        .filter(|s| only.is_none_or(|o| o.name == s.name))
    {
        let record = if req.effective_settings.unwrap_or(false) {
            Some(effective(&*plane.store, account, &principal, spec).await?)
        } else {
            stored(&*plane.store, spec.name, &principal).await?
        };
        if let Some(r) = record.filter(|r| req.value.as_ref().is_none_or(|v| *v == r.value)) {
            found.push(render(&r));
        }
    }
    let (page, next) = pagination::page(
        found,
        req.next_token.as_deref(),
        req.max_results,
        PAGE_LIMIT,
    )?;
    let mut out = json!({ "settings": page });
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_each_setting() {
        let s = |n| spec(n).expect("known");
        assert!(check_value(s("containerInsights"), "enhanced").is_ok());
        assert!(check_value(s("awsvpcTrunking"), "enhanced").is_err());
        assert!(check_value(s("fargateTaskRetirementWaitPeriod"), "14").is_ok());
        assert!(check_value(s("fargateTaskRetirementWaitPeriod"), "3").is_err());
        assert!(check_value(s("defaultLogDriverMode"), "non-blocking").is_ok());
        assert!(check_value(s("tagResourceAuthorization"), "enabled").is_err());
        let e = check_value(s("taskLongArnFormat"), "disabled").expect_err("not any more");
        assert_eq!(e.code, "InvalidParameterException");
        assert!(
            e.message.contains("can no longer be disabled"),
            "{}",
            e.message
        );
        assert!(setting("noSuchSetting").is_err());
    }
}
