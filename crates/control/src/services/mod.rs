//! ECS services: the API (`api`), the deployment history (`history`), the stored record
//! (`crate::state::service_record`), the service scheduler's pure decisions (`rollout`) and the loop that applies
//! them (`reconciler`). See docs/SERVICES.md for the behaviour.

pub mod api;
pub mod history;
pub mod reconciler;
pub mod rollout;

#[cfg(test)]
mod protection_tests;
#[cfg(test)]
mod tests;
