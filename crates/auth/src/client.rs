//! Signing for Gantry's own clients (the CLI and the agent): the headers that make a request
//! to a URL verifiable, computed from the URL as the HTTP client will send it.

use crate::sigv4::{self, Credentials};

/// `(host, path, query)` of `scheme://host[:port]/path?query`, with the `Host` header as
/// HTTP clients send it (no port when it is the scheme's default).
fn split_url(url: &str) -> (String, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path_and_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = authority
        .strip_suffix(default_port)
        .unwrap_or(authority)
        .to_string();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    (host, path, query)
}

/// The headers to add to a request to `url` (`x-amz-date`, `authorization`, and
/// `x-amz-security-token` for temporary credentials). `headers` are the other headers the
/// request carries that should be signed (e.g. `content-type`, `x-amz-target`); `host` is
/// added from the URL.
#[allow(clippy::too_many_arguments)]
pub fn sign_url(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: i64,
) -> Vec<(String, String)> {
    let (host, path, query) = split_url(url);
    let mut all: Vec<(String, String)> = vec![("host".to_string(), host)];
    all.extend(
        headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())),
    );
    sigv4::sign(method, path, query, &all, body, creds, region, service, now)
}

/// Unix seconds now (for [`sign_url`]).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_as_clients_send_them() {
        assert_eq!(
            split_url("http://127.0.0.1:7420/agent/v1/channel?cluster=a&x=1"),
            (
                "127.0.0.1:7420".to_string(),
                "/agent/v1/channel",
                "cluster=a&x=1"
            )
        );
        assert_eq!(
            split_url("https://example.com:443"),
            ("example.com".to_string(), "/", "")
        );
        assert_eq!(split_url("http://h:80/"), ("h".to_string(), "/", ""));
    }
}
