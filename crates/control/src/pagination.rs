//! `nextToken` / `maxResults` over a list already in its final order. The token is opaque to
//! clients (they echo it verbatim); inside it is the offset of the next item.

use base64::Engine;
use gantry_model::{EcsError, EcsResult};

/// One page of `items` and the token for the next, if any.
pub fn page<T>(
    items: Vec<T>,
    next_token: Option<&str>,
    max_results: Option<i32>,
    limit: i32,
) -> EcsResult<(Vec<T>, Option<String>)> {
    let size = match max_results {
        Some(n) if n < 1 || n > limit => {
            return Err(EcsError::invalid_parameter(format!(
                "maxResults must be between 1 and {limit}."
            )))
        }
        Some(n) => n as usize,
        None => limit as usize,
    };
    let start = match next_token {
        Some(t) => decode_token(t)?,
        None => 0,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(size).collect();
    let end = start + page.len();
    let next = (end < total).then(|| encode_token(end));
    Ok((page, next))
}

fn encode_token(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("gantry:{offset}"))
}

fn decode_token(token: &str) -> EcsResult<usize> {
    base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("gantry:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| EcsError::invalid_parameter("Invalid nextToken."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_and_rejects_bad_input() {
        let items: Vec<i32> = (0..5).collect();
        let (p1, t1) = page(items.clone(), None, Some(2), 100).unwrap();
        assert_eq!(p1, vec![0, 1]);
        let (p2, t2) = page(items.clone(), t1.as_deref(), Some(2), 100).unwrap();
        assert_eq!(p2, vec![2, 3]);
        let (p3, t3) = page(items.clone(), t2.as_deref(), Some(2), 100).unwrap();
        assert_eq!((p3, t3), (vec![4], None));
        assert!(page(items.clone(), Some("garbage"), None, 100).is_err());
        assert!(page(items, None, Some(0), 100).is_err());
    }
}
