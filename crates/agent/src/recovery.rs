//! Restart adoption: the containers an earlier run of this agent left on the engine, found by
//! the container-instance label and grouped by task, so that runners rebuild their state from
//! them instead of creating duplicates. Containers of other instances are never looked at.
//!
//! An awsvpc task's pause container carries the same task and instance labels (plus
//! `dev.gantry.pause=true`), so it is grouped with its task: the runner adopts it as the
//! task's network namespace (no second one, the same address), and the paths that stop
//! tasks no longer assigned here, or clean up containers no runner knows, remove it too. A
//! one-container awsvpc task has no pause container: its container, adopted like any other,
//! holds the task's address itself.

use gantry_model::agent_protocol::labels;
use std::collections::HashMap;

use crate::docker::{ContainerSnapshot, DockerDriver, DockerError};

/// Every container labelled with `instance_arn`, inspected, grouped by task ARN.
pub async fn owned_containers(
    docker: &DockerDriver,
    instance_arn: &str,
) -> Result<HashMap<String, Vec<ContainerSnapshot>>, DockerError> {
    Ok(group_by_task(
        docker.instance_containers(instance_arn).await?,
        instance_arn,
    ))
}

/// Groups snapshots by their task ARN label, keeping only those owned by `instance_arn`.
pub fn group_by_task(
    snaps: Vec<ContainerSnapshot>,
    instance_arn: &str,
) -> HashMap<String, Vec<ContainerSnapshot>> {
    let mut out: HashMap<String, Vec<ContainerSnapshot>> = HashMap::new();
    for s in snaps {
        if s.label(labels::INSTANCE_ARN) != Some(instance_arn) {
            continue;
        }
        let Some(task) = s.label(labels::TASK_ARN).map(str::to_string) else {
            continue;
        };
        out.entry(task).or_default().push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, task: Option<&str>, instance: &str) -> ContainerSnapshot {
        let mut labels = HashMap::from([(labels::INSTANCE_ARN.to_string(), instance.to_string())]);
        if let Some(t) = task {
            labels.insert(labels::TASK_ARN.to_string(), t.to_string());
        }
        ContainerSnapshot {
            id: id.into(),
            labels,
            ..Default::default()
        }
    }

    #[test]
    fn pause_containers_are_grouped_with_their_task() {
        let mut pause = snap("p", Some("t1"), "me");
        pause
            .labels
            .insert(labels::PAUSE.to_string(), "true".to_string());
        let g = group_by_task(vec![snap("1", Some("t1"), "me"), pause], "me");
        assert_eq!(g["t1"].len(), 2);
        assert!(g["t1"].iter().any(crate::awsvpc::is_pause));
    }

    #[test]
    fn groups_own_containers_by_task() {
        let g = group_by_task(
            vec![
                snap("1", Some("t1"), "me"),
                snap("2", Some("t1"), "me"),
                snap("3", Some("t2"), "me"),
                snap("4", Some("t3"), "someone-else"),
                snap("5", None, "me"),
            ],
            "me",
        );
        assert_eq!(g.len(), 2);
        assert_eq!(g["t1"].len(), 2);
        assert_eq!(g["t2"][0].id, "3");
    }
}
