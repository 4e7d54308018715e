//! CloudWatch Logs' filter patterns for unstructured events (FilterLogEvents' `filterPattern`,
//! `aws logs tail --filter-pattern`): terms are case-sensitive and must all appear (`ERROR
//! timeout`); a double-quoted term is one phrase, spaces and symbols included (`"user=42 id"`,
//! with `\"` and `\\` inside); `-term` excludes events that contain it; `?term`s match
//! events with any of them (`?ERROR ?WARN`) — and, as CloudWatch documents, are ignored when
//! the pattern has other terms too (`?ERROR ?WARN REQUEST` matches every event with REQUEST).
//! An empty pattern, or `""`, matches every event. JSON (`{ $.x = 1 }`), space-delimited
//! (`[ip, user, ...]`) and regular-expression (`%...%`) patterns are refused as not supported
//! rather than matched as text, which would silently find nothing.

use gantry_model::EcsError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPattern {
    all: Vec<String>,
    none: Vec<String>,
    any: Vec<String>,
}

impl FilterPattern {
    pub fn parse(pattern: &str) -> Result<FilterPattern, EcsError> {
        let trimmed = pattern.trim();
        if let Some(kind) = match trimmed.chars().next() {
            Some('{') => Some("JSON"),
            Some('[') => Some("space-delimited"),
            Some('%') => Some("regular-expression"),
            _ => None,
        } {
            return Err(EcsError::invalid_parameter(format!(
                "Gantry does not support {kind} filter patterns yet: use terms, \"quoted phrases\", -exclusions and ?alternatives."
            )));
        }
        let mut parsed = FilterPattern {
            all: Vec::new(),
            none: Vec::new(),
            any: Vec::new(),
        };
        for token in tokens(trimmed)? {
            let (list, term) = if let Some(rest) = token.strip_prefix('-') {
                (&mut parsed.none, rest)
            } else if let Some(rest) = token.strip_prefix('?') {
                (&mut parsed.any, rest)
            } else {
                (&mut parsed.all, token.as_str())
            };
            let term = unquote(term);
            if !term.is_empty() {
                list.push(term);
            }
        }
        Ok(parsed)
    }

    pub fn matches(&self, message: &str) -> bool {
        let only_alternatives = self.all.is_empty() && self.none.is_empty();
        if only_alternatives && !self.any.is_empty() {
            return self.any.iter().any(|t| message.contains(t.as_str()));
        }
        self.all.iter().all(|t| message.contains(t.as_str()))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
    }
}

/// The term's text: a quoted phrase without its quotes and with `\"` and `\\` read as `"`
/// and `\` (as CDK writes them).
fn unquote(term: &str) -> String {
    match term.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match (c, chars.clone().next()) {
                    ('\\', Some(next @ ('"' | '\\'))) => {
                        out.push(next);
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            out
        }
        None => term.to_string(),
    }
}

/// The pattern's terms: split at spaces outside double quotes, each keeping its quotes and
/// its `-`/`?` mark.
fn tokens(pattern: &str) -> Result<Vec<String>, EcsError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in pattern.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                current.push(c);
            }
            '\\' if quoted => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(EcsError::invalid_parameter(format!(
            "Invalid filter pattern '{pattern}': a quoted phrase is not closed."
        )));
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeps(pattern: &str, message: &str) -> bool {
        FilterPattern::parse(pattern)
            .expect("pattern")
            .matches(message)
    }

    #[test]
    fn every_term_must_appear_case_sensitively() {
        assert!(keeps("ERROR timeout", "ERROR: db timeout"));
        assert!(!keeps("ERROR timeout", "ERROR: db refused"));
        assert!(!keeps("error", "ERROR"));
        assert!(keeps("", "anything"));
        assert!(keeps("\"\"", "anything"));
    }

    #[test]
    fn phrases_exclusions_and_alternatives() {
        assert!(keeps("\"user=42 id\"", "login user=42 id=7"));
        assert!(!keeps("\"user=42 id\"", "login user=42, id=7"));
        assert!(keeps("ERROR -Exiting", "ERROR: retrying"));
        assert!(!keeps("ERROR -Exiting", "ERROR: Exiting now"));
        assert!(keeps("?ERROR ?WARN", "WARN: disk"));
        assert!(!keeps("?ERROR ?WARN", "INFO: fine"));
        // Alternatives beside other terms are ignored, as CloudWatch documents.
        assert!(keeps("?ERROR ?ARGUMENTS REQUEST", "[INFO] REQUEST FAILED"));
        assert!(!keeps("?ERROR ?ARGUMENTS REQUEST", "[ERROR] ARGUMENTS"));
        assert!(keeps(r#""say \"hi\" now""#, r#"they say "hi" now"#));
        assert!(keeps(r#""C:\\temp""#, r"path C:\temp"));
        assert!(keeps("-\"no such\"", "found it"));
    }

    #[test]
    fn structured_patterns_and_open_quotes_are_refused() {
        for p in ["{ $.level = \"error\" }", "[ip, user]", "%ERR.*%", "\"open"] {
            let e = FilterPattern::parse(p).unwrap_err();
            assert_eq!(e.code, "InvalidParameterException", "{p}");
        }
    }
}
