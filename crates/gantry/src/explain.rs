//! `gantry explain`: why a task is PENDING, why a service cannot place its tasks, or where a
//! task definition with placement settings could run — per container instance, the first
//! check that refused it and by how much. The answer comes from Gantry's `ExplainPlacement`
//! API operation (docs/EXPLAIN.md), so scripts can ask the same question.

use crate::client::ApiClient;
use crate::commands::{err, resolve_task, task_definition_reference, Target};
use clap::Args;
use serde_json::{json, Value};
use std::process::ExitCode;

pub const EXPLAIN_HELP: &str = "Examples:
  gantry explain 3f9a1c              why is task 3f9a1c… PENDING (or where it runs)
  gantry explain --service web       why can't service web place its tasks
  gantry explain --task-definition web:3 \\
      --constraint 'memberOf:attribute:ecs.availability-zone == us-east-1a'

Exits 0 when at least one container instance can take the task (or the task is placed),
1 when none can.";

#[derive(Args)]
pub struct ExplainArgs {
    /// A task id (or the short id `gantry ps` prints) or ARN.
    #[arg(conflicts_with_all = ["service", "task_definition"], required_unless_present_any = ["service", "task_definition"])]
    pub task: Option<String>,
    /// A service name or ARN: explains placing one more task of its current deployment.
    #[arg(long, conflicts_with = "task_definition")]
    pub service: Option<String>,
    /// A task definition file, `family`, `family:revision` or ARN.
    #[arg(long)]
    pub task_definition: Option<String>,
    /// A placement constraint for --task-definition, as TYPE[:EXPRESSION]
    /// (`distinctInstance`, or `memberOf:<cluster query>`); repeatable.
    #[arg(long = "constraint", value_name = "TYPE[:EXPRESSION]")]
    pub constraints: Vec<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

fn constraint(given: &str) -> Value {
    match given.split_once(':') {
        Some((kind, expression)) => json!({"type": kind, "expression": expression.trim()}),
        None => json!({"type": given}),
    }
}

pub async fn explain(args: ExplainArgs) -> Result<ExitCode, String> {
    let api = ApiClient::new(&args.target.endpoint);
    let cluster = &args.target.cluster;
    let mut input = json!({"cluster": cluster});
    if let Some(task) = &args.task {
        input["task"] = json!(resolve_task(&api, cluster, task).await?);
    } else if let Some(service) = &args.service {
        input["service"] = json!(service);
    } else if let Some(td) = &args.task_definition {
        input["taskDefinition"] = json!(task_definition_reference(&api, td).await?);
    }
    if !args.constraints.is_empty() {
        input["placementConstraints"] =
            Value::Array(args.constraints.iter().map(|c| constraint(c)).collect());
    }
    let answer = api.gantry("ExplainPlacement", input).await.map_err(err)?;
    let placed = answer["task"]["lastStatus"]
        .as_str()
        .is_some_and(|s| s != "PENDING" || answer["task"]["agentConnected"] == json!(true));
    let fits = answer["placeableOn"].as_u64().unwrap_or(0) > 0;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render(&answer));
    }
    Ok(if fits || placed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The answer as a person reads it.
pub fn render(answer: &Value) -> String {
    let mut out = String::new();
    let req = &answer["requirements"];
    let mut needs = vec![
        format!("{} CPU units", req["cpu"].as_i64().unwrap_or(0)),
        format!("{} MiB", req["memory"].as_i64().unwrap_or(0)),
    ];
    for (proto, key) in [("TCP", "tcpPorts"), ("UDP", "udpPorts")] {
        let ports: Vec<String> = req[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p.to_string())
            .collect();
        if !ports.is_empty() {
            needs.push(format!("{proto} port {}", ports.join(", ")));
        }
    }
    out.push_str(&format!(
        "{} needs {}\n",
        answer["subject"].as_str().unwrap_or("?"),
        needs.join(", ")
    ));
    if let Some(why) = answer["task"]["why"].as_str() {
        out.push_str(&format!("  {why}\n"));
    }
    if let Some(e) = answer["lastPlacementEvent"].as_str() {
        out.push_str(&format!("  last event: {e}\n"));
    }
    out.push('\n');
    let rows: Vec<&Value> = answer["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let width = rows
        .iter()
        .map(|r| r["containerInstanceId"].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(8)
        .max(8);
    out.push_str(&format!("  {:width$}  FITS  WHY NOT\n", "INSTANCE"));
    for r in rows {
        let id = r["containerInstanceId"].as_str().unwrap_or("?");
        if r["fits"] == json!(true) {
            out.push_str(&format!("  {id:width$}  yes\n"));
        } else {
            out.push_str(&format!(
                "  {id:width$}  no    {}: {}\n",
                r["reason"].as_str().unwrap_or("?").trim_end_matches('.'),
                r["detail"].as_str().unwrap_or("")
            ));
        }
    }
    out.push_str(&format!("\n{}\n", answer["summary"].as_str().unwrap_or("")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_instance_with_the_reason() {
        let answer = json!({
            "subject": "service web (web:3)",
            "requirements": {"cpu": 256, "memory": 512, "tcpPorts": [80], "udpPorts": []},
            "instances": [
                {"containerInstanceId": "i-3", "fits": false, "reason": "RESOURCE:MEMORY",
                 "detail": "needs 512 MiB, 200 MiB free (of 1024 MiB)"},
                {"containerInstanceId": "i-9", "fits": true}
            ],
            "placeableOn": 1,
            "summary": "1 of 2 container instances can take one more task now."
        });
        let text = render(&answer);
        assert!(
            text.starts_with("service web (web:3) needs 256 CPU units, 512 MiB, TCP port 80\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "i-3       no    RESOURCE:MEMORY: needs 512 MiB, 200 MiB free (of 1024 MiB)"
            ),
            "{text}"
        );
        assert!(text.contains("i-9       yes"), "{text}");
        assert!(text.ends_with("1 of 2 container instances can take one more task now.\n"));
    }

    #[test]
    fn constraints_parse_as_type_and_expression() {
        assert_eq!(
            constraint("memberOf:attribute:ecs.availability-zone == us-east-1a"),
            json!({"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1a"})
        );
        assert_eq!(
            constraint("distinctInstance"),
            json!({"type": "distinctInstance"})
        );
    }
}
