//! AWS Signature Version 4: verifying signed requests on the server side, and signing requests
//! for Gantry's own clients (CLI, agent).
//!
//! Verification is split in three steps so that the caller can do its lookups in between:
//!
//! 1. [`parse_claim`] reads what the request *claims* (access key, scope, signed headers,
//!    signature, time) from the `Authorization` header or from a presigned query string. It
//!    needs no secret and checks only that the claim is complete and well formed.
//! 2. [`check_scope_and_time`] checks the credential scope against the region and service this
//!    endpoint serves, and the request time against the caller's clock (±15 minutes, or the
//!    presigned URL's lifetime).
//! 3. [`verify`] recomputes the signature with the secret key the caller looked up for
//!    `claim.access_key_id` and compares it in constant time.
//!
//! The rules are those AWS applies to non-S3 services (and that the AWS SDKs, the AWS CLI and
//! Terraform sign with): the path is normalised and then URI-encoded a second time, the query
//! string is decoded and re-encoded with RFC 3986 unreserved characters, header values are
//! trimmed with runs of spaces collapsed, and the payload hash is the SHA-256 of the body (or
//! the `x-amz-content-sha256` header's value). Error texts mimic AWS's so that clients print
//! familiar messages.
//!
//! Everything here is a pure function: no I/O and no clock reads (the caller passes `now` as
//! unix seconds), which keeps the module deterministic and testable against fixed vectors.

use std::borrow::Cow;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only signing algorithm SigV4 defines for HMAC keys.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The fixed last element of every SigV4 credential scope.
pub const SCOPE_TERMINATOR: &str = "aws4_request";
/// The payload-hash literal a client sends when it chose not to hash the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far a header-signed request's time may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 900;
/// The longest lifetime a presigned URL may ask for (7 days), as on AWS.
pub const MAX_PRESIGN_EXPIRES_SECS: i64 = 604_800;

const MISMATCH_MESSAGE: &str = "The request signature we calculated does not match the signature \
     you provided. Check your AWS Secret Access Key and signing method. Consult the service \
     documentation for details.";
const PAYLOAD_HASH_MESSAGE: &str =
    "The provided 'x-amz-content-sha256' header does not match what was computed.";
const HOST_NOT_SIGNED_MESSAGE: &str =
    "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.";
const ONE_MECHANISM_MESSAGE: &str = "Only one auth mechanism allowed; only the X-Amz-Algorithm \
     query parameter, Signature query string parameter or the Authorization header should be \
     specified";

/// The request as received. `path` is the raw path as on the wire (percent-encoded, no query),
/// `query` the raw query string without '?', possibly empty.
///
/// `headers` must contain the `Host` header as the client sent it (with the port): clients
/// sign it. For HTTP/2 requests, which carry `:authority` instead, the caller should insert a
/// `host` entry from the URI's authority before verifying.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// What the Authorization header (or a presigned query string) claims, read without any secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub access_key_id: String,
    /// YYYYMMDD from the credential scope.
    pub scope_date: String,
    pub region: String,
    pub service: String,
    /// Lowercase, in the order the client listed them.
    pub signed_headers: Vec<String>,
    /// Lowercase hex, as sent.
    pub signature: String,
    /// The request time in ISO-8601 basic form (`YYYYMMDD'T'HHMMSS'Z'`): the `X-Amz-Date`
    /// header or query parameter, or the `Date` header (converted) when `X-Amz-Date` is absent.
    pub amz_date: String,
    /// `amz_date` as unix seconds.
    pub request_time: i64,
    /// The `X-Amz-Security-Token` header or query parameter, for temporary credentials. It is
    /// not necessarily signed (some clients leave it out), so the caller must check that it
    /// belongs to `access_key_id`.
    pub security_token: Option<String>,
    /// `Some(expires_secs)` when the signature came in the query string (`X-Amz-Expires`).
    pub presigned: Option<i64>,
}

/// Why a request failed authentication. [`AuthError::message`] gives AWS's text for it.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthError {
    /// No Authorization header and no presigned query parameters (AWS:
    /// MissingAuthenticationToken).
    Missing,
    /// The Authorization header or presigned query is malformed or lacks a part; the String is
    /// AWS's message (AWS: IncompleteSignature).
    Incomplete(String),
    /// The credential scope names another region or service, a date that does not match the
    /// request time, or a terminator other than `aws4_request` (AWS: InvalidSignature family).
    BadScope(String),
    /// Outside the clock window, or a presigned URL past its expiry.
    Expired(String),
    /// The signature does not match.
    Mismatch,
    /// `x-amz-content-sha256` is neither `UNSIGNED-PAYLOAD` nor the body's SHA-256.
    PayloadHashMismatch,
}

impl AuthError {
    /// The AWS message text for this error.
    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => "Missing Authentication Token".to_string(),
            AuthError::Incomplete(m) | AuthError::BadScope(m) | AuthError::Expired(m) => m.clone(),
            AuthError::Mismatch => MISMATCH_MESSAGE.to_string(),
            AuthError::PayloadHashMismatch => PAYLOAD_HASH_MESSAGE.to_string(),
        }
    }

    /// The error code an awsJson service (ECS) returns as `__type`.
    pub fn json_type(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::BadScope(_)
            | AuthError::Expired(_)
            | AuthError::Mismatch
            | AuthError::PayloadHashMismatch => "InvalidSignatureException",
        }
    }

    /// The error code an awsQuery service (IAM, STS, ELBv2) returns as `<Code>`.
    pub fn query_code(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationToken",
            AuthError::Incomplete(_) => "IncompleteSignature",
            AuthError::BadScope(_)
            | AuthError::Expired(_)
            | AuthError::Mismatch
            | AuthError::PayloadHashMismatch => "SignatureDoesNotMatch",
        }
    }

    /// The HTTP status AWS answers with: 400 for a malformed signature, 403 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Incomplete(_) => 400,
            _ => 403,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for AuthError {}

/// Long-term or temporary credentials to sign with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

// Hand-written so that the secret never ends up in a log line.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Step 1: parse the claim
// ---------------------------------------------------------------------------------------------

/// Step 1 (no secrets): find and parse the signature claim. Checks completeness only, plus the
/// scope terminator (the claim has no field for it, so it cannot be checked later).
///
/// A request is taken as presigned when its query has an `X-Amz-Signature` or
/// `X-Amz-Algorithm` parameter; carrying both that and an Authorization header is an error.
pub fn parse_claim(req: &RequestParts) -> Result<Claim, AuthError> {
    let authorization = req.headers.get(http::header::AUTHORIZATION);
    let presigned = query_pairs(req.query)
        .any(|(k, _)| matches!(&*decoded(k), "X-Amz-Signature" | "X-Amz-Algorithm"));
    match (authorization, presigned) {
        (Some(_), true) => Err(AuthError::Incomplete(ONE_MECHANISM_MESSAGE.to_string())),
        (Some(value), false) => parse_header_claim(req, value),
        (None, true) => parse_query_claim(req),
        (None, false) => Err(AuthError::Missing),
    }
}

fn parse_header_claim(req: &RequestParts, value: &http::HeaderValue) -> Result<Claim, AuthError> {
    let Ok(value) = value.to_str() else {
        return Err(AuthError::Incomplete(
            "Authorization header must contain only visible ASCII characters.".to_string(),
        ));
    };
    let trimmed = value.trim();
    let (algorithm, rest) = trimmed.split_once([' ', '\t']).unwrap_or((trimmed, ""));
    if algorithm != ALGORITHM {
        return Err(AuthError::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'"
        )));
    }

    // "Credential=..., SignedHeaders=..., Signature=...": comma-separated, spaces optional,
    // any order. The first occurrence of a key wins; unknown keys are ignored.
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, val)) = part.split_once('=') else {
            return Err(AuthError::Incomplete(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization \
                 header: '{value}'."
            )));
        };
        let slot = match key.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(val.trim());
        }
    }

    // X-Amz-Date wins; the `Date` header is the fallback SigV4 allows.
    let date_header = req
        .headers
        .get("x-amz-date")
        .map(|v| (v, true))
        .or_else(|| req.headers.get(http::header::DATE).map(|v| (v, false)));

    let mut missing = String::new();
    for (name, absent) in [
        ("Credential", credential.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed_headers.is_none()),
    ] {
        if absent {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    if date_header.is_none() {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header. ",
        );
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some((date_value, is_amz))) =
        (credential, signed_headers, signature, date_header)
    else {
        return Err(AuthError::Incomplete(format!(
            "{missing}Authorization={value}"
        )));
    };

    let date_text = String::from_utf8_lossy(date_value.as_bytes());
    let request_time = if is_amz {
        parse_amz_date(date_text.trim())
    } else {
        parse_http_date(&date_text)
    };
    let Some(request_time) = request_time else {
        return Err(AuthError::Incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{date_text}'. See \
             http://en.wikipedia.org/wiki/ISO_8601"
        )));
    };

    let scope = parse_credential(credential)?;
    let signed_headers = parse_signed_headers(signed_headers)?;
    let security_token = req
        .headers
        .get("x-amz-security-token")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    Ok(Claim {
        access_key_id: scope.access_key_id.to_string(),
        scope_date: scope.date.to_string(),
        region: scope.region.to_string(),
        service: scope.service.to_string(),
        signed_headers,
        signature: signature.to_string(),
        amz_date: format_amz_date(request_time),
        request_time,
        security_token,
        presigned: None,
    })
}

fn parse_query_claim(req: &RequestParts) -> Result<Claim, AuthError> {
    // The auth parameters arrive percent-encoded (the credential's '/' as %2F, the signed
    // headers' ';' as %3B). The first occurrence of each wins.
    let mut found: [Option<String>; 7] = Default::default();
    const NAMES: [&str; 7] = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-Security-Token",
    ];
    for (key, val) in query_pairs(req.query) {
        let key = decoded(key);
        if let Some(i) = NAMES.iter().position(|n| *n == key) {
            if found[i].is_none() {
                found[i] = Some(percent_decode_lossy(val));
            }
        }
    }
    let [algorithm, credential, signature, signed_headers, date, expires, token] = found;

    let mut missing = String::new();
    for (name, absent) in NAMES[..6].iter().zip([
        algorithm.is_none(),
        credential.is_none(),
        signature.is_none(),
        signed_headers.is_none(),
        date.is_none(),
        expires.is_none(),
    ]) {
        if absent {
            missing.push_str(&format!(
                "AWS query-string parameters must include '{name}'. "
            ));
        }
    }
    let (
        Some(algorithm),
        Some(credential),
        Some(signature),
        Some(signed_headers),
        Some(date),
        Some(expires),
    ) = (
        algorithm,
        credential,
        signature,
        signed_headers,
        date,
        expires,
    )
    else {
        return Err(AuthError::Incomplete(format!(
            "{missing}Re-examine the query-string parameters."
        )));
    };

    if algorithm != ALGORITHM {
        return Err(AuthError::Incomplete(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\", not '{algorithm}'"
        )));
    }
    let Some(request_time) = parse_amz_date(&date) else {
        return Err(AuthError::Incomplete(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"".to_string(),
        ));
    };
    let Ok(expires) = expires.trim().parse::<i64>() else {
        return Err(AuthError::Incomplete(
            "X-Amz-Expires should be a number".to_string(),
        ));
    };
    let scope = parse_credential(&credential)?;
    let signed_headers = parse_signed_headers(&signed_headers)?;

    Ok(Claim {
        access_key_id: scope.access_key_id.to_string(),
        scope_date: scope.date.to_string(),
        region: scope.region.to_string(),
        service: scope.service.to_string(),
        signed_headers,
        signature,
        amz_date: format_amz_date(request_time),
        request_time,
        security_token: token,
        presigned: Some(expires),
    })
}

struct Scope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

fn parse_credential(credential: &str) -> Result<Scope<'_>, AuthError> {
    let mut parts = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(AuthError::Incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got '{credential}'"
        )));
    };
    if terminator != SCOPE_TERMINATOR {
        return Err(AuthError::BadScope(format!(
            "Credential should be scoped with a valid terminator: '{SCOPE_TERMINATOR}', not \
             '{terminator}'. "
        )));
    }
    Ok(Scope {
        access_key_id,
        date,
        region,
        service,
    })
}

fn parse_signed_headers(list: &str) -> Result<Vec<String>, AuthError> {
    let names: Vec<String> = list
        .split(';')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    // Without a signed Host header a signature could be replayed against another endpoint.
    if !names.iter().any(|n| n == "host") {
        return Err(AuthError::Incomplete(HOST_NOT_SIGNED_MESSAGE.to_string()));
    }
    Ok(names)
}

// ---------------------------------------------------------------------------------------------
// Step 2: scope and clock
// ---------------------------------------------------------------------------------------------

/// Step 2: check the claim's scope against what this endpoint serves, and the clock window
/// (±15 min, 900 s inclusive; presigned: `request_time <= now + 900` and
/// `now <= request_time + expires`, with `expires` limited to 1..=604800).
///
/// A caller that accepts any region passes `&claim.region`.
pub fn check_scope_and_time(
    claim: &Claim,
    region: &str,
    service: &str,
    now: i64,
) -> Result<(), AuthError> {
    if claim.region != region {
        return Err(AuthError::BadScope(
            "Credential should be scoped to a valid region. ".to_string(),
        ));
    }
    if claim.service != service {
        return Err(AuthError::BadScope(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )));
    }
    let http_date = claim.amz_date.get(..8).unwrap_or(&claim.amz_date);
    if claim.scope_date != http_date {
        return Err(AuthError::BadScope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{}', from '{}'.",
            claim.scope_date, http_date, claim.amz_date
        )));
    }

    let earliest = now.saturating_sub(MAX_CLOCK_SKEW_SECS);
    let latest = now.saturating_add(MAX_CLOCK_SKEW_SECS);
    match claim.presigned {
        None => {
            if claim.request_time < earliest {
                return Err(AuthError::Expired(format!(
                    "Signature expired: {} is now earlier than {} ({} - 15 min.)",
                    claim.amz_date,
                    format_amz_date(earliest),
                    format_amz_date(now)
                )));
            }
            if claim.request_time > latest {
                return Err(AuthError::Expired(format!(
                    "Signature not yet current: {} is still later than {} ({} + 15 min.)",
                    claim.amz_date,
                    format_amz_date(latest),
                    format_amz_date(now)
                )));
            }
        }
        Some(expires) => {
            if expires < 1 {
                return Err(AuthError::Incomplete(
                    "X-Amz-Expires must be a positive number of seconds".to_string(),
                ));
            }
            if expires > MAX_PRESIGN_EXPIRES_SECS {
                return Err(AuthError::Incomplete(format!(
                    "X-Amz-Expires must be less than a week (in seconds) that is \
                     {MAX_PRESIGN_EXPIRES_SECS}"
                )));
            }
            if claim.request_time > latest {
                return Err(AuthError::Expired("Request is not valid yet".to_string()));
            }
            if now > claim.request_time.saturating_add(expires) {
                return Err(AuthError::Expired("Request has expired".to_string()));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 3: recompute and compare
// ---------------------------------------------------------------------------------------------

/// How the canonical URI and query are derived. The primary form is AWS's; the alternatives
/// cover clients that canonicalise differently in corners no AWS SDK reaches when talking to
/// ECS: a path with `.`/`..`/`//` that the Go SDK signs unnormalised; a raw `+` in the query,
/// which the Rust and Go SDKs read as a space; a presigned URL whose session token was added
/// after signing (as for AWS IoT), like an unsigned `X-Amz-Security-Token` header. Each
/// alternative is still a deterministic function of the request, and is tried only when the
/// request has the feature it concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Canon {
    normalize_path: bool,
    plus_as_space: bool,
    drop_token_param: bool,
}

const PRIMARY: Canon = Canon {
    normalize_path: true,
    plus_as_space: false,
    drop_token_param: false,
};

/// Step 3: recompute the signature with `secret_access_key` and compare in constant time.
///
/// `claim` must come from [`parse_claim`] on the same request.
pub fn verify(req: &RequestParts, claim: &Claim, secret_access_key: &str) -> Result<(), AuthError> {
    let key = signing_key(
        secret_access_key,
        &claim.scope_date,
        &claim.region,
        &claim.service,
    );
    verify_with_signing_key(req, claim, &key)
}

/// As [`verify`], with the signing key already derived by [`signing_key`] for the claim's
/// scope date, region and service: the key changes once a day, so a caller may cache it per
/// access key and save a third of the work.
pub fn verify_with_signing_key(
    req: &RequestParts,
    claim: &Claim,
    key: &[u8; 32],
) -> Result<(), AuthError> {
    let tail = canonical_tail(req, claim)?;

    let path_differs = normalize_uri_path(req.path) != absolute_path(req.path);
    let query_has_plus = req.query.contains('+');
    let token_in_query = claim.presigned.is_some() && claim.security_token.is_some();
    let mut creq = Vec::with_capacity(tail.len() + 2 * (req.path.len() + req.query.len()) + 16);
    for normalize_path in [true, false] {
        for plus_as_space in [false, true] {
            for drop_token_param in [false, true] {
                if (!normalize_path && !path_differs)
                    || (plus_as_space && !query_has_plus)
                    || (drop_token_param && !token_in_query)
                {
                    continue;
                }
                let canon = Canon {
                    normalize_path,
                    plus_as_space,
                    drop_token_param,
                };
                creq.clear();
                push_canonical_head(
                    &mut creq,
                    req.method,
                    req.path,
                    req.query,
                    canon,
                    claim.presigned.is_some(),
                );
                creq.extend_from_slice(&tail);
                let expected = signature_for(key, claim, &creq);
                if constant_time_eq(expected.as_bytes(), claim.signature.as_bytes()) {
                    return Ok(());
                }
            }
        }
    }
    Err(AuthError::Mismatch)
}

/// The canonical request (AWS's primary form) that [`verify`] signs for this request and
/// claim: what to log, or compare with a client's, when signatures do not match.
pub fn canonical_request(req: &RequestParts, claim: &Claim) -> Result<String, AuthError> {
    canonical_request_with(req, claim, PRIMARY)
}

fn canonical_request_with(
    req: &RequestParts,
    claim: &Claim,
    canon: Canon,
) -> Result<String, AuthError> {
    let tail = canonical_tail(req, claim)?;
    let mut creq = Vec::new();
    push_canonical_head(
        &mut creq,
        req.method,
        req.path,
        req.query,
        canon,
        claim.presigned.is_some(),
    );
    creq.extend_from_slice(&tail);
    Ok(String::from_utf8_lossy(&creq).into_owned())
}

/// The string to sign for a claim and a canonical request.
pub fn string_to_sign(claim: &Claim, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}/{}/{}/{SCOPE_TERMINATOR}\n{}",
        claim.amz_date,
        claim.scope_date,
        claim.region,
        claim.service,
        sha256_hex(canonical_request)
    )
}

/// The SigV4 signing key: HMAC chain "AWS4"+secret → date → region → service → "aws4_request".
/// It depends only on the day, so a caller verifying many requests may cache it per key.
pub fn signing_key(secret_access_key: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut seed = Vec::with_capacity(4 + secret_access_key.len());
    seed.extend_from_slice(b"AWS4");
    seed.extend_from_slice(secret_access_key.as_bytes());
    let k_date = hmac_sha256(&seed, &[date.as_bytes()]);
    let k_region = hmac_sha256(&k_date, &[region.as_bytes()]);
    let k_service = hmac_sha256(&k_region, &[service.as_bytes()]);
    hmac_sha256(&k_service, &[SCOPE_TERMINATOR.as_bytes()])
}

/// Hex signature over the string to sign, fed to the MAC piece by piece instead of being
/// assembled in a buffer first.
fn signature_for(key: &[u8; 32], claim: &Claim, canonical_request: &[u8]) -> String {
    signature_parts(
        key,
        &claim.amz_date,
        &claim.scope_date,
        &claim.region,
        &claim.service,
        canonical_request,
    )
}

fn signature_parts(
    key: &[u8; 32],
    amz_date: &str,
    scope_date: &str,
    region: &str,
    service: &str,
    canonical_request: &[u8],
) -> String {
    let creq_hash = hex_lower(&sha256(canonical_request));
    hex_lower(&hmac_sha256(
        key,
        &[
            ALGORITHM.as_bytes(),
            b"\n",
            amz_date.as_bytes(),
            b"\n",
            scope_date.as_bytes(),
            b"/",
            region.as_bytes(),
            b"/",
            service.as_bytes(),
            b"/",
            SCOPE_TERMINATOR.as_bytes(),
            b"\n",
            creq_hash.as_bytes(),
        ],
    ))
}

/// Everything of the canonical request after the query line: canonical headers, the blank
/// line, the signed-header list and the payload hash. It does not depend on how the URI and
/// query are canonicalised, so [`verify`] builds it once for all forms it tries.
fn canonical_tail(req: &RequestParts, claim: &Claim) -> Result<Vec<u8>, AuthError> {
    let payload_hash = payload_hash(req)?;
    let mut tail = Vec::with_capacity(256);
    for name in &claim.signed_headers {
        let mut values = req.headers.get_all(name.as_str()).iter();
        // A header the client says it signed but that did not arrive: the request is not the
        // one that was signed.
        let Some(first) = values.next() else {
            return Err(AuthError::Mismatch);
        };
        tail.extend_from_slice(name.as_bytes());
        tail.push(b':');
        push_trimmed(&mut tail, first.as_bytes());
        for value in values {
            tail.push(b',');
            push_trimmed(&mut tail, value.as_bytes());
        }
        tail.push(b'\n');
    }
    tail.push(b'\n');
    for (i, name) in claim.signed_headers.iter().enumerate() {
        if i > 0 {
            tail.push(b';');
        }
        tail.extend_from_slice(name.as_bytes());
    }
    tail.push(b'\n');
    tail.extend_from_slice(payload_hash.as_bytes());
    Ok(tail)
}

/// The payload hash line: the `x-amz-content-sha256` header when present (it must be
/// `UNSIGNED-PAYLOAD` or the body's real hash), else the body's SHA-256 (for presigned
/// requests too: non-S3 services hash the body).
fn payload_hash<'a>(req: &RequestParts<'a>) -> Result<Cow<'a, str>, AuthError> {
    let Some(claimed) = req.headers.get("x-amz-content-sha256") else {
        return Ok(Cow::Owned(sha256_hex(req.body)));
    };
    let claimed = claimed
        .to_str()
        .map_err(|_| AuthError::PayloadHashMismatch)?;
    if claimed == UNSIGNED_PAYLOAD {
        return Ok(Cow::Borrowed(claimed));
    }
    if claimed.eq_ignore_ascii_case(&sha256_hex(req.body)) {
        // As sent: the client hashed this exact text into its canonical request.
        Ok(Cow::Borrowed(claimed))
    } else {
        Err(AuthError::PayloadHashMismatch)
    }
}

/// "METHOD\nURI\nQUERY\n".
fn push_canonical_head(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    query: &str,
    canon: Canon,
    drop_signature_param: bool,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    let path = if canon.normalize_path {
        normalize_uri_path(path)
    } else {
        absolute_path(path)
    };
    // The path is URI-encoded once more, so an on-the-wire "%3D" becomes "%253D": AWS
    // services other than S3 sign the double-encoded form.
    for &b in path.as_bytes() {
        if b == b'/' || is_unreserved(b) {
            out.push(b);
        } else {
            push_percent(out, b);
        }
    }
    out.push(b'\n');
    push_canonical_query(out, query, canon, drop_signature_param);
    out.push(b'\n');
}

/// Decodes each key and value, re-encodes it with only RFC 3986 unreserved characters left
/// bare, sorts by key then value and joins with '&'. Presigned requests leave out the
/// signature itself.
fn push_canonical_query(out: &mut Vec<u8>, query: &str, canon: Canon, drop_signature_param: bool) {
    if query.is_empty() {
        return;
    }
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (key, value) in query_pairs(query) {
        let mut k = Vec::with_capacity(key.len());
        push_reencoded(&mut k, key.as_bytes(), canon.plus_as_space);
        if (drop_signature_param && k == b"X-Amz-Signature")
            || (canon.drop_token_param && k == b"X-Amz-Security-Token")
        {
            continue;
        }
        let mut v = Vec::with_capacity(value.len());
        push_reencoded(&mut v, value.as_bytes(), canon.plus_as_space);
        pairs.push((k, v));
    }
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
}

/// Raw `key=value` pairs of a query string, split at the first '='; empty pieces skipped.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Percent-decodes `%XX` (and, when asked, '+' as a space) and re-encodes in the canonical
/// form, in one pass. A '%' not followed by two hex digits stands for itself.
fn push_reencoded(out: &mut Vec<u8>, raw: &[u8], plus_as_space: bool) {
    let mut i = 0;
    while i < raw.len() {
        let mut b = raw[i];
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex_value),
                raw.get(i + 2).copied().and_then(hex_value),
            ) {
                b = (hi << 4) | lo;
                i += 2;
            }
        } else if b == b'+' && plus_as_space {
            b = b' ';
        }
        if is_unreserved(b) {
            out.push(b);
        } else {
            push_percent(out, b);
        }
        i += 1;
    }
}

/// A query key as the canonical query sees it (percent-decoded), so that the parameters read
/// here are the very ones the canonicalisation treats specially.
fn decoded(raw: &str) -> Cow<'_, str> {
    if raw.contains('%') {
        Cow::Owned(percent_decode_lossy(raw))
    } else {
        Cow::Borrowed(raw)
    }
}

fn percent_decode_lossy(raw: &str) -> String {
    let raw = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let mut b = raw[i];
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex_value),
                raw.get(i + 2).copied().and_then(hex_value),
            ) {
                b = (hi << 4) | lo;
                i += 2;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends `s` with every character outside RFC 3986's unreserved set as `%XX`.
fn push_encoded_str(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        }
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

fn push_percent(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[
        b'%',
        HEX_UPPER[usize::from(b >> 4)],
        HEX_UPPER[usize::from(b & 0x0f)],
    ]);
}

/// RFC 3986 percent-encoding (every byte but the unreserved `A-Z a-z 0-9 - _ . ~`), as SigV4
/// encodes query parameters and as IAM returns policy documents.
pub fn percent_encode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if is_unreserved(b) {
            out.push(b);
        } else {
            push_percent(&mut out, b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A header value as SigV4 canonicalises it: leading and trailing spaces removed, runs of
/// spaces inside collapsed to one (spaces only, as the AWS SDKs do).
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    let mut previous_space = false;
    for &b in &value[start..end] {
        let space = b == b' ';
        if !(space && previous_space) {
            out.push(b);
        }
        previous_space = space;
    }
}

/// The path with a leading '/' ("" becomes "/").
fn absolute_path(path: &str) -> Cow<'_, str> {
    if path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    }
}

/// RFC 3986 §5.2.4 dot-segment removal, dropping empty segments too, exactly as the AWS SDK
/// for Rust (`aws-sigv4`) and botocore normalise before signing. A trailing slash survives.
fn normalize_uri_path(path: &str) -> Cow<'_, str> {
    let path = absolute_path(path);
    if !(path.contains('.') || path.contains("//")) {
        return path;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in &segments {
        result.push('/');
        result.push_str(segment);
    }
    let trailing = ["/", "/.", "/..", "/./", "/../"]
        .iter()
        .any(|end| path.ends_with(end));
    if result.is_empty() || (trailing && !result.ends_with('/')) {
        result.push('/');
    }
    Cow::Owned(result)
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

/// Signing: headers to add to a request so that a verifier accepts it. `headers` are the
/// headers the caller will send (name, value), and must include `host` (as "host",
/// "127.0.0.1:7420"). The returned list is what to add: `x-amz-date`, `x-amz-security-token`
/// when the credentials have a session token, and `authorization`. Every header passed in is
/// signed, plus `x-amz-date` (and the token). `path` and `query` are as they will go on the
/// wire (percent-encoded).
///
/// The caller must not send headers of its own named `authorization` or `x-amz-date` (they
/// are left out of the signature and replaced by the returned ones), nor its own
/// `x-amz-security-token` when the credentials carry a token.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: i64,
) -> Vec<(String, String)> {
    sign_headers(
        method, path, query, headers, body, creds, region, service, now, false,
    )
}

/// As [`sign`], and also adds (and signs) `x-amz-content-sha256` with the body's hash, which
/// S3-style verifiers require and every verifier accepts.
#[allow(clippy::too_many_arguments)]
pub fn sign_with_content_sha256(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: i64,
) -> Vec<(String, String)> {
    sign_headers(
        method, path, query, headers, body, creds, region, service, now, true,
    )
}

#[allow(clippy::too_many_arguments)]
fn sign_headers(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: i64,
    include_content_sha256: bool,
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(now);
    let scope_date = amz_date.get(..8).unwrap_or(&amz_date);
    let payload_hash = if include_content_sha256 {
        sha256_hex(body)
    } else {
        payload_hash_to_sign(headers, body)
    };

    let mut added: Vec<(String, String)> = vec![("x-amz-date".to_string(), amz_date.clone())];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }
    if include_content_sha256 {
        added.push(("x-amz-content-sha256".to_string(), payload_hash.clone()));
    }
    let mut signed: Vec<(String, &str)> = headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.as_str()))
        .filter(|(name, _)| {
            name != "authorization" && !added.iter().any(|(added_name, _)| added_name == name)
        })
        .collect();
    signed.extend(added.iter().map(|(n, v)| (n.clone(), v.as_str())));
    let (tail, signed_list) = signer_tail(&mut signed, &payload_hash);

    let mut creq = Vec::with_capacity(tail.len() + path.len() + query.len() + 16);
    push_canonical_head(&mut creq, method, path, query, PRIMARY, false);
    creq.extend_from_slice(&tail);
    let key = signing_key(&creds.secret_access_key, scope_date, region, service);
    let signature = signature_parts(&key, &amz_date, scope_date, region, service, &creq);

    added.push((
        "authorization".to_string(),
        format!(
            "{ALGORITHM} Credential={}/{scope_date}/{region}/{service}/{SCOPE_TERMINATOR}, \
             SignedHeaders={signed_list}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

/// Presigning: the complete query string (without '?') for a URL that a verifier accepts
/// until `now + expires_secs`: `query` followed by the `X-Amz-*` parameters, the signature
/// last. `headers` are the headers the request will carry, and must include `host`; they are
/// all signed. The payload hash is the SHA-256 of `body` (empty for a GET).
#[allow(clippy::too_many_arguments)]
pub fn presign(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: i64,
    expires_secs: i64,
) -> String {
    let amz_date = format_amz_date(now);
    let scope_date = amz_date.get(..8).unwrap_or(&amz_date);
    let payload_hash = payload_hash_to_sign(headers, body);
    let mut signed: Vec<(String, &str)> = headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.as_str()))
        .filter(|(name, _)| name != "authorization")
        .collect();
    let (tail, signed_list) = signer_tail(&mut signed, &payload_hash);

    let mut full = String::with_capacity(query.len() + 256);
    full.push_str(query);
    let credential = format!(
        "{}/{scope_date}/{region}/{service}/{SCOPE_TERMINATOR}",
        creds.access_key_id
    );
    let expires = expires_secs.to_string();
    let mut params = vec![
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", amz_date.as_str()),
        ("X-Amz-Expires", expires.as_str()),
    ];
    if let Some(token) = &creds.session_token {
        params.push(("X-Amz-Security-Token", token.as_str()));
    }
    params.push(("X-Amz-SignedHeaders", signed_list.as_str()));
    for (name, value) in params {
        if !full.is_empty() {
            full.push('&');
        }
        full.push_str(name);
        full.push('=');
        push_encoded_str(&mut full, value);
    }

    let mut creq = Vec::with_capacity(tail.len() + path.len() + full.len() + 16);
    push_canonical_head(&mut creq, method, path, &full, PRIMARY, true);
    creq.extend_from_slice(&tail);
    let key = signing_key(&creds.secret_access_key, scope_date, region, service);
    let signature = signature_parts(&key, &amz_date, scope_date, region, service, &creq);
    full.push_str("&X-Amz-Signature=");
    full.push_str(&signature);
    full
}

/// The payload hash a verifier will use: the caller's own `x-amz-content-sha256` header when
/// it sends one (e.g. `UNSIGNED-PAYLOAD`), else the body's hash.
fn payload_hash_to_sign(headers: &[(String, String)], body: &[u8]) -> String {
    headers
        .iter()
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("x-amz-content-sha256"))
        .map_or_else(|| sha256_hex(body), |(_, value)| value.trim().to_string())
}

/// Canonical headers + blank line + signed list + payload hash for headers given as a list,
/// and the signed list itself. Sorting is stable, so repeated headers keep their order.
fn signer_tail(signed: &mut [(String, &str)], payload_hash: &str) -> (Vec<u8>, String) {
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tail = Vec::with_capacity(256);
    let mut list = String::new();
    let mut previous: Option<&str> = None;
    for (name, value) in signed.iter() {
        if previous == Some(name.as_str()) {
            tail.push(b',');
        } else {
            if previous.is_some() {
                tail.push(b'\n');
                list.push(';');
            }
            tail.extend_from_slice(name.as_bytes());
            tail.push(b':');
            list.push_str(name);
        }
        push_trimmed(&mut tail, value.as_bytes());
        previous = Some(name.as_str());
    }
    if previous.is_some() {
        tail.push(b'\n');
    }
    tail.push(b'\n');
    tail.extend_from_slice(list.as_bytes());
    tail.push(b'\n');
    tail.extend_from_slice(payload_hash.as_bytes());
    (tail, list)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex_lower(&sha256(data))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = Sha256::digest(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail; the
    // all-zero fallback keeps the function total and would only make signatures mismatch.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0u8; 32];
    };
    for part in parts {
        mac.update(part);
    }
    let tag = mac.finalize().into_bytes();
    let mut out = [0u8; 32];
    out.copy_from_slice(&tag);
    out
}

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX_LOWER[usize::from(b >> 4)]));
        s.push(char::from(HEX_LOWER[usize::from(b & 0x0f)]));
    }
    s
}

/// Compares in time that depends only on the lengths (which are not secret: a signature is
/// always 64 hex digits).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Unix seconds as ISO-8601 basic format, e.g. `20260102T030405Z`.
pub fn format_amz_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses `YYYYMMDD'T'HHMMSS'Z'` strictly (valid calendar date and time) into unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b.get(range)?.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    unix_from_civil(
        num(0..4)?,
        num(4..6)?,
        num(6..8)?,
        num(9..11)?,
        num(11..13)?,
        num(13..15)?,
    )
}

/// The `Date` header: RFC 1123 (`Sun, 06 Nov 1994 08:49:37 GMT`, the form HTTP requires), or
/// ISO-8601 basic format, which some clients put there too.
fn parse_http_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(t) = parse_amz_date(s) {
        return Some(t);
    }
    let rest = s.split_once(',').map_or(s, |(_, rest)| rest);
    let mut fields = rest.split_ascii_whitespace();
    let day = fields.next()?.parse::<i64>().ok()?;
    let month_name = fields.next()?;
    let year = fields.next()?.parse::<i64>().ok()?;
    let time = fields.next()?;
    let zone = fields.next()?;
    if fields.next().is_some() || !(zone == "GMT" || zone == "UTC") {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (Some(Some(hour)), Some(Some(minute)), Some(Some(second)), None) =
        (hms.next(), hms.next(), hms.next(), hms.next())
    else {
        return None;
    };
    unix_from_civil(year, month as i64 + 1, day, hour, minute, second)
}

fn unix_from_civil(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(0..=9999).contains(&year)
        || !(1..=days_in_month).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..60).contains(&second)
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};
    use std::time::{Duration, UNIX_EPOCH};

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// 20150830T123600Z, the AWS test suite's clock.
    const SUITE_TIME: i64 = 1_440_938_160;
    /// 20260102T030405Z.
    const NOW: i64 = 1_767_323_045;
    const HOST: &str = "127.0.0.1:7420";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// A request owned by the test, lent out as [`RequestParts`].
    #[derive(Clone)]
    struct Req {
        method: String,
        path: String,
        query: String,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Req {
        fn new(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Req {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let mut req = Req {
                method: method.to_string(),
                path: path.to_string(),
                query: query.to_string(),
                headers: HeaderMap::new(),
                body: body.to_vec(),
            };
            for (name, value) in headers {
                req.add(name, value);
            }
            req
        }

        fn parts(&self) -> RequestParts<'_> {
            RequestParts {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &self.headers,
                body: &self.body,
            }
        }

        fn add(&mut self, name: &str, value: &str) {
            self.headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                HeaderValue::from_str(value.trim()).unwrap(),
            );
        }

        fn set(&mut self, name: &str, value: &str) {
            self.headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }

        fn claim(&self) -> Result<Claim, AuthError> {
            parse_claim(&self.parts())
        }

        /// All three steps, as the control plane runs them.
        fn authenticate(
            &self,
            region: &str,
            service: &str,
            now: i64,
            secret: &str,
        ) -> Result<Claim, AuthError> {
            let claim = parse_claim(&self.parts())?;
            check_scope_and_time(&claim, region, service, now)?;
            verify(&self.parts(), &claim, secret)?;
            Ok(claim)
        }
    }

    /// Parses a request in the AWS test suite's text form: request line, `Name:value` header
    /// lines, a blank line, the body.
    fn parse_raw(text: &str) -> Req {
        let text = text.trim_start_matches('\n');
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let (method, rest) = request_line.split_once(' ').unwrap();
        let target = rest.strip_suffix(" HTTP/1.1").unwrap_or(rest);
        let mut req = Req::new(method, target, &[], body.as_bytes());
        for line in lines {
            let (name, value) = line.split_once(':').unwrap();
            req.add(name, value);
        }
        req
    }

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: AKID.to_string(),
            secret_access_key: SECRET.to_string(),
            session_token: token.map(str::to_string),
        }
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// A request signed by this module's own [`sign`] at `now`.
    fn signed(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        token: Option<&str>,
        service: &str,
        now: i64,
    ) -> Req {
        let mut req = Req::new(method, target, headers, body);
        let added = sign(
            method,
            &req.path,
            &req.query,
            &owned(headers),
            body,
            &creds(token),
            "us-east-1",
            service,
            now,
        );
        for (name, value) in &added {
            req.add(name, value);
        }
        req
    }

    fn ecs_headers<'a>(target: &'a str, len: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("host", HOST),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
            ("content-length", len),
        ]
    }

    const ECS_BODY: &[u8] = br#"{"cluster":"default","taskDefinition":"web:3","count":1}"#;

    fn ecs_request(now: i64) -> Req {
        let len = ECS_BODY.len().to_string();
        signed(
            "POST",
            "/",
            &ecs_headers("AmazonEC2ContainerServiceV20141113.RunTask", &len),
            ECS_BODY,
            None,
            "ecs",
            now,
        )
    }

    // ---- The `aws-sigv4` crate as an independent signer -------------------------------------

    struct AwsSigned {
        req: Req,
        signature: String,
    }

    /// Signs with the AWS SDK for Rust's signer. `signed_headers` go into the signature;
    /// `unsigned_headers` are added afterwards, as clients add User-Agent and the like.
    #[allow(clippy::too_many_arguments)]
    fn aws_sign(
        method: &str,
        target: &str,
        signed_headers: &[(&str, &str)],
        unsigned_headers: &[(&str, &str)],
        body: &[u8],
        token: Option<&str>,
        region: &str,
        service: &str,
        now: i64,
        presign_expires: Option<u64>,
    ) -> AwsSigned {
        use aws_sigv4::http_request::{
            sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
        };
        let identity = aws_credential_types::Credentials::new(
            AKID,
            SECRET,
            token.map(str::to_string),
            None,
            "test",
        )
        .into();
        let mut settings = SigningSettings::default();
        if let Some(expires) = presign_expires {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(Duration::from_secs(expires));
        }
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(UNIX_EPOCH + Duration::from_secs(now as u64))
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let url = format!("http://{HOST}{target}");
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            signed_headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, signature) = sign(signable, &params).unwrap().into_parts();

        let mut builder = http::Request::builder().method(method).uri(url.as_str());
        for (name, value) in signed_headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        instructions.apply_to_request_http1x(&mut request);
        for (name, value) in unsigned_headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let req = Req {
            method: method.to_string(),
            path: request.uri().path().to_string(),
            query: request.uri().query().unwrap_or("").to_string(),
            headers: request.headers().clone(),
            body: body.to_vec(),
        };
        AwsSigned { req, signature }
    }

    fn signed_list(claim: &Claim) -> String {
        claim.signed_headers.join(";")
    }

    /// The checks every cross-check runs: accepted, with the expected signed headers, and
    /// rejected once the body or a signed header is changed.
    fn assert_accepts(aws: &AwsSigned, service: &str, now: i64, expected_signed: &str) -> Claim {
        let claim = aws
            .req
            .authenticate("us-east-1", service, now, SECRET)
            .unwrap();
        assert_eq!(signed_list(&claim), expected_signed);
        assert_eq!(claim.signature, aws.signature);
        assert_eq!(claim.access_key_id, AKID);

        let mut tampered = aws.req.clone();
        tampered.body.extend_from_slice(b" ");
        assert_eq!(
            tampered.authenticate("us-east-1", service, now, SECRET),
            Err(AuthError::Mismatch)
        );
        let mut tampered = aws.req.clone();
        tampered.set("host", "127.0.0.1:7421");
        assert_eq!(
            tampered.authenticate("us-east-1", service, now, SECRET),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            aws.req
                .authenticate("us-east-1", service, now, "not-the-secret"),
            Err(AuthError::Mismatch)
        );
        claim
    }

    // ---- Helpers ----------------------------------------------------------------------------

    #[test]
    fn sha256_hex_known_values() {
        assert_eq!(sha256_hex(b""), EMPTY_SHA256);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn amz_date_round_trips_and_rejects_bad_dates() {
        assert_eq!(format_amz_date(SUITE_TIME), "20150830T123600Z");
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(SUITE_TIME));
        assert_eq!(format_amz_date(NOW), "20260102T030405Z");
        assert_eq!(format_amz_date(0), "19700101T000000Z");
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        for t in [0, 951_782_400, 1_709_251_199, 4_102_444_800, NOW, -86_400] {
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t), "{t}");
        }
        for bad in [
            "",
            "20150830T123600",
            "20150830 123600Z",
            "2015083OT123600Z",
            "20230229T000000Z",
            "20151301T000000Z",
            "20150800T000000Z",
            "20150830T240000Z",
            "20150830T126000Z",
            "20150830T123660Z",
            "+2015083T123600Z",
            "20150830T123600z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(SUITE_TIME)
        );
        assert_eq!(
            parse_http_date("30 Aug 2015 12:36:00 GMT"),
            Some(SUITE_TIME)
        );
        assert_eq!(parse_http_date("20150830T123600Z"), Some(SUITE_TIME));
        assert_eq!(parse_http_date("Sun, 30 Aug 2015 12:36:00 PST"), None);
        assert_eq!(parse_http_date("Sun, 31 Sep 2015 12:36:00 GMT"), None);
        assert_eq!(parse_http_date("Sun, 30 Aug 2015 12:36 GMT"), None);
    }

    #[test]
    fn constant_time_eq_compares_contents_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn signing_key_matches_aws_documentation_and_aws_sigv4() {
        // The worked example in AWS's "Examples of how to derive a signing key" page.
        let key = signing_key(SECRET, "20120215", "us-east-1", "iam");
        assert_eq!(
            hex_lower(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
        let theirs = aws_sigv4::sign::v4::generate_signing_key(
            SECRET,
            UNIX_EPOCH + Duration::from_secs(NOW as u64),
            "eu-west-3",
            "ecs",
        );
        assert_eq!(
            signing_key(SECRET, "20260102", "eu-west-3", "ecs").as_slice(),
            theirs.as_ref()
        );
    }

    #[test]
    fn uri_path_normalisation() {
        for (raw, normalized) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("//example//", "/example/"),
            ("a/b", "/a/b"),
            ("/a.b/c", "/a.b/c"),
        ] {
            assert_eq!(normalize_uri_path(raw), normalized, "{raw:?}");
        }
    }

    #[test]
    fn canonical_query_encoding() {
        let canon = |q: &str, plus_as_space: bool| {
            let mut out = Vec::new();
            let canon = Canon {
                plus_as_space,
                ..PRIMARY
            };
            push_canonical_query(&mut out, q, canon, false);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(canon("", false), "");
        assert_eq!(canon("b=2&a=1&a=0", false), "a=0&a=1&b=2");
        assert_eq!(canon("flag&x=", false), "flag=&x=");
        assert_eq!(canon("a=x%2fy%20z", false), "a=x%2Fy%20z");
        assert_eq!(canon("a=x/y z*~", false), "a=x%2Fy%20z%2A~");
        assert_eq!(canon("a=b+c", false), "a=b%2Bc");
        assert_eq!(canon("a=b+c", true), "a=b%20c");
        assert_eq!(canon("a=100%&b=%zz", false), "a=100%25&b=%25zz");
        assert_eq!(
            canon("k=%E1%88%B4&&j=%e1%88%b4", false),
            "j=%E1%88%B4&k=%E1%88%B4"
        );
        // Sorting is on the encoded form: '%' sorts before letters and digits.
        assert_eq!(canon("a=1&%41=2&_=3", false), "A=2&_=3&a=1");
        let mut out = Vec::new();
        push_canonical_query(&mut out, "X-Amz-Signature=abc&b=1", PRIMARY, true);
        assert_eq!(out, b"b=1");
        let mut out = Vec::new();
        let canon = Canon {
            drop_token_param: true,
            ..PRIMARY
        };
        push_canonical_query(&mut out, "X-Amz-Security-Token=t&b=1", canon, false);
        assert_eq!(out, b"b=1");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let trim = |v: &str| {
            let mut out = Vec::new();
            push_trimmed(&mut out, v.as_bytes());
            String::from_utf8(out).unwrap()
        };
        assert_eq!(trim("  a   b  c  "), "a b c");
        assert_eq!(trim("\"a   b   c\""), "\"a b c\"");
        assert_eq!(trim(""), "");
        assert_eq!(trim("   "), "");
        assert_eq!(trim("a\tb"), "a\tb");
    }

    // ---- The AWS SigV4 test suite -----------------------------------------------------------

    #[test]
    fn get_vanilla_canonical_request_string_to_sign_and_signature() {
        let req = Req::new(
            "GET",
            "/",
            &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/\
                     aws4_request, SignedHeaders=host;x-amz-date, \
                     Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                ),
            ],
            b"",
        );
        let claim = req.claim().unwrap();
        assert_eq!(
            claim,
            Claim {
                access_key_id: AKID.to_string(),
                scope_date: "20150830".to_string(),
                region: "us-east-1".to_string(),
                service: "service".to_string(),
                signed_headers: vec!["host".to_string(), "x-amz-date".to_string()],
                signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                    .to_string(),
                amz_date: "20150830T123600Z".to_string(),
                request_time: SUITE_TIME,
                security_token: None,
                presigned: None,
            }
        );
        let creq = canonical_request(&req.parts(), &claim).unwrap();
        assert_eq!(
            creq,
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
                 host;x-amz-date\n{EMPTY_SHA256}"
            )
        );
        assert_eq!(
            string_to_sign(&claim, creq.as_bytes()),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            req.authenticate("us-east-1", "service", SUITE_TIME, SECRET),
            Ok(claim)
        );
    }

    struct SuiteCase {
        name: &'static str,
        normalize: bool,
        header_signed: &'static str,
        header_canonical: &'static str,
        query_signed: Option<&'static str>,
        query_canonical: Option<&'static str>,
    }

    #[test]
    fn aws_test_suite_header_signatures() {
        for case in SUITE {
            let req = parse_raw(case.header_signed);
            let claim = req
                .claim()
                .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            assert_eq!(claim.presigned, None);
            check_scope_and_time(&claim, &claim.region, &claim.service, claim.request_time)
                .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            let canon = Canon {
                normalize_path: case.normalize,
                ..PRIMARY
            };
            assert_eq!(
                canonical_request_with(&req.parts(), &claim, canon).unwrap(),
                case.header_canonical,
                "{}",
                case.name
            );
            assert_eq!(
                verify(&req.parts(), &claim, SECRET),
                Ok(()),
                "{}",
                case.name
            );
            assert_eq!(
                verify(
                    &req.parts(),
                    &claim,
                    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEz"
                ),
                Err(AuthError::Mismatch),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn aws_test_suite_presigned_signatures() {
        let mut count = 0;
        for case in SUITE {
            let (Some(signed), Some(canonical)) = (case.query_signed, case.query_canonical) else {
                continue;
            };
            count += 1;
            let req = parse_raw(signed);
            let claim = req
                .claim()
                .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            assert_eq!(claim.presigned, Some(3600), "{}", case.name);
            for now in [SUITE_TIME, SUITE_TIME + 3600] {
                check_scope_and_time(&claim, "us-east-1", "service", now)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            }
            assert_eq!(
                check_scope_and_time(&claim, "us-east-1", "service", SUITE_TIME + 3601),
                Err(AuthError::Expired("Request has expired".to_string()))
            );
            let canon = Canon {
                normalize_path: case.normalize,
                // This case adds the session token to the URL after signing.
                drop_token_param: case.name == "post-sts-header-after",
                ..PRIMARY
            };
            assert_eq!(
                canonical_request_with(&req.parts(), &claim, canon).unwrap(),
                canonical,
                "{}",
                case.name
            );
            assert_eq!(
                verify(&req.parts(), &claim, SECRET),
                Ok(()),
                "{}",
                case.name
            );
            let mut tampered = req.clone();
            tampered.query.push_str("&extra=1");
            assert_eq!(
                verify(&tampered.parts(), &claim, SECRET),
                Err(AuthError::Mismatch),
                "{}",
                case.name
            );
        }
        assert!(count >= 30, "{count}");
    }

    #[test]
    fn suite_session_tokens_are_reported() {
        let case = SUITE
            .iter()
            .find(|c| c.name == "post-sts-header-after")
            .unwrap();
        let claim = parse_raw(case.header_signed).claim().unwrap();
        // Sent but not signed: reported all the same, for the caller to check.
        assert!(claim.security_token.unwrap().starts_with("AQoDYXdzEPT//"));
        assert!(!claim
            .signed_headers
            .contains(&"x-amz-security-token".to_string()));

        let case = SUITE
            .iter()
            .find(|c| c.name == "post-sts-header-before")
            .unwrap();
        let claim = parse_raw(case.query_signed.unwrap()).claim().unwrap();
        let token = claim.security_token.unwrap();
        assert!(token.starts_with("AQoDYXdzEPT//"), "decoded: {token}");
        assert!(token.ends_with("oLxBA=="));
    }

    // ---- Cross-checks against the aws-sigv4 signer, with the header sets real clients sign --

    #[test]
    fn aws_cli_json_request() {
        let aws = aws_sign(
            "POST",
            "/",
            &[
                ("host", HOST),
                ("content-type", "application/x-amz-json-1.1"),
                (
                    "x-amz-target",
                    "AmazonEC2ContainerServiceV20141113.ListClusters",
                ),
            ],
            &[
                ("user-agent", "aws-cli/1.46.0 Python/3.12 botocore/1.44.0"),
                ("content-length", "2"),
                ("accept-encoding", "identity"),
            ],
            b"{}",
            None,
            "us-east-1",
            "ecs",
            NOW,
            None,
        );
        let claim = assert_accepts(
            &aws,
            "ecs",
            NOW,
            "content-type;host;x-amz-date;x-amz-target",
        );
        assert_eq!(claim.security_token, None);
    }

    #[test]
    fn aws_cli_json_request_with_session_token() {
        let token = "FwoGZXIvYXdzEBYaDH+token/with+plus==";
        let aws = aws_sign(
            "POST",
            "/",
            &[
                ("host", HOST),
                ("content-type", "application/x-amz-json-1.1"),
                (
                    "x-amz-target",
                    "AmazonEC2ContainerServiceV20141113.DescribeServices",
                ),
            ],
            &[("user-agent", "aws-cli/1.46.0")],
            br#"{"cluster":"default","services":["web"]}"#,
            Some(token),
            "us-east-1",
            "ecs",
            NOW,
            None,
        );
        let claim = assert_accepts(
            &aws,
            "ecs",
            NOW,
            "content-type;host;x-amz-date;x-amz-security-token;x-amz-target",
        );
        assert_eq!(claim.security_token.as_deref(), Some(token));
        let mut swapped = aws.req.clone();
        swapped.set("x-amz-security-token", "another-token");
        assert_eq!(
            swapped.authenticate("us-east-1", "ecs", NOW, SECRET),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn rust_sdk_json_request() {
        let body = br#"{"cluster":"default","taskDefinition":"web","count":2}"#;
        let len = body.len().to_string();
        let aws = aws_sign(
            "POST",
            "/",
            &[
                ("content-length", &len),
                ("content-type", "application/x-amz-json-1.1"),
                ("host", HOST),
                ("x-amz-target", "AmazonEC2ContainerServiceV20141113.RunTask"),
                (
                    "x-amz-user-agent",
                    "aws-sdk-rust/1.3.9 api/ecs/1.157.0 os/linux lang/rust/1.94.0",
                ),
            ],
            &[
                ("user-agent", "aws-sdk-rust/1.3.9 os/linux lang/rust/1.94.0"),
                (
                    "amz-sdk-invocation-id",
                    "5b0e2f43-8d0c-4f39-9c0a-000000000001",
                ),
                ("amz-sdk-request", "attempt=1; max=3"),
            ],
            body,
            None,
            "us-east-1",
            "ecs",
            NOW,
            None,
        );
        assert_accepts(
            &aws,
            "ecs",
            NOW,
            "content-length;content-type;host;x-amz-date;x-amz-target;x-amz-user-agent",
        );
    }

    #[test]
    fn terraform_json_request() {
        let body = br#"{"clusterName":"tf-test","settings":[{"name":"containerInsights","value":"disabled"}]}"#;
        let len = body.len().to_string();
        let aws = aws_sign(
            "POST",
            "/",
            &[
                (
                    "amz-sdk-invocation-id",
                    "0d4ac4b0-3f5e-4a4c-8bb3-5d1b1e9e5a11",
                ),
                ("amz-sdk-request", "attempt=1; max=25"),
                ("content-length", &len),
                ("content-type", "application/x-amz-json-1.1"),
                ("host", HOST),
                (
                    "x-amz-target",
                    "AmazonEC2ContainerServiceV20141113.CreateCluster",
                ),
            ],
            &[
                (
                    "user-agent",
                    "APN/1.0 HashiCorp/1.0 Terraform/1.11.0 terraform-provider-aws/5.100.0",
                ),
                ("accept-encoding", "gzip"),
            ],
            body,
            None,
            "us-east-1",
            "ecs",
            NOW,
            None,
        );
        assert_accepts(
            &aws,
            "ecs",
            NOW,
            "amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;host;x-amz-date;\
             x-amz-target",
        );
    }

    #[test]
    fn aws_query_form_post() {
        let body = b"Action=GetCallerIdentity&Version=2011-06-15";
        let aws = aws_sign(
            "POST",
            "/",
            &[
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
                ("host", HOST),
            ],
            &[("content-length", "43"), ("user-agent", "aws-cli/1.46.0")],
            body,
            None,
            "us-east-1",
            "sts",
            NOW,
            None,
        );
        assert_accepts(&aws, "sts", NOW, "content-type;host;x-amz-date");
        // Served by an IAM endpoint instead: the scope names another service.
        assert_eq!(
            aws.req.authenticate("us-east-1", "iam", NOW, SECRET),
            Err(AuthError::BadScope(
                "Credential should be scoped to correct service: 'iam'. ".to_string()
            ))
        );
    }

    #[test]
    fn presigned_get_with_query_string() {
        let aws = aws_sign(
            "GET",
            "/v1/logs/task%2F42?follow=true&since=2026-01-02T03%3A00%3A00Z&filter=a%20b",
            &[("host", HOST)],
            &[("user-agent", "curl/8.5.0")],
            b"",
            Some("session/token+="),
            "us-east-1",
            "ecs",
            NOW,
            Some(300),
        );
        let claim = assert_accepts(&aws, "ecs", NOW + 300, "host");
        assert_eq!(claim.presigned, Some(300));
        assert_eq!(claim.security_token.as_deref(), Some("session/token+="));
        assert_eq!(
            aws.req.authenticate("us-east-1", "ecs", NOW + 301, SECRET),
            Err(AuthError::Expired("Request has expired".to_string()))
        );
        // The signature covers every other query parameter.
        let mut tampered = aws.req.clone();
        tampered.query = tampered.query.replace("follow=true", "follow=false");
        assert_eq!(
            tampered.authenticate("us-east-1", "ecs", NOW, SECRET),
            Err(AuthError::Mismatch)
        );
        let mut tampered = aws.req.clone();
        tampered.path = "/v1/logs/task%2F43".to_string();
        assert_eq!(
            tampered.authenticate("us-east-1", "ecs", NOW, SECRET),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn presigned_post_with_body() {
        let aws = aws_sign(
            "POST",
            "/?Action=ListUsers",
            &[
                ("host", HOST),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &[],
            b"Version=2010-05-08",
            None,
            "us-east-1",
            "iam",
            NOW,
            Some(60),
        );
        assert_accepts(&aws, "iam", NOW, "content-type;host");
    }

    #[test]
    fn sign_matches_aws_sigv4_byte_for_byte() {
        for token in [None, Some("a-session-token")] {
            let headers = [
                ("host", HOST),
                ("content-type", "application/x-amz-json-1.1"),
                (
                    "x-amz-target",
                    "AmazonEC2ContainerServiceV20141113.ListTasks",
                ),
                ("x-custom", "  spaced    value  "),
            ];
            let body = br#"{"cluster":"default"}"#;
            let aws = aws_sign(
                "POST",
                "/a/./b%3D?z=1&a=%2F",
                &headers,
                &[],
                body,
                token,
                "eu-west-1",
                "ecs",
                NOW,
                None,
            );
            let ours = sign(
                "POST",
                "/a/./b%3D",
                "z=1&a=%2F",
                &owned(&headers),
                body,
                &creds(token),
                "eu-west-1",
                "ecs",
                NOW,
            );
            let theirs: Vec<(String, String)> =
                ["x-amz-date", "x-amz-security-token", "authorization"]
                    .iter()
                    .filter_map(|name| {
                        aws.req
                            .headers
                            .get(*name)
                            .map(|v| (name.to_string(), v.to_str().unwrap().to_string()))
                    })
                    .collect();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn sign_with_content_sha256_adds_and_signs_the_hash() {
        let headers = [("host", HOST), ("content-type", "application/json")];
        let body = b"{\"a\":1}";
        let added = sign_with_content_sha256(
            "PUT",
            "/x",
            "",
            &owned(&headers),
            body,
            &creds(None),
            "us-east-1",
            "ecs",
            NOW,
        );
        assert_eq!(added[0], ("x-amz-date".to_string(), format_amz_date(NOW)));
        assert_eq!(
            added[1],
            ("x-amz-content-sha256".to_string(), sha256_hex(body))
        );
        let mut req = Req::new("PUT", "/x", &headers, body);
        for (n, v) in &added {
            req.add(n, v);
        }
        let claim = req.authenticate("us-east-1", "ecs", NOW, SECRET).unwrap();
        assert_eq!(
            signed_list(&claim),
            "content-type;host;x-amz-content-sha256;x-amz-date"
        );
    }

    #[test]
    fn presign_matches_aws_sigv4_and_verifies() {
        for token in [None, Some("tok/en+=")] {
            let aws = aws_sign(
                "GET",
                "/logs?b=2&a=x%20y",
                &[("host", HOST)],
                &[],
                b"",
                token,
                "us-east-1",
                "ecs",
                NOW,
                Some(900),
            );
            let query = presign(
                "GET",
                "/logs",
                "b=2&a=x%20y",
                &owned(&[("host", HOST)]),
                b"",
                &creds(token),
                "us-east-1",
                "ecs",
                NOW,
                900,
            );
            let ours = Req::new("GET", &format!("/logs?{query}"), &[("host", HOST)], b"");
            let claim = ours
                .authenticate("us-east-1", "ecs", NOW + 900, SECRET)
                .unwrap();
            assert_eq!(claim.signature, aws.signature);
            assert_eq!(claim.security_token.as_deref(), token);
            assert!(query.ends_with(&format!("&X-Amz-Signature={}", aws.signature)));
        }
    }

    // ---- Round trips and tampering ----------------------------------------------------------

    #[test]
    fn sign_then_verify_round_trip() {
        let req = ecs_request(NOW);
        let claim = req.authenticate("us-east-1", "ecs", NOW, SECRET).unwrap();
        assert_eq!(
            signed_list(&claim),
            "content-length;content-type;host;x-amz-date;x-amz-target"
        );
        assert_eq!(claim.amz_date, "20260102T030405Z");
        assert_eq!(claim.scope_date, "20260102");
        assert_eq!(claim.request_time, NOW);
        assert_eq!(claim.presigned, None);

        // With a cached signing key.
        let key = signing_key(SECRET, "20260102", "us-east-1", "ecs");
        assert_eq!(verify_with_signing_key(&req.parts(), &claim, &key), Ok(()));
        let yesterday = signing_key(SECRET, "20260101", "us-east-1", "ecs");
        assert_eq!(
            verify_with_signing_key(&req.parts(), &claim, &yesterday),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn sign_round_trip_with_token_and_repeated_headers() {
        let headers = [
            ("host", HOST),
            ("X-Multi", "one"),
            ("x-multi", "  two  words "),
            ("content-type", "application/x-amz-json-1.1"),
        ];
        let req = signed(
            "POST",
            "/some%20path/x?list=a&list=b",
            &headers,
            b"{}",
            Some("the-token"),
            "ecs",
            NOW,
        );
        let claim = req.authenticate("us-east-1", "ecs", NOW, SECRET).unwrap();
        assert_eq!(claim.security_token.as_deref(), Some("the-token"));
        assert_eq!(
            signed_list(&claim),
            "content-type;host;x-amz-date;x-amz-security-token;x-multi"
        );
        // The order of repeated headers is part of the signature.
        let mut reordered = Req::new(&req.method, "/", &[], b"{}");
        reordered.path = req.path.clone();
        reordered.query = req.query.clone();
        for (name, value) in req.headers.iter() {
            if name != "x-multi" {
                reordered.headers.append(name.clone(), value.clone());
            }
        }
        reordered.add("x-multi", "two words");
        reordered.add("x-multi", "one");
        assert_eq!(
            reordered.authenticate("us-east-1", "ecs", NOW, SECRET),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn tampered_requests_are_rejected() {
        let req = ecs_request(NOW);
        let check = |r: &Req| r.authenticate("us-east-1", "ecs", NOW, SECRET);
        assert!(check(&req).is_ok());

        let mut r = req.clone();
        r.body = br#"{"cluster":"default","taskDefinition":"web:3","count":9}"#.to_vec();
        assert_eq!(check(&r), Err(AuthError::Mismatch));

        let mut r = req.clone();
        r.set(
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.DeleteCluster",
        );
        assert_eq!(check(&r), Err(AuthError::Mismatch));

        let mut r = req.clone();
        r.method = "PUT".to_string();
        assert_eq!(check(&r), Err(AuthError::Mismatch));

        let mut r = req.clone();
        r.path = "/other".to_string();
        assert_eq!(check(&r), Err(AuthError::Mismatch));

        let mut r = req.clone();
        r.query = "x=1".to_string();
        assert_eq!(check(&r), Err(AuthError::Mismatch));

        // A signed header that did not arrive.
        let mut r = req.clone();
        r.headers.remove("x-amz-target");
        assert_eq!(check(&r), Err(AuthError::Mismatch));

        // A second value for a signed header.
        let mut r = req.clone();
        r.add(
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.DeleteCluster",
        );
        assert_eq!(check(&r), Err(AuthError::Mismatch));

        // Unsigned headers may change freely.
        let mut r = req.clone();
        r.add("user-agent", "something/else");
        assert!(check(&r).is_ok());

        // A different key id is the caller's business, but the wrong secret is not.
        assert_eq!(
            req.authenticate("us-east-1", "ecs", NOW, "wrong"),
            Err(AuthError::Mismatch)
        );

        // The signature itself, changed or in another case.
        let claim = req.claim().unwrap();
        let mut forged = claim.clone();
        forged.signature.replace_range(
            ..1,
            if claim.signature.starts_with('0') {
                "1"
            } else {
                "0"
            },
        );
        assert_eq!(
            verify(&req.parts(), &forged, SECRET),
            Err(AuthError::Mismatch)
        );
        let mut upper = claim.clone();
        upper.signature = claim.signature.to_ascii_uppercase();
        if upper.signature != claim.signature {
            assert_eq!(
                verify(&req.parts(), &upper, SECRET),
                Err(AuthError::Mismatch)
            );
        }
        let mut short = claim;
        short.signature.pop();
        assert_eq!(
            verify(&req.parts(), &short, SECRET),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn payload_hash_header() {
        let body = b"{\"x\":1}";
        let base = [("host", HOST), ("content-type", "application/json")];
        let sign_with = |hash: &str| {
            let mut headers = base.to_vec();
            headers.push(("x-amz-content-sha256", hash));
            signed("POST", "/", &headers, body, None, "ecs", NOW)
        };
        let check = |r: &Req| r.authenticate("us-east-1", "ecs", NOW, SECRET).map(|_| ());

        // The right hash, in either case.
        assert_eq!(check(&sign_with(&sha256_hex(body))), Ok(()));
        assert_eq!(
            check(&sign_with(&sha256_hex(body).to_ascii_uppercase())),
            Ok(())
        );
        // UNSIGNED-PAYLOAD: the body is not covered, by the client's choice...
        let unsigned = sign_with(UNSIGNED_PAYLOAD);
        assert_eq!(check(&unsigned), Ok(()));
        let mut changed = unsigned.clone();
        changed.body = b"other".to_vec();
        assert_eq!(check(&changed), Ok(()));
        // ...and a third party cannot make that choice for a request signed over its body.
        let mut r = ecs_request(NOW);
        r.set("x-amz-content-sha256", UNSIGNED_PAYLOAD);
        assert_eq!(check(&r), Err(AuthError::Mismatch));

        // Any other value is rejected before the signature is even looked at.
        assert_eq!(
            check(&sign_with(&sha256_hex(b"not the body"))),
            Err(AuthError::PayloadHashMismatch)
        );
        assert_eq!(
            check(&sign_with("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")),
            Err(AuthError::PayloadHashMismatch)
        );
        let mut r = sign_with(&sha256_hex(body));
        r.body = b"{\"x\":2}".to_vec();
        assert_eq!(check(&r), Err(AuthError::PayloadHashMismatch));
    }

    #[test]
    fn date_header_fallback() {
        // Signed by hand with aws-sigv4's primitives: no X-Amz-Date, the date in `Date`.
        let date = "Fri, 02 Jan 2026 03:04:05 GMT";
        let creq = format!(
            "GET\n/\nAction=ListClusters\ndate:{date}\nhost:{HOST}\n\ndate;host\n{EMPTY_SHA256}"
        );
        let sts = format!(
            "AWS4-HMAC-SHA256\n20260102T030405Z\n20260102/us-east-1/ecs/aws4_request\n{}",
            sha256_hex(creq.as_bytes())
        );
        let key = aws_sigv4::sign::v4::generate_signing_key(
            SECRET,
            UNIX_EPOCH + Duration::from_secs(NOW as u64),
            "us-east-1",
            "ecs",
        );
        let signature = aws_sigv4::sign::v4::calculate_signature(key, sts.as_bytes());
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20260102/us-east-1/ecs/aws4_request, \
             SignedHeaders=date;host, Signature={signature}"
        );
        let req = Req::new(
            "GET",
            "/?Action=ListClusters",
            &[
                ("host", HOST),
                ("date", date),
                ("authorization", &authorization),
            ],
            b"",
        );
        let claim = req.authenticate("us-east-1", "ecs", NOW, SECRET).unwrap();
        assert_eq!(claim.amz_date, "20260102T030405Z");
        assert_eq!(claim.request_time, NOW);
        assert_eq!(canonical_request(&req.parts(), &claim).unwrap(), creq);

        // X-Amz-Date wins over Date when both are present.
        let mut both = req.clone();
        both.add("x-amz-date", "20260102T030000Z");
        assert_eq!(both.claim().unwrap().amz_date, "20260102T030000Z");

        let mut bad = req.clone();
        bad.set("date", "yesterday");
        assert!(matches!(bad.claim(), Err(AuthError::Incomplete(m)) if m.contains("'yesterday'")));
    }

    #[test]
    fn authorization_header_parsing_is_tolerant() {
        let req = ecs_request(NOW);
        let claim = req.claim().unwrap();
        let original = req.headers["authorization"].to_str().unwrap().to_string();
        let credential = format!("Credential={AKID}/20260102/us-east-1/ecs/aws4_request");
        let signed_headers = format!("SignedHeaders={}", signed_list(&claim));
        let signature = format!("Signature={}", claim.signature);
        for variant in [
            format!("AWS4-HMAC-SHA256 {credential},{signed_headers},{signature}"),
            format!("AWS4-HMAC-SHA256 {signature}, {credential}, {signed_headers}"),
            format!("AWS4-HMAC-SHA256   {signed_headers} ,  {signature},{credential} ,"),
            format!("AWS4-HMAC-SHA256 {credential}, Foo=bar, {signed_headers}, {signature}"),
        ] {
            assert_ne!(variant, original);
            let mut r = req.clone();
            r.set("authorization", &variant);
            assert_eq!(
                r.authenticate("us-east-1", "ecs", NOW, SECRET),
                Ok(claim.clone()),
                "{variant}"
            );
        }
    }

    #[test]
    fn path_and_plus_alternatives_are_accepted() {
        // A client that signs the path unnormalised (the Go SDK).
        let headers = [("host", HOST)];
        let mut req = Req::new("GET", "/a/./b//c", &headers, b"");
        let amz_date = format_amz_date(NOW);
        let creq = format!(
            "GET\n/a/./b//c\nq=x%20y\nhost:{HOST}\nx-amz-date:{amz_date}\n\nhost;x-amz-date\n\
             {EMPTY_SHA256}"
        );
        let key = signing_key(SECRET, "20260102", "us-east-1", "ecs");
        let sig = signature_parts(
            &key,
            &amz_date,
            "20260102",
            "us-east-1",
            "ecs",
            creq.as_bytes(),
        );
        req.query = "q=x+y".to_string();
        req.add("x-amz-date", &amz_date);
        req.add(
            "authorization",
            &format!(
                "AWS4-HMAC-SHA256 Credential={AKID}/20260102/us-east-1/ecs/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
        );
        // Unnormalised path and '+' read as a space, both at once.
        assert!(req.authenticate("us-east-1", "ecs", NOW, SECRET).is_ok());
        // The primary form is what canonical_request reports.
        let claim = req.claim().unwrap();
        assert!(canonical_request(&req.parts(), &claim)
            .unwrap()
            .starts_with("GET\n/a/b/c\nq=x%2By\n"));
    }

    // ---- Each AuthError ---------------------------------------------------------------------

    #[test]
    fn missing_authentication() {
        let req = Req::new("POST", "/?Action=ListClusters", &[("host", HOST)], b"{}");
        assert_eq!(req.claim(), Err(AuthError::Missing));
        assert_eq!(AuthError::Missing.message(), "Missing Authentication Token");
        assert_eq!(
            AuthError::Missing.json_type(),
            "MissingAuthenticationTokenException"
        );
        assert_eq!(
            AuthError::Missing.query_code(),
            "MissingAuthenticationToken"
        );
        assert_eq!(AuthError::Missing.http_status(), 403);
    }

    fn incomplete(req: &Req) -> String {
        match req.claim() {
            Err(AuthError::Incomplete(m)) => m,
            other => panic!("expected Incomplete, got {other:?}"),
        }
    }

    #[test]
    fn incomplete_authorization_header() {
        let mut req = Req::new("POST", "/", &[("host", HOST)], b"{}");
        req.set("authorization", "AWS4-HMAC-SHA256");
        assert_eq!(
            incomplete(&req),
            "Authorization header requires 'Credential' parameter. Authorization header requires \
             'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. \
             Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header. Authorization=AWS4-HMAC-SHA256"
        );

        let value = format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20260102/us-east-1/ecs/aws4_request, \
             SignedHeaders=host;x-amz-date"
        );
        req.set("authorization", &value);
        req.set("x-amz-date", "20260102T030405Z");
        assert_eq!(
            incomplete(&req),
            format!("Authorization header requires 'Signature' parameter. Authorization={value}")
        );

        req.set("authorization", "Bearer abc.def");
        assert_eq!(incomplete(&req), "Unsupported AWS 'algorithm': 'Bearer'");
        req.set(
            "authorization",
            "AWS4-HMAC-SHA512 Credential=a/b/c/d/aws4_request",
        );
        assert_eq!(
            incomplete(&req),
            "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'"
        );

        req.set("authorization", "AWS4-HMAC-SHA256 Credential=x, garbage");
        assert_eq!(
            incomplete(&req),
            "'garbage' not a valid key=value pair (missing equal-sign) in Authorization header: \
             'AWS4-HMAC-SHA256 Credential=x, garbage'."
        );

        req.set(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20260102/us-east-1/ecs, SignedHeaders=host, \
             Signature=00",
        );
        assert_eq!(
            incomplete(&req),
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got 'AKID/20260102/us-east-1/ecs'"
        );

        req.set(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20260102/us-east-1/ecs/aws4_request, \
             SignedHeaders=content-type;x-amz-date, Signature=00",
        );
        assert_eq!(
            incomplete(&req),
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        );

        req.set(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20260102/us-east-1/ecs/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00",
        );
        req.set("x-amz-date", "2026-01-02T03:04:05Z");
        assert_eq!(
            incomplete(&req),
            "Date must be in ISO-8601 'basic format'. Got '2026-01-02T03:04:05Z'. See \
             http://en.wikipedia.org/wiki/ISO_8601"
        );

        let err = AuthError::Incomplete("x".to_string());
        assert_eq!(err.message(), "x");
        assert_eq!(err.json_type(), "IncompleteSignatureException");
        assert_eq!(err.query_code(), "IncompleteSignature");
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn incomplete_presigned_query() {
        let req = Req::new(
            "GET",
            "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260102T030405Z",
            &[("host", HOST)],
            b"",
        );
        assert_eq!(
            incomplete(&req),
            "AWS query-string parameters must include 'X-Amz-Credential'. AWS query-string \
             parameters must include 'X-Amz-Signature'. AWS query-string parameters must include \
             'X-Amz-SignedHeaders'. AWS query-string parameters must include 'X-Amz-Expires'. \
             Re-examine the query-string parameters."
        );

        let query = presign(
            "GET",
            "/",
            "",
            &owned(&[("host", HOST)]),
            b"",
            &creds(None),
            "us-east-1",
            "ecs",
            NOW,
            60,
        );
        let with = |from: &str, to: &str| {
            assert!(query.contains(from), "{query}");
            Req::new(
                "GET",
                &format!("/?{}", query.replace(from, to)),
                &[("host", HOST)],
                b"",
            )
        };
        assert_eq!(
            incomplete(&with("X-Amz-Expires=60", "X-Amz-Expires=soon")),
            "X-Amz-Expires should be a number"
        );
        assert_eq!(
            incomplete(&with("X-Amz-Date=20260102T030405Z", "X-Amz-Date=2026")),
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        );
        assert_eq!(
            incomplete(&with("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1")),
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\", not 'AWS4-HMAC-SHA1'"
        );
        assert_eq!(
            incomplete(&with(
                "X-Amz-SignedHeaders=host",
                "X-Amz-SignedHeaders=date"
            )),
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        );

        // Both mechanisms at once.
        let mut both = Req::new("GET", &format!("/?{query}"), &[("host", HOST)], b"");
        both.set("authorization", "AWS4-HMAC-SHA256 Credential=x");
        assert!(incomplete(&both).starts_with("Only one auth mechanism allowed"));

        // Out-of-range lifetimes are refused in step 2.
        for (expires, message) in [
            (0, "X-Amz-Expires must be a positive number of seconds"),
            (-5, "X-Amz-Expires must be a positive number of seconds"),
            (
                604_801,
                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
            ),
        ] {
            let req = with("X-Amz-Expires=60", &format!("X-Amz-Expires={expires}"));
            let claim = req.claim().unwrap();
            assert_eq!(
                check_scope_and_time(&claim, "us-east-1", "ecs", NOW),
                Err(AuthError::Incomplete(message.to_string()))
            );
        }
        let week = with("X-Amz-Expires=60", "X-Amz-Expires=604800");
        let claim = week.claim().unwrap();
        assert_eq!(
            check_scope_and_time(&claim, "us-east-1", "ecs", NOW + 604_800),
            Ok(())
        );
    }

    #[test]
    fn bad_scope() {
        let req = ecs_request(NOW);
        let claim = req.claim().unwrap();
        assert_eq!(
            check_scope_and_time(&claim, "eu-west-1", "ecs", NOW),
            Err(AuthError::BadScope(
                "Credential should be scoped to a valid region. ".to_string()
            ))
        );
        assert_eq!(
            check_scope_and_time(&claim, "us-east-1", "logs", NOW),
            Err(AuthError::BadScope(
                "Credential should be scoped to correct service: 'logs'. ".to_string()
            ))
        );

        let mut r = req.clone();
        let auth = r.headers["authorization"].to_str().unwrap().to_string();
        r.set("authorization", &auth.replace("/20260102/", "/20260101/"));
        let claim = r.claim().unwrap();
        let err = check_scope_and_time(&claim, "us-east-1", "ecs", NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::BadScope(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '20260101' != '20260102', from '20260102T030405Z'."
                    .to_string()
            )
        );
        assert_eq!(err.json_type(), "InvalidSignatureException");
        assert_eq!(err.query_code(), "SignatureDoesNotMatch");
        assert_eq!(err.http_status(), 403);

        r.set(
            "authorization",
            &auth.replace("/aws4_request", "/aws5_request"),
        );
        assert_eq!(
            r.claim(),
            Err(AuthError::BadScope(
                "Credential should be scoped with a valid terminator: 'aws4_request', not \
                 'aws5_request'. "
                    .to_string()
            ))
        );
    }

    #[test]
    fn clock_window_edges() {
        // Signed at 00:20:00 on 2013-05-24; the server's clock moves.
        let signed_at = parse_amz_date("20130524T002000Z").unwrap();
        let req = signed(
            "POST",
            "/",
            &[("host", HOST)],
            b"{}",
            None,
            "ecs",
            signed_at,
        );
        let at = |now: i64| {
            req.authenticate("us-east-1", "ecs", now, SECRET)
                .map(|_| ())
        };
        assert_eq!(at(signed_at), Ok(()));
        assert_eq!(at(signed_at + 900), Ok(()));
        assert_eq!(at(signed_at - 900), Ok(()));
        assert_eq!(
            at(signed_at + 901),
            Err(AuthError::Expired(
                "Signature expired: 20130524T002000Z is now earlier than 20130524T002001Z \
                 (20130524T003501Z - 15 min.)"
                    .to_string()
            ))
        );
        assert_eq!(
            at(signed_at - 901),
            Err(AuthError::Expired(
                "Signature not yet current: 20130524T002000Z is still later than \
                 20130524T001959Z (20130524T000459Z + 15 min.)"
                    .to_string()
            ))
        );

        // The shapes in AWS's documentation.
        let early = signed(
            "POST",
            "/",
            &[("host", HOST)],
            b"{}",
            None,
            "ecs",
            parse_amz_date("20130524T000000Z").unwrap(),
        );
        assert_eq!(
            early.authenticate("us-east-1", "ecs", signed_at, SECRET),
            Err(AuthError::Expired(
                "Signature expired: 20130524T000000Z is now earlier than 20130524T000500Z \
                 (20130524T002000Z - 15 min.)"
                    .to_string()
            ))
        );
        let late = signed(
            "POST",
            "/",
            &[("host", HOST)],
            b"{}",
            None,
            "ecs",
            parse_amz_date("20130524T004000Z").unwrap(),
        );
        assert_eq!(
            late.authenticate("us-east-1", "ecs", signed_at, SECRET),
            Err(AuthError::Expired(
                "Signature not yet current: 20130524T004000Z is still later than \
                 20130524T003500Z (20130524T002000Z + 15 min.)"
                    .to_string()
            ))
        );
        let err = AuthError::Expired("x".to_string());
        assert_eq!(err.json_type(), "InvalidSignatureException");
    }

    #[test]
    fn presigned_clock_window() {
        let query = presign(
            "GET",
            "/",
            "",
            &owned(&[("host", HOST)]),
            b"",
            &creds(None),
            "us-east-1",
            "ecs",
            NOW,
            120,
        );
        let req = Req::new("GET", &format!("/?{query}"), &[("host", HOST)], b"");
        let at = |now: i64| {
            req.authenticate("us-east-1", "ecs", now, SECRET)
                .map(|_| ())
        };
        assert_eq!(at(NOW - 900), Ok(()));
        assert_eq!(at(NOW + 120), Ok(()));
        assert_eq!(
            at(NOW + 121),
            Err(AuthError::Expired("Request has expired".to_string()))
        );
        assert_eq!(
            at(NOW - 901),
            Err(AuthError::Expired("Request is not valid yet".to_string()))
        );

        // Parameter names are read decoded, as the canonical query sees them.
        let encoded = query
            .replace("X-Amz-Credential=", "X-Amz%2DCredential=")
            .replace("X-Amz-Signature=", "X%2DAmz-Signature=");
        let req = Req::new("GET", &format!("/?{encoded}"), &[("host", HOST)], b"");
        assert!(req.authenticate("us-east-1", "ecs", NOW, SECRET).is_ok());
    }

    #[test]
    fn mismatch_and_payload_messages() {
        assert_eq!(
            AuthError::Mismatch.message(),
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
        );
        assert_eq!(
            AuthError::PayloadHashMismatch.message(),
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        );
        assert_eq!(
            AuthError::Mismatch.to_string(),
            AuthError::Mismatch.message()
        );
        assert_eq!(AuthError::Mismatch.query_code(), "SignatureDoesNotMatch");
        assert_eq!(
            AuthError::PayloadHashMismatch.json_type(),
            "InvalidSignatureException"
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let mut req = ecs_request(NOW);
        let claim = req.claim().unwrap();
        for name in ["", "Host", "not a header", "\u{e9}", ";"] {
            let mut c = claim.clone();
            c.signed_headers.push(name.to_string());
            assert_eq!(verify(&req.parts(), &c, SECRET), Err(AuthError::Mismatch));
        }
        req.headers.insert(
            "x-amz-target",
            HeaderValue::from_bytes(b"caf\xe9 \xff").unwrap(),
        );
        assert_eq!(
            verify(&req.parts(), &claim, SECRET),
            Err(AuthError::Mismatch)
        );
        req.headers.insert(
            "authorization",
            HeaderValue::from_bytes(b"AWS4-HMAC-SHA256 \xff").unwrap(),
        );
        assert!(matches!(req.claim(), Err(AuthError::Incomplete(_))));
        for query in ["%", "%%", "a=%", "a=%4", "X-Amz-Signature", "&&&", "=&="] {
            let r = Req::new("GET", &format!("/?{query}"), &[("host", HOST)], b"");
            let _ = r.claim();
            let mut out = Vec::new();
            let canon = Canon {
                normalize_path: false,
                plus_as_space: true,
                drop_token_param: true,
            };
            push_canonical_query(&mut out, query, canon, true);
        }
        assert!(format_amz_date(i64::MAX).len() >= 16);
        assert!(format_amz_date(i64::MIN).len() >= 16);
        let mut claim = claim;
        claim.request_time = i64::MAX;
        let _ = check_scope_and_time(&claim, "us-east-1", "ecs", i64::MIN);
        claim.presigned = Some(604_800);
        let _ = check_scope_and_time(&claim, "us-east-1", "ecs", i64::MAX);
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let shown = format!("{:?}", creds(Some("tok")));
        assert!(shown.contains(AKID));
        assert!(!shown.contains(SECRET));
        assert!(!shown.contains("tok\""));
    }

    /// Not a benchmark, just a guard against accidental quadratic work: verification should
    /// take microseconds. Run with `--ignored --nocapture` to see the figure.
    #[test]
    #[ignore]
    fn verification_speed() {
        let req = ecs_request(NOW);
        let rounds = 20_000;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let claim = parse_claim(&req.parts()).unwrap();
            check_scope_and_time(&claim, "us-east-1", "ecs", NOW).unwrap();
            verify(&req.parts(), &claim, SECRET).unwrap();
        }
        let per = start.elapsed() / rounds;
        println!("parse + check + verify: {per:?} per request");
    }

    /// The AWS SigV4 test suite (v4), as shipped with the `aws-sigv4` crate
    /// (`aws-signing-test-suite/v4`): each case's signed request in header and query form, and
    /// the canonical request each must produce. Left out: `get-header-value-multiline` (obsolete
    /// line folding, which `http::HeaderValue` cannot hold) and `double-encode-path` (its
    /// canonical request uses a different date from its request).
    const SUITE: &[SuiteCase] = &[
        SuiteCase {
            name: "double-url-encode",
            normalize: true,
            header_signed: r#"POST /2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A892717189312%3Afunction%3Amy-rusty-fun/invocations
Host:lambda.us-east-2.amazonaws.com
X-Amz-Date:20210511T154045Z
Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20210511/us-east-2/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=4b93abbcc68be32bd64c18e2c71150660ab4c29bbd6c32a383a7517a88fc1804
"#,
            header_canonical: r#"POST
/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A892717189312%253Afunction%253Amy-rusty-fun/invocations

host:lambda.us-east-2.amazonaws.com
x-amz-date:20210511T154045Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: None,
            query_canonical: None,
        },
        SuiteCase {
            name: "get-header-key-duplicate",
            normalize: true,
            header_signed: r#"GET / HTTP/1.1
Host:example.amazonaws.com
My-Header1:value2
My-Header1:value2
My-Header1:value1
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
my-header1:value2,value2,value1
x-amz-date:20150830T123600Z

host;my-header1;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host%3Bmy-header1&X-Amz-Expires=3600&X-Amz-Signature=3349ee0b81b4b589da0ff28a395c3591e04de515651dd74f298fa992d1507a97 HTTP/1.1
Host:example.amazonaws.com
My-Header1:value2
My-Header1:value2
My-Header1:value1

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host%3Bmy-header1
host:example.amazonaws.com
my-header1:value2,value2,value1

host;my-header1
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-header-value-order",
            normalize: true,
            header_signed: r#"GET / HTTP/1.1
Host:example.amazonaws.com
My-Header1:value4
My-Header1:value1
My-Header1:value3
My-Header1:value2
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
my-header1:value4,value1,value3,value2
x-amz-date:20150830T123600Z

host;my-header1;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host%3Bmy-header1&X-Amz-Expires=3600&X-Amz-Signature=313720e71ca6202fdcfa9b20f88de01a4eb0638a83c833b1c184359a4eda864e HTTP/1.1
Host:example.amazonaws.com
My-Header1:value4
My-Header1:value1
My-Header1:value3
My-Header1:value2

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host%3Bmy-header1
host:example.amazonaws.com
my-header1:value4,value1,value3,value2

host;my-header1
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-header-value-trim",
            normalize: true,
            header_signed: r#"GET / HTTP/1.1
Host:example.amazonaws.com
My-Header1: value1
My-Header2: "a   b   c"
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
my-header1:value1
my-header2:"a b c"
x-amz-date:20150830T123600Z

host;my-header1;my-header2;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host%3Bmy-header1%3Bmy-header2&X-Amz-Expires=3600&X-Amz-Signature=e7bb0fd515e125e1aec2ecc4c0c17484fb06f6846b927c35e46005dd3df3acd4 HTTP/1.1
Host:example.amazonaws.com
My-Header1: value1
My-Header2: "a   b   c"

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host%3Bmy-header1%3Bmy-header2
host:example.amazonaws.com
my-header1:value1
my-header2:"a b c"

host;my-header1;my-header2
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-relative-normalized",
            normalize: true,
            header_signed: r#"GET /example/.. HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /example/..?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-relative-relative-normalized",
            normalize: true,
            header_signed: r#"GET /example1/example2/../.. HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /example1/example2/../..?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-relative-relative-unnormalized",
            normalize: false,
            header_signed: r#"GET /example1/example2/../.. HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=dc33e0856fd4baca4d7aa2146c38958283844764f38c74252a333df5e613003b

"#,
            header_canonical: r#"GET
/example1/example2/../..

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /example1/example2/../..?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=b45db0bfd1cf15003493b733e33aa208dd981bd0e63037a6ed953f71d2118a16 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/example1/example2/../..
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-relative-unnormalized",
            normalize: false,
            header_signed: r#"GET /example/.. HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=eca7ead57bb5aa5c8e28007acd4ff04e1ff9a0ff3b237ec1554a184887ff9282

"#,
            header_canonical: r#"GET
/example/..

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /example/..?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=cbcb213b928a077e43275df47b500f1dfaa864ab3f5a18f6b95f4ff0938167ee HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/example/..
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-slash-dot-slash-normalized",
            normalize: true,
            header_signed: r#"GET /./ HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /./?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-slash-dot-slash-unnormalized",
            normalize: false,
            header_signed: r#"GET /./ HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=68714168e6557f8f2de0ef956fc24dc2593a4bd2961f8df51898d8a134695145

"#,
            header_canonical: r#"GET
/./

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /./?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=a9b13e8f3484d9505bf1a6f347219f8f35b0fe8f128ceea597efc146a3dfe90c HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/./
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-slash-normalized",
            normalize: true,
            header_signed: r#"GET // HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET //?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-slash-pointless-dot-normalized",
            normalize: true,
            header_signed: r#"GET /./example HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5

"#,
            header_canonical: r#"GET
/example

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /./example?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=35034b1a0bdd969f346975386daf8aedfd4976573b8348cf4f67eaa41c5857de HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/example
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-slash-pointless-dot-unnormalized",
            normalize: false,
            header_signed: r#"GET /./example HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=beb03f223f7deae4146464f06e29eebbee9c8afbe15c290cf07aa8b119e14cff

"#,
            header_canonical: r#"GET
/./example

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /./example?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=72b11f16d9530b18204bfb71f2d6ab085894c0ed8d352730a6e76234c58b5e10 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/./example
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-slash-unnormalized",
            normalize: false,
            header_signed: r#"GET // HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=c88bcd3d312d75078c0cd961d6deae3f4c754924b01669efcfcb439fd5e5b76e

"#,
            header_canonical: r#"GET
//

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET //?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=b2a9542809db687769200f56a844a03f2bd0291d6eb90232d5101c6a579446cd HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
//
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-slashes-normalized",
            normalize: true,
            header_signed: r#"GET //example// HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84

"#,
            header_canonical: r#"GET
/example/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET //example//?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=c1834e8fb0307243711f0f907f6ab7311ed300d87f13792d7ee4da89ab93e082 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/example/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-slashes-unnormalized",
            normalize: false,
            header_signed: r#"GET //example// HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=87cca117541a147f6df867677d98a7d80dff226d2bfca9e4ffa899665623c7e5

"#,
            header_canonical: r#"GET
//example//

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET //example//?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=822a5a9ba28072c5ab2bb4a6307d0c88276d40e49fec6b724c03fb4d4ba60fc2 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
//example//
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-space-normalized",
            normalize: true,
            header_signed: r#"GET /example space/ HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741

"#,
            header_canonical: r#"GET
/example%20space/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /example space/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=7a1f416954786484c9824d93c1f26ef64acb9b1b6c9154d08c9f07d0e394abf6 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/example%20space/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-space-unnormalized",
            normalize: false,
            header_signed: r#"GET /example space/ HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741

"#,
            header_canonical: r#"GET
/example%20space/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /example space/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=7a1f416954786484c9824d93c1f26ef64acb9b1b6c9154d08c9f07d0e394abf6 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/example%20space/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-unreserved",
            normalize: true,
            header_signed: r#"GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f

"#,
            header_canonical: r#"GET
/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=95968482db1b9e0fadef6efc1bd24689f77c77d9ef56919c96a28cc92e0d6005 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-utf8",
            normalize: true,
            header_signed: r#"GET /ሴ HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85

"#,
            header_canonical: r#"GET
/%E1%88%B4

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /ሴ?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=10eae3f14a260bd3911cc6d008d3c576d143b05b62f09782a7a4b37f52178e44 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/%E1%88%B4
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-vanilla",
            normalize: true,
            header_signed: r#"GET / HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-vanilla-empty-query-key",
            normalize: true,
            header_signed: r#"GET /?Param1=value1 HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb

"#,
            header_canonical: r#"GET
/
Param1=value1
host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=49096700cbbaa5753443850f40df10f904fc2fdb544dc9512203cc77c471a9de HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-vanilla-query",
            normalize: true,
            header_signed: r#"GET / HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-vanilla-query-order-encoded",
            normalize: true,
            header_signed: r#"GET /?Param-3=Value3&Param=Value2&%E1%88%B4=Value1 HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac

"#,
            header_canonical: r#"GET
/
%E1%88%B4=Value1&Param=Value2&Param-3=Value3
host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?Param-3=Value3&Param=Value2&%E1%88%B4=Value1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=c5f1848ceec943ac2ca68ee720460c23aaae30a2300586597ada94c4a65e4787 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
%E1%88%B4=Value1&Param=Value2&Param-3=Value3&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-vanilla-query-order-key-case",
            normalize: true,
            header_signed: r#"GET /?Param2=value2&Param1=value1 HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500

"#,
            header_canonical: r#"GET
/
Param1=value1&Param2=value2
host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?Param2=value2&Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
Param1=value1&Param2=value2&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-vanilla-query-unreserved",
            normalize: true,
            header_signed: r#"GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197

"#,
            header_canonical: r#"GET
/
-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=8e76a88a7433637b12778d5592799b29ad21ecd6cf6325051c21d86f0acda2bf HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-vanilla-utf8-query",
            normalize: true,
            header_signed: r#"GET /?ሴ=bar HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04

"#,
            header_canonical: r#"GET
/
%E1%88%B4=bar
host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?ሴ=bar&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=0bdd809b1519ac4f0c1dc3540e2cc46bd0c7f778eda408b2ebf3b913d21ff600 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
%E1%88%B4=bar&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "get-vanilla-with-session-token",
            normalize: true,
            header_signed: r#"GET / HTTP/1.1
Host:example.amazonaws.com
X-Amz-Security-Token:6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8

"#,
            header_canonical: r#"GET
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z
x-amz-security-token:6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267

host;x-amz-date;x-amz-security-token
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Security-Token=6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267&X-Amz-Signature=7ff2b50b376cb4d151970630573d6291dc128cc5c2a12ffb237f73cc53f67b6c HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"GET
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-Security-Token=6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-header-key-case",
            normalize: true,
            header_signed: r#"POST / HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b

"#,
            header_canonical: r#"POST
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=2ce6e6d2e0cf2f9d1b55fafec88cd20574c31dc2e7631979f71ba2310083e95b HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"POST
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-header-key-sort",
            normalize: true,
            header_signed: r#"POST / HTTP/1.1
Host:example.amazonaws.com
My-Header1:value1
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c

"#,
            header_canonical: r#"POST
/

host:example.amazonaws.com
my-header1:value1
x-amz-date:20150830T123600Z

host;my-header1;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host%3Bmy-header1&X-Amz-Expires=3600&X-Amz-Signature=c09d07e0d55871f10f2a6d350d994acf6825a3cae70673d7def55616e6119dd7 HTTP/1.1
Host:example.amazonaws.com
My-Header1:value1

"#,
            ),
            query_canonical: Some(
                r#"POST
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host%3Bmy-header1
host:example.amazonaws.com
my-header1:value1

host;my-header1
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-header-value-case",
            normalize: true,
            header_signed: r#"POST / HTTP/1.1
Host:example.amazonaws.com
My-Header1:VALUE1
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d

"#,
            header_canonical: r#"POST
/

host:example.amazonaws.com
my-header1:VALUE1
x-amz-date:20150830T123600Z

host;my-header1;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host%3Bmy-header1&X-Amz-Expires=3600&X-Amz-Signature=0698bc9e4f7f9139065ba2909c0e99da257e8e2a42492a097bcd46d792391fed HTTP/1.1
Host:example.amazonaws.com
My-Header1:VALUE1

"#,
            ),
            query_canonical: Some(
                r#"POST
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host%3Bmy-header1
host:example.amazonaws.com
my-header1:VALUE1

host;my-header1
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-sts-header-after",
            normalize: true,
            header_signed: r#"POST / HTTP/1.1
Host:example.amazonaws.com
X-Amz-Security-Token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b

"#,
            header_canonical: r#"POST
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Security-Token=AQoDYXdzEPT%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI%2FqkPpKPi%2FkMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d%2Bxo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz%2BscqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR%2FoLxBA%3D%3D&X-Amz-Signature=2ce6e6d2e0cf2f9d1b55fafec88cd20574c31dc2e7631979f71ba2310083e95b HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"POST
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-sts-header-before",
            normalize: true,
            header_signed: r#"POST / HTTP/1.1
Host:example.amazonaws.com
X-Amz-Security-Token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead

"#,
            header_canonical: r#"POST
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z
x-amz-security-token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==

host;x-amz-date;x-amz-security-token
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Security-Token=AQoDYXdzEPT%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI%2FqkPpKPi%2FkMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d%2Bxo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz%2BscqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR%2FoLxBA%3D%3D&X-Amz-Signature=46c2e3c63c1dbe7d39f8ada16fe7f001c1f56c5791441565323677f96308871c HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"POST
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-Security-Token=AQoDYXdzEPT%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI%2FqkPpKPi%2FkMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d%2Bxo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz%2BscqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR%2FoLxBA%3D%3D&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-vanilla",
            normalize: true,
            header_signed: r#"POST / HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b

"#,
            header_canonical: r#"POST
/

host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=2ce6e6d2e0cf2f9d1b55fafec88cd20574c31dc2e7631979f71ba2310083e95b HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"POST
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-vanilla-empty-query-value",
            normalize: true,
            header_signed: r#"POST /?Param1=value1 HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11

"#,
            header_canonical: r#"POST
/
Param1=value1
host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"POST /?Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=a9ef26247f293bffe40eeff86a0480ba8c14d31503b2e0c3399e3a16bf1a3682 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"POST
/
Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-vanilla-query",
            normalize: true,
            header_signed: r#"POST /?Param1=value1 HTTP/1.1
Host:example.amazonaws.com
X-Amz-Date:20150830T123600Z
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11

"#,
            header_canonical: r#"POST
/
Param1=value1
host:example.amazonaws.com
x-amz-date:20150830T123600Z

host;x-amz-date
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            query_signed: Some(
                r#"POST /?Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&X-Amz-Signature=a9ef26247f293bffe40eeff86a0480ba8c14d31503b2e0c3399e3a16bf1a3682 HTTP/1.1
Host:example.amazonaws.com

"#,
            ),
            query_canonical: Some(
                r#"POST
/
Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host
host:example.amazonaws.com

host
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"#,
            ),
        },
        SuiteCase {
            name: "post-x-www-form-urlencoded",
            normalize: true,
            header_signed: r#"POST / HTTP/1.1
Content-Type:application/x-www-form-urlencoded
Host:example.amazonaws.com
Content-Length:13
X-Amz-Date:20150830T123600Z
x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b

Param1=value1"#,
            header_canonical: r#"POST
/

content-length:13
content-type:application/x-www-form-urlencoded
host:example.amazonaws.com
x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
x-amz-date:20150830T123600Z

content-length;content-type;host;x-amz-content-sha256;x-amz-date
9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"#,
            query_signed: Some(
                r#"POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost&X-Amz-Expires=3600&X-Amz-Signature=89a40deed0f26f9461242825a082d2222717248abc7ab41f552ad84a94ad46e9 HTTP/1.1
Content-Type:application/x-www-form-urlencoded
Host:example.amazonaws.com
Content-Length:13

Param1=value1"#,
            ),
            query_canonical: Some(
                r#"POST
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost
content-length:13
content-type:application/x-www-form-urlencoded
host:example.amazonaws.com

content-length;content-type;host
9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"#,
            ),
        },
        SuiteCase {
            name: "post-x-www-form-urlencoded-parameters",
            normalize: true,
            header_signed: r#"POST / HTTP/1.1
Content-Type:application/x-www-form-urlencoded; charset=utf-8
Host:example.amazonaws.com
Content-Length:13
X-Amz-Date:20150830T123600Z
x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422

Param1=value1"#,
            header_canonical: r#"POST
/

content-length:13
content-type:application/x-www-form-urlencoded; charset=utf-8
host:example.amazonaws.com
x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
x-amz-date:20150830T123600Z

content-length;content-type;host;x-amz-content-sha256;x-amz-date
9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"#,
            query_signed: Some(
                r#"POST /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost&X-Amz-Expires=3600&X-Amz-Signature=0dbeb9b026c7b6675f266b8427efec9b4fa8b1f6ef1477d717aea231106eab4d HTTP/1.1
Content-Type:application/x-www-form-urlencoded; charset=utf-8
Host:example.amazonaws.com
Content-Length:13

Param1=value1"#,
            ),
            query_canonical: Some(
                r#"POST
/
X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost
content-length:13
content-type:application/x-www-form-urlencoded; charset=utf-8
host:example.amazonaws.com

content-length;content-type;host
9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"#,
            ),
        },
    ];
}
