//! CloudWatch Logs streams: CreateLogStream, DeleteLogStream, DescribeLogStreams, and
//! PutLogEvents with CloudWatch's batch rules (see [`check_batch`]).

use crate::log_groups;
use crate::log_input::{self, parse};
use crate::logs::store_error;
use crate::plane::ControlPlane;
use gantry_logs::{event_bytes, PutEvent, StreamInfo};
use gantry_model::{EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};

/// What one PutLogEvents call may carry (the `PutLogEvents` documentation).
pub(crate) const MAX_BATCH_EVENTS: usize = 10_000;
pub(crate) const MAX_BATCH_BYTES: u64 = 1_048_576;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Events older than this are rejected (`tooOldLogEventEndIndex`).
const TOO_OLD_MS: i64 = 14 * DAY_MS;
/// Events further ahead than this are rejected (`tooNewLogEventStartIndex`).
const TOO_NEW_MS: i64 = 2 * HOUR_MS;
/// The accepted events of one batch may span at most this.
const MAX_SPAN_MS: i64 = DAY_MS;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamInput {
    log_group_name: String,
    log_stream_name: String,
}

fn stream_input(input: Value) -> EcsResult<StreamInput> {
    let req: StreamInput = parse(input)?;
    log_input::group_name(&req.log_group_name, "logGroupName")?;
    log_input::stream_name(&req.log_stream_name, "logStreamName")?;
    Ok(req)
}

pub(crate) async fn create(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req = stream_input(input)?;
    plane
        .logs
        .backend()
        .create_stream(&req.log_group_name, &req.log_stream_name)
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

pub(crate) async fn delete(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req = stream_input(input)?;
    plane
        .logs
        .backend()
        .delete_stream(&req.log_group_name, &req.log_stream_name)
        .await
        .map_err(store_error)?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    descending: Option<bool>,
    next_token: Option<String>,
    limit: Option<i64>,
}

/// Where a page of streams starts: after the stream with this sort key. Streams sort by
/// name, or by (last event time, name) — the name breaks ties, so a page boundary is exact.
/// Tokens are `k/<time>/<name>` (time 0 when ordering by name).
type SortKey = (i64, String);

fn sort_key(s: &StreamInfo, by_time: bool) -> SortKey {
    let time = if by_time {
        s.last_event_timestamp.unwrap_or(0)
    } else {
        0
    };
    (time, s.name.clone())
}

fn parse_stream_token(token: &str) -> EcsResult<SortKey> {
    let rest = token
        .strip_prefix("k/")
        .ok_or_else(log_input::invalid_token)?;
    let (time, name) = rest.split_once('/').ok_or_else(log_input::invalid_token)?;
    let time = time.parse().map_err(|_| log_input::invalid_token())?;
    Ok((time, name.to_string()))
}

pub(crate) async fn describe(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: DescribeInput = parse(input)?;
    let scope = plane.scope();
    let group = log_input::group_identifier(
        scope,
        req.log_group_name.as_deref(),
        req.log_group_identifier.as_deref(),
    )?;
    if let Some(p) = &req.log_stream_name_prefix {
        log_input::stream_name(p, "logStreamNamePrefix")?;
    }
    let by_time = match req.order_by.as_deref() {
        None | Some("LogStreamName") => false,
        Some("LastEventTime") => true,
        Some(other) => {
            return Err(EcsError::invalid_parameter(format!(
                "1 validation error detected: Value '{other}' at 'orderBy' failed to satisfy \
                 constraint: Member must satisfy enum value set: [LogStreamName, LastEventTime]"
            )))
        }
    };
    if by_time && req.log_stream_name_prefix.is_some() {
        return Err(EcsError::invalid_parameter(
            "Cannot order by LastEventTime with a logStreamNamePrefix.",
        ));
    }
    let descending = req.descending.unwrap_or(false);
    let limit = log_input::describe_limit(req.limit)?;
    let after = req
        .next_token
        .as_deref()
        .map(parse_stream_token)
        .transpose()?;
    let mut streams: Vec<(SortKey, StreamInfo)> = plane
        .logs
        .backend()
        .list_streams(&group)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|s| {
            req.log_stream_name_prefix
                .as_ref()
                .is_none_or(|p| s.name.starts_with(p.as_str()))
        })
        .map(|s| (sort_key(&s, by_time), s))
        .collect();
    streams.sort_by(|a, b| a.0.cmp(&b.0));
    if descending {
        streams.reverse();
    }
    let mut rest = streams.into_iter().filter(|(key, _)| match &after {
        None => true,
        Some(a) if descending => key < a,
        Some(a) => key > a,
    });
    let page: Vec<(SortKey, StreamInfo)> = rest.by_ref().take(limit).collect();
    let group_arn = scope.log_group(&group);
    let mut out = json!({
        "logStreams": page.iter().map(|(_, s)| {
            let mut v = json!({
                "logStreamName": s.name,
                "creationTime": s.creation_time,
                "arn": format!("{group_arn}:log-stream:{}", s.name),
                // Deprecated by CloudWatch, which reports it as zero since 2019.
                "storedBytes": 0,
            });
            for (key, value) in [
                ("firstEventTimestamp", s.first_event_timestamp),
                ("lastEventTimestamp", s.last_event_timestamp),
                ("lastIngestionTime", s.last_ingestion_time),
            ] {
                if let Some(t) = value {
                    v[key] = json!(t);
                }
            }
            v
        }).collect::<Vec<_>>(),
    });
    if rest.next().is_some() {
        if let Some(((time, name), _)) = page.last() {
            out["nextToken"] = json!(format!("k/{time}/{name}"));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InputEvent {
    timestamp: i64,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutInput {
    log_group_name: String,
    log_stream_name: String,
    log_events: Vec<InputEvent>,
    /// Accepted and ignored, as CloudWatch does since 2023.
    #[allow(dead_code)]
    sequence_token: Option<String>,
}

/// Which events of a batch CloudWatch would refuse to store, by index (the model's
/// `RejectedLogEventsInfo`): too old (`[0, too_old_end)`), older than the group's retention
/// (`[0, expired_end)`), too far ahead (`[too_new_start, len)`). Events are in time order, so
/// each set is a prefix or a suffix.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub too_old_end: Option<usize>,
    pub expired_end: Option<usize>,
    pub too_new_start: Option<usize>,
}

impl Rejected {
    fn accepted(&self, len: usize) -> std::ops::Range<usize> {
        let start = self
            .too_old_end
            .unwrap_or(0)
            .max(self.expired_end.unwrap_or(0));
        let end = self.too_new_start.unwrap_or(len);
        start..end.max(start)
    }

    fn to_json(&self) -> Option<Value> {
        if *self == Rejected::default() {
            return None;
        }
        let mut v = json!({});
        if let Some(i) = self.too_old_end {
            v["tooOldLogEventEndIndex"] = json!(i);
        }
        if let Some(i) = self.expired_end {
            v["expiredLogEventEndIndex"] = json!(i);
        }
        if let Some(i) = self.too_new_start {
            v["tooNewLogEventStartIndex"] = json!(i);
        }
        Some(v)
    }
}

/// CloudWatch's rules for one batch at `now_ms` for a group with `retention_days`: the call
/// fails (InvalidParameterException) on an empty or oversized batch, an empty message, a
/// negative timestamp, events out of time order, or accepted events spanning more than 24 h;
/// events outside the accepted window are only rejected, by index.
pub(crate) fn check_batch(
    events: &[(i64, &str)],
    now_ms: i64,
    retention_days: Option<u32>,
) -> EcsResult<Rejected> {
    if events.is_empty() {
        return Err(EcsError::invalid_parameter(
            "1 validation error detected: Value '[]' at 'logEvents' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(EcsError::invalid_parameter(format!(
            "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length less than or equal to {MAX_BATCH_EVENTS} (the batch has {})",
            events.len()
        )));
    }
    let mut bytes: u64 = 0;
    for (i, (timestamp, message)) in events.iter().enumerate() {
        if message.is_empty() {
            return Err(EcsError::invalid_parameter(format!(
                "1 validation error detected: Value '' at 'logEvents.{}.member.message' failed to satisfy constraint: Member must have length greater than or equal to 1",
                i + 1
            )));
        }
        if *timestamp < 0 {
            return Err(EcsError::invalid_parameter(format!(
                "1 validation error detected: Value '{timestamp}' at 'logEvents.{}.member.timestamp' failed to satisfy constraint: Member must have value greater than or equal to 0",
                i + 1
            )));
        }
        bytes = bytes.saturating_add(event_bytes(message));
    }
    if bytes > MAX_BATCH_BYTES {
        return Err(EcsError::invalid_parameter(format!(
            "Upload too large: {bytes} bytes exceeds limit of {MAX_BATCH_BYTES}"
        )));
    }
    if events.windows(2).any(|w| w[1].0 < w[0].0) {
        return Err(EcsError::invalid_parameter(
            "Log events in a single PutLogEvents request must be in chronological order.",
        ));
    }
    let count_before = |cutoff: i64| events.iter().take_while(|(t, _)| *t < cutoff).count();
    let too_old = count_before(now_ms.saturating_sub(TOO_OLD_MS));
    let expired = retention_days
        .map(|d| count_before(now_ms.saturating_sub(i64::from(d).saturating_mul(DAY_MS))))
        .unwrap_or(0);
    let too_new_start = events
        .iter()
        .position(|(t, _)| *t > now_ms.saturating_add(TOO_NEW_MS));
    let rejected = Rejected {
        too_old_end: (too_old > 0).then_some(too_old),
        expired_end: (expired > 0).then_some(expired),
        too_new_start,
    };
    let accepted = &events[rejected.accepted(events.len())];
    if let (Some(first), Some(last)) = (accepted.first(), accepted.last()) {
        if last.0 - first.0 > MAX_SPAN_MS {
            return Err(EcsError::invalid_parameter(
                "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
            ));
        }
    }
    Ok(rejected)
}

pub(crate) async fn put_events(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: PutInput = parse(input)?;
    log_input::group_name(&req.log_group_name, "logGroupName")?;
    log_input::stream_name(&req.log_stream_name, "logStreamName")?;
    let now_ms = (gantry_model::now_epoch() * 1000.0) as i64;
    let group = log_groups::require(plane, &req.log_group_name).await?;
    let batch: Vec<(i64, &str)> = req
        .log_events
        .iter()
        .map(|e| (e.timestamp, e.message.as_str()))
        .collect();
    let rejected = check_batch(&batch, now_ms, group.retention_days)?;
    let accepted: Vec<PutEvent> = req.log_events[rejected.accepted(req.log_events.len())]
        .iter()
        .map(|e| PutEvent {
            timestamp: e.timestamp,
            message: e.message.clone(),
        })
        .collect();
    // Also with nothing accepted: the stream must exist.
    let receipt = plane
        .logs
        .backend()
        .put_events(&req.log_group_name, &req.log_stream_name, accepted)
        .await
        .map_err(store_error)?;
    // The token is ignored on input; clients that still send one echo this.
    let token = receipt.last_sequence.unwrap_or(0).max(1);
    let mut out = json!({ "nextSequenceToken": format!("{token:056}") });
    if let Some(r) = rejected.to_json() {
        out["rejectedLogEventsInfo"] = r;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn a_batch_out_of_order_fails_whole() {
        let e = check_batch(&[(NOW, "b"), (NOW - 1, "a")], NOW, None).expect_err("order");
        assert_eq!(e.code, "InvalidParameterException");
        assert!(e.message.contains("chronological order"), "{}", e.message);
        assert!(check_batch(&[(NOW, "a"), (NOW, "b")], NOW, None).is_ok());
    }

    #[test]
    fn old_expired_and_future_events_are_rejected_by_index() {
        let batch = [
            (NOW - 15 * DAY_MS, "too old"),
            (NOW - 8 * DAY_MS, "expired with 7 days"),
            (NOW - HOUR_MS, "kept"),
            (NOW + 3 * HOUR_MS, "too new"),
        ];
        let r = check_batch(&batch, NOW, Some(7)).expect("batch");
        assert_eq!(
            r,
            Rejected {
                too_old_end: Some(1),
                expired_end: Some(2),
                too_new_start: Some(3),
            }
        );
        assert_eq!(r.accepted(batch.len()), 2..3);
        let json = r.to_json().expect("some rejected");
        assert_eq!(json["tooOldLogEventEndIndex"], 1);
        assert_eq!(json["expiredLogEventEndIndex"], 2);
        assert_eq!(json["tooNewLogEventStartIndex"], 3);
        // Without retention, only the 14-day and 2-hour limits apply.
        let r = check_batch(&[batch[0], batch[2], batch[3]], NOW, None).expect("batch");
        assert_eq!(r.expired_end, None);
        assert_eq!(r.accepted(3), 1..2);
        // Accepted events more than 24 h apart fail the call, even within 14 days.
        assert!(check_batch(&batch[1..3], NOW, None).is_err());
        assert_eq!(
            check_batch(&[(NOW, "x")], NOW, None).map(|r| r.to_json()),
            Ok(None)
        );
    }

    #[test]
    fn every_event_rejected_accepts_nothing() {
        let r = check_batch(&[(NOW - 20 * DAY_MS, "x")], NOW, None).expect("batch");
        assert!(r.accepted(1).is_empty());
        let r = check_batch(&[(NOW + DAY_MS, "x")], NOW, None).expect("batch");
        assert!(r.accepted(1).is_empty());
    }

    #[test]
    fn size_count_span_and_emptiness_fail_the_call() {
        assert!(check_batch(&[], NOW, None).is_err());
        assert!(check_batch(&[(NOW, "")], NOW, None).is_err());
        assert!(check_batch(&[(-1, "x")], NOW, None).is_err());
        let many = vec![(NOW, "x"); MAX_BATCH_EVENTS + 1];
        assert!(check_batch(&many, NOW, None).is_err());
        assert!(check_batch(&many[..MAX_BATCH_EVENTS], NOW, None).is_ok());
        // 1 MiB counts 26 bytes per event on top of the messages.
        let big = "x".repeat(1_048_576 - 26);
        assert!(check_batch(&[(NOW, big.as_str())], NOW, None).is_ok());
        let e = check_batch(&[(NOW, big.as_str()), (NOW, "y")], NOW, None).expect_err("size");
        assert!(e.message.starts_with("Upload too large"), "{}", e.message);
        let span =
            check_batch(&[(NOW - 25 * HOUR_MS, "a"), (NOW, "b")], NOW, None).expect_err("span");
        assert!(span.message.contains("24 hours"), "{}", span.message);
        // Rejected events do not count towards the span.
        assert!(check_batch(&[(NOW - 20 * DAY_MS, "a"), (NOW, "b")], NOW, None).is_ok());
    }

    #[test]
    fn stream_tokens_round_trip() {
        assert_eq!(
            parse_stream_token("k/42/web/app/1").expect("token"),
            (42, "web/app/1".to_string())
        );
        assert!(parse_stream_token("garbage").is_err());
        assert!(parse_stream_token("k/x/name").is_err());
    }
}
