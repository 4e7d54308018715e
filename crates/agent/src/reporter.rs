//! State reports to the control plane, never lost: every `SubmitTaskStateChange` is queued per
//! task and sent in order, retried with backoff while the server is down or failing. Reports
//! are full task reports, so a newer one for a task replaces an older one not yet sent.

use gantry_model::agent_protocol::SubmitTaskStateChange;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::api_client::StateSink;
use crate::util::Backoff;

/// The pending reports: at most one per task (the newest), in the order tasks first queued.
#[derive(Debug, Default)]
pub struct ReportQueue {
    order: VecDeque<String>,
    pending: HashMap<String, (u64, SubmitTaskStateChange)>,
    seq: u64,
}

impl ReportQueue {
    /// Queues `r`, replacing any unsent report for the same task (keeping its place).
    pub fn push(&mut self, r: SubmitTaskStateChange) {
        let key = r.task.clone().unwrap_or_default();
        self.seq += 1;
        if self.pending.insert(key.clone(), (self.seq, r)).is_none() {
            self.order.push_back(key);
        }
    }

    /// The next report to send, with its sequence number for [`ReportQueue::ack`].
    pub fn front(&self) -> Option<(u64, SubmitTaskStateChange)> {
        let key = self.order.front()?;
        self.pending.get(key).cloned()
    }

    /// Marks the report `seq` of `task` as done (sent, or refused for good). A newer report
    /// queued for the task meanwhile stays and goes next.
    pub fn ack(&mut self, task: &str, seq: u64) {
        if self.pending.get(task).is_some_and(|(s, _)| *s == seq) {
            self.pending.remove(task);
            self.order.retain(|k| k != task);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Sends what arrives on `rx` through `sink` until `stop` turns true (then tries, for at most
/// two seconds, to send what is still queued) or every sender is gone and the queue is empty.
pub async fn run_reporter<S: StateSink>(
    sink: Arc<S>,
    mut rx: mpsc::UnboundedReceiver<SubmitTaskStateChange>,
    mut stop: watch::Receiver<bool>,
) {
    let mut queue = ReportQueue::default();
    let mut backoff = Backoff::standard();
    let mut open = true;
    loop {
        while let Ok(r) = rx.try_recv() {
            queue.push(r);
        }
        let Some((seq, report)) = queue.front() else {
            if !open {
                return;
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => queue.push(r),
                    None => open = false,
                },
                _ = stop.changed() => return,
            }
            continue;
        };
        let task = report.task.clone().unwrap_or_default();
        let result = tokio::select! {
            r = sink.submit(&report) => r,
            _ = stop.changed() => {
                drain(&*sink, &mut queue, &mut rx).await;
                return;
            }
        };
        match result {
            Ok(()) => {
                tracing::debug!(task = %task, status = ?report.status, "reported task state");
                backoff.reset();
                queue.ack(&task, seq);
            }
            Err(e) if e.is_retryable() => {
                let d = backoff.next_delay();
                tracing::warn!(
                    task = %task,
                    "cannot report task state ({} queued): {e}; retrying in {d:?}",
                    queue.len()
                );
                let sleep = tokio::time::sleep(d);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        r = rx.recv(), if open => match r {
                            Some(r) => queue.push(r),
                            None => open = false,
                        },
                        _ = stop.changed() => {
                            drain(&*sink, &mut queue, &mut rx).await;
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(task = %task, status = ?report.status, "control plane refused the task state report, dropping it: {e}");
                queue.ack(&task, seq);
            }
        }
    }
}

/// Last tries at shutdown, bounded in time.
async fn drain<S: StateSink>(
    sink: &S,
    queue: &mut ReportQueue,
    rx: &mut mpsc::UnboundedReceiver<SubmitTaskStateChange>,
) {
    while let Ok(r) = rx.try_recv() {
        queue.push(r);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Some((seq, report)) = queue.front() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, sink.submit(&report)).await {
            Ok(Ok(())) => queue.ack(report.task.as_deref().unwrap_or(""), seq),
            Ok(Err(e)) if !e.is_retryable() => queue.ack(report.task.as_deref().unwrap_or(""), seq),
            _ => break,
        }
    }
    if !queue.is_empty() {
        tracing::warn!(
            "shutting down with {} task state report(s) unsent; the restarted agent reports current state again",
            queue.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_client::ApiError;
    use std::future::Future;
    use std::sync::Mutex;

    fn rep(task: &str, status: &str) -> SubmitTaskStateChange {
        SubmitTaskStateChange {
            task: Some(task.into()),
            status: Some(status.into()),
            ..Default::default()
        }
    }

    #[test]
    fn newer_report_supersedes_unsent_one_and_keeps_order() {
        let mut q = ReportQueue::default();
        q.push(rep("a", "PENDING"));
        q.push(rep("b", "PENDING"));
        q.push(rep("a", "RUNNING"));
        assert_eq!(q.len(), 2);
        let (seq, r) = q.front().unwrap();
        assert_eq!(r, rep("a", "RUNNING"));
        // A newer report arrives while the front one is in flight: it stays queued.
        q.push(rep("a", "STOPPED"));
        q.ack("a", seq);
        let (seq, r) = q.front().unwrap();
        assert_eq!(r, rep("a", "STOPPED"));
        q.ack("a", seq);
        assert_eq!(q.front().unwrap().1, rep("b", "PENDING"));
    }

    struct Flaky {
        down: Mutex<u32>,
        got: Mutex<Vec<SubmitTaskStateChange>>,
    }

    impl StateSink for Flaky {
        fn submit(
            &self,
            change: &SubmitTaskStateChange,
        ) -> impl Future<Output = Result<(), ApiError>> + Send {
            let down = {
                let mut d = self.down.lock().unwrap();
                if *d > 0 {
                    *d -= 1;
                    true
                } else {
                    false
                }
            };
            if !down {
                self.got.lock().unwrap().push(change.clone());
            }
            async move {
                if down {
                    Err(ApiError::Transport {
                        url: "x".into(),
                        message: "connection refused".into(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    #[tokio::test]
    async fn retries_until_the_server_is_back() {
        let sink = Arc::new(Flaky {
            down: Mutex::new(3),
            got: Mutex::new(Vec::new()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop_rx) = watch::channel(false);
        tx.send(rep("a", "RUNNING")).unwrap();
        tx.send(rep("b", "RUNNING")).unwrap();
        drop(tx);
        tokio::time::timeout(
            Duration::from_secs(10),
            run_reporter(sink.clone(), rx, stop_rx),
        )
        .await
        .unwrap();
        let got = sink.got.lock().unwrap().clone();
        assert_eq!(got, vec![rep("a", "RUNNING"), rep("b", "RUNNING")]);
    }
}
