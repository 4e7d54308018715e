//! Container output as the control plane holds it: [`LogStore`], a thin handle on any
//! [`LogBackend`] (SQLite by default, its own file: log volume must not slow the state store)
//! that turns storage errors into the CloudWatch Logs errors clients expect. Storage, its size
//! cap and retention live in `gantry-logs`; the API is `log_api.rs`.

use gantry_logs::{LogError, NewEvent, SqliteLogBackend};
use gantry_model::agent_protocol::LogBatch;
use gantry_model::{EcsError, EcsResult};
use std::path::Path;
use std::sync::Arc;

pub use gantry_logs::{
    AppendReceipt, Eviction, LogBackend, LogLimits, LogStats, DEFAULT_MAX_BYTES, RETENTION_DAYS,
};

/// The log store the control plane reads and writes: any [`LogBackend`], SQLite by default.
#[derive(Clone)]
pub struct LogStore {
    backend: Arc<dyn LogBackend>,
}

pub(crate) fn store_error(e: LogError) -> EcsError {
    match e {
        LogError::GroupNotFound(_) => group_not_found(),
        LogError::StreamNotFound { .. } => stream_not_found(),
        LogError::InvalidRetention(_) => EcsError::invalid_parameter(e.to_string()),
        LogError::GroupAlreadyExists(_) => EcsError::new(
            "ResourceAlreadyExistsException",
            "The specified log group already exists",
        ),
        LogError::StreamAlreadyExists { .. } => EcsError::new(
            "ResourceAlreadyExistsException",
            "The specified log stream already exists",
        ),
        LogError::TooManyTags { .. } => EcsError::invalid_parameter(e.to_string()),
        LogError::InvalidLimits(_) | LogError::Storage(_) => {
            EcsError::server(format!("The log store failed: {e}"))
        }
    }
}

impl LogStore {
    /// The SQLite store at `path` with the default limits (a 1 GiB cap).
    pub fn open(path: &Path) -> EcsResult<Self> {
        Self::open_with(path, LogLimits::default())
    }

    pub fn open_with(path: &Path, limits: LogLimits) -> EcsResult<Self> {
        let backend = SqliteLogBackend::open(path, limits).map_err(store_error)?;
        Ok(Self::with_backend(Arc::new(backend)))
    }

    pub fn open_in_memory() -> EcsResult<Self> {
        Self::open_in_memory_with(LogLimits::default())
    }

    pub fn open_in_memory_with(limits: LogLimits) -> EcsResult<Self> {
        let backend = SqliteLogBackend::open_in_memory(limits).map_err(store_error)?;
        Ok(Self::with_backend(Arc::new(backend)))
    }

    pub fn with_backend(backend: Arc<dyn LogBackend>) -> Self {
        LogStore { backend }
    }

    pub fn backend(&self) -> &Arc<dyn LogBackend> {
        &self.backend
    }

    /// An agent's batch, stored once however often it is sent (by its batch id).
    pub async fn append(&self, batch: LogBatch) -> EcsResult<AppendReceipt> {
        let batch_id = batch.batch_id;
        let events = batch
            .events
            .into_iter()
            .map(|e| NewEvent {
                group: e.log_group,
                stream: e.log_stream,
                timestamp: e.timestamp,
                message: e.message,
            })
            .collect();
        self.backend
            .append_batch(events, batch_id)
            .await
            .map_err(store_error)
    }

    pub async fn stats(&self) -> EcsResult<LogStats> {
        self.backend.stats().await.map_err(store_error)
    }

    /// One retention sweep at the current time. A failure is logged, not returned: the next
    /// sweep tries again, and nothing waits on this one.
    pub async fn enforce_retention_now(&self) {
        let now_ms = (gantry_model::now_epoch() * 1000.0) as i64;
        if let Err(e) = self.backend.enforce_retention(now_ms).await {
            tracing::warn!("log retention sweep failed: {e}");
        }
    }

    pub(crate) async fn require_group(&self, group: &str) -> EcsResult<()> {
        match self.backend.group(group).await.map_err(store_error)? {
            Some(_) => Ok(()),
            None => Err(group_not_found()),
        }
    }
}

pub(crate) fn group_not_found() -> EcsError {
    EcsError::resource_not_found("The specified log group does not exist.")
}

pub(crate) fn stream_not_found() -> EcsError {
    EcsError::resource_not_found("The specified log stream does not exist.")
}
