//! A small regular-expression engine for the `matches` (`=~`) and `not_matches` (`!~`)
//! operators of the cluster query language.
//!
//! ECS documents the argument as a Java regular expression. The workspace has no regex crate,
//! and attribute values are short (at most 128 characters), so a backtracking matcher over
//! the commonly used subset is enough: literals, `.`, character classes (`[a-z]`, `[^0-9]`,
//! `\d \w \s` and their negations), groups `( )` / `(?: )`, alternation `|`, the quantifiers
//! `* + ? {n} {n,} {n,m}` (a trailing lazy `?` is accepted; it cannot change whether a whole
//! string matches), and the anchors `^ $`.
//!
//! Like Java's `String.matches`, a pattern must match the *whole* value: `t2.*` matches
//! `t2.micro`, but `t2` does not. A step budget bounds pathological patterns such as `(a*)*b`;
//! when it runs out the value is treated as not matching rather than hanging the scheduler.

use std::cell::Cell;

/// The most backtracking steps spent on one value before giving up (treated as no match).
const STEP_BUDGET: usize = 200_000;
/// Deepest group nesting accepted, to keep the recursive parser's stack bounded.
const MAX_GROUP_DEPTH: usize = 32;

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    root: Alternation,
}

/// `a|b|c`: one sequence per branch.
#[derive(Debug, Clone, PartialEq)]
struct Alternation(Vec<Vec<Piece>>);

/// A node with its repetition bounds.
#[derive(Debug, Clone, PartialEq)]
struct Piece {
    node: Node,
    min: u32,
    max: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(char),
    AnyChar,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
    Group(Box<Alternation>),
    Start,
    End,
}

#[derive(Debug, Clone, PartialEq)]
enum ClassItem {
    Range(char, char),
    Digit(bool),
    Word(bool),
    Space(bool),
}

impl ClassItem {
    fn contains(&self, c: char) -> bool {
        match *self {
            ClassItem::Range(lo, hi) => lo <= c && c <= hi,
            ClassItem::Digit(negated) => c.is_ascii_digit() != negated,
            ClassItem::Word(negated) => (c.is_ascii_alphanumeric() || c == '_') != negated,
            ClassItem::Space(negated) => c.is_whitespace() != negated,
        }
    }
}

impl Pattern {
    /// Compiles `source`, or explains why it is not a pattern this engine understands.
    pub fn parse(source: &str) -> Result<Pattern, String> {
        let mut parser = Parser {
            chars: source.chars().collect(),
            pos: 0,
            depth: 0,
        };
        let root = parser.alternation()?;
        if parser.pos < parser.chars.len() {
            // Only an unbalanced `)` stops the top-level alternation early.
            return Err(format!("unbalanced ')' in pattern '{source}'"));
        }
        Ok(Pattern { root })
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        let input: Vec<char> = value.chars().collect();
        let matcher = Matcher {
            input: &input,
            steps: Cell::new(0),
        };
        matcher.alternation(&self.root, 0, &mut |end| end == input.len())
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn alternation(&mut self) -> Result<Alternation, String> {
        let mut branches = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.sequence()?);
        }
        Ok(Alternation(branches))
    }

    fn sequence(&mut self) -> Result<Vec<Piece>, String> {
        let mut pieces = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let node = self.atom()?;
            let (min, max) = self.quantifier()?;
            if max.is_some_and(|max| max < min) {
                return Err(format!("bad repetition {{{min},{max:?}}} in pattern"));
            }
            pieces.push(Piece { node, min, max });
        }
        Ok(pieces)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let Some(c) = self.bump() else {
            return Err("pattern ended unexpectedly".to_string());
        };
        Ok(match c {
            '.' => Node::AnyChar,
            '^' => Node::Start,
            '$' => Node::End,
            '(' => {
                if self.chars[self.pos..].starts_with(&['?', ':']) {
                    self.pos += 2;
                }
                self.depth += 1;
                if self.depth > MAX_GROUP_DEPTH {
                    return Err("pattern groups nested too deeply".to_string());
                }
                let inner = self.alternation()?;
                self.depth -= 1;
                if self.bump() != Some(')') {
                    return Err("unclosed '(' in pattern".to_string());
                }
                Node::Group(Box::new(inner))
            }
            '[' => self.class()?,
            '\\' => match self.escape()? {
                Escaped::Char(c) => Node::Literal(c),
                Escaped::Class(item) => Node::Class {
                    negated: false,
                    items: vec![item],
                },
            },
            '*' | '+' | '?' | '{' => {
                return Err(format!("nothing to repeat before '{c}' in pattern"));
            }
            other => Node::Literal(other),
        })
    }

    fn escape(&mut self) -> Result<Escaped, String> {
        let Some(c) = self.bump() else {
            return Err("pattern ends with a lone '\\'".to_string());
        };
        Ok(match c {
            'd' => Escaped::Class(ClassItem::Digit(false)),
            'D' => Escaped::Class(ClassItem::Digit(true)),
            'w' => Escaped::Class(ClassItem::Word(false)),
            'W' => Escaped::Class(ClassItem::Word(true)),
            's' => Escaped::Class(ClassItem::Space(false)),
            'S' => Escaped::Class(ClassItem::Space(true)),
            't' => Escaped::Char('\t'),
            'n' => Escaped::Char('\n'),
            c if c.is_ascii_alphanumeric() => {
                return Err(format!("unsupported escape '\\{c}' in pattern"));
            }
            other => Escaped::Char(other),
        })
    }

    fn class(&mut self) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.bump() else {
                return Err("unclosed '[' in pattern".to_string());
            };
            // A `]` right after `[` or `[^` is a literal, as in Java.
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.escape()? {
                    Escaped::Char(c) => c,
                    Escaped::Class(item) => {
                        items.push(item);
                        continue;
                    }
                }
            } else {
                c
            };
            let is_range = self.peek() == Some('-') && self.chars.get(self.pos + 1) != Some(&']');
            if is_range && self.chars.get(self.pos + 1).is_some() {
                self.pos += 1;
                let hi = match self.bump() {
                    Some('\\') => match self.escape()? {
                        Escaped::Char(c) => c,
                        Escaped::Class(_) => {
                            return Err("a class escape cannot end a range in pattern".to_string())
                        }
                    },
                    Some(c) => c,
                    None => return Err("unclosed '[' in pattern".to_string()),
                };
                if hi < lo {
                    return Err(format!("bad range '{lo}-{hi}' in pattern"));
                }
                items.push(ClassItem::Range(lo, hi));
            } else {
                items.push(ClassItem::Range(lo, lo));
            }
        }
        Ok(Node::Class { negated, items })
    }

    fn quantifier(&mut self) -> Result<(u32, Option<u32>), String> {
        let bounds = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => return self.braces(),
            _ => return Ok((1, Some(1))),
        };
        self.pos += 1;
        self.skip_lazy();
        Ok(bounds)
    }

    fn braces(&mut self) -> Result<(u32, Option<u32>), String> {
        let start = self.pos;
        let Some(len) = self.chars[start..].iter().position(|c| *c == '}') else {
            return Err("unclosed '{' in pattern".to_string());
        };
        let body: String = self.chars[start + 1..start + len].iter().collect();
        self.pos = start + len + 1;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("bad repetition '{{{body}}}' in pattern"))
        };
        let bounds = match body.split_once(',') {
            None => {
                let n = number(&body)?;
                (n, Some(n))
            }
            Some((lo, hi)) if hi.trim().is_empty() => (number(lo)?, None),
            Some((lo, hi)) => (number(lo)?, Some(number(hi)?)),
        };
        self.skip_lazy();
        Ok(bounds)
    }

    /// `*?`, `+?`, ... are lazy in Java; for a whole-string match laziness changes nothing.
    fn skip_lazy(&mut self) {
        if self.peek() == Some('?') {
            self.pos += 1;
        }
    }
}

enum Escaped {
    Char(char),
    Class(ClassItem),
}

/// Backtracking matcher in continuation-passing style: each function calls `k` with every
/// position at which its element can end, and stops as soon as `k` accepts one.
struct Matcher<'a> {
    input: &'a [char],
    steps: Cell<usize>,
}

impl Matcher<'_> {
    fn tick(&self) -> bool {
        let steps = self.steps.get() + 1;
        self.steps.set(steps);
        steps <= STEP_BUDGET
    }

    fn alternation(&self, alt: &Alternation, pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        alt.0.iter().any(|seq| self.sequence(seq, pos, k))
    }

    fn sequence(&self, seq: &[Piece], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        match seq.split_first() {
            None => k(pos),
            Some((piece, rest)) => {
                self.piece(piece, 0, pos, &mut |next| self.sequence(rest, next, k))
            }
        }
    }

    /// Greedy repetition: try one more occurrence first, then try stopping here.
    fn piece(
        &self,
        piece: &Piece,
        count: u32,
        pos: usize,
        k: &mut dyn FnMut(usize) -> bool,
    ) -> bool {
        if !self.tick() {
            return false;
        }
        if piece.max.is_none_or(|max| count < max) {
            let more = self.node(&piece.node, pos, &mut |next| {
                if next == pos {
                    // An empty occurrence can be repeated any number of times, so the
                    // minimum is satisfied; looping on it would never terminate.
                    k(next)
                } else {
                    self.piece(piece, count + 1, next, k)
                }
            });
            if more {
                return true;
            }
        }
        count >= piece.min && k(pos)
    }

    fn node(&self, node: &Node, pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        let current = self.input.get(pos).copied();
        match node {
            Node::Literal(c) => current == Some(*c) && k(pos + 1),
            Node::AnyChar => current.is_some_and(|c| c != '\n') && k(pos + 1),
            Node::Class { negated, items } => {
                current.is_some_and(|c| items.iter().any(|item| item.contains(c)) != *negated)
                    && k(pos + 1)
            }
            Node::Group(inner) => self.alternation(inner, pos, k),
            Node::Start => pos == 0 && k(pos),
            Node::End => pos == self.input.len() && k(pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn matches(pattern: &str, value: &str) -> bool {
        Pattern::parse(pattern).unwrap().is_match(value)
    }

    #[test]
    fn whole_value_must_match() {
        assert!(matches("t2.*", "t2.micro"));
        assert!(matches("g2.*", "g2.2xlarge"));
        assert!(!matches("t2", "t2.micro"));
        assert!(!matches("t2.*", "mt2.micro"));
        assert!(matches("^t2\\.micro$", "t2.micro"));
        assert!(!matches("t2\\.micro", "t2xmicro"));
    }

    #[test]
    fn classes_groups_alternation_and_counts() {
        assert!(matches("(t2|m5)\\.(micro|large)", "m5.large"));
        assert!(!matches("(t2|m5)\\.(micro|large)", "c5.large"));
        assert!(matches("us-east-1[a-c]", "us-east-1b"));
        assert!(!matches("us-east-1[a-c]", "us-east-1d"));
        assert!(matches("us-east-1[^a-c]", "us-east-1d"));
        assert!(matches("i-\\w{8}", "i-abcd1234"));
        assert!(!matches("i-\\w{8}", "i-abcd123"));
        assert!(matches("v\\d+(\\.\\d+){1,2}", "v1.14.5"));
        assert!(matches("a?b+c*", "bbb"));
        assert!(matches("(?:x)*y", "xxy"));
        assert!(matches(".*?z", "abcz"));
    }

    #[test]
    fn pathological_patterns_terminate() {
        assert!(!matches("(a*)*b", &"a".repeat(60)));
        assert!(matches("(a|)*", "aaa"));
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in ["(", "a)", "[a", "*a", "a{2", "a{3,1}", "\\q", "a\\"] {
            assert!(Pattern::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
