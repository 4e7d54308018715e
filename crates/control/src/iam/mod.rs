//! IAM and STS over awsQuery: the API (`api.rs`, `sts.rs`), the awsQuery entry point
//! (`query.rs`), and key material (`keys.rs`: users' keys, agents' per-instance credentials,
//! the first administrator and the agents' join token). The records live in the state layer
//! (`state::iam`); authentication and policy evaluation in `auth.rs`.

mod api;
pub mod keys;
pub mod query;
pub(crate) mod sts;
