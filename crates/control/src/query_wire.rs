//! The awsQuery protocol codec shared by the IAM, STS and ELBv2 handlers.
//!
//! Requests are `POST /` with an `application/x-www-form-urlencoded` body (or a GET with the
//! same parameters in the query string): `Action=CreateRole&Version=2010-05-08&RoleName=x&
//! Tags.member.1.Key=a&Tags.member.1.Value=b`. Lists are `Name.member.N`, maps
//! `Name.entry.N.key` / `.value`, nested structures `Name.Member`.
//!
//! Responses are XML: `<{Action}Response xmlns=".."><{Action}Result>..</{Action}Result>
//! <ResponseMetadata><RequestId>..</RequestId></ResponseMetadata></{Action}Response>`, errors
//! `<ErrorResponse xmlns=".."><Error><Type>Sender|Receiver</Type><Code>..</Code>
//! <Message>..</Message></Error><RequestId>..</RequestId></ErrorResponse>`.
#![allow(dead_code)]

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// IAM's XML namespace.
pub(crate) const IAM_NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// STS's XML namespace.
pub(crate) const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// ELBv2's XML namespace.
pub(crate) const ELBV2_NAMESPACE: &str =
    "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// The error code IAM, STS and ELBv2 use for input that fails validation.
pub(crate) const VALIDATION_ERROR: &str = "ValidationError";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An awsQuery error: rendered with [`error_xml`] and returned with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError {
    pub code: &'static str,
    pub message: String,
    pub status: u16,
    /// `<Type>Sender</Type>` when true (the caller's fault), `Receiver` otherwise.
    pub sender: bool,
}

impl QueryError {
    /// A client error: HTTP 400, `Sender`.
    pub fn new(code: &'static str, message: impl Into<String>) -> QueryError {
        QueryError {
            code,
            message: message.into(),
            status: 400,
            sender: true,
        }
    }

    /// A server fault as IAM reports it: `ServiceFailure`, HTTP 500, `Receiver`.
    pub fn server(message: impl Into<String>) -> QueryError {
        QueryError {
            code: "ServiceFailure",
            message: message.into(),
            status: 500,
            sender: false,
        }
    }

    /// `ValidationError` (400, Sender) with `message` as is.
    pub fn validation(message: impl Into<String>) -> QueryError {
        QueryError::new(VALIDATION_ERROR, message)
    }

    /// `MalformedQueryString` (400, Sender): the body or query string cannot be decoded.
    pub fn malformed(detail: &str) -> QueryError {
        QueryError::new(
            "MalformedQueryString",
            format!("The query string contains a syntax error: {detail}"),
        )
    }

    /// `MissingAction` (400): the request has no `Action` parameter.
    pub fn missing_action() -> QueryError {
        QueryError::new("MissingAction", "Missing Action")
    }

    /// `InvalidAction` (400): AWS's answer to an unknown action.
    pub fn invalid_action(action: &str, version: &str) -> QueryError {
        QueryError::new(
            "InvalidAction",
            format!("Could not find operation {action} for version {version}"),
        )
    }

    /// Replace the HTTP status (e.g. 404 for ELBv2's `*NotFound` errors, 409 for conflicts).
    pub fn with_status(mut self, status: u16) -> QueryError {
        self.status = status;
        self
    }

    /// The XML error body for this error.
    pub fn to_xml(&self, namespace: &str, request_id: &str) -> String {
        error_xml(namespace, self.code, &self.message, self.sender, request_id)
    }

    /// The complete HTTP response for this error.
    pub fn to_response(&self, namespace: &str, request_id: &str) -> Response {
        xml_response(self.status, self.to_xml(namespace, request_id), request_id)
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for QueryError {}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// The decoded parameters of one awsQuery request (or a view of one member of it).
///
/// Keys keep the order in which they first appeared; a repeated key keeps its first position
/// and its last value. A view made by [`QueryRequest::nested`] or
/// [`QueryRequest::struct_list`] holds the keys with the prefix stripped and remembers the
/// prefix so validation messages name the full member path (`tags.1.member.key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueryRequest {
    params: Vec<(String, String)>,
    /// The raw key prefix of this view (`Tags.member.1.`), empty for the whole request.
    scope: String,
}

impl QueryRequest {
    /// Decode the URL's query string (without or with its leading `?`) and then the form
    /// body; a key in both takes the body's value. `+` is a space; a `%` not followed by two
    /// hex digits, or a decoded key or value that is not UTF-8, is `MalformedQueryString`.
    pub fn parse(query_string: &str, form_body: &[u8]) -> Result<QueryRequest, QueryError> {
        let query = query_string.strip_prefix('?').unwrap_or(query_string);
        let mut params: Vec<(String, String)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for source in [query.as_bytes(), form_body] {
            for pair in source.split(|&b| b == b'&') {
                if pair.is_empty() {
                    continue;
                }
                let (raw_key, raw_value) = match pair.iter().position(|&b| b == b'=') {
                    Some(at) => (&pair[..at], &pair[at + 1..]),
                    None => (pair, &pair[pair.len()..]),
                };
                let key = percent_decode(raw_key)?;
                let value = percent_decode(raw_value)?;
                if key.is_empty() {
                    continue;
                }
                match index.get(&key) {
                    Some(&at) => params[at].1 = value,
                    None => {
                        index.insert(key.clone(), params.len());
                        params.push((key, value));
                    }
                }
            }
        }
        Ok(QueryRequest {
            params,
            scope: String::new(),
        })
    }

    /// A request from already-decoded pairs (last duplicate wins), mainly for tests.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> QueryRequest {
        let mut request = QueryRequest::default();
        for (key, value) in pairs {
            let (key, value) = (key.into(), value.into());
            match request.params.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => request.params.push((key, value)),
            }
        }
        request
    }

    /// The `Action` parameter.
    pub fn action(&self) -> Option<&str> {
        self.get("Action")
    }

    /// The `Version` parameter.
    pub fn version(&self) -> Option<&str> {
        self.get("Version")
    }

    /// The value of `key`, if present (possibly empty).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` was sent at all.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The decoded pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// `key` as AWS prints it in validation messages, including this view's scope:
    /// `RoleName` → `roleName`, `Tags.member.1.Key` → `tags.1.member.key`.
    pub fn member_path(&self, key: &str) -> String {
        aws_member_path(&format!("{}{}", self.scope, key))
    }

    /// A required member: absent is AWS's `ValidationError` "1 validation error detected:
    /// Value null at 'roleName' failed to satisfy constraint: Member must not be null".
    /// Present but empty is returned as `""` (length constraints are the handler's).
    pub fn required(&self, key: &str) -> Result<&str, QueryError> {
        self.get(key).ok_or_else(|| {
            QueryError::validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy \
                 constraint: Member must not be null",
                self.member_path(key)
            ))
        })
    }

    /// An optional integer; a value that is not one is a `ValidationError`.
    pub fn int(&self, key: &str) -> Result<Option<i64>, QueryError> {
        self.get(key)
            .map(|raw| self.parse_int(key, raw))
            .transpose()
    }

    /// An optional boolean (`true` / `false`, any case); anything else is a `ValidationError`.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, QueryError> {
        self.get(key)
            .map(|raw| self.parse_bool(key, raw))
            .transpose()
    }

    /// A required integer.
    pub fn required_int(&self, key: &str) -> Result<i64, QueryError> {
        self.parse_int(key, self.required(key)?)
    }

    /// A required boolean.
    pub fn required_bool(&self, key: &str) -> Result<bool, QueryError> {
        self.parse_bool(key, self.required(key)?)
    }

    fn parse_int(&self, key: &str, raw: &str) -> Result<i64, QueryError> {
        raw.trim()
            .parse::<i64>()
            .map_err(|_| self.invalid_value(key, raw, "Member must be a valid integer"))
    }

    fn parse_bool(&self, key: &str, raw: &str) -> Result<bool, QueryError> {
        let trimmed = raw.trim();
        if trimmed.eq_ignore_ascii_case("true") {
            Ok(true)
        } else if trimmed.eq_ignore_ascii_case("false") {
            Ok(false)
        } else {
            Err(self.invalid_value(key, raw, "Member must be a boolean"))
        }
    }

    /// "1 validation error detected: Value 'raw' at 'path' failed to satisfy constraint:
    /// {constraint}" for `key`.
    pub fn invalid_value(&self, key: &str, raw: &str, constraint: &str) -> QueryError {
        QueryError::validation(format!(
            "1 validation error detected: Value '{raw}' at '{}' failed to satisfy \
             constraint: {constraint}",
            self.member_path(key)
        ))
    }

    /// Whether the list `prefix` was sent: either a member (`Prefix.member.N...`) or the bare
    /// `Prefix=` botocore sends for an empty list.
    pub fn list_present(&self, prefix: &str) -> bool {
        let member = format!("{prefix}.member.");
        self.params
            .iter()
            .any(|(k, _)| k == prefix || k.starts_with(&member))
    }

    /// `Prefix.member.N` strings in numeric N order (gaps allowed).
    pub fn string_list(&self, prefix: &str) -> Vec<String> {
        let head = format!("{prefix}.member.");
        let mut items: BTreeMap<u64, &str> = BTreeMap::new();
        for (key, value) in &self.params {
            let Some(rest) = key.strip_prefix(&head) else {
                continue;
            };
            if let Some(n) = parse_index(rest) {
                items.insert(n, value);
            }
        }
        items.into_values().map(str::to_string).collect()
    }

    /// `Prefix.member.N.*` structures in numeric N order, each a view with
    /// `Prefix.member.N.` stripped (so nested lists and structures work the same way).
    pub fn struct_list(&self, prefix: &str) -> Vec<QueryRequest> {
        self.indexed_views(&format!("{prefix}.member."))
            .into_values()
            .collect()
    }

    /// A nested structure `Prefix.*` as a view with `Prefix.` stripped, or `None` when no key
    /// starts with `Prefix.`.
    pub fn nested(&self, prefix: &str) -> Option<QueryRequest> {
        let head = format!("{prefix}.");
        let params: Vec<(String, String)> = self
            .params
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&head)
                    .filter(|rest| !rest.is_empty())
                    .map(|rest| (rest.to_string(), v.clone()))
            })
            .collect();
        if params.is_empty() {
            return None;
        }
        Some(QueryRequest {
            params,
            scope: format!("{}{head}", self.scope),
        })
    }

    /// A map `Prefix.entry.N.{key_name}` / `Prefix.entry.N.{value_name}` in numeric N order.
    /// Entries without a key are skipped; an entry without a value maps to `""`.
    pub fn map(&self, prefix: &str, key_name: &str, value_name: &str) -> Vec<(String, String)> {
        self.indexed_views(&format!("{prefix}.entry."))
            .into_values()
            .filter_map(|entry| {
                let key = entry.get(key_name)?.to_string();
                let value = entry.get(value_name).unwrap_or_default().to_string();
                Some((key, value))
            })
            .collect()
    }

    /// Tags as IAM and ELBv2 send them: `Prefix.member.N.Key` / `.Value`. Members without a
    /// `Key` are skipped; a missing `Value` is `""`. See [`QueryRequest::tags_strict`].
    pub fn tags(&self, prefix: &str) -> Vec<(String, String)> {
        self.struct_list(prefix)
            .into_iter()
            .filter_map(|tag| {
                let key = tag.get("Key")?.to_string();
                let value = tag.get("Value").unwrap_or_default().to_string();
                Some((key, value))
            })
            .collect()
    }

    /// Like [`QueryRequest::tags`], but a member without `Key` (or, when `value_required`,
    /// without `Value`, as IAM requires) is the `ValidationError` AWS returns
    /// (`Value null at 'tags.1.member.key'`).
    pub fn tags_strict(
        &self,
        prefix: &str,
        value_required: bool,
    ) -> Result<Vec<(String, String)>, QueryError> {
        let mut tags = Vec::new();
        for tag in self.struct_list(prefix) {
            let key = tag.required("Key")?.to_string();
            let value = if value_required {
                tag.required("Value")?.to_string()
            } else {
                tag.get("Value").unwrap_or_default().to_string()
            };
            tags.push((key, value));
        }
        Ok(tags)
    }

    /// Group keys `{head}N.rest` into views by N.
    fn indexed_views(&self, head: &str) -> BTreeMap<u64, QueryRequest> {
        let mut views: BTreeMap<u64, QueryRequest> = BTreeMap::new();
        for (key, value) in &self.params {
            let Some(rest) = key.strip_prefix(head) else {
                continue;
            };
            let Some((index, member)) = rest.split_once('.') else {
                continue;
            };
            if member.is_empty() {
                continue;
            }
            let Some(n) = parse_index(index) else {
                continue;
            };
            let view = views.entry(n).or_insert_with(|| QueryRequest {
                params: Vec::new(),
                scope: format!("{}{head}{index}.", self.scope),
            });
            match view.params.iter_mut().find(|(k, _)| k == member) {
                Some(slot) => slot.1 = value.clone(),
                None => view.params.push((member.to_string(), value.clone())),
            }
        }
        views
    }
}

/// A list index: ASCII digits only.
fn parse_index(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Percent-decode one form component (`+` is a space).
fn percent_decode(raw: &[u8]) -> Result<String, QueryError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = raw.get(i + 1).and_then(|&b| hex_value(b));
                let lo = raw.get(i + 2).and_then(|&b| hex_value(b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                    }
                    _ => {
                        return Err(QueryError::malformed(
                            "'%' must be followed by two hexadecimal digits.",
                        ))
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::malformed("parameters must be UTF-8."))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A raw key as AWS names it in validation messages: each name segment with its first letter
/// lower-cased, and `member.N` / `entry.N` printed as `N.member` / `N.entry`.
fn aws_member_path(raw: &str) -> String {
    let segments: Vec<&str> = raw.split('.').filter(|s| !s.is_empty()).collect();
    let mut out: Vec<String> = Vec::with_capacity(segments.len());
    let mut i = 0;
    while i < segments.len() {
        let segment = segments[i];
        let next_is_index = segments
            .get(i + 1)
            .is_some_and(|next| parse_index(next).is_some());
        if (segment == "member" || segment == "entry") && next_is_index {
            out.push(segments[i + 1].to_string());
            out.push(segment.to_string());
            i += 2;
        } else {
            out.push(lower_first(segment));
            i += 1;
        }
    }
    out.join(".")
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// Builds an XML response body. Element names are trusted (they come from the handlers);
/// text is escaped.
#[derive(Debug)]
pub(crate) struct XmlWriter {
    buf: String,
    action: String,
    /// Whether `<{action}Result>` was opened (false for [`XmlWriter::empty`]).
    has_result: bool,
    /// Length of `buf` right after `<{action}Result>`: nothing written if still equal.
    result_body_start: usize,
    open: Vec<String>,
}

impl XmlWriter {
    /// Starts `<{action}Response xmlns="{namespace}"><{action}Result>`. The Result element is
    /// always written, even when empty (`<{action}Result/>`), as AWS does for operations with
    /// an output shape (ELBv2's `DeleteLoadBalancer`): SDKs such as aws-sdk-go-v2 look for it.
    pub fn response(action: &str, namespace: &str) -> XmlWriter {
        let mut buf = String::with_capacity(256);
        buf.push('<');
        buf.push_str(action);
        buf.push_str("Response xmlns=\"");
        escape_into(&mut buf, namespace);
        buf.push_str("\"><");
        buf.push_str(action);
        buf.push_str("Result>");
        let result_body_start = buf.len();
        XmlWriter {
            buf,
            action: action.to_string(),
            has_result: true,
            result_body_start,
            open: Vec::new(),
        }
    }

    /// A response with no Result element at all, for operations without an output shape
    /// (IAM's `DeleteRole`, `TagRole`, ...): `<{action}Response xmlns=".."><ResponseMetadata>
    /// ..</ResponseMetadata></{action}Response>`. Anything written to it goes directly under
    /// the Response element.
    pub fn empty(action: &str, namespace: &str) -> XmlWriter {
        let mut buf = String::with_capacity(192);
        buf.push('<');
        buf.push_str(action);
        buf.push_str("Response xmlns=\"");
        escape_into(&mut buf, namespace);
        buf.push_str("\">");
        let result_body_start = buf.len();
        XmlWriter {
            buf,
            action: action.to_string(),
            has_result: false,
            result_body_start,
            open: Vec::new(),
        }
    }

    /// `<name>`.
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        self.open.push(name.to_string());
        self
    }

    /// `</name>`: closes the innermost open element (which must be `name`; in release builds
    /// the innermost element is closed regardless, so the output stays well-formed).
    pub fn close(&mut self, name: &str) -> &mut Self {
        debug_assert_eq!(self.open.last().map(String::as_str), Some(name));
        if let Some(open) = self.open.pop() {
            self.buf.push_str("</");
            self.buf.push_str(&open);
            self.buf.push('>');
        }
        self
    }

    /// `<name>` + whatever `f` writes + `</name>`.
    pub fn element(&mut self, name: &str, f: impl FnOnce(&mut XmlWriter)) -> &mut Self {
        self.open(name);
        f(self);
        self.close(name)
    }

    /// `<name>escaped value</name>`.
    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
        escape_into(&mut self.buf, value);
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// [`XmlWriter::text`], or nothing for `None`.
    pub fn opt_text(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.text(name, value);
        }
        self
    }

    /// `<name>true</name>` / `<name>false</name>`.
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.text(name, if value { "true" } else { "false" })
    }

    pub fn opt_bool(&mut self, name: &str, value: Option<bool>) -> &mut Self {
        if let Some(value) = value {
            self.bool(name, value);
        }
        self
    }

    /// `<name>42</name>`.
    pub fn int(&mut self, name: &str, value: i64) -> &mut Self {
        self.text(name, &value.to_string())
    }

    pub fn opt_int(&mut self, name: &str, value: Option<i64>) -> &mut Self {
        if let Some(value) = value {
            self.int(name, value);
        }
        self
    }

    /// `<name>2026-01-02T03:04:05Z</name>` (see [`iso8601`]).
    pub fn timestamp(&mut self, name: &str, epoch_secs: f64) -> &mut Self {
        self.text(name, &iso8601(epoch_secs))
    }

    pub fn opt_timestamp(&mut self, name: &str, epoch_secs: Option<f64>) -> &mut Self {
        if let Some(value) = epoch_secs {
            self.timestamp(name, value);
        }
        self
    }

    /// `<name><member>..</member>...</name>`, each member's content written by `f`;
    /// `<name/>` for no items.
    pub fn list<T>(
        &mut self,
        name: &str,
        items: &[T],
        mut f: impl FnMut(&mut XmlWriter, &T),
    ) -> &mut Self {
        if items.is_empty() {
            return self.empty_element(name);
        }
        self.open(name);
        for item in items {
            self.open("member");
            f(self, item);
            self.close("member");
        }
        self.close(name)
    }

    /// `<name><member>escaped</member>...</name>`.
    pub fn string_list(&mut self, name: &str, items: &[String]) -> &mut Self {
        self.list(name, items, |w, item| {
            escape_into(&mut w.buf, item);
        })
    }

    /// Tags: `<name><member><Key>k</Key><Value>v</Value></member>...</name>`.
    pub fn tags(&mut self, name: &str, tags: &[(String, String)]) -> &mut Self {
        self.list(name, tags, |w, (key, value)| {
            w.text("Key", key).text("Value", value);
        })
    }

    /// A map: `<name><entry><{key_name}>k</..><{value_name}>v</..></entry>...</name>`.
    pub fn map(
        &mut self,
        name: &str,
        entries: &[(String, String)],
        key_name: &str,
        value_name: &str,
    ) -> &mut Self {
        if entries.is_empty() {
            return self.empty_element(name);
        }
        self.open(name);
        for (key, value) in entries {
            self.open("entry");
            self.text(key_name, key).text(value_name, value);
            self.close("entry");
        }
        self.close(name)
    }

    /// `<name/>`.
    pub fn empty_element(&mut self, name: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push_str("/>");
        self
    }

    /// Closes any element left open, closes Result (`<{action}Result/>` if nothing was
    /// written), writes `ResponseMetadata/RequestId`, closes Response; returns the body.
    pub fn finish(mut self, request_id: &str) -> String {
        while let Some(open) = self.open.pop() {
            self.buf.push_str("</");
            self.buf.push_str(&open);
            self.buf.push('>');
        }
        if self.has_result {
            if self.buf.len() == self.result_body_start {
                // `<XResult>` → `<XResult/>`.
                self.buf.pop();
                self.buf.push_str("/>");
            } else {
                self.buf.push_str("</");
                self.buf.push_str(&self.action);
                self.buf.push_str("Result>");
            }
        }
        self.buf.push_str("<ResponseMetadata><RequestId>");
        escape_into(&mut self.buf, request_id);
        self.buf.push_str("</RequestId></ResponseMetadata></");
        self.buf.push_str(&self.action);
        self.buf.push_str("Response>");
        self.buf
    }
}

/// The awsQuery error body: `<ErrorResponse xmlns=".."><Error><Type>Sender|Receiver</Type>
/// <Code>..</Code><Message>..</Message></Error><RequestId>..</RequestId></ErrorResponse>`.
pub(crate) fn error_xml(
    namespace: &str,
    code: &str,
    message: &str,
    sender: bool,
    request_id: &str,
) -> String {
    let mut buf = String::with_capacity(192 + message.len());
    buf.push_str("<ErrorResponse xmlns=\"");
    escape_into(&mut buf, namespace);
    buf.push_str("\"><Error><Type>");
    buf.push_str(if sender { "Sender" } else { "Receiver" });
    buf.push_str("</Type><Code>");
    escape_into(&mut buf, code);
    buf.push_str("</Code><Message>");
    escape_into(&mut buf, message);
    buf.push_str("</Message></Error><RequestId>");
    escape_into(&mut buf, request_id);
    buf.push_str("</RequestId></ErrorResponse>");
    buf
}

/// An XML response: `status` (500 if not a valid status code), `Content-Type: text/xml`,
/// and `x-amzn-RequestId`.
pub(crate) fn xml_response(status: u16, body: String, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("text/xml"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
}

/// Seconds since the epoch as ISO 8601 UTC: `2026-01-02T03:04:05Z`, or with milliseconds
/// (`2026-01-02T03:04:05.123Z`) when the value has a fractional part after rounding to
/// milliseconds. NaN is the epoch; values are clamped to years 0000..=9999.
pub(crate) fn iso8601(epoch_secs: f64) -> String {
    const MIN_MILLIS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    const MAX_MILLIS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
                                                 // `as` saturates and maps NaN to 0.
    let millis = ((epoch_secs * 1000.0).round() as i64).clamp(MIN_MILLIS, MAX_MILLIS);
    let secs = millis.div_euclid(1000);
    let frac = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    if frac == 0 {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{frac:03}Z")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Escape text or an attribute value: `& < > " '`, and `\r` as `&#xD;` so parsers do not
/// normalise it away. Other C0 control characters cannot appear in XML 1.0 at all and become
/// U+FFFD.
fn escape_into(buf: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => buf.push_str("&amp;"),
            '<' => buf.push_str("&lt;"),
            '>' => buf.push_str("&gt;"),
            '"' => buf.push_str("&quot;"),
            '\'' => buf.push_str("&apos;"),
            '\r' => buf.push_str("&#xD;"),
            '\t' | '\n' => buf.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => buf.push('\u{FFFD}'),
            c => buf.push(c),
        }
    }
}

/// [`escape_into`] into a new string.
pub(crate) fn xml_escape(value: &str) -> String {
    let mut buf = String::with_capacity(value.len());
    escape_into(&mut buf, value);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = IAM_NAMESPACE;

    #[test]
    fn parses_form_body_with_percent_encoding_and_plus() {
        let body = b"Action=CreateRole&Version=2010-05-08&RoleName=my+role%2Fx\
            &Description=caf%C3%A9%20%26%20bar&AssumeRolePolicyDocument=%7B%22a%22%3A1%7D";
        let q = QueryRequest::parse("", body).unwrap();
        assert_eq!(q.action(), Some("CreateRole"));
        assert_eq!(q.version(), Some("2010-05-08"));
        assert_eq!(q.get("RoleName"), Some("my role/x"));
        assert_eq!(q.get("Description"), Some("café & bar"));
        assert_eq!(q.get("AssumeRolePolicyDocument"), Some("{\"a\":1}"));
        assert_eq!(q.get("Missing"), None);
        assert_eq!(q.len(), 5);
    }

    #[test]
    fn query_string_and_body_merge_last_wins() {
        let q = QueryRequest::parse(
            "?Action=GetRole&RoleName=a&Flag",
            b"RoleName=b&&RoleName=c&Empty=",
        )
        .unwrap();
        assert_eq!(q.action(), Some("GetRole"));
        assert_eq!(q.get("RoleName"), Some("c"));
        assert_eq!(q.get("Flag"), Some(""));
        assert_eq!(q.get("Empty"), Some(""));
        let keys: Vec<&str> = q.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["Action", "RoleName", "Flag", "Empty"]);
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        for body in [
            &b"RoleName=%zz"[..],
            b"RoleName=%4",
            b"Role%=x",
            b"X=%C3%28",
        ] {
            let e = QueryRequest::parse("", body).unwrap_err();
            assert_eq!(e.code, "MalformedQueryString");
            assert_eq!(e.status, 400);
            assert!(e.sender);
        }
        assert!(QueryRequest::parse("a=%", b"").is_err());
    }

    #[test]
    fn string_lists_sort_numerically_with_gaps() {
        let q = QueryRequest::parse(
            "",
            b"PolicyArns.member.10=ten&PolicyArns.member.2=two&PolicyArns.member.1=one\
              &PolicyArns.member.x=bad&Other.member.1=other",
        )
        .unwrap();
        assert_eq!(q.string_list("PolicyArns"), ["one", "two", "ten"]);
        assert!(q.string_list("Nope").is_empty());
        assert!(q.list_present("PolicyArns"));
        assert!(!q.list_present("Nope"));
        let empty = QueryRequest::parse("", b"SecurityGroups=").unwrap();
        assert!(empty.list_present("SecurityGroups"));
        assert!(empty.string_list("SecurityGroups").is_empty());
    }

    #[test]
    fn nested_member_lists_and_structures() {
        let q = QueryRequest::parse(
            "",
            b"Actions.member.2.Type=fixed-response\
              &Actions.member.1.Type=forward\
              &Actions.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn=arn2\
              &Actions.member.1.ForwardConfig.TargetGroups.member.2.Weight=20\
              &Actions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn=arn1\
              &Actions.member.1.Order=1\
              &HealthCheckConfig.Path=%2Fhealth&HealthCheckConfig.Port=80",
        )
        .unwrap();
        let actions = q.struct_list("Actions");
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0].get("Type"), Some("forward"));
        assert_eq!(actions[0].int("Order").unwrap(), Some(1));
        assert_eq!(actions[1].get("Type"), Some("fixed-response"));
        let forward = actions[0].nested("ForwardConfig").unwrap();
        let groups = forward.struct_list("TargetGroups");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].get("TargetGroupArn"), Some("arn1"));
        assert_eq!(groups[0].int("Weight").unwrap(), None);
        assert_eq!(groups[1].get("TargetGroupArn"), Some("arn2"));
        assert_eq!(groups[1].int("Weight").unwrap(), Some(20));
        // Missing members in deep views name the whole path.
        let e = groups[0].required("Weight").unwrap_err();
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at \
             'actions.1.member.forwardConfig.targetGroups.1.member.weight' failed to satisfy \
             constraint: Member must not be null"
        );
        assert!(actions[1].nested("ForwardConfig").is_none());
        let health = q.nested("HealthCheckConfig").unwrap();
        assert_eq!(health.get("Path"), Some("/health"));
        assert_eq!(health.get("Port"), Some("80"));
        assert!(q.nested("Health").is_none());
        assert_eq!(q.get("HealthCheckConfig.Path"), Some("/health"));
    }

    #[test]
    fn maps_and_tags() {
        let q = QueryRequest::parse(
            "",
            b"Attributes.entry.2.key=b&Attributes.entry.2.value=2\
              &Attributes.entry.1.key=a&Attributes.entry.1.value=1\
              &Attributes.entry.3.value=orphan\
              &Ctx.entry.1.Name=n&Ctx.entry.1.Val=v\
              &Tags.member.1.Key=env&Tags.member.1.Value=prod\
              &Tags.member.2.Key=team\
              &Tags.member.3.Value=no-key",
        )
        .unwrap();
        assert_eq!(
            q.map("Attributes", "key", "value"),
            [("a".to_string(), "1".to_string()), ("b".into(), "2".into())]
        );
        assert_eq!(
            q.map("Ctx", "Name", "Val"),
            [("n".to_string(), "v".to_string())]
        );
        assert_eq!(
            q.tags("Tags"),
            [
                ("env".to_string(), "prod".to_string()),
                ("team".into(), "".into())
            ]
        );
        assert_eq!(
            q.tags_strict("Tags", false).unwrap_err().message,
            "1 validation error detected: Value null at 'tags.3.member.key' failed to satisfy \
             constraint: Member must not be null"
        );
        let e = q.tags_strict("Tags", true).unwrap_err();
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'tags.2.member.value' failed to \
             satisfy constraint: Member must not be null"
        );
        assert!(q.tags("None").is_empty());
    }

    #[test]
    fn missing_required_is_aws_validation_error() {
        let q = QueryRequest::parse("", b"Action=GetRole&Empty=").unwrap();
        let e = q.required("RoleName").unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert_eq!(e.status, 400);
        assert!(e.sender);
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'roleName' failed to satisfy \
             constraint: Member must not be null"
        );
        assert_eq!(q.required("Empty").unwrap(), "");
        assert_eq!(q.required("Action").unwrap(), "GetRole");
        assert_eq!(
            q.member_path("HealthCheckConfig.Path"),
            "healthCheckConfig.path"
        );
    }

    #[test]
    fn ints_and_bools() {
        let q = QueryRequest::parse(
            "",
            b"MaxItems=100&Neg=-5&Bad=12x&Big=99999999999999999999&T=true&F=False&B=yes",
        )
        .unwrap();
        assert_eq!(q.int("MaxItems").unwrap(), Some(100));
        assert_eq!(q.int("Neg").unwrap(), Some(-5));
        assert_eq!(q.int("Absent").unwrap(), None);
        let e = q.int("Bad").unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert_eq!(
            e.message,
            "1 validation error detected: Value '12x' at 'bad' failed to satisfy constraint: \
             Member must be a valid integer"
        );
        assert!(q.int("Big").is_err());
        assert_eq!(q.bool("T").unwrap(), Some(true));
        assert_eq!(q.bool("F").unwrap(), Some(false));
        assert_eq!(q.bool("Absent").unwrap(), None);
        assert_eq!(q.bool("B").unwrap_err().code, "ValidationError");
        assert_eq!(q.required_int("MaxItems").unwrap(), 100);
        assert_eq!(
            q.required_int("Absent").unwrap_err().code,
            "ValidationError"
        );
        assert!(q.required_bool("T").unwrap());
    }

    #[test]
    fn escapes_xml_text() {
        assert_eq!(
            xml_escape(r#"a&b<c>d"e'f"#),
            "a&amp;b&lt;c&gt;d&quot;e&apos;f"
        );
        assert_eq!(xml_escape("x\r\n\ty\u{1}"), "x&#xD;\n\ty\u{FFFD}");
        assert_eq!(xml_escape("héllo"), "héllo");
    }

    #[test]
    fn response_body_is_exact() {
        let mut w = XmlWriter::response("CreateRole", NS);
        w.open("Role")
            .text("Path", "/")
            .text("RoleName", "a<b")
            .opt_text("Description", None)
            .opt_text("Arn", Some("arn:aws:iam::1:role/a"))
            .timestamp("CreateDate", 1_767_323_045.0)
            .int("MaxSessionDuration", 3600)
            .bool("Flag", true)
            .tags("Tags", &[("a".to_string(), "b&c".to_string())])
            .string_list("Names", &["x".to_string(), "y".to_string()])
            .list("Empty", &[] as &[String], |_, _| {})
            .map(
                "Attributes",
                &[("k".to_string(), "v".to_string())],
                "key",
                "value",
            )
            .close("Role");
        let body = w.finish("req-1");
        assert_eq!(
            body,
            "<CreateRoleResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
             <CreateRoleResult><Role><Path>/</Path><RoleName>a&lt;b</RoleName>\
             <Arn>arn:aws:iam::1:role/a</Arn><CreateDate>2026-01-02T03:04:05Z</CreateDate>\
             <MaxSessionDuration>3600</MaxSessionDuration><Flag>true</Flag>\
             <Tags><member><Key>a</Key><Value>b&amp;c</Value></member></Tags>\
             <Names><member>x</member><member>y</member></Names><Empty/>\
             <Attributes><entry><key>k</key><value>v</value></entry></Attributes>\
             </Role></CreateRoleResult>\
             <ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>\
             </CreateRoleResponse>"
        );
    }

    #[test]
    fn nested_lists_via_closures_and_unclosed_elements() {
        let roles = vec![("r1", 1.5), ("r2", 0.0)];
        let mut w = XmlWriter::response("ListRoles", NS);
        w.list("Roles", &roles, |w, (name, created)| {
            w.text("RoleName", name).timestamp("CreateDate", *created);
        })
        .bool("IsTruncated", false)
        .element("Wrapper", |w| {
            w.int("N", -1);
        })
        .open("Dangling");
        let body = w.finish("id");
        assert_eq!(
            body,
            "<ListRolesResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
             <ListRolesResult><Roles>\
             <member><RoleName>r1</RoleName><CreateDate>1970-01-01T00:00:01.500Z</CreateDate></member>\
             <member><RoleName>r2</RoleName><CreateDate>1970-01-01T00:00:00Z</CreateDate></member>\
             </Roles><IsTruncated>false</IsTruncated><Wrapper><N>-1</N></Wrapper>\
             <Dangling></Dangling></ListRolesResult>\
             <ResponseMetadata><RequestId>id</RequestId></ResponseMetadata></ListRolesResponse>"
        );
    }

    #[test]
    fn empty_results() {
        assert_eq!(
            XmlWriter::empty("DeleteRole", NS).finish("r"),
            "<DeleteRoleResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
             <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DeleteRoleResponse>"
        );
        assert_eq!(
            XmlWriter::response("DeleteLoadBalancer", ELBV2_NAMESPACE).finish("r"),
            "<DeleteLoadBalancerResponse \
             xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
             <DeleteLoadBalancerResult/>\
             <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>\
             </DeleteLoadBalancerResponse>"
        );
    }

    #[test]
    fn error_body_is_exact() {
        assert_eq!(
            error_xml(
                NS,
                "NoSuchEntity",
                "The role with name x cannot be found.",
                true,
                "uuid"
            ),
            "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
             <Error><Type>Sender</Type><Code>NoSuchEntity</Code>\
             <Message>The role with name x cannot be found.</Message></Error>\
             <RequestId>uuid</RequestId></ErrorResponse>"
        );
        let e = QueryError::server("boom <x>");
        assert_eq!((e.code, e.status, e.sender), ("ServiceFailure", 500, false));
        assert_eq!(
            e.to_xml(STS_NAMESPACE, "u"),
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <Error><Type>Receiver</Type><Code>ServiceFailure</Code>\
             <Message>boom &lt;x&gt;</Message></Error>\
             <RequestId>u</RequestId></ErrorResponse>"
        );
        let e = QueryError::new("NoSuchEntity", "m");
        assert_eq!((e.status, e.sender), (400, true));
        assert_eq!(e.with_status(404).status, 404);
        assert_eq!(
            QueryError::invalid_action("Foo", "2010-05-08").message,
            "Could not find operation Foo for version 2010-05-08"
        );
        assert_eq!(QueryError::missing_action().code, "MissingAction");
    }

    #[test]
    fn http_response_has_status_type_and_request_id() {
        let r = xml_response(404, "<x/>".to_string(), "rid-1");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "text/xml");
        assert_eq!(r.headers()["x-amzn-requestid"], "rid-1");
        let r = xml_response(42, String::new(), "bad\nid");
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get("x-amzn-requestid").is_none());
        let r = QueryError::new("Throttling", "slow")
            .with_status(400)
            .to_response(NS, "r");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn iso8601_formats() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_767_323_045.0), "2026-01-02T03:04:05Z");
        assert_eq!(iso8601(1_767_323_045.123), "2026-01-02T03:04:05.123Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(-1.0), "1969-12-31T23:59:59Z");
        assert_eq!(iso8601(1.9996), "1970-01-01T00:00:02Z");
        assert_eq!(iso8601(f64::NAN), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(f64::INFINITY), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso8601(f64::NEG_INFINITY), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn member_paths() {
        assert_eq!(aws_member_path("RoleName"), "roleName");
        assert_eq!(aws_member_path("Tags.member.1.Key"), "tags.1.member.key");
        assert_eq!(
            aws_member_path("Attributes.entry.2.value"),
            "attributes.2.entry.value"
        );
        assert_eq!(aws_member_path("SAMLProviderArn"), "sAMLProviderArn");
    }
}
