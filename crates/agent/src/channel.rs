//! The task channel: one long-lived `GET` whose body is NDJSON [`ChannelMessage`]s. The
//! channel reconnects with capped exponential backoff (100 ms … 5 s) when the stream ends,
//! fails, or stays silent (not even a heartbeat) for three heartbeat periods; a 4xx answer
//! means the control plane does not know this instance any more, and ends the channel so the
//! agent can register again. A channel that broke or went silent counts as its server being
//! unreachable: the agent moves on to its next server, if it has several, and resynchronises
//! there from the first Tasks message, as on any reconnect (running tasks are left alone).

use futures::StreamExt;
use gantry_model::agent_protocol::{ChannelMessage, TaskAssignment, HEARTBEAT_SECS};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::api_client::{error_chain, ApiError, EcsClient};
use crate::util::Backoff;

/// Lines longer than this are dropped rather than buffered without bound.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Splits a byte stream into lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    overflow: bool,
}

impl LineSplitter {
    /// Adds `bytes`; returns the complete, non-empty lines they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let complete = chunk.last() == Some(&b'\n');
            if !self.overflow {
                self.buf.extend_from_slice(chunk);
                if self.buf.len() > MAX_LINE {
                    tracing::warn!("channel line longer than {MAX_LINE} bytes dropped");
                    self.buf.clear();
                    self.overflow = true;
                }
            }
            if complete {
                if !self.overflow {
                    let line = String::from_utf8_lossy(&self.buf);
                    let line = line.trim();
                    if !line.is_empty() {
                        out.push(line.to_string());
                    }
                }
                self.buf.clear();
                self.overflow = false;
            }
        }
        out
    }
}

/// Why [`run_channel`] returned.
#[derive(Debug)]
pub enum ChannelExit {
    /// The control plane refused the channel (4xx): register again.
    Rejected(ApiError),
    /// Nobody listens any more.
    Closed,
}

/// Holds the channel open, handing each Tasks message to `tx`, until the control plane
/// rejects the instance or `tx` closes.
pub async fn run_channel(
    client: EcsClient,
    cluster: String,
    instance_arn: String,
    tx: mpsc::Sender<Vec<TaskAssignment>>,
) -> ChannelExit {
    let silence = Duration::from_secs(3 * HEARTBEAT_SECS);
    let mut backoff = Backoff::standard();
    loop {
        match client.open_channel(&cluster, &instance_arn).await {
            Err(e) if e.is_client_error() => {
                tracing::warn!("control plane refused the task channel: {e}");
                return ChannelExit::Rejected(e);
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(
                    "cannot open the task channel: {e}; is the Gantry server at {} running? retrying in {d:?}",
                    client.server_list()
                );
                if tx.is_closed() {
                    return ChannelExit::Closed;
                }
                tokio::time::sleep(d).await;
                continue;
            }
            Ok(open) => {
                tracing::info!(server = %open.server_url, "task channel connected");
                let server = open.server;
                let mut stream = open.response.bytes_stream();
                let mut lines = LineSplitter::default();
                loop {
                    let next = tokio::select! {
                        n = tokio::time::timeout(silence, stream.next()) => n,
                        _ = tx.closed() => return ChannelExit::Closed,
                    };
                    match next {
                        Err(_) => {
                            let reason = format!(
                                "nothing on the task channel for {}s, not even a heartbeat",
                                silence.as_secs()
                            );
                            tracing::warn!("{reason}; reconnecting");
                            client.channel_lost(server, &reason);
                            break;
                        }
                        Ok(None) => {
                            tracing::info!(
                                "task channel closed by the control plane; reconnecting"
                            );
                            break;
                        }
                        Ok(Some(Err(e))) => {
                            let reason = format!("the task channel broke: {}", error_chain(&e));
                            tracing::warn!("{reason}; reconnecting");
                            client.channel_lost(server, &reason);
                            break;
                        }
                        Ok(Some(Ok(bytes))) => {
                            for line in lines.push(&bytes) {
                                match serde_json::from_str::<ChannelMessage>(&line) {
                                    Ok(ChannelMessage::Tasks { tasks }) => {
                                        backoff.reset();
                                        if tx.send(tasks).await.is_err() {
                                            return ChannelExit::Closed;
                                        }
                                    }
                                    Ok(ChannelMessage::Heartbeat { .. }) => backoff.reset(),
                                    Err(e) => {
                                        tracing::warn!("unreadable task channel message: {e}")
                                    }
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"{\"type\":\"heart").is_empty());
        assert_eq!(
            s.push(b"beat\",\"at\":1}\n\n{\"a\":1}\r\n{\"b\""),
            vec![
                "{\"type\":\"heartbeat\",\"at\":1}".to_string(),
                "{\"a\":1}".to_string()
            ]
        );
        assert_eq!(s.push(b":2}\n"), vec!["{\"b\":2}".to_string()]);
        let msg: ChannelMessage =
            serde_json::from_str("{\"type\":\"heartbeat\",\"at\":1.5}").unwrap();
        assert_eq!(msg, ChannelMessage::Heartbeat { at: 1.5 });
    }
}
