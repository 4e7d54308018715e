//! The CloudWatch Logs API over the log store (`logs.rs`): the dispatch of every Logs
//! operation, the reads (GetLogEvents, FilterLogEvents; groups are `log_groups.rs`, streams
//! and PutLogEvents `log_streams.rs`), and the agents' private endpoints: `POST
//! /agent/v1/logs` (container output) and `POST /agent/v1/log-streams` (a container's stream
//! made sure of before it starts, as the `awslogs` driver does).

use crate::auth::{Access, Caller, Owned, Principal, Protocol};
use crate::log_input::{self, parse};
use crate::log_pattern::FilterPattern;
use crate::logs::store_error;
use crate::plane::ControlPlane;
use crate::request::Incoming;
use crate::wire::{error_response, json_response};
use crate::{log_groups, log_streams};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_logs::{GroupQuery, LogError, StreamCursor, TimeRange};
use gantry_model::agent_protocol::{EnsureLogStream, LogBatch};
use gantry_model::{EcsError, EcsResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The longest batch id an agent may give.
const MAX_BATCH_ID: usize = 64;

/// `POST /agent/v1/logs` from agents: signed with the agent's own credentials, and only for
/// streams of tasks placed on its own instance (a stream's last segment is the task id).
pub async fn ingest(State(plane): State<Arc<ControlPlane>>, req: Request) -> Response {
    let (incoming, caller, batch) = match Incoming::agent_json::<LogBatch>(
        &plane,
        req,
        "logs",
        "logs:PutLogEvents",
        "log batch",
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    if batch
        .batch_id
        .as_ref()
        .is_some_and(|id| id.is_empty() || id.len() > MAX_BATCH_ID)
    {
        return error_response(&EcsError::invalid_parameter(format!(
            "batchId must be 1 to {MAX_BATCH_ID} characters"
        )));
    }
    // Each stream's last segment is its task's id; the task must be on the agent's instance.
    let cluster = agent_cluster(&caller);
    let streams: Vec<String> = batch
        .events
        .iter()
        .map(|e| format!("{}:{}", e.log_group, e.log_stream))
        .collect();
    let access = Access::new("logs:PutLogEvents", streams)
        .owning(batch.events.iter().map(|e| Owned::Task {
            cluster: cluster.clone(),
            task: stream_task(&e.log_stream).to_string(),
        }))
        .agents_only();
    if let Err(d) = incoming.authorize(&plane, &caller, &access, Protocol::Json) {
        return error_response(&d.to_ecs());
    }
    // Each task's destinations once per batch (a batch holds a few tasks' lines).
    let mut allowed: std::collections::HashMap<&str, Option<Vec<EnsureLogStream>>> =
        Default::default();
    for e in &batch.events {
        let task = stream_task(&e.log_stream);
        if !allowed.contains_key(task) {
            match destinations(&plane, &caller, task).await {
                Ok(d) => allowed.insert(task, d),
                Err(err) => return error_response(&err),
            };
        }
        let ok = match allowed.get(task) {
            Some(Some(ds)) => ds
                .iter()
                .any(|d| d.log_group_name == e.log_group && d.log_stream_name == e.log_stream),
            _ => true,
        };
        if !ok {
            return error_response(&not_its_destination(&e.log_group, &e.log_stream));
        }
    }
    match plane.logs.append(batch).await {
        Ok(receipt) => {
            // With other replicas, answered once one of them holds the batch too: losing
            // this replica then loses no line the agent was told is stored.
            if let (Some(replication), Some((origin, seq))) =
                (&plane.log_replication, &receipt.journal_position)
            {
                if *origin == replication.origin && !replication.wait_for_copy(*seq).await {
                    tracing::warn!(
                        "no other replica copied a log batch in time; the agent will send it again"
                    );
                    // A server fault, which the agent retries here (a 503 would send it to
                    // another replica, which this one is not: it is only waiting).
                    return error_response(&EcsError::server(
                        "The log batch is stored on this control-plane replica, but no other replica has copied it yet; send it again.",
                    ));
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            tracing::warn!("cannot store logs: {e}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

fn agent_cluster(caller: &Caller) -> String {
    match &caller.principal {
        Principal::Agent { cluster_arn, .. } => cluster_arn.clone(),
        _ => String::new(),
    }
}

/// The task a container's stream belongs to: its last segment (`prefix/container/task-id`).
pub(crate) fn stream_task(stream: &str) -> &str {
    stream.rsplit('/').next().unwrap_or("")
}

/// `POST /agent/v1/log-streams` from agents, before a container with an `awslogs`
/// configuration starts: its stream is created; its group too with `createGroup`
/// (`awslogs-create-group`), else a missing group is `ResourceNotFoundException`, which the
/// agent turns into the container's `CannotStartContainerError` as ECS reports it. The same
/// rights as log shipping: only for streams of tasks on the agent's own instance.
pub async fn ensure_stream(State(plane): State<Arc<ControlPlane>>, req: Request) -> Response {
    let (incoming, caller, wanted) = match Incoming::agent_json::<EnsureLogStream>(
        &plane,
        req,
        "logs",
        "logs:CreateLogStream",
        "log stream request",
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    if let Err(e) = log_input::group_name(&wanted.log_group_name, "logGroupName")
        .and_then(|()| log_input::stream_name(&wanted.log_stream_name, "logStreamName"))
    {
        return error_response(&e);
    }
    let stream_arn = format!(
        "{}:log-stream:{}",
        plane.scope().log_group(&wanted.log_group_name),
        wanted.log_stream_name
    );
    let access = Access::new("logs:CreateLogStream", vec![stream_arn])
        .owning([Owned::Task {
            cluster: agent_cluster(&caller),
            task: stream_task(&wanted.log_stream_name).to_string(),
        }])
        .agents_only();
    if let Err(d) = incoming.authorize(&plane, &caller, &access, Protocol::Json) {
        return error_response(&d.to_ecs());
    }
    // Only the stream one of the task's containers writes to, and its group created only
    // when that container's definition says `awslogs-create-group`.
    let allowed = match destinations(&plane, &caller, stream_task(&wanted.log_stream_name)).await {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let may_create = match &allowed {
        None => wanted.create_group,
        Some(ds) => match ds.iter().find(|d| {
            d.log_group_name == wanted.log_group_name && d.log_stream_name == wanted.log_stream_name
        }) {
            Some(own) => wanted.create_group && own.create_group,
            None => {
                return error_response(&not_its_destination(
                    &wanted.log_group_name,
                    &wanted.log_stream_name,
                ))
            }
        },
    };
    match plane
        .logs
        .backend()
        .ensure_stream(&wanted.log_group_name, &wanted.log_stream_name, may_create)
        .await
    {
        Ok(()) => json_response(StatusCode::OK, "{}".to_string()),
        Err(e @ LogError::GroupNotFound(_)) => error_response(&store_error(e)),
        Err(e) => {
            tracing::warn!("cannot create log stream: {e}");
            error_response(&store_error(e))
        }
    }
}

/// Where the containers of task `task_id`, placed on the calling agent's instance, send their
/// output: per container its group and stream, and whether its definition lets the group be
/// created. An agent ships to these and nowhere else: owning the task is not enough to write
/// into another group under a stream named after it. `None` when the caller is no agent (an
/// unauthenticated control plane, which checks nothing).
async fn destinations(
    plane: &ControlPlane,
    caller: &Caller,
    task_id: &str,
) -> EcsResult<Option<Vec<EnsureLogStream>>> {
    let Principal::Agent { instance_arn, .. } = &caller.principal else {
        return Ok(None);
    };
    let Some(task) = plane
        .cache
        .tasks_on_instance(instance_arn)
        .iter()
        .find(|t| t.value.id() == task_id)
        .map(|t| t.value.clone())
    else {
        return Ok(Some(Vec::new()));
    };
    let Some(td_arn) = task.task.task_definition_arn.as_deref() else {
        return Ok(Some(Vec::new()));
    };
    let td = plane.definition_by_arn(td_arn).await?;
    Ok(Some(
        td.container_definitions
            .iter()
            .filter_map(|c| c.name.as_deref())
            .map(|name| {
                gantry_model::agent_protocol::awslogs_stream(&td, name, task_id).unwrap_or_else(
                    || {
                        let (group, stream) =
                            gantry_model::agent_protocol::log_destination(&td, name, task_id);
                        EnsureLogStream {
                            log_group_name: group,
                            log_stream_name: stream,
                            create_group: false,
                        }
                    },
                )
            })
            .collect(),
    ))
}

fn not_its_destination(group: &str, stream: &str) -> EcsError {
    EcsError::new(
        "AccessDeniedException",
        format!(
            "Log stream {stream} of group {group} is not where any container of its task sends its output."
        ),
    )
}

pub async fn dispatch(plane: &ControlPlane, op: &str, input: Value) -> EcsResult<Value> {
    match op {
        "GetLogEvents" => get_log_events(plane, input).await,
        "FilterLogEvents" => filter_log_events(plane, input).await,
        "CreateLogGroup" => log_groups::create(plane, input).await,
        "DeleteLogGroup" => log_groups::delete(plane, input).await,
        "DescribeLogGroups" => log_groups::describe(plane, input).await,
        "PutRetentionPolicy" => log_groups::put_retention(plane, input).await,
        "DeleteRetentionPolicy" => log_groups::delete_retention(plane, input).await,
        "TagResource" => log_groups::tag_resource(plane, input).await,
        "UntagResource" => log_groups::untag_resource(plane, input).await,
        "ListTagsForResource" => log_groups::list_tags_for_resource(plane, input).await,
        "TagLogGroup" => log_groups::tag_log_group(plane, input).await,
        "UntagLogGroup" => log_groups::untag_log_group(plane, input).await,
        "ListTagsLogGroup" => log_groups::list_tags_log_group(plane, input).await,
        "CreateLogStream" => log_streams::create(plane, input).await,
        "DeleteLogStream" => log_streams::delete(plane, input).await,
        "DescribeLogStreams" => log_streams::describe(plane, input).await,
        "PutLogEvents" => log_streams::put_events(plane, input).await,
        _ => Err(EcsError::unknown_operation(op)),
    }
}

fn invalid_token() -> EcsError {
    log_input::invalid_token()
}

fn parse_token(t: &str, prefix: &str) -> EcsResult<i64> {
    t.strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .ok_or_else(invalid_token)
}

fn page_limit(limit: Option<i64>) -> usize {
    limit.unwrap_or(10_000).clamp(1, 10_000) as usize
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetLogEventsInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: String,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
    start_time: Option<i64>,
    end_time: Option<i64>,
}

fn stream_cursor(req: &GetLogEventsInput) -> EcsResult<StreamCursor> {
    match req.next_token.as_deref() {
        Some(t) if t.starts_with("f/") => Ok(StreamCursor::Forward {
            after: parse_token(t, "f/")?,
        }),
        Some(t) if t.starts_with("b/") => Ok(StreamCursor::Backward {
            before: Some(parse_token(t, "b/")?),
        }),
        Some(_) => Err(invalid_token()),
        None if req.start_from_head.unwrap_or(false) => Ok(StreamCursor::Forward { after: 0 }),
        None => Ok(StreamCursor::Backward { before: None }),
    }
}

async fn get_log_events(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: GetLogEventsInput = parse(input)?;
    let group = log_input::group_identifier(
        plane.scope(),
        req.log_group_name.as_deref(),
        req.log_group_identifier.as_deref(),
    )?;
    let limit = page_limit(req.limit);
    let cursor = match stream_cursor(&req) {
        Ok(c) => c,
        Err(e) => {
            // A missing group is reported before a bad token, as it always was.
            plane.logs.require_group(&group).await?;
            return Err(e);
        }
    };
    let events = plane
        .logs
        .backend()
        .read_stream_in(
            &group,
            &req.log_stream_name,
            cursor,
            TimeRange {
                start: req.start_time,
                end: req.end_time,
            },
            limit,
        )
        .await
        .map_err(store_error)?;
    let (after, before) = match cursor {
        StreamCursor::Forward { after } => (Some(after), None),
        StreamCursor::Backward { before } => (None, before),
    };
    let first = events.first().map(|e| e.sequence);
    let last = events.last().map(|e| e.sequence);
    // With no new events the forward token stays put, so a follower polls with it again.
    let forward = last
        .or(after)
        .or(before.map(|b| b.saturating_sub(1)))
        .unwrap_or(0);
    let backward = first
        .or(before)
        .or(after.map(|a| a.saturating_add(1)))
        .unwrap_or(0);
    Ok(json!({
        "events": events.iter().map(|e| json!({
            "timestamp": e.timestamp,
            "message": e.message,
            "ingestionTime": e.ingestion_time,
        })).collect::<Vec<_>>(),
        "nextForwardToken": format!("f/{forward}"),
        "nextBackwardToken": format!("b/{backward}"),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

async fn filter_log_events(plane: &ControlPlane, input: Value) -> EcsResult<Value> {
    let req: FilterInput = parse(input)?;
    let group = log_input::group_identifier(
        plane.scope(),
        req.log_group_name.as_deref(),
        req.log_group_identifier.as_deref(),
    )?;
    if req.log_stream_names.is_some() && req.log_stream_name_prefix.is_some() {
        return Err(EcsError::invalid_parameter(
            "logStreamNames and logStreamNamePrefix cannot both be given.",
        ));
    }
    let limit = page_limit(req.limit);
    let after = match req.next_token.as_deref().map(|t| parse_token(t, "f/")) {
        None => 0,
        Some(Ok(after)) => after,
        Some(Err(e)) => {
            plane.logs.require_group(&group).await?;
            return Err(e);
        }
    };
    let pattern = req
        .filter_pattern
        .as_deref()
        .map(FilterPattern::parse)
        .transpose()?;
    let query = GroupQuery {
        stream_names: req.log_stream_names,
        stream_prefix: req.log_stream_name_prefix,
        start_time: req.start_time,
        end_time: req.end_time,
    };
    let events = plane
        .logs
        .backend()
        .read_group(&group, &query, after, limit)
        .await
        .map_err(store_error)?;
    let full_page = events.len() >= limit;
    let last = events.last().map(|e| e.sequence);
    let kept: Vec<Value> = events
        .iter()
        .filter(|e| pattern.as_ref().is_none_or(|p| p.matches(&e.message)))
        .map(|e| {
            json!({
                "logStreamName": e.stream,
                "timestamp": e.timestamp,
                "message": e.message,
                "ingestionTime": e.ingestion_time,
                "eventId": e.sequence.to_string(),
            })
        })
        .collect();
    let mut out = json!({"events": kept, "searchedLogStreams": []});
    if full_page {
        if let Some(l) = last {
            out["nextToken"] = json!(format!("f/{l}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LogStore;
    use crate::plane::ControlConfig;
    use gantry_model::agent_protocol::LogEvent;
    use gantry_store::SqliteStore;

    async fn plane_with(logs: LogStore) -> ControlPlane {
        let store = SqliteStore::open_in_memory().expect("store");
        let audit = crate::audit::AuditLog::in_memory(100).expect("audit");
        ControlPlane::open(ControlConfig::default(), Arc::new(store), logs, audit)
            .await
            .expect("plane")
    }

    fn batch(group: &str, stream: &str, messages: &[&str]) -> LogBatch {
        LogBatch {
            events: messages
                .iter()
                .enumerate()
                .map(|(i, m)| LogEvent {
                    log_group: group.into(),
                    log_stream: stream.into(),
                    timestamp: 1_000 + i as i64,
                    message: m.to_string(),
                })
                .collect(),
            batch_id: None,
        }
    }

    #[tokio::test]
    async fn describe_log_groups_shows_size_arns_and_retention() {
        let logs = LogStore::open_in_memory().expect("logs");
        logs.append(batch("/ecs/web", "ecs/app/1", &["hello"]))
            .await
            .expect("append");
        logs.backend()
            .set_retention("/ecs/web", Some(14))
            .await
            .expect("retention");
        let plane = plane_with(logs).await;
        let out = dispatch(&plane, "DescribeLogGroups", json!({}))
            .await
            .expect("describe");
        let group = &out["logGroups"][0];
        assert_eq!(group["logGroupName"], "/ecs/web");
        assert_eq!(group["retentionInDays"], 14);
        assert_eq!(group["storedBytes"], 5 + 26);
        assert_eq!(
            group["logGroupArn"],
            "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/web"
        );
        assert_eq!(
            group["arn"],
            "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/web:*"
        );
        assert!(group["creationTime"].as_i64().is_some_and(|t| t > 0));
    }

    #[tokio::test]
    async fn get_log_events_pages_with_the_same_tokens_as_before() {
        let logs = LogStore::open_in_memory().expect("logs");
        logs.append(batch("g", "s", &["one", "two", "three"]))
            .await
            .expect("append");
        let plane = plane_with(logs).await;
        let read = |input: Value| dispatch(&plane, "GetLogEvents", input);
        let head = read(json!({"logGroupName": "g", "logStreamName": "s",
            "startFromHead": true, "limit": 2}))
        .await
        .expect("head");
        assert_eq!(head["events"][0]["message"], "one");
        assert_eq!(head["nextForwardToken"], "f/2");
        assert_eq!(head["nextBackwardToken"], "b/1");
        let rest = read(json!({"logGroupName": "g", "logStreamName": "s",
            "nextToken": "f/2"}))
        .await
        .expect("rest");
        assert_eq!(rest["events"][0]["message"], "three");
        let idle = read(json!({"logGroupName": "g", "logStreamName": "s",
            "nextToken": "f/3"}))
        .await
        .expect("idle");
        assert_eq!(idle["events"].as_array().map(Vec::len), Some(0));
        assert_eq!(idle["nextForwardToken"], "f/3", "a follower polls again");
        let tail = read(json!({"logGroupName": "g", "logStreamName": "s", "limit": 1}))
            .await
            .expect("tail");
        assert_eq!(tail["events"][0]["message"], "three");

        let missing = read(json!({"logGroupName": "nope", "logStreamName": "s",
            "nextToken": "garbage"}))
        .await
        .expect_err("missing group");
        assert_eq!(missing.message, "The specified log group does not exist.");
        let bad_token = read(json!({"logGroupName": "g", "logStreamName": "s",
            "nextToken": "garbage"}))
        .await
        .expect_err("bad token");
        assert_eq!(bad_token.code, "InvalidParameterException");
        let no_stream = read(json!({"logGroupName": "g", "logStreamName": "nope"}))
            .await
            .expect_err("missing stream");
        assert_eq!(
            no_stream.message,
            "The specified log stream does not exist."
        );
    }

    #[tokio::test]
    async fn filter_log_events_filters_and_pages() {
        let logs = LogStore::open_in_memory().expect("logs");
        logs.append(batch("g", "web/1", &["a-hit", "a-miss"]))
            .await
            .expect("append");
        logs.append(batch("g", "api/1", &["b-hit"]))
            .await
            .expect("append");
        let plane = plane_with(logs).await;
        let out = dispatch(
            &plane,
            "FilterLogEvents",
            json!({"logGroupName": "g", "filterPattern": "\"hit\""}),
        )
        .await
        .expect("filter");
        let messages: Vec<&str> = out["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["message"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(messages, vec!["a-hit", "b-hit"]);
        assert_eq!(out["events"][1]["logStreamName"], "api/1");
        let page = dispatch(
            &plane,
            "FilterLogEvents",
            json!({"logGroupName": "g", "logStreamNamePrefix": "web/", "limit": 1}),
        )
        .await
        .expect("page");
        assert_eq!(page["events"][0]["message"], "a-hit");
        assert_eq!(page["nextToken"], "f/1");
    }
}
