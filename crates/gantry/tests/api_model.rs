//! Every operation of the ECS, CloudWatch Logs, Secrets Manager and SSM models, called on a
//! running Gantry: twice,
//! with an empty request and with a minimal request the model calls valid (its required
//! members filled in). Whatever Gantry does with an operation, done or not yet, the answer
//! must come within seconds, never be a 5xx (which every SDK retries for minutes), and carry
//! an error type the operation's model lists, since an SDK can only match those.

mod common;

use common::{signed_json, Dev};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;

const ECS_MODEL: &str = include_str!("../../control/models/ecs-2014-11-13.json");
const LOGS_MODEL: &str = include_str!("../../control/models/logs-2014-03-28.json");
const SECRETSMANAGER_MODEL: &str =
    include_str!("../../control/models/secretsmanager-2017-10-17.json");
const SSM_MODEL: &str = include_str!("../../control/models/ssm-2014-11-06.json");

/// Errors of the protocol rather than of an operation: the same for every call.
const PROTOCOL_ERRORS: &[&str] = &["AccessDeniedException", "SerializationException"];

/// Secrets Manager answers input its model refuses with `ValidationException`, which no
/// operation lists.
const SECRETSMANAGER_PROTOCOL_ERRORS: &[&str] = &["ValidationException"];

/// SSM answers bad input to any operation with `ValidationException`, which botocore's model
/// leaves out of (nearly) every operation: a common error, as `AccessDeniedException` is.
const SSM_PROTOCOL_ERRORS: &[&str] = &["ValidationException"];

struct Model {
    operations: Map<String, Value>,
    shapes: Map<String, Value>,
}

impl Model {
    fn parse(text: &str) -> Model {
        let v: Value = serde_json::from_str(text).expect("model JSON");
        Model {
            operations: v["operations"].as_object().expect("operations").clone(),
            shapes: v["shapes"].as_object().expect("shapes").clone(),
        }
    }

    fn errors(&self, op: &str) -> Vec<String> {
        self.operations[op]["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A minimal request for `op`: its required members, recursively, with values that satisfy
    /// the model's types, enums and bounds.
    fn example_input(&self, op: &str) -> Value {
        match self.operations[op]["input"].as_str() {
            Some(shape) => self.example(shape, 0),
            None => json!({}),
        }
    }

    fn example(&self, name: &str, depth: usize) -> Value {
        let shape = &self.shapes[name];
        let min = shape["min"].as_f64();
        match shape["type"].as_str().unwrap_or("") {
            "structure" => {
                let mut out = Map::new();
                if depth < 8 {
                    for member in shape["required"].as_array().into_iter().flatten() {
                        let member = member.as_str().expect("member name");
                        let target = shape["members"][member]["shape"]
                            .as_str()
                            .expect("member shape");
                        out.insert(member.to_string(), self.example(target, depth + 1));
                    }
                }
                Value::Object(out)
            }
            "list" => {
                let n = min.unwrap_or(1.0).max(1.0) as usize;
                let item = shape["member"]["shape"].as_str().expect("list member");
                Value::Array((0..n).map(|_| self.example(item, depth + 1)).collect())
            }
            "map" => {
                let v = shape["value"]["shape"].as_str().expect("map value");
                json!({"gantryprobe": self.example(v, depth + 1)})
            }
            "string" => {
                if let Some(first) = shape["enum"].as_array().and_then(|e| e.first()) {
                    return first.clone();
                }
                let mut s = "gantryprobe".to_string();
                let want = min.unwrap_or(0.0) as usize;
                while s.len() < want {
                    s.push('x');
                }
                if let Some(max) = shape["max"].as_f64() {
                    s.truncate(max as usize);
                }
                Value::String(s)
            }
            "integer" | "long" => json!(min.unwrap_or(1.0).max(1.0) as i64),
            "double" | "float" => json!(min.unwrap_or(1.0).max(1.0)),
            "boolean" => json!(false),
            "timestamp" => json!(1_700_000_000),
            "blob" => json!("AA=="),
            other => panic!("shape {name} has an unknown type {other}"),
        }
    }
}

#[tokio::test]
async fn every_operation_of_the_models_answers_quickly_with_a_listed_error_or_success() {
    let dev = Dev::start().await;
    let services = [
        (
            "ecs",
            "AmazonEC2ContainerServiceV20141113",
            Model::parse(ECS_MODEL),
        ),
        ("logs", "Logs_20140328", Model::parse(LOGS_MODEL)),
        (
            "secretsmanager",
            "secretsmanager",
            Model::parse(SECRETSMANAGER_MODEL),
        ),
        ("ssm", "AmazonSSM", Model::parse(SSM_MODEL)),
    ];
    let mut problems = Vec::new();
    let mut answered: HashMap<&str, usize> = HashMap::new();
    for (service, prefix, model) in &services {
        let table = match *service {
            "ecs" => "ECS",
            "logs" => "Logs",
            "ssm" => "SSM",
            _ => "Secrets Manager",
        };
        let states: HashMap<String, String> = documented(table, model).into_iter().collect();
        let mut ops: Vec<&String> = model.operations.keys().collect();
        ops.sort();
        for op in ops {
            let documented_missing = states.get(op.as_str()).map(String::as_str) == Some("not yet");
            for input in [json!({}), model.example_input(op)] {
                let target = format!("{prefix}.{op}");
                let call = signed_json(&dev.endpoint, &dev.keys, service, &target, &input);
                let (status, body) = match tokio::time::timeout(Duration::from_secs(15), call).await
                {
                    Ok(r) => r,
                    Err(_) => {
                        problems.push(format!("{target} {input}: no answer within 15 s"));
                        continue;
                    }
                };
                *answered.entry(service).or_default() += 1;
                let unsupported = body["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("does not support {op} yet"));
                if unsupported != documented_missing {
                    problems.push(format!(
                        "{target}: docs/API.md says {:?}, the server {}",
                        states.get(op.as_str()),
                        if unsupported {
                            "does not support it"
                        } else {
                            "answers it"
                        }
                    ));
                }
                if status >= 500 {
                    problems.push(format!("{target} {input}: HTTP {status} {body}"));
                    continue;
                }
                if status == 200 {
                    if !body.is_object() {
                        problems.push(format!("{target} {input}: 200 without a JSON object"));
                    }
                    continue;
                }
                let code = body["__type"].as_str().unwrap_or("");
                let code = code.rsplit('#').next().unwrap_or(code);
                let listed = model.errors(op);
                // A few old Logs operations list no input error at all; invalid input to
                // them gets the service's own (what AWS answers too).
                let lists_no_input_error = *service == "logs"
                    && !listed
                        .iter()
                        .any(|e| e == "InvalidParameterException" || e == "ValidationException");
                let generic_input_error =
                    lists_no_input_error && code == "InvalidParameterException";
                let service_protocol_error = match *service {
                    "secretsmanager" => SECRETSMANAGER_PROTOCOL_ERRORS.contains(&code),
                    "ssm" => SSM_PROTOCOL_ERRORS.contains(&code),
                    _ => false,
                };
                if !listed.iter().any(|e| e == code)
                    && !PROTOCOL_ERRORS.contains(&code)
                    && !generic_input_error
                    && !service_protocol_error
                {
                    problems.push(format!(
                        "{target} {input}: HTTP {status} {code} is not one of {listed:?}: {body}"
                    ));
                }
                if body["message"].as_str().unwrap_or("").is_empty() {
                    problems.push(format!("{target} {input}: {code} without a message"));
                }
            }
        }
    }
    // The dispatcher retypes an unlisted error as the service's generic one and logs the
    // defect: a handler must not need that.
    for line in dev.proc.output().lines() {
        if line.contains("is not an error") {
            problems.push(format!("retyped by the dispatcher: {line}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(answered["ecs"] >= 2 * 88, "{answered:?}");
    assert!(answered["logs"] >= 2 * 50, "{answered:?}");
    assert!(answered["secretsmanager"] >= 2 * 26, "{answered:?}");
    assert!(answered["ssm"] >= 2 * 150, "{answered:?}");
    // And the server is still whole.
    dev.client
        .list_clusters()
        .send()
        .await
        .expect("ListClusters after the walk");
}

#[tokio::test]
async fn an_operation_gantry_lacks_names_itself_and_an_unknown_one_is_unknown() {
    let dev = Dev::start().await;
    let (status, body) = signed_json(
        &dev.endpoint,
        &dev.keys,
        "ecs",
        "AmazonEC2ContainerServiceV20141113.CreateGateway",
        &json!({}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "UnsupportedFeatureException", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("does not support CreateGateway"),
        "{body}"
    );
    let (status, body) = signed_json(
        &dev.endpoint,
        &dev.keys,
        "ecs",
        "AmazonEC2ContainerServiceV20141113.MakeCoffee",
        &json!({}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "UnknownOperationException", "{body}");
}

/// The rows of `docs/API.md`'s table for `service` ("ECS", "Logs", "Secrets Manager" or "SSM"):
/// operation and state. A service's section runs from its `## ` heading to the next one.
fn documented(service: &str, model: &Model) -> Vec<(String, String)> {
    let doc = include_str!("../../../docs/API.md");
    let heading = match service {
        "ECS" => "## ECS",
        "Logs" => "## CloudWatch Logs",
        "SSM" => "## SSM Parameter Store",
        _ => "## Secrets Manager",
    };
    let at = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("a {heading} section"));
    let rest = &doc[at + 1..];
    let end = rest[heading.len()..]
        .find("\n## ")
        .map_or(rest.len(), |i| heading.len() + i);
    let text = &rest[..end];
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            match cells.as_slice() {
                ["", op, state, ..] if model.operations.contains_key(*op) => {
                    Some((op.to_string(), state.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// `docs/API.md` lists every operation of every model once, in its service's table, with a
/// state (the walk above checks that "not yet" is what the server says, and only then).
#[test]
fn the_api_table_lists_every_operation_once() {
    for (name, model) in [
        ("ECS", Model::parse(ECS_MODEL)),
        ("Logs", Model::parse(LOGS_MODEL)),
        ("Secrets Manager", Model::parse(SECRETSMANAGER_MODEL)),
        ("SSM", Model::parse(SSM_MODEL)),
    ] {
        let rows = documented(name, &model);
        for op in model.operations.keys() {
            let n = rows.iter().filter(|(o, _)| o == op).count();
            assert_eq!(n, 1, "{name}: {op} is listed {n} times in docs/API.md");
        }
        for (op, state) in &rows {
            assert!(
                ["done", "partial", "not yet"].contains(&state.as_str()),
                "{name}: {op} has state {state:?}"
            );
        }
    }
}
