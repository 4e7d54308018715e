//! Decoding SSM requests (PascalCase members) into typed inputs, and the paging tokens of its
//! listings. A decoding error names the member at fault, but never quotes a parameter's
//! value: `Value` is a SecureString's plaintext.

use super::errors;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gantry_model::EcsResult;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// `Tag` (PutParameter, AddTagsToResource).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// How many tags a parameter may carry.
pub const MAX_TAGS: usize = 50;

pub fn parse<T: DeserializeOwned>(input: Value) -> EcsResult<T> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        if path == "Value" || path.starts_with("Value.") {
            return errors::validation("Invalid value for Value: it must be a string.");
        }
        let inner = e.into_inner();
        if path == "." {
            errors::validation(format!("Invalid request: {inner}"))
        } else {
            errors::validation(format!("Invalid value for {path}: {inner}"))
        }
    })
}

/// A listing's `NextToken`: where the previous page stopped (a store key, or a version),
/// opaque to clients, who echo it verbatim.
pub fn encode_token(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("ssm:{position}"))
}

pub fn decode_token(token: Option<&str>) -> EcsResult<Option<String>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("ssm:").map(str::to_string))
        .map(Some)
        .ok_or_else(errors::invalid_next_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    #[allow(dead_code)]
    struct Probe {
        name: String,
        value: String,
        overwrite: Option<bool>,
    }

    #[test]
    fn decoding_errors_name_the_member_but_never_quote_the_value() {
        let e = parse::<Probe>(json!({"Name": "a", "Value": 31337, "Overwrite": true}))
            .err()
            .expect("refused");
        assert_eq!(e.code, "ValidationException");
        assert!(!e.message.contains("31337"), "{}", e.message);
        let e = parse::<Probe>(json!({"Name": "a", "Value": "v", "Overwrite": "yes"}))
            .err()
            .expect("refused");
        assert!(e.message.contains("Overwrite"), "{}", e.message);
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = encode_token("ssm/parameters/a/b");
        assert_eq!(
            decode_token(Some(&t)).unwrap().as_deref(),
            Some("ssm/parameters/a/b")
        );
        assert_eq!(decode_token(None).unwrap(), None);
        assert_eq!(
            decode_token(Some("not a token")).unwrap_err().code,
            "InvalidNextToken"
        );
    }
}
