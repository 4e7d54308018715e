//! CloudWatch Logs' filter patterns for unstructured events (FilterLogEvents' `filterPattern`,
//! `aws logs tail --filter-pattern`): terms are case-sensitive and must all appear (`ERROR
//! timeout`); a double-quoted term is one phrase, spaces and symbols included (`"user=42 id"`);
//! `-term` excludes events that contain it; `?term`s form an OR group, of which at least one
//! must appear (`?ERROR ?WARN`). An empty pattern, or `""`, matches every event. JSON (`{ $.x =
//! 1 }`), space-delimited (`[ip, user, ...]`) and regular-expression (`%...%`) patterns are
//! refused as not supported rather than matched as text, which would silently find nothing.

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
                list.push(term.to_string());
            }
        }
        Ok(parsed)
    }

    pub fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
    }
}

fn unquote(term: &str) -> &str {
    term.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(term)
}

/// The pattern's terms: split at spaces outside double quotes, each keeping its quotes and
/// its `-`/`?` mark.
fn tokens(pattern: &str) -> Result<Vec<String>, EcsError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in pattern.chars() {
        match c {
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
        assert!(keeps("db ?ERROR ?WARN", "db WARN"));
        assert!(!keeps("db ?ERROR ?WARN", "api WARN"));
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
