//! The ECS cluster query language, as used by `memberOf` placement constraints.
//!
//! Grammar (keywords and operator words are case-insensitive):
//!
//! ```text
//! expr      := and_expr (("or" | "||") and_expr)*
//! and_expr  := unary (("and" | "&&") unary)*
//! unary     := ("not" | "!") unary | "(" expr ")" | predicate
//! predicate := subject operator [argument]
//! subject   := "attribute:" NAME | "task:group" | "agentConnected" | "runningTasksCount"
//! argument  := VALUE | "'" ... "'" | '"' ... '"' | "[" VALUE ("," VALUE)* "]"
//! ```
//!
//! Operators: `==`/`equals`, `!=`/`not_equals`, `>`/`greater_than`, `>=`/`greater_than_equal`,
//! `<`/`less_than`, `<=`/`less_than_equal`, `exists`, `!exists`/`not_exists`, `in`,
//! `!in`/`not_in`, `=~`/`matches`, `!~`/`not_matches` (Java-style regex, see [`Pattern`]).
//!
//! ECS also documents the subjects `ec2InstanceId`, `agentVersion` and `registeredAt`; the
//! scheduler's snapshot does not carry them, so they are rejected at validation time rather
//! than silently matching nothing.
//!
//! Semantics chosen where ECS's documentation is terse:
//! * Negative operators on an attribute (`!=`, `not_in`, `!~`) only select instances that
//!   *have* the attribute: ECS documents `attribute:stack != prod` as "instances with the
//!   custom attribute stack unless the value is prod". Use `not(attribute:stack == prod)` to
//!   include instances without it. An attribute registered without a value compares as `""`.
//! * `task:group` is multi-valued (one value per task on the instance). Positive operators hold
//!   when *any* task's group satisfies them; negative operators are their negation, so
//!   `task:group != database` also selects empty instances, like `not(task:group == database)`.
//!   `task:group exists` means "runs at least one task".
//! * `>`/`<`-style operators compare numerically when both sides are numbers, component-wise
//!   when both are dotted versions (`1.14.5`), and as strings otherwise (ISO dates order
//!   correctly as strings).

use std::cmp::Ordering;

use crate::pattern::Pattern;

/// ECS's limit on a constraint expression's length.
pub const MAX_EXPRESSION_LEN: usize = 2000;
/// Deepest nesting of parentheses / `not` accepted; bounds the recursive parser's stack.
const MAX_DEPTH: usize = 64;

/// What an expression is evaluated against: one container instance, as the scheduler sees it
/// (including tasks it has already placed on it in the current request).
pub trait Target {
    /// `None` when the instance lacks the attribute; `Some(None)` when it has it without a value.
    fn attribute(&self, name: &str) -> Option<Option<&str>>;
    fn agent_connected(&self) -> bool;
    fn running_tasks_count(&self) -> usize;
    /// Whether the group of any (non-stopped) task on the instance satisfies `test`.
    fn any_task_group(&self, test: &mut dyn FnMut(&str) -> bool) -> bool;
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Predicate(Predicate),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    subject: Subject,
    kind: PredicateKind,
}

#[derive(Debug, Clone, PartialEq)]
enum Subject {
    Attribute(String),
    TaskGroup,
    AgentConnected,
    RunningTasksCount,
}

#[derive(Debug, Clone, PartialEq)]
enum PredicateKind {
    Exists,
    NotExists,
    Is(Test),
    IsNot(Test),
}

/// A positive test on one value; negative operators wrap it in [`PredicateKind::IsNot`].
#[derive(Debug, Clone, PartialEq)]
enum Test {
    Equals(String),
    Compare(Comparison, String),
    In(Vec<String>),
    Matches(Pattern),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
}

impl Expr {
    /// Parses a cluster query language expression, or explains what is wrong with it.
    pub fn parse(source: &str) -> Result<Expr, String> {
        if source.chars().count() > MAX_EXPRESSION_LEN {
            return Err(format!(
                "expression is longer than {MAX_EXPRESSION_LEN} characters"
            ));
        }
        let mut parser = Parser {
            chars: source.chars().collect(),
            pos: 0,
            depth: 0,
        };
        parser.skip_ws();
        if parser.at_end() {
            return Err("expression is empty".to_string());
        }
        let expr = parser.or_expr()?;
        parser.skip_ws();
        if !parser.at_end() {
            return Err(parser.unexpected("'and', 'or' or the end of the expression"));
        }
        Ok(expr)
    }

    /// What the expression looks at, each with the value `target` has for it (for example
    /// `attribute:ecs.availability-zone is us-east-1b`), to explain why it selects or not.
    pub fn describe_values(&self, target: &dyn Target) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_values(target, &mut out);
        out.dedup();
        out
    }

    fn collect_values(&self, target: &dyn Target, out: &mut Vec<String>) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect_values(target, out);
                b.collect_values(target, out);
            }
            Expr::Not(e) => e.collect_values(target, out),
            Expr::Predicate(p) => {
                let described = match &p.subject {
                    Subject::Attribute(name) => match target.attribute(name) {
                        Some(Some(v)) => format!("attribute:{name} is {v}"),
                        Some(None) => format!("attribute:{name} is set (no value)"),
                        None => format!("attribute:{name} is not set"),
                    },
                    Subject::TaskGroup => {
                        let mut groups = Vec::new();
                        target.any_task_group(&mut |g| {
                            groups.push(g.to_string());
                            false
                        });
                        if groups.is_empty() {
                            "task:group: no tasks".to_string()
                        } else {
                            format!("task:group is {}", groups.join(", "))
                        }
                    }
                    Subject::AgentConnected => {
                        format!("agentConnected is {}", target.agent_connected())
                    }
                    Subject::RunningTasksCount => {
                        format!("runningTasksCount is {}", target.running_tasks_count())
                    }
                };
                if !out.contains(&described) {
                    out.push(described);
                }
            }
        }
    }

    pub fn eval(&self, target: &dyn Target) -> bool {
        match self {
            Expr::And(a, b) => a.eval(target) && b.eval(target),
            Expr::Or(a, b) => a.eval(target) || b.eval(target),
            Expr::Not(e) => !e.eval(target),
            Expr::Predicate(p) => p.eval(target),
        }
    }
}

impl Predicate {
    fn eval(&self, target: &dyn Target) -> bool {
        match &self.subject {
            Subject::Attribute(name) => {
                let value = target.attribute(name).map(|v| v.unwrap_or(""));
                match &self.kind {
                    PredicateKind::Exists => value.is_some(),
                    PredicateKind::NotExists => value.is_none(),
                    PredicateKind::Is(test) => value.is_some_and(|v| test.holds(v)),
                    PredicateKind::IsNot(test) => value.is_some_and(|v| !test.holds(v)),
                }
            }
            Subject::TaskGroup => match &self.kind {
                PredicateKind::Exists => target.any_task_group(&mut |_| true),
                PredicateKind::NotExists => !target.any_task_group(&mut |_| true),
                PredicateKind::Is(test) => target.any_task_group(&mut |g| test.holds(g)),
                PredicateKind::IsNot(test) => !target.any_task_group(&mut |g| test.holds(g)),
            },
            Subject::AgentConnected => {
                let value = if target.agent_connected() {
                    "true"
                } else {
                    "false"
                };
                self.kind.eval_present(value)
            }
            Subject::RunningTasksCount => self
                .kind
                .eval_present(&target.running_tasks_count().to_string()),
        }
    }
}

impl PredicateKind {
    /// For subjects every instance has exactly one value of.
    fn eval_present(&self, value: &str) -> bool {
        match self {
            PredicateKind::Exists => true,
            PredicateKind::NotExists => false,
            PredicateKind::Is(test) => test.holds(value),
            PredicateKind::IsNot(test) => !test.holds(value),
        }
    }
}

impl Test {
    fn holds(&self, value: &str) -> bool {
        match self {
            Test::Equals(arg) => value == arg,
            Test::In(args) => args.iter().any(|a| a == value),
            Test::Matches(pattern) => pattern.is_match(value),
            Test::Compare(op, arg) => {
                let ord = compare_values(value, arg);
                match op {
                    Comparison::Greater => ord == Ordering::Greater,
                    Comparison::GreaterEqual => ord != Ordering::Less,
                    Comparison::Less => ord == Ordering::Less,
                    Comparison::LessEqual => ord != Ordering::Greater,
                }
            }
        }
    }
}

/// Numbers numerically, dotted versions component-wise, anything else as strings.
fn compare_values(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        if let Some(ord) = x.partial_cmp(&y) {
            return ord;
        }
    }
    let version = |s: &str| -> Option<Vec<u64>> { s.split('.').map(|p| p.parse().ok()).collect() };
    if let (Some(x), Some(y)) = (version(a), version(b)) {
        return x.cmp(&y);
    }
    a.cmp(b)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

/// Characters that end a subject or an operator word.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || "=!<>~()[],'\"&|".contains(c)
}

fn is_word_char(c: char) -> bool {
    !is_delimiter(c)
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn rest_starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(k, c)| self.chars.get(self.pos + k) == Some(&c))
    }

    /// Consumes `word` (case-insensitively) if it is next and is not the prefix of a longer word.
    fn eat_keyword(&mut self, word: &str) -> bool {
        let len = word.chars().count();
        let Some(candidate) = self.chars.get(self.pos..self.pos + len) else {
            return false;
        };
        let same = candidate
            .iter()
            .zip(word.chars())
            .all(|(a, b)| a.eq_ignore_ascii_case(&b));
        let boundary = self
            .chars
            .get(self.pos + len)
            .is_none_or(|c| !is_word_char(*c));
        if same && boundary {
            self.pos += len;
        }
        same && boundary
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = self.rest_starts_with(symbol);
        if found {
            self.pos += symbol.chars().count();
        }
        found
    }

    fn unexpected(&self, expected: &str) -> String {
        let rest: String = self.chars[self.pos.min(self.chars.len())..]
            .iter()
            .take(20)
            .collect();
        if rest.is_empty() {
            format!("expected {expected} at the end of the expression")
        } else {
            format!("expected {expected} at offset {}, found '{rest}'", self.pos)
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression is nested too deeply".to_string());
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.and_expr()?;
        loop {
            self.skip_ws();
            if !(self.eat_symbol("||") || self.eat_keyword("or")) {
                return Ok(left);
            }
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
    }

    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            self.skip_ws();
            if !(self.eat_symbol("&&") || self.eat_keyword("and")) {
                return Ok(left);
            }
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.skip_ws();
        if self.eat_keyword("not") || self.eat_symbol("!") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.eat_symbol("(") {
            self.enter()?;
            let inner = self.or_expr()?;
            self.depth -= 1;
            self.skip_ws();
            if !self.eat_symbol(")") {
                return Err(self.unexpected("')'"));
            }
            return Ok(inner);
        }
        self.predicate().map(Expr::Predicate)
    }

    fn predicate(&mut self) -> Result<Predicate, String> {
        let subject = self.subject()?;
        self.skip_ws();
        let op = self.operator()?;
        let kind = match op {
            Operator::Exists => PredicateKind::Exists,
            Operator::NotExists => PredicateKind::NotExists,
            Operator::Equals => PredicateKind::Is(Test::Equals(self.value()?)),
            Operator::NotEquals => PredicateKind::IsNot(Test::Equals(self.value()?)),
            Operator::Compare(c) => PredicateKind::Is(Test::Compare(c, self.value()?)),
            Operator::In => PredicateKind::Is(Test::In(self.list()?)),
            Operator::NotIn => PredicateKind::IsNot(Test::In(self.list()?)),
            Operator::Matches => PredicateKind::Is(Test::Matches(self.pattern()?)),
            Operator::NotMatches => PredicateKind::IsNot(Test::Matches(self.pattern()?)),
        };
        Ok(Predicate { subject, kind })
    }

    fn subject(&mut self) -> Result<Subject, String> {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        if word.is_empty() {
            self.pos = start;
            return Err(self.unexpected("a subject such as attribute:<name> or task:group"));
        }
        let lower = word.to_ascii_lowercase();
        if lower.starts_with("attribute:") {
            let name = &word["attribute:".len()..];
            if name.is_empty() {
                return Err("'attribute:' must be followed by an attribute name".to_string());
            }
            return Ok(Subject::Attribute(name.to_string()));
        }
        match lower.as_str() {
            "task:group" => Ok(Subject::TaskGroup),
            "agentconnected" => Ok(Subject::AgentConnected),
            "runningtaskscount" => Ok(Subject::RunningTasksCount),
            "ec2instanceid" | "agentversion" | "registeredat" => Err(format!(
                "subject '{word}' is not supported in placement constraints by this cluster"
            )),
            _ => Err(format!(
                "unknown subject '{word}'; expected attribute:<name>, task:group, \
                 agentConnected or runningTasksCount"
            )),
        }
    }

    fn operator(&mut self) -> Result<Operator, String> {
        // `!exists` and `!in` are words after the `!`: match them with a word boundary (so
        // `!inx` is not `!in` followed by `x`) before the two-character `!=`/`!~`.
        const NEGATED_WORDS: [(&str, Operator); 2] =
            [("!exists", Operator::NotExists), ("!in", Operator::NotIn)];
        const SYMBOLS: [(&str, Operator); 8] = [
            ("==", Operator::Equals),
            ("!=", Operator::NotEquals),
            ("=~", Operator::Matches),
            ("!~", Operator::NotMatches),
            (">=", Operator::Compare(Comparison::GreaterEqual)),
            ("<=", Operator::Compare(Comparison::LessEqual)),
            (">", Operator::Compare(Comparison::Greater)),
            ("<", Operator::Compare(Comparison::Less)),
        ];
        const WORDS: [(&str, Operator); 12] = [
            ("equals", Operator::Equals),
            ("not_equals", Operator::NotEquals),
            (
                "greater_than_equal",
                Operator::Compare(Comparison::GreaterEqual),
            ),
            ("greater_than", Operator::Compare(Comparison::Greater)),
            ("less_than_equal", Operator::Compare(Comparison::LessEqual)),
            ("less_than", Operator::Compare(Comparison::Less)),
            ("exists", Operator::Exists),
            ("not_exists", Operator::NotExists),
            ("in", Operator::In),
            ("not_in", Operator::NotIn),
            ("matches", Operator::Matches),
            ("not_matches", Operator::NotMatches),
        ];
        for (word, op) in NEGATED_WORDS {
            if self.eat_keyword(word) {
                return Ok(op);
            }
        }
        for (symbol, op) in SYMBOLS {
            if self.eat_symbol(symbol) {
                return Ok(op);
            }
        }
        for (word, op) in WORDS {
            if self.eat_keyword(word) {
                return Ok(op);
            }
        }
        Err(self.unexpected("an operator (==, !=, >, >=, <, <=, exists, !exists, in, !in, =~, !~)"))
    }

    /// A single argument: quoted, or a bare run of characters up to whitespace, `&&`, `||` or
    /// an unbalanced `)` (so `not(task:group == db)` works and regexes may contain groups).
    fn value(&mut self) -> Result<String, String> {
        self.skip_ws();
        if let Some(quoted) = self.quoted()? {
            return Ok(quoted);
        }
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || self.rest_starts_with("&&") || self.rest_starts_with("||") {
                break;
            }
            if c == '(' {
                depth += 1;
            } else if c == ')' {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.unexpected("an argument"));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn quoted(&mut self) -> Result<Option<String>, String> {
        let Some(quote) = self.peek().filter(|c| *c == '\'' || *c == '"') else {
            return Ok(None);
        };
        let start = self.pos;
        self.pos += 1;
        let Some(len) = self.chars[self.pos..].iter().position(|c| *c == quote) else {
            self.pos = start;
            return Err(format!("unterminated quoted argument at offset {start}"));
        };
        let text = self.chars[self.pos..self.pos + len].iter().collect();
        self.pos += len + 1;
        Ok(Some(text))
    }

    /// `[a, b, 'c d']`. Bare items run to the next `,` or `]` and are trimmed.
    fn list(&mut self) -> Result<Vec<String>, String> {
        self.skip_ws();
        if !self.eat_symbol("[") {
            return Err(self.unexpected("an argument list such as [a, b]"));
        }
        let mut items = Vec::new();
        self.skip_ws();
        if self.eat_symbol("]") {
            return Ok(items);
        }
        loop {
            self.skip_ws();
            let item = match self.quoted()? {
                Some(q) => q,
                None => {
                    let start = self.pos;
                    while self.peek().is_some_and(|c| c != ',' && c != ']') {
                        self.pos += 1;
                    }
                    let item: String = self.chars[start..self.pos].iter().collect();
                    item.trim().to_string()
                }
            };
            if item.is_empty() {
                return Err(self.unexpected("a list item"));
            }
            items.push(item);
            self.skip_ws();
            if self.eat_symbol("]") {
                return Ok(items);
            }
            if !self.eat_symbol(",") {
                return Err(self.unexpected("',' or ']'"));
            }
        }
    }

    fn pattern(&mut self) -> Result<Pattern, String> {
        let source = self.value()?;
        Pattern::parse(&source).map_err(|e| format!("invalid regular expression: {e}"))
    }
}

#[derive(Debug, Clone, Copy)]
enum Operator {
    Equals,
    NotEquals,
    Compare(Comparison),
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Fake {
        attributes: BTreeMap<String, Option<String>>,
        groups: Vec<String>,
        connected: bool,
    }

    impl Target for Fake {
        fn attribute(&self, name: &str) -> Option<Option<&str>> {
            self.attributes.get(name).map(|v| v.as_deref())
        }
        fn agent_connected(&self) -> bool {
            self.connected
        }
        fn running_tasks_count(&self) -> usize {
            self.groups.len()
        }
        fn any_task_group(&self, test: &mut dyn FnMut(&str) -> bool) -> bool {
            self.groups.iter().any(|g| test(g))
        }
    }

    fn fake(attrs: &[(&str, Option<&str>)], groups: &[&str]) -> Fake {
        Fake {
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            connected: true,
        }
    }

    fn eval(expr: &str, target: &Fake) -> bool {
        Expr::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .eval(target)
    }

    fn small_a() -> Fake {
        fake(
            &[
                ("ecs.instance-type", Some("t2.small")),
                ("ecs.availability-zone", Some("us-east-1a")),
                ("ecs.os-type", Some("linux")),
                ("stack", Some("prod")),
                ("flag", None),
                ("version", Some("1.14.5")),
            ],
            &["service:web", "family:db"],
        )
    }

    #[test]
    fn equality_and_inequality() {
        let t = small_a();
        assert!(eval("attribute:ecs.instance-type == t2.small", &t));
        assert!(eval("attribute:ecs.instance-type equals t2.small", &t));
        assert!(eval("attribute:ecs.instance-type EQUALS 't2.small'", &t));
        assert!(!eval("attribute:ecs.instance-type == t2.large", &t));
        assert!(eval("attribute:ecs.instance-type != t2.large", &t));
        assert!(eval("attribute:ecs.instance-type not_equals t2.large", &t));
        assert!(!eval("attribute:stack != prod", &t));
        // Negative operators need the attribute to exist (ECS's documented `!=` example).
        assert!(!eval("attribute:missing != prod", &t));
        assert!(eval("not(attribute:missing == prod)", &t));
        assert!(eval("attribute:ecs.instance-type==t2.small", &t));
    }

    #[test]
    fn exists_and_lists() {
        let t = small_a();
        assert!(eval("attribute:flag exists", &t));
        assert!(eval("attribute:missing !exists", &t));
        assert!(eval("attribute:missing not_exists", &t));
        assert!(!eval("attribute:flag !exists", &t));
        assert!(eval(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
            &t
        ));
        assert!(eval(
            "attribute:ecs.availability-zone in ['us-east-1b', \"us-east-1a\"]",
            &t
        ));
        assert!(!eval("attribute:ecs.availability-zone in [us-east-1b]", &t));
        assert!(eval(
            "attribute:ecs.availability-zone not_in [us-east-1b]",
            &t
        ));
        assert!(eval("attribute:ecs.availability-zone !in [us-east-1b]", &t));
        assert!(!eval(
            "attribute:ecs.availability-zone !in [us-east-1a]",
            &t
        ));
        assert!(!eval("attribute:ecs.availability-zone in []", &t));
    }

    #[test]
    fn matches_and_comparisons() {
        let t = small_a();
        assert!(eval("attribute:ecs.instance-type =~ t2.*", &t));
        assert!(eval("attribute:ecs.instance-type matches (t2|m5)\\..*", &t));
        assert!(!eval("attribute:ecs.instance-type =~ g2.*", &t));
        assert!(eval("attribute:ecs.instance-type !~ g2.*", &t));
        assert!(eval("attribute:ecs.instance-type not_matches g2.*", &t));
        assert!(eval("attribute:version < 1.15", &t));
        assert!(eval("attribute:version > 1.9.0", &t));
        assert!(eval(
            "attribute:version >= 1.14.5 and attribute:version <= 1.14.5",
            &t
        ));
        assert!(eval("runningTasksCount == 2", &t));
        assert!(eval("runningTasksCount greater_than 1", &t));
        assert!(!eval("runningTasksCount less_than 2", &t));
        assert!(eval("agentConnected == true", &t));
    }

    #[test]
    fn task_groups() {
        let t = small_a();
        assert!(eval("task:group == service:web", &t));
        assert!(!eval("task:group == database", &t));
        assert!(eval("not(task:group == database)", &t));
        assert!(eval("task:group != database", &t));
        assert!(!eval("task:group != service:web", &t));
        assert!(eval("task:group in [family:db, x]", &t));
        assert!(eval("task:group =~ service:.*", &t));
        let empty = fake(&[], &[]);
        assert!(eval("task:group != database", &empty));
        assert!(eval("task:group !exists", &empty));
        assert!(eval("task:group exists", &t));
    }

    #[test]
    fn boolean_combinations_and_precedence() {
        let t = small_a();
        assert!(eval(
            "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d",
            &t
        ));
        assert!(eval(
            "attribute:stack == dev || attribute:stack == prod",
            &t
        ));
        assert!(eval(
            "attribute:stack == dev or attribute:ecs.os-type == linux && attribute:flag exists",
            &t
        ));
        // `and` binds tighter than `or`.
        assert!(eval(
            "attribute:stack == prod or attribute:stack == dev and attribute:stack == x",
            &t
        ));
        assert!(!eval(
            "(attribute:stack == prod or attribute:stack == dev) and attribute:stack == x",
            &t
        ));
        assert!(eval("!(attribute:stack == dev)", &t));
        assert!(eval("not not attribute:stack == prod", &t));
        assert!(eval(
            "NOT (task:group == database) AND attribute:ecs.os-type == linux",
            &t
        ));
    }

    #[test]
    fn parse_errors_are_explained() {
        for (bad, hint) in [
            ("", "empty"),
            ("attribute:x", "operator"),
            ("attribute:x ==", "argument"),
            ("attribute: == x", "attribute name"),
            ("foo == bar", "unknown subject"),
            ("ec2InstanceId in [i-1]", "not supported"),
            ("attribute:x in a, b", "argument list"),
            ("attribute:x in [a, b", "','"),
            ("(attribute:x == a", "')'"),
            ("attribute:x == a attribute:y == b", "'and'"),
            ("attribute:x =~ (a", "regular expression"),
            ("attribute:x == 'a", "unterminated"),
            ("attribute:x == a and", "subject"),
        ] {
            let err = Expr::parse(bad).expect_err(bad);
            assert!(
                err.contains(hint),
                "{bad:?}: {err:?} should mention {hint:?}"
            );
        }
        let long = format!("attribute:x == {}", "a".repeat(MAX_EXPRESSION_LEN));
        assert!(Expr::parse(&long).unwrap_err().contains("longer"));
        let deep = format!("{}attribute:x == a{}", "(".repeat(100), ")".repeat(100));
        assert!(Expr::parse(&deep).unwrap_err().contains("nested"));
    }
}
