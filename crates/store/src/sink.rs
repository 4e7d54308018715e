//! Where a backend's watch task delivers: one event at a time ([`crate::Watcher`]), or one
//! batch per revision ([`crate::BatchWatcher`]: all the events of a transaction together, so
//! a consumer never sees half of one). Shared by both backends.

use tokio::sync::mpsc;

use crate::{WatchBatch, WatchEvent};

pub(crate) enum Sink {
    Events(mpsc::Sender<WatchEvent>),
    Batches(mpsc::Sender<WatchBatch>),
}

/// The watch's receiver was dropped: the watch task ends.
pub(crate) struct ReceiverGone;

impl Sink {
    /// Sends the events of one revision (nothing when there are none).
    pub(crate) async fn send(
        &self,
        revision: i64,
        events: Vec<WatchEvent>,
    ) -> Result<(), ReceiverGone> {
        if events.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Events(tx) => {
                for event in events {
                    tx.send(event).await.map_err(|_| ReceiverGone)?;
                }
                Ok(())
            }
            Sink::Batches(tx) => tx
                .send(WatchBatch { revision, events })
                .await
                .map_err(|_| ReceiverGone),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Sink::Events(tx) => tx.is_closed(),
            Sink::Batches(tx) => tx.is_closed(),
        }
    }

    pub(crate) async fn closed(&self) {
        match self {
            Sink::Events(tx) => tx.closed().await,
            Sink::Batches(tx) => tx.closed().await,
        }
    }
}
