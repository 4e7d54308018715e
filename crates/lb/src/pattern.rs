//! ELBv2's wildcard patterns: `*` matches any run of characters (also none), `?` exactly one;
//! `\*` and `\?` match the literal characters (query-string conditions document the escape,
//! and it is harmless elsewhere).

/// One pattern, split into tokens once when a listener's rules are compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    tokens: Vec<Token>,
    case_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    AnyOne,
    AnyRun,
}

impl Pattern {
    pub fn new(text: &str, case_insensitive: bool) -> Pattern {
        let mut tokens = Vec::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => Token::AnyRun,
                '?' => Token::AnyOne,
                '\\' => match chars.next() {
                    Some(escaped) => Token::Char(fold(escaped, case_insensitive)),
                    None => Token::Char('\\'),
                },
                other => Token::Char(fold(other, case_insensitive)),
            };
            tokens.push(token);
        }
        Pattern {
            tokens,
            case_insensitive,
        }
    }

    /// Whether the whole of `text` matches (glob matching with one backtrack point, linear in
    /// practice and never exponential). ASCII text, the usual case, is matched without
    /// allocating.
    pub fn matches(&self, text: &str) -> bool {
        let case_insensitive = self.case_insensitive;
        if text.is_ascii() {
            glob(&self.tokens, text.as_bytes(), |want, got| {
                want == char::from(fold_byte(got, case_insensitive))
            })
        } else {
            let chars: Vec<char> = text.chars().collect();
            glob(&self.tokens, &chars, |want, got| {
                want == fold(got, case_insensitive)
            })
        }
    }
}

fn glob<T: Copy>(tokens: &[Token], text: &[T], same: impl Fn(char, T) -> bool) -> bool {
    let (mut t, mut p) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::AnyRun) => {
                backtrack = Some((p, t));
                p += 1;
                continue;
            }
            Some(Token::AnyOne) => {
                t += 1;
                p += 1;
                continue;
            }
            Some(Token::Char(c)) if same(*c, text[t]) => {
                t += 1;
                p += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((star, from)) => {
                p = star + 1;
                t = from + 1;
                backtrack = Some((star, from + 1));
            }
            None => return false,
        }
    }
    tokens[p..].iter().all(|token| *token == Token::AnyRun)
}

fn fold_byte(b: u8, case_insensitive: bool) -> u8 {
    if case_insensitive {
        b.to_ascii_lowercase()
    } else {
        b
    }
}

fn fold(c: char, case_insensitive: bool) -> char {
    if case_insensitive {
        c.to_ascii_lowercase()
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn wildcards_match_runs_and_single_characters() {
        let p = Pattern::new("/api/*", false);
        assert!(p.matches("/api/"));
        assert!(p.matches("/api/v1/users"));
        assert!(!p.matches("/api"));
        assert!(!p.matches("/API/x"));
        let q = Pattern::new("/img/??.png", false);
        assert!(q.matches("/img/ab.png"));
        assert!(!q.matches("/img/abc.png"));
        let r = Pattern::new("*.example.com", true);
        assert!(r.matches("www.EXAMPLE.com"));
        assert!(!r.matches("example.com"));
        assert!(Pattern::new("*a*b*c", false).matches("xxaxxbxxc"));
        assert!(!Pattern::new("*a*b*c", false).matches("xxaxxcxxb"));
        assert!(Pattern::new("a\\*", false).matches("a*"));
        assert!(!Pattern::new("a\\*", false).matches("ab"));
        assert!(Pattern::new("*", false).matches(""));
        assert!(Pattern::new("/caf?/*", false).matches("/café/x"));
        assert!(Pattern::new("*.EXAMPLE.com", true).matches("ünï.example.COM"));
    }
}
