//! The data plane's worker threads: one single-threaded tokio runtime per thread, as nginx
//! and HAProxy run one event loop per worker. A client connection lives on one worker from
//! accept to close, and so do the pooled connections its requests use (each target keeps one
//! client per worker), so a request never crosses threads. On a shared multi-threaded
//! runtime each request would bounce between the client connection's task and the pooled
//! backend connection's task on different threads, which measurably costs throughput.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// The index of the worker running on this thread (0 elsewhere).
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker the caller runs on, for per-worker resources.
pub fn current_index() -> usize {
    WORKER_INDEX.with(Cell::get)
}

pub struct Workers {
    handles: Vec<Handle>,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` workers (at least one). Should a thread or runtime fail to start, the
    /// caller's runtime serves in its place.
    pub fn start(count: usize, fallback: &Handle) -> Workers {
        let mut handles = Vec::with_capacity(count.max(1));
        let mut stops = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name(format!("gantry-lb-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            tracing::error!(%error, "load balancer worker runtime");
                            return;
                        }
                    };
                    WORKER_INDEX.with(|i| i.set(index));
                    if handle_tx.send(runtime.handle().clone()).is_err() {
                        return;
                    }
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                });
            let handle = match spawned {
                Ok(_) => handle_rx.recv().ok(),
                Err(error) => {
                    tracing::error!(%error, "load balancer worker thread");
                    None
                }
            };
            handles.push(handle.unwrap_or_else(|| fallback.clone()));
            stops.push(stop_tx);
        }
        Workers {
            handles,
            stops: Mutex::new(stops),
            next: AtomicUsize::new(0),
        }
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    pub fn get(&self, index: usize) -> &Handle {
        &self.handles[index % self.handles.len()]
    }

    /// The worker for the next connection, in turn.
    pub fn next(&self) -> &Handle {
        self.get(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Ends every worker (their tasks, connections included, are dropped).
    pub fn stop(&self) {
        let stops = std::mem::take(
            &mut *self
                .stops
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for stop in stops {
            let _ = stop.send(());
        }
    }
}
