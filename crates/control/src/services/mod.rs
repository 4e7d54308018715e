//! ECS services: the API (`api`), the deployment history (`history`), the task sets of
//! EXTERNAL services (`task_sets`), the stored record (`crate::state::service_record`), the
//! service scheduler's pure decisions (`rollout` for rolling deployments, `task_set_plan` for
//! task sets) and the loop that applies them (`reconciler`). See docs/SERVICES.md for the
//! behaviour.

pub mod api;
pub mod history;
pub mod reconciler;
pub mod rollout;
pub mod task_set_plan;
pub mod task_sets;

#[cfg(test)]
mod protection_tests;
#[cfg(test)]
mod tests;
