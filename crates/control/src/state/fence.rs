//! Fencing of the controllers' writes when control-plane replicas share an etcd store.
//!
//! Exactly one replica runs the controllers: the one whose lease holds [`LEADER_KEY`]. Its
//! controllers reconcile inside [`scope`] with the mod revision of that key as their token,
//! and every transaction [`super::StateStore`] sends from inside the scope carries one more
//! compare: the leader key is still the one written at that revision. A replica that lost
//! its lease (its key expired, or another replica's now stands there) therefore writes
//! nothing, whatever it had decided: the write fails with `StoreError::Fenced`.

use std::future::Future;

/// The key the leading replica holds, bound to its lease.
pub const LEADER_KEY: &str = "control-plane/leader";
/// Rewritten by every writing transaction when replicas share the store: its mod revision is
/// the latest write anyone acknowledged, so a replica that waits until its cache shows that
/// revision before answering reads what any replica acknowledged (`StateStore::sync`).
pub const LAST_WRITE_KEY: &str = "control-plane/last-write";
/// Each live replica's registration (`<prefix><replica id>`), bound to its lease.
pub const REPLICAS_PREFIX: &str = "control-plane/replicas/";

tokio::task_local! {
    static FENCE: i64;
}

/// Runs `f` as the leader whose leader key was written at `token`.
pub async fn scope<F: Future>(token: i64, f: F) -> F::Output {
    FENCE.scope(token, f).await
}

/// The token of the leadership the current task acts under, if any.
pub fn current() -> Option<i64> {
    FENCE.try_with(|t| *t).ok()
}
