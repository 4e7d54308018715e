//! The rules a task definition must meet to run on Fargate, with the texts ECS refuses it
//! with, the Fargate platform versions, and task ephemeral storage. Pure functions: the control
//! plane decides what to do with a refusal (RegisterTaskDefinition answers `ClientException`,
//! the computed `compatibilities` leaves `FARGATE` out).
//!
//! Texts are AWS's own where they could be found in real error reports; the ones that could
//! not be are marked `// text not confirmed against AWS`.

use crate::requirements::{parse_cpu, parse_memory};
use crate::types::{ContainerDefinition, TaskDefinition};
use serde_json::Value;

/// The platform version `LATEST` (and no version at all) resolves to.
pub const LATEST_PLATFORM_VERSION: &str = "1.4.0";

/// The Linux platform versions Fargate still runs.
pub const PLATFORM_VERSIONS: &[&str] = &["1.4.0", "1.3.0"];

/// What a Fargate task gets when its definition sets no `ephemeralStorage`.
pub const DEFAULT_EPHEMERAL_STORAGE_GIB: i32 = 20;
/// The smallest `ephemeralStorage.sizeInGiB` a definition may ask for: asking for the free
/// 20 GiB explicitly is refused, it is had by leaving the member out.
pub const MIN_EPHEMERAL_STORAGE_GIB: i64 = 21;
/// The largest `ephemeralStorage.sizeInGiB` a definition may ask for.
pub const MAX_EPHEMERAL_STORAGE_GIB: i64 = 200;

/// ClientException: a Fargate definition whose `networkMode` is not `awsvpc`. The quotes are
/// typographic in AWS's text.
pub const AWSVPC_REQUIRED: &str = "Fargate only supports network mode ‘awsvpc’.";
/// ClientException: a Fargate definition without task-level `cpu`.
pub const TASK_CPU_REQUIRED: &str = "Fargate requires that 'cpu' be defined at the task level.";
/// ClientException: a Fargate definition without task-level `memory`.
pub const TASK_MEMORY_REQUIRED: &str =
    "Fargate requires that 'memory' be defined at the task level.";
/// ClientException: a volume with `host.sourcePath` in a Fargate definition (AWS's text has no
/// final period).
pub const HOST_SOURCE_PATH_UNSUPPORTED: &str =
    "Fargate compatible task definitions do not support sourcePath";
/// ClientException: a privileged container in a Fargate definition.
// text not confirmed against AWS: one third-party rule set quotes it (without the final period,
// which it strips from every text it quotes).
pub const PRIVILEGED_UNSUPPORTED: &str =
    "Fargate requires that the 'privileged' setting be 'false'.";
/// ClientException: in `awsvpc` mode a `hostPort` must be 0, unset, or the `containerPort`.
/// It is the awsvpc rule, which Fargate meets by requiring awsvpc.
pub const AWSVPC_PORT_MISMATCH: &str =
    "When networkMode=awsvpc, the host ports and container ports in port mappings must match.";
/// ClientException: `ipcMode` (any value) in a Fargate definition.
pub const IPC_MODE_UNSUPPORTED: &str =
    "Tasks using the Fargate launch type do not support ipcMode.";
/// ClientException: a container logging through `awslogs` in a Fargate definition without
/// `executionRoleArn`.
pub const AWSLOGS_EXECUTION_ROLE_REQUIRED: &str =
    "Fargate requires task definition to have execution role ARN to support log driver awslogs.";

/// The ClientException for a task-level size that is no Fargate configuration, with the values
/// as ECS converted them (CPU units, MiB).
pub fn no_configuration_message(cpu: &str, memory: &str) -> String {
    format!(
        "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
    )
}

/// The task memory sizes (MiB) Fargate offers for a task cpu (units) on Linux, smallest first;
/// empty for a cpu Fargate does not offer.
pub fn memory_options(cpu: i64) -> Vec<i64> {
    let range = |lo: i64, hi: i64, step: usize| (lo..=hi).step_by(step).collect::<Vec<i64>>();
    match cpu {
        256 => vec![512, 1024, 2048],
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122880, 8192),
        _ => Vec::new(),
    }
}

/// Whether `cpu` units with `memory` MiB is a Fargate task size. Windows tasks start at 1 vCPU
/// and stop at 4 vCPU.
pub fn is_valid_size(cpu: i64, memory: i64, windows: bool) -> bool {
    if windows && !(1024..=4096).contains(&cpu) {
        return false;
    }
    memory_options(cpu).contains(&memory)
}

fn is_windows(td: &TaskDefinition) -> bool {
    td.extra
        .get("runtimePlatform")
        .and_then(|p| p.get("operatingSystemFamily"))
        .and_then(Value::as_str)
        .is_some_and(|f| f.starts_with("WINDOWS"))
}

/// A member that counts as set: present, not null, and not an empty list.
fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// Whether a task definition asks to be validated for Fargate (`requiresCompatibilities`
/// holds `FARGATE`).
pub fn requires_fargate(td: &TaskDefinition) -> bool {
    td.requires_compatibilities
        .iter()
        .flatten()
        .any(|c| c == "FARGATE")
}

/// Why `td` cannot run on Fargate, in ECS's words, or `None` when it can. The first rule it
/// breaks is reported, as ECS does.
pub fn fargate_incompatibility(td: &TaskDefinition) -> Option<String> {
    if td.network_mode.as_deref() != Some("awsvpc") {
        return Some(AWSVPC_REQUIRED.into());
    }
    let Some(cpu) = td.cpu.as_deref() else {
        return Some(TASK_CPU_REQUIRED.into());
    };
    let Some(memory) = td.memory.as_deref() else {
        return Some(TASK_MEMORY_REQUIRED.into());
    };
    match (parse_cpu(cpu), parse_memory(memory)) {
        (Some(c), Some(m)) if is_valid_size(c, m, is_windows(td)) => {}
        (Some(c), Some(m)) => {
            return Some(no_configuration_message(&c.to_string(), &m.to_string()))
        }
        _ => return Some(no_configuration_message(cpu.trim(), memory.trim())),
    }
    if let Some(p) = td.pid_mode.as_deref().filter(|p| *p != "task") {
        return Some(format!(
            "Tasks using the Fargate launch type do not support pidMode '{p}'. The supported value for pidMode is 'task'."
        ));
    }
    if td.ipc_mode.is_some() {
        return Some(IPC_MODE_UNSUPPORTED.into());
    }
    if td
        .placement_constraints
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        // text not confirmed against AWS: one third-party rule set quotes it.
        return Some("Fargate compatible task definitions do not support constraints".into());
    }
    for v in td.volumes.iter().flatten() {
        if v.host.as_ref().is_some_and(|h| h.source_path.is_some()) {
            return Some(HOST_SOURCE_PATH_UNSUPPORTED.into());
        }
        if v.docker_volume_configuration.is_some() {
            // text not confirmed against AWS: one third-party rule set quotes it.
            return Some(
                "Fargate compatible task definitions do not support dockerVolumeConfiguration"
                    .into(),
            );
        }
    }
    td.container_definitions
        .iter()
        .find_map(|c| container_incompatibility(td, c))
}

fn container_incompatibility(td: &TaskDefinition, c: &ContainerDefinition) -> Option<String> {
    if c.privileged == Some(true) {
        return Some(PRIVILEGED_UNSUPPORTED.into());
    }
    // Not valid in Fargate tasks, per the ECS Developer Guide's "task definition differences
    // for Fargate".
    let unsupported = |param: &str| {
        Some(format!(
            "Fargate compatible task definitions do not support {param}"
        ))
    };
    if is_set(c.extra.get("dockerSecurityOptions")) {
        // text not confirmed against AWS: one third-party rule set quotes it.
        return unsupported("dockerSecurityOptions");
    }
    if let Some(linux) = c.extra.get("linuxParameters") {
        // devices, tmpfs and swappiness: text not confirmed against AWS (written after the
        // sharedMemorySize and maxSwap texts one third-party rule set quotes).
        for param in [
            "devices",
            "sharedMemorySize",
            "tmpfs",
            "maxSwap",
            "swappiness",
        ] {
            if is_set(linux.get(param)) {
                return unsupported(param);
            }
        }
        let added = linux
            .pointer("/capabilities/add")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        for cap in added {
            if !matches!(cap, "SYS_PTRACE" | "CAP_SYS_PTRACE") {
                // text not confirmed against AWS: one third-party rule set quotes it.
                return Some(format!("{cap} is not allowed on Fargate."));
            }
        }
    }
    let gpu = c
        .extra
        .get("resourceRequirements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| r.get("type").and_then(Value::as_str) == Some("GPU"));
    if gpu {
        // text not confirmed against AWS: one third-party rule set quotes it.
        return Some(
            "Tasks using the Fargate launch type do not support GPU resource requirements".into(),
        );
    }
    if let Some(lc) = &c.log_configuration {
        let driver = lc.log_driver.as_str();
        if !matches!(driver, "awslogs" | "splunk" | "awsfirelens") {
            // text not confirmed against AWS: one third-party rule set quotes it.
            return Some(format!(
                "{driver} is not a valid log driver. Must be one of [awslogs, splunk, awsfirelens]"
            ));
        }
        if driver == "awslogs" && td.execution_role_arn.as_deref().is_none_or(str::is_empty) {
            return Some(AWSLOGS_EXECUTION_ROLE_REQUIRED.into());
        }
    }
    let port_mismatch = c.port_mappings.iter().flatten().any(|pm| {
        pm.host_port
            .is_some_and(|hp| hp != 0 && Some(hp) != pm.container_port)
    });
    if port_mismatch {
        return Some(AWSVPC_PORT_MISMATCH.into());
    }
    None
}

/// The platform version a Fargate task runs on: none or `LATEST` is
/// [`LATEST_PLATFORM_VERSION`]; a version Fargate runs is kept; anything else is refused with
/// the text for an InvalidParameterException.
pub fn resolve_platform_version(given: Option<&str>) -> Result<String, String> {
    match given {
        None | Some("LATEST") => Ok(LATEST_PLATFORM_VERSION.to_string()),
        Some(v) if PLATFORM_VERSIONS.contains(&v) => Ok(v.to_string()),
        // text not confirmed against AWS (the API model documents PlatformUnknownException as
        // "The specified platform version doesn't exist.").
        Some(_) => Err("The specified platform does not exist.".to_string()),
    }
}

/// `ephemeralStorage.sizeInGiB` as registered, if the definition sets it.
fn ephemeral_storage_member(td: &TaskDefinition) -> Option<&Value> {
    td.extra
        .get("ephemeralStorage")
        .filter(|v| !v.is_null())
        .map(|v| v.get("sizeInGiB").unwrap_or(&Value::Null))
}

/// The ClientException text for an `ephemeralStorage` ECS refuses at registration, or `Ok`
/// when the definition sets none or a size of 21 to 200 GiB.
pub fn validate_ephemeral_storage(td: &TaskDefinition) -> Result<(), String> {
    let Some(size) = ephemeral_storage_member(td) else {
        return Ok(());
    };
    match size.as_i64() {
        Some(n) if n < MIN_EPHEMERAL_STORAGE_GIB => Err(format!(
            "EphemeralStorage size should be at least {MIN_EPHEMERAL_STORAGE_GIB}"
        )),
        // text not confirmed against AWS: reported only as "... at most 200".
        Some(n) if n > MAX_EPHEMERAL_STORAGE_GIB => Err(format!(
            "EphemeralStorage size should be at most {MAX_EPHEMERAL_STORAGE_GIB}"
        )),
        Some(_) => Ok(()),
        // text not confirmed against AWS
        None => Err("Invalid setting for ephemeralStorage: 'sizeInGiB' must be an integer.".into()),
    }
}

/// The ephemeral storage (GiB) a Fargate task of `td` gets: the registered size, else
/// [`DEFAULT_EPHEMERAL_STORAGE_GIB`].
pub fn ephemeral_storage_gib(td: &TaskDefinition) -> i32 {
    ephemeral_storage_member(td)
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(DEFAULT_EPHEMERAL_STORAGE_GIB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn td(v: Value) -> TaskDefinition {
        serde_json::from_value(v).expect("a task definition")
    }

    fn valid() -> Value {
        json!({
            "family": "web",
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": "256",
            "memory": "512",
            "executionRoleArn": "arn:aws:iam::123456789012:role/exec",
            "volumes": [{"name": "scratch"}, {"name": "empty", "host": {}}],
            "containerDefinitions": [{
                "name": "web",
                "image": "nginx",
                "privileged": false,
                "portMappings": [
                    {"containerPort": 80},
                    {"containerPort": 443, "hostPort": 443},
                    {"containerPort": 8080, "hostPort": 0}
                ],
                "logConfiguration": {"logDriver": "awslogs", "options": {}},
                "linuxParameters": {"capabilities": {"add": ["SYS_PTRACE"], "drop": ["ALL"]}, "initProcessEnabled": true}
            }]
        })
    }

    fn reason(v: Value) -> Option<String> {
        fargate_incompatibility(&td(v))
    }

    #[test]
    fn a_valid_definition_runs_on_fargate() {
        assert_eq!(reason(valid()), None);
        let mut v = valid();
        v["cpu"] = json!("1 vCPU");
        v["memory"] = json!("2GB");
        v["pidMode"] = json!("task");
        assert_eq!(reason(v), None);
    }

    #[test]
    fn size_table() {
        assert_eq!(memory_options(256), vec![512, 1024, 2048]);
        assert_eq!(memory_options(512), vec![1024, 2048, 3072, 4096]);
        assert_eq!(memory_options(1024).len(), 7);
        assert_eq!(memory_options(2048).len(), 13);
        assert_eq!(memory_options(4096).len(), 23);
        assert_eq!(memory_options(8192).len(), 12);
        assert_eq!(memory_options(16384).len(), 12);
        assert_eq!(memory_options(32768), Vec::<i64>::new());
        assert!(is_valid_size(8192, 20480, false));
        assert!(!is_valid_size(8192, 17408, false));
        assert!(is_valid_size(16384, 40960, false));
        assert!(!is_valid_size(16384, 36864, false));
        assert!(!is_valid_size(4096, 31744, false));
        assert!(!is_valid_size(256, 1536, false));
        assert!(!is_valid_size(256, 512, true));
        assert!(is_valid_size(1024, 2048, true));
        assert!(!is_valid_size(8192, 16384, true));
    }

    #[test]
    fn refuses_other_network_modes() {
        for mode in [json!("bridge"), json!("host"), json!("none"), Value::Null] {
            let mut v = valid();
            v["networkMode"] = mode;
            assert_eq!(reason(v).as_deref(), Some(AWSVPC_REQUIRED));
        }
    }

    #[test]
    fn refuses_missing_task_cpu_and_memory() {
        let mut v = valid();
        v.as_object_mut().unwrap().remove("cpu");
        assert_eq!(reason(v).as_deref(), Some(TASK_CPU_REQUIRED));
        let mut v = valid();
        v.as_object_mut().unwrap().remove("memory");
        assert_eq!(reason(v).as_deref(), Some(TASK_MEMORY_REQUIRED));
    }

    #[test]
    fn refuses_sizes_fargate_does_not_offer() {
        let mut v = valid();
        v["cpu"] = json!("512");
        v["memory"] = json!("256");
        assert_eq!(
            reason(v).as_deref(),
            Some("No Fargate configuration exists for given values: 512 CPU, 256 memory. See the Amazon ECS documentation for the valid values.")
        );
        let mut v = valid();
        v["cpu"] = json!("1 vCPU");
        v["memory"] = json!("1GB");
        assert_eq!(reason(v), Some(no_configuration_message("1024", "1024")));
        let mut v = valid();
        v["runtimePlatform"] = json!({"operatingSystemFamily": "WINDOWS_SERVER_2019_CORE"});
        assert_eq!(reason(v), Some(no_configuration_message("256", "512")));
    }

    #[test]
    fn refuses_privileged_containers() {
        let mut v = valid();
        v["containerDefinitions"][0]["privileged"] = json!(true);
        assert_eq!(reason(v).as_deref(), Some(PRIVILEGED_UNSUPPORTED));
    }

    #[test]
    fn refuses_host_volumes() {
        let mut v = valid();
        v["volumes"] = json!([{"name": "data", "host": {"sourcePath": "/var/data"}}]);
        assert_eq!(reason(v).as_deref(), Some(HOST_SOURCE_PATH_UNSUPPORTED));
        let mut v = valid();
        v["volumes"] = json!([{"name": "data", "dockerVolumeConfiguration": {"scope": "task"}}]);
        assert!(reason(v).unwrap().ends_with("dockerVolumeConfiguration"));
    }

    #[test]
    fn refuses_host_ports_other_than_the_container_port() {
        let mut v = valid();
        v["containerDefinitions"][0]["portMappings"] =
            json!([{"containerPort": 80, "hostPort": 8080}]);
        assert_eq!(reason(v).as_deref(), Some(AWSVPC_PORT_MISMATCH));
    }

    #[test]
    fn refuses_host_namespaces() {
        let mut v = valid();
        v["pidMode"] = json!("host");
        assert_eq!(
            reason(v).as_deref(),
            Some("Tasks using the Fargate launch type do not support pidMode 'host'. The supported value for pidMode is 'task'.")
        );
        for mode in ["host", "task", "none"] {
            let mut v = valid();
            v["ipcMode"] = json!(mode);
            assert_eq!(reason(v).as_deref(), Some(IPC_MODE_UNSUPPORTED));
        }
    }

    #[test]
    fn refuses_linux_parameters_fargate_lacks() {
        for (param, value) in [
            ("devices", json!([{"hostPath": "/dev/fuse"}])),
            ("sharedMemorySize", json!(64)),
            ("tmpfs", json!([{"containerPath": "/tmp", "size": 64}])),
            ("maxSwap", json!(0)),
            ("swappiness", json!(60)),
        ] {
            let mut v = valid();
            v["containerDefinitions"][0]["linuxParameters"][param] = value;
            assert_eq!(
                reason(v),
                Some(format!(
                    "Fargate compatible task definitions do not support {param}"
                ))
            );
        }
        let mut v = valid();
        v["containerDefinitions"][0]["linuxParameters"]["devices"] = json!([]);
        assert_eq!(reason(v), None);
        let mut v = valid();
        v["containerDefinitions"][0]["linuxParameters"]["capabilities"]["add"] =
            json!(["SYS_PTRACE", "NET_ADMIN"]);
        assert_eq!(
            reason(v).as_deref(),
            Some("NET_ADMIN is not allowed on Fargate.")
        );
    }

    #[test]
    fn refuses_other_container_settings() {
        let mut v = valid();
        v["containerDefinitions"][0]["dockerSecurityOptions"] = json!(["no-new-privileges"]);
        assert!(reason(v).unwrap().ends_with("dockerSecurityOptions"));
        let mut v = valid();
        v["containerDefinitions"][0]["resourceRequirements"] =
            json!([{"type": "GPU", "value": "1"}]);
        assert!(reason(v).unwrap().contains("GPU"));
        let mut v = valid();
        v["placementConstraints"] = json!([{"type": "memberOf", "expression": "attribute:x == y"}]);
        assert!(reason(v).unwrap().ends_with("constraints"));
        let mut v = valid();
        v["containerDefinitions"][0]["logConfiguration"]["logDriver"] = json!("json-file");
        assert!(reason(v)
            .unwrap()
            .starts_with("json-file is not a valid log driver"));
        let mut v = valid();
        v.as_object_mut().unwrap().remove("executionRoleArn");
        assert_eq!(reason(v).as_deref(), Some(AWSLOGS_EXECUTION_ROLE_REQUIRED));
    }

    #[test]
    fn platform_versions() {
        assert_eq!(resolve_platform_version(None).as_deref(), Ok("1.4.0"));
        assert_eq!(
            resolve_platform_version(Some("LATEST")).as_deref(),
            Ok("1.4.0")
        );
        assert_eq!(
            resolve_platform_version(Some("1.4.0")).as_deref(),
            Ok("1.4.0")
        );
        assert_eq!(
            resolve_platform_version(Some("1.3.0")).as_deref(),
            Ok("1.3.0")
        );
        for bad in ["1.5.0", "latest", "", "1.0.0"] {
            assert_eq!(
                resolve_platform_version(Some(bad)),
                Err("The specified platform does not exist.".to_string())
            );
        }
    }

    #[test]
    fn ephemeral_storage() {
        assert_eq!(validate_ephemeral_storage(&td(valid())), Ok(()));
        assert_eq!(
            ephemeral_storage_gib(&td(valid())),
            DEFAULT_EPHEMERAL_STORAGE_GIB
        );
        let with = |size: Value| {
            let mut v = valid();
            v["ephemeralStorage"] = json!({"sizeInGiB": size});
            td(v)
        };
        assert_eq!(validate_ephemeral_storage(&with(json!(21))), Ok(()));
        assert_eq!(validate_ephemeral_storage(&with(json!(200))), Ok(()));
        assert_eq!(ephemeral_storage_gib(&with(json!(50))), 50);
        assert_eq!(
            validate_ephemeral_storage(&with(json!(20))),
            Err("EphemeralStorage size should be at least 21".to_string())
        );
        assert_eq!(
            validate_ephemeral_storage(&with(json!(201))),
            Err("EphemeralStorage size should be at most 200".to_string())
        );
        assert!(validate_ephemeral_storage(&with(json!("big"))).is_err());
    }
}
