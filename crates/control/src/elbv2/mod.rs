//! The Elastic Load Balancing v2 API (awsQuery, `Version=2015-12-01`, signing name
//! `elasticloadbalancing`) for application load balancers: load balancers, target groups
//! and their targets, listeners, rules, attributes and tags (`api.rs`), ELBv2's input rules
//! (`input.rs`) and its XML shapes (`xml.rs`). The records live in the state layer
//! (`state::elbv2`); serving them is the data plane's (`gantry_model::elbv2`), which this
//! API only asks whether a port is free and how targets are doing. See `docs/ELBV2.md`.

mod api;
mod input;
mod xml;

pub(crate) use api::dispatch;
