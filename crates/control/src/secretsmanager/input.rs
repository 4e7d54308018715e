//! Secrets Manager's input rules beyond what its model checks (the model's lengths, ranges
//! and required members are checked by `api_model` before a handler runs): the name's
//! characters, one value of one kind, tags, ListSecrets' filters, GetRandomPassword's
//! character sets. Inputs that carry a value hold it in memory that is wiped when dropped,
//! and none of them is `Debug`.

use super::errors;
use super::records::{SecretTag, ValueKind};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use gantry_model::{EcsError, EcsResult};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use zeroize::Zeroizing;

/// An operation's input; a member of the wrong JSON type is the protocol's
/// `SerializationException`, as AWS answers it, naming the member (never its value).
pub fn parse<T: DeserializeOwned>(input: Value) -> EcsResult<T> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        EcsError::new(
            "SerializationException",
            format!("Unexpected value type for member {path}."),
        )
    })
}

/// A string member that may be a secret: held in memory wiped on drop.
pub struct SecretText(pub Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretText(Zeroizing::new(s)))
    }
}

/// A new version's value, decoded.
pub struct NewValue {
    pub kind: ValueKind,
    pub bytes: Zeroizing<Vec<u8>>,
}

/// Largest value Secrets Manager keeps (string or decoded binary).
const MAX_VALUE_BYTES: usize = 65_536;

/// The value a call carries: `SecretString` or `SecretBinary` (base64 on the wire), never
/// both.
pub fn value(
    string: Option<SecretText>,
    binary: Option<SecretText>,
) -> EcsResult<Option<NewValue>> {
    match (string, binary) {
        (Some(_), Some(_)) => Err(errors::invalid_parameter(
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        )),
        (Some(SecretText(s)), None) => Ok(Some(NewValue {
            kind: ValueKind::String,
            bytes: Zeroizing::new(s.as_bytes().to_vec()),
        })),
        (None, Some(SecretText(b))) => {
            let bytes = Zeroizing::new(B64.decode(b.trim().as_bytes()).map_err(|_| {
                EcsError::new(
                    "SerializationException",
                    "Unable to parse the blob in member SecretBinary: it is not base64.",
                )
            })?);
            if bytes.is_empty() || bytes.len() > MAX_VALUE_BYTES {
                let bound = if bytes.is_empty() {
                    "greater than or equal to 1"
                } else {
                    "less than or equal to 65536"
                };
                return Err(errors::validation(format!(
                    "1 validation error detected: Value at 'secretBinary' failed to satisfy constraint: Member must have length {bound}"
                )));
            }
            Ok(Some(NewValue {
                kind: ValueKind::Binary,
                bytes,
            }))
        }
        (None, None) => Ok(None),
    }
}

/// A secret's name: 1 to 512 of ASCII letters, digits and `/_+=.@-` (the length is the
/// model's; the characters are Secrets Manager's own rule, answered as it answers it).
pub fn check_name(name: &str) -> EcsResult<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(errors::validation(
            "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagInput {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// Tags a secret may have at most.
pub const MAX_TAGS: usize = 50;

/// Tags as given: each with a key, none under the reserved `aws:` prefix; a key given twice
/// keeps its last value.
pub fn tags(given: Vec<TagInput>) -> EcsResult<Vec<SecretTag>> {
    let mut out: Vec<SecretTag> = Vec::new();
    for t in given {
        let Some(key) = t.key else {
            return Err(errors::invalid_parameter("A tag must have a Key."));
        };
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(errors::invalid_parameter(format!(
                "Invalid tag key {key}: the aws: prefix is reserved for AWS use."
            )));
        }
        let value = t.value.unwrap_or_default();
        merge_tag(&mut out, SecretTag { key, value });
    }
    Ok(out)
}

/// Sets `tag` in `tags`, replacing the value of a tag with the same key.
pub fn merge_tag(tags: &mut Vec<SecretTag>, tag: SecretTag) {
    match tags.iter_mut().find(|t| t.key == tag.key) {
        Some(t) => t.value = tag.value,
        None => tags.push(tag),
    }
}

pub fn check_tag_count(tags: &[SecretTag]) -> EcsResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(errors::invalid_parameter(format!(
            "A secret can have at most {MAX_TAGS} tags."
        )));
    }
    Ok(())
}

/// ListSecrets' `Filters[]` entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterInput {
    pub key: Option<String>,
    pub values: Option<Vec<String>>,
}

/// What a filter looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FilterKey {
    Description,
    Name,
    TagKey,
    TagValue,
    PrimaryRegion,
    OwningService,
    All,
}

/// A filter checked and split: the values it must match (any of) and those it must not
/// (the ones given with a leading `!`).
pub struct Filter {
    pub key: FilterKey,
    pub positive: Vec<String>,
    pub negative: Vec<String>,
}

pub fn filters(given: Vec<FilterInput>) -> EcsResult<Vec<Filter>> {
    given
        .into_iter()
        .map(|f| {
            let key = match f.key.as_deref() {
                Some("description") => FilterKey::Description,
                Some("name") => FilterKey::Name,
                Some("tag-key") => FilterKey::TagKey,
                Some("tag-value") => FilterKey::TagValue,
                Some("primary-region") => FilterKey::PrimaryRegion,
                Some("owning-service") => FilterKey::OwningService,
                Some("all") => FilterKey::All,
                // The model's enum refuses any other key before this runs.
                _ => return Err(errors::invalid_parameter("A filter must have a Key.")),
            };
            let values = f.values.unwrap_or_default();
            if values.is_empty() {
                return Err(errors::invalid_parameter(
                    "A filter must have at least one value in Values.",
                ));
            }
            let (negative, positive): (Vec<String>, Vec<String>) =
                values.into_iter().partition(|v| v.starts_with('!'));
            Ok(Filter {
                key,
                positive,
                negative: negative.into_iter().map(|v| v[1..].to_string()).collect(),
            })
        })
        .collect()
}

/// What a secret shows to ListSecrets' filters.
pub struct Searchable<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub tags: &'a [SecretTag],
}

impl Filter {
    /// Whether the secret passes: it matches one of the plain values (when there are any) and
    /// none of the negated ones. `name`, `tag-key` and `tag-value` are case-sensitive prefix
    /// matches, `description` a case-insensitive one; `all` splits the value into words and
    /// wants each word to start a word of the name, description, a tag key or a tag value,
    /// ignoring case, as the Secrets Manager console's search does.
    pub fn matches(&self, s: &Searchable) -> bool {
        let hit = |v: &String| self.hit(v, s);
        (self.positive.is_empty() || self.positive.iter().any(hit))
            && !self.negative.iter().any(hit)
    }

    fn hit(&self, value: &str, s: &Searchable) -> bool {
        match self.key {
            FilterKey::Name => s.name.starts_with(value),
            FilterKey::Description => s
                .description
                .is_some_and(|d| d.to_lowercase().starts_with(&value.to_lowercase())),
            FilterKey::TagKey => s.tags.iter().any(|t| t.key.starts_with(value)),
            FilterKey::TagValue => s.tags.iter().any(|t| t.value.starts_with(value)),
            // Gantry's secrets are not replicated and no service owns them.
            FilterKey::PrimaryRegion | FilterKey::OwningService => false,
            FilterKey::All => {
                let mut fields: Vec<&str> = vec![s.name];
                fields.extend(s.description);
                for t in s.tags {
                    fields.push(&t.key);
                    fields.push(&t.value);
                }
                let field_words: Vec<String> = fields.iter().flat_map(|f| words(f)).collect();
                let wanted = words(value);
                !wanted.is_empty()
                    && wanted
                        .iter()
                        .all(|w| field_words.iter().any(|f| f.starts_with(w.as_str())))
            }
        }
    }
}

/// `text` cut into lower-case words where the console's search cuts it: at anything not a
/// letter or digit, between a letter and a digit, and where lower case turns to upper case
/// (`credsDatabase#892` → `creds`, `database`, `892`).
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev: Option<char> = None;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev = None;
            continue;
        }
        if let Some(p) = prev {
            let boundary =
                (p.is_alphabetic() != c.is_alphabetic()) || (p.is_lowercase() && c.is_uppercase());
            if boundary && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.extend(c.to_lowercase());
        prev = Some(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// GetRandomPassword's input.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct PasswordInput {
    pub password_length: Option<i64>,
    pub exclude_characters: Option<String>,
    pub exclude_numbers: Option<bool>,
    pub exclude_punctuation: Option<bool>,
    pub exclude_uppercase: Option<bool>,
    pub exclude_lowercase: Option<bool>,
    pub include_space: Option<bool>,
    pub require_each_included_type: Option<bool>,
}

/// The punctuation Secrets Manager draws from.
pub const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// A password as GetRandomPassword makes it: `PasswordLength` (32 by default) characters from
/// the included types less `ExcludeCharacters`, with at least one of each included type
/// unless `RequireEachIncludedType` is false. Drawn from the thread RNG (ChaCha, seeded by
/// the OS).
pub fn random_password(input: &PasswordInput) -> EcsResult<Zeroizing<String>> {
    let length = input.password_length.unwrap_or(32);
    // The model bounds it to 1..=4096 before this runs; a defensive check all the same.
    let length = usize::try_from(length)
        .ok()
        .filter(|n| (1..=4096).contains(n))
        .ok_or_else(|| errors::invalid_parameter("PasswordLength must be between 1 and 4096."))?;
    let excluded: Vec<char> = input
        .exclude_characters
        .as_deref()
        .unwrap_or("")
        .chars()
        .collect();
    let set = |chars: &str, wanted: bool| -> Vec<char> {
        if !wanted {
            return Vec::new();
        }
        chars.chars().filter(|c| !excluded.contains(c)).collect()
    };
    let types: Vec<Vec<char>> = [
        set(
            "abcdefghijklmnopqrstuvwxyz",
            !input.exclude_lowercase.unwrap_or(false),
        ),
        set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            !input.exclude_uppercase.unwrap_or(false),
        ),
        set("0123456789", !input.exclude_numbers.unwrap_or(false)),
        set(PUNCTUATION, !input.exclude_punctuation.unwrap_or(false)),
        set(" ", input.include_space.unwrap_or(false)),
    ]
    .into_iter()
    .filter(|t| !t.is_empty())
    .collect();
    let pool: Vec<char> = types.iter().flatten().copied().collect();
    if pool.is_empty() {
        return Err(errors::invalid_parameter(
            "The password can't be generated: every character type is excluded.",
        ));
    }
    let require_each = input.require_each_included_type.unwrap_or(true);
    if require_each && length < types.len() {
        return Err(errors::invalid_parameter(
            "Password length is too short based on the required types.",
        ));
    }
    let mut rng = rand::rng();
    let mut chars: Zeroizing<Vec<char>> = Zeroizing::new(Vec::with_capacity(length));
    if require_each {
        for t in &types {
            chars.push(t[rng.random_range(0..t.len())]);
        }
    }
    while chars.len() < length {
        chars.push(pool[rng.random_range(0..pool.len())]);
    }
    chars.shuffle(&mut rng);
    Ok(Zeroizing::new(chars.iter().collect()))
}

/// A Secrets Manager list token: `offset` into the ordered list, opaque to clients.
pub fn next_token(offset: usize) -> String {
    B64.encode(format!("secretsmanager:{offset}"))
}

pub fn token_offset(token: &str) -> EcsResult<usize> {
    B64.decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.strip_prefix("secretsmanager:")
                .and_then(|n| n.parse().ok())
        })
        .ok_or_else(errors::invalid_next_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Option<SecretText> {
        Some(SecretText(Zeroizing::new(s.to_string())))
    }

    #[test]
    fn names_are_letters_digits_and_a_few_marks() {
        for ok in [
            "db",
            "prod/db-password",
            "a_b+c=d.e@f-g",
            "Valid/_+=.@-Name-a1b2c3-",
        ] {
            check_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "has space", "colon:no", "star*", "ünïcode", "#hash"] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.code, "ValidationException", "{bad}");
            assert!(e.message.starts_with("Invalid name."), "{}", e.message);
        }
    }

    #[test]
    fn a_value_is_a_string_or_base64_binary_never_both() {
        let v = value(text("hunter2"), None).unwrap().unwrap();
        assert_eq!(
            (v.kind, v.bytes.as_slice()),
            (ValueKind::String, &b"hunter2"[..])
        );
        let v = value(None, text("AAEC/w==")).unwrap().unwrap();
        assert_eq!(
            (v.kind, v.bytes.as_slice()),
            (ValueKind::Binary, &[0u8, 1, 2, 255][..])
        );
        assert!(value(None, None).unwrap().is_none());
        let both = value(text("a"), text("AA==")).err().expect("both refused");
        assert_eq!(both.code, "InvalidParameterException");
        let bad = value(None, text("not base64!")).err().expect("refused");
        assert_eq!(bad.code, "SerializationException");
        assert!(!bad.message.contains("not base64!"), "{}", bad.message);
        let big = B64.encode(vec![7u8; MAX_VALUE_BYTES + 1]);
        let e = value(None, text(&big)).err().expect("too big");
        assert_eq!(e.code, "ValidationException");
        assert!(e.message.contains("'secretBinary'"), "{}", e.message);
        value(None, text(&B64.encode(vec![7u8; MAX_VALUE_BYTES]))).unwrap();
    }

    #[test]
    fn tags_need_keys_keep_the_last_value_and_refuse_the_aws_prefix() {
        let t = |k: Option<&str>, v: Option<&str>| TagInput {
            key: k.map(str::to_string),
            value: v.map(str::to_string),
        };
        let got = tags(vec![
            t(Some("a"), Some("1")),
            t(Some("b"), None),
            t(Some("a"), Some("2")),
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![
                SecretTag {
                    key: "a".into(),
                    value: "2".into()
                },
                SecretTag {
                    key: "b".into(),
                    value: String::new()
                },
            ]
        );
        assert!(tags(vec![t(None, Some("v"))]).is_err());
        assert!(tags(vec![t(Some("AWS:x"), Some("v"))]).is_err());
        let many: Vec<SecretTag> = (0..=MAX_TAGS)
            .map(|i| SecretTag {
                key: i.to_string(),
                value: String::new(),
            })
            .collect();
        assert!(check_tag_count(&many).is_err());
        assert!(check_tag_count(&many[..MAX_TAGS]).is_ok());
    }

    fn filter(key: &str, values: &[&str]) -> Filter {
        filters(vec![FilterInput {
            key: Some(key.into()),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }])
        .unwrap()
        .remove(0)
    }

    #[test]
    fn filters_match_prefixes_with_each_keys_case_rule_and_negation() {
        let tags = vec![SecretTag {
            key: "Team".into(),
            value: "core-db".into(),
        }];
        let s = Searchable {
            name: "prod/DatabasePassword",
            description: Some("Main database credentials"),
            tags: &tags,
        };
        assert!(filter("name", &["prod/"]).matches(&s));
        assert!(
            !filter("name", &["PROD/"]).matches(&s),
            "name is case-sensitive"
        );
        assert!(
            !filter("name", &["Database"]).matches(&s),
            "a prefix, not a substring"
        );
        assert!(filter("description", &["main DATA"]).matches(&s));
        assert!(filter("tag-key", &["Te"]).matches(&s));
        assert!(!filter("tag-key", &["te"]).matches(&s));
        assert!(filter("tag-value", &["core"]).matches(&s));
        assert!(filter("name", &["x", "prod"]).matches(&s), "any value");
        assert!(!filter("name", &["!prod"]).matches(&s));
        assert!(filter("name", &["!dev"]).matches(&s));
        assert!(!filter("name", &["prod", "!prod/Data"]).matches(&s));
        assert!(filter("all", &["database"]).matches(&s));
        assert!(filter("all", &["PASSWORD core"]).matches(&s));
        assert!(!filter("all", &["password staging"]).matches(&s));
        assert!(filter("all", &["credsDatabase"]).matches(&Searchable {
            name: "creds-database",
            description: None,
            tags: &[],
        }));
        assert!(!filter("primary-region", &["us-east-1"]).matches(&s));
        let no_values = filters(vec![FilterInput {
            key: Some("name".into()),
            values: None,
        }]);
        assert!(no_values.is_err());
    }

    #[test]
    fn words_split_where_the_console_search_does() {
        assert_eq!(words("credsDatabase#892"), ["creds", "database", "892"]);
        assert_eq!(words("My_Secret"), ["my", "secret"]);
        assert_eq!(words("db2prod"), ["db", "2", "prod"]);
        assert!(words("/_=").is_empty());
    }

    fn password(f: impl FnOnce(&mut PasswordInput)) -> EcsResult<Zeroizing<String>> {
        let mut input = PasswordInput::default();
        f(&mut input);
        random_password(&input)
    }

    #[test]
    fn random_passwords_follow_every_option() {
        let p = password(|_| {}).unwrap();
        assert_eq!(p.chars().count(), 32);
        assert!(p.chars().any(|c| c.is_ascii_lowercase()));
        assert!(p.chars().any(|c| c.is_ascii_uppercase()));
        assert!(p.chars().any(|c| c.is_ascii_digit()));
        assert!(p.chars().any(|c| PUNCTUATION.contains(c)));
        assert!(!p.contains(' '));

        let p = password(|i| {
            i.password_length = Some(200);
            i.exclude_punctuation = Some(true);
            i.exclude_uppercase = Some(true);
            i.exclude_characters = Some("abc0".into());
            i.include_space = Some(true);
        })
        .unwrap();
        assert_eq!(p.len(), 200);
        assert!(p.chars().all(
            |c| (c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' ') && !"abc0".contains(c)
        ));
        assert!(p.contains(' '), "space is a required type once included");

        let digits = password(|i| {
            i.password_length = Some(4096);
            i.exclude_lowercase = Some(true);
            i.exclude_uppercase = Some(true);
            i.exclude_punctuation = Some(true);
        })
        .unwrap();
        assert!(digits.chars().all(|c| c.is_ascii_digit()));
        // 4096 digits from ten: each appears (a uniform draw misses one with p ≈ 1e-186).
        assert!(('0'..='9').all(|d| digits.contains(d)));

        let e = password(|i| i.password_length = Some(3)).unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        password(|i| {
            i.password_length = Some(3);
            i.require_each_included_type = Some(false);
        })
        .unwrap();
        let none = password(|i| {
            i.exclude_lowercase = Some(true);
            i.exclude_uppercase = Some(true);
            i.exclude_numbers = Some(true);
            i.exclude_punctuation = Some(true);
        });
        assert_eq!(none.unwrap_err().code, "InvalidParameterException");
        // Excluding every character of a type drops the type.
        let p = password(|i| {
            i.password_length = Some(4);
            i.exclude_characters = Some("0123456789".into());
        })
        .unwrap();
        assert!(!p.chars().any(|c| c.is_ascii_digit()));
        let a = password(|_| {}).unwrap();
        let b = password(|_| {}).unwrap();
        assert_ne!(*a, *b);
    }

    #[test]
    fn list_tokens_round_trip_and_garbage_is_invalid_next_token() {
        assert_eq!(token_offset(&next_token(42)).unwrap(), 42);
        let e = token_offset("garbage").unwrap_err();
        assert_eq!(e.code, "InvalidNextTokenException");
    }
}
