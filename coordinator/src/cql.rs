//! The ECS cluster query language: parsing an expression (with the character
//! position of every syntax error), printing it back, and evaluating it
//! against one container instance. Used by `ListContainerInstances --filter`
//! and the `memberOf` placement constraint.
//!
//! Grammar (as the ECS developer guide gives it): `subject operator [argument]`
//! joined with `and`/`&&`, `or`/`||`, negated with `not`/`!`, grouped with
//! parentheses. `not` binds tightest, then `and`, then `or`; `and`/`or` group
//! from the left. Subjects: `agentConnected`, `agentVersion`,
//! `attribute:NAME`, `ec2InstanceId`, `registeredAt`, `runningTasksCount`,
//! `task:group`. Operators: `==`/`equals`, `!=`/`not_equals`, `exists`,
//! `!exists`/`not_exists`, `in`/`!in`/`not_in` with `[a, b]`, `=~`/`matches`,
//! `!~`/`not_matches` (a full-match regular expression), `>`/`greater_than`,
//! `>=`/`greater_than_equal`, `<`/`less_than`, `<=`/`less_than_equal`.
//! Values are bare words or quoted with `'` or `"` (no escapes); a bare
//! pattern may hold brackets and balanced parentheses (`=~ (t2|m5)\..*`).
//!
//! Comparisons by subject: `runningTasksCount` numerically (its argument must
//! be a whole number); `registeredAt` as a date in one of ECS's formats
//! (`2018-06-18T22:28:28+00:00`, `2018-06-18T22:28:28Z`,
//! `2018-06-18T22:28:28` in UTC, or `2018-06-18`, which stands for that whole
//! UTC day: `== day` is "registered that day", `< day` before it, `> day`
//! after it), to the second; `agentVersion` orders as dotted numbers
//! (`1.10.0 > 1.9.2`); `attribute:NAME` orders numerically when both sides are
//! numbers, else as strings. A value-less attribute `exists` but equals,
//! matches and orders against nothing. `task:group` holds when any active
//! task's group satisfies the comparison (`!=`, `!in`, `!~`: when none does).
//!
//! Errors name the 1-based character position of the offending token (or one
//! past the end), what was expected and what was found.
//!
//! Pure: no I/O; the caller supplies the instance's facts.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// ECS's limit on an expression's length, in characters.
pub const MAX_LEN: usize = 2000;
/// Deepest nesting of parentheses and `not` the parser follows.
pub const MAX_DEPTH: usize = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CqlError {
    /// `position` is 1-based, in characters.
    #[error("Invalid expression at position {position}: {message}")]
    Syntax { position: usize, message: String },
    #[error("Invalid expression: it is {length} characters long; the maximum is {MAX_LEN}.")]
    TooLong { length: usize },
}

impl CqlError {
    /// The 1-based character position of a syntax error.
    pub fn position(&self) -> Option<usize> {
        match self {
            CqlError::Syntax { position, .. } => Some(*position),
            CqlError::TooLong { .. } => None,
        }
    }
}

/// What an expression can ask about an instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub agent_connected: bool,
    pub agent_version: String,
    pub ec2_instance_id: String,
    /// Epoch seconds.
    pub registered_at: f64,
    pub running_tasks_count: u32,
    /// Attribute name → value (`None` for value-less attributes).
    pub attributes: BTreeMap<String, Option<String>>,
    /// Groups of the active tasks on the instance.
    pub task_groups: Vec<String>,
}

/// What a comparison looks at (a subject as written, borrowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject<'a> {
    AgentConnected,
    AgentVersion,
    Ec2InstanceId,
    RegisteredAt,
    RunningTasksCount,
    TaskGroup,
    Attribute(&'a str),
}

impl<'a> Subject<'a> {
    fn parse(w: &'a str) -> Option<Subject<'a>> {
        Some(match w {
            "agentConnected" => Subject::AgentConnected,
            "agentVersion" => Subject::AgentVersion,
            "ec2InstanceId" => Subject::Ec2InstanceId,
            "registeredAt" => Subject::RegisteredAt,
            "runningTasksCount" => Subject::RunningTasksCount,
            "task:group" => Subject::TaskGroup,
            _ => Subject::Attribute(w.strip_prefix("attribute:")?),
        })
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    /// Every operator, for tests and generators.
    pub const ALL: [Op; 12] = [
        Op::Eq,
        Op::Ne,
        Op::Exists,
        Op::NotExists,
        Op::In,
        Op::NotIn,
        Op::Matches,
        Op::NotMatches,
        Op::Gt,
        Op::Ge,
        Op::Lt,
        Op::Le,
    ];

    fn parse(w: &str) -> Option<Op> {
        Some(match w {
            "==" | "equals" => Op::Eq,
            "!=" | "not_equals" => Op::Ne,
            "exists" => Op::Exists,
            "!exists" | "not_exists" => Op::NotExists,
            "in" => Op::In,
            "!in" | "not_in" => Op::NotIn,
            "=~" | "matches" => Op::Matches,
            "!~" | "not_matches" => Op::NotMatches,
            ">" | "greater_than" => Op::Gt,
            ">=" | "greater_than_equal" => Op::Ge,
            "<" | "less_than" => Op::Lt,
            "<=" | "less_than_equal" => Op::Le,
            _ => return None,
        })
    }

    /// The symbolic spelling (what `Display` prints).
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Exists => "exists",
            Op::NotExists => "!exists",
            Op::In => "in",
            Op::NotIn => "!in",
            Op::Matches => "=~",
            Op::NotMatches => "!~",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    fn is_order(self) -> bool {
        matches!(self, Op::Gt | Op::Ge | Op::Lt | Op::Le)
    }
}

/// A literal read for a subject compared by type.
#[derive(Debug, Clone)]
enum Key {
    Text,
    Count(u64),
    /// `[start, end)` in epoch seconds.
    Time(i64, i64),
    Version(Vec<u64>),
    /// An attribute literal that reads as a number.
    Number(f64),
}

/// A full-match regular expression and the text it was written as.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    re: Regex,
}

impl Pattern {
    /// A full-match pattern for `source`.
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            source: source.to_string(),
            re: Regex::new(&format!("^(?:{source})$"))?,
        })
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A comparison's argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    None,
    One(String),
    List(Vec<String>),
    Pattern(Pattern),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `subject` as written: `attribute:NAME`, `agentConnected`, ...
    Cmp {
        subject: String,
        op: Op,
        arg: Arg,
    },
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A bare word (may be a keyword or operator).
    Word(String),
    /// A quoted value (never a keyword).
    Quoted(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

#[derive(Debug, Clone)]
struct Tok {
    kind: Kind,
    /// 0-based character index of the token's first character.
    at: usize,
    /// The token as written (quotes included).
    raw: String,
}

fn syntax(at: usize, message: String) -> CqlError {
    CqlError::Syntax {
        position: at + 1,
        message,
    }
}

/// Whether the token after `t` is a pattern (which may hold brackets and
/// balanced parentheses: `=~ [0-3]`, `=~ (a|b)`).
fn before_pattern(t: Option<&Tok>) -> bool {
    matches!(t, Some(Tok { kind: Kind::Word(w), .. })
        if matches!(w.as_str(), "=~" | "matches" | "!~" | "not_matches"))
}

/// The end of an unquoted pattern starting at `start`: whitespace, or a `)`,
/// `]` or `,` that closes nothing opened inside the pattern.
fn pattern_end(chars: &[char], start: usize) -> usize {
    let mut depth = 0u32;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            c if c.is_whitespace() => break,
            '(' | '[' => depth += 1,
            ')' | ']' | ',' if depth == 0 => break,
            ')' | ']' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    i
}

fn tokenize(chars: &[char]) -> Result<Vec<Tok>, CqlError> {
    let mut out: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !c.is_whitespace() && !matches!(c, '"' | '\'') && before_pattern(out.last()) {
            let end = pattern_end(chars, i);
            if end > i {
                let w: String = chars[i..end].iter().collect();
                out.push(Tok {
                    kind: Kind::Word(w.clone()),
                    at: i,
                    raw: w,
                });
                i = end;
                continue;
            }
        }
        let single = match c {
            '(' => Some(Kind::LParen),
            ')' => Some(Kind::RParen),
            '[' => Some(Kind::LBracket),
            ']' => Some(Kind::RBracket),
            ',' => Some(Kind::Comma),
            _ => None,
        };
        if let Some(kind) = single {
            out.push(Tok {
                kind,
                at: i,
                raw: c.to_string(),
            });
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            let start = i;
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += 1;
            }
            if j >= chars.len() {
                return Err(syntax(
                    start,
                    format!("unterminated quoted value: no closing {c} before the end of the expression"),
                ));
            }
            out.push(Tok {
                kind: Kind::Quoted(chars[start + 1..j].iter().collect()),
                at: start,
                raw: chars[start..=j].iter().collect(),
            });
            i = j + 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && !chars[i].is_whitespace()
            && !matches!(chars[i], '(' | ')' | '[' | ']' | ',')
        {
            i += 1;
        }
        let w: String = chars[start..i].iter().collect();
        out.push(Tok {
            kind: Kind::Word(w.clone()),
            at: start,
            raw: w,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- parser

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Character count of the input (where "end of expression" is).
    end: usize,
    depth: usize,
}

/// Tokens longer than this are shortened in error messages.
const SHOWN: usize = 60;

/// How a token (or the end) reads in an error message.
fn describe(t: Option<&Tok>) -> String {
    match t {
        Some(t) if t.raw.chars().count() > SHOWN => {
            let head: String = t.raw.chars().take(SHOWN).collect();
            format!("'{head}...'")
        }
        Some(t) => format!("'{}'", t.raw),
        None => "the end of the expression".into(),
    }
}

const SUBJECTS: &str = "attribute:NAME, agentConnected, agentVersion, ec2InstanceId, registeredAt, runningTasksCount or task:group";

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn at(&self) -> usize {
        self.peek().map(|t| t.at).unwrap_or(self.end)
    }

    fn peek_word(&self, words: &[&str]) -> bool {
        matches!(self.peek(), Some(Tok { kind: Kind::Word(w), .. }) if words.contains(&w.as_str()))
    }

    /// An error at the current token: "expected X, found <token>".
    fn expected(&self, what: &str) -> CqlError {
        syntax(
            self.at(),
            format!("expected {what}, found {}", describe(self.peek())),
        )
    }

    fn deeper(&mut self) -> Result<(), CqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(syntax(
                self.at(),
                format!("the expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, CqlError> {
        let mut left = self.and()?;
        while self.peek_word(&["or", "||"]) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, CqlError> {
        let mut left = self.unary()?;
        while self.peek_word(&["and", "&&"]) {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, CqlError> {
        self.deeper()?;
        let e = self.unary_inner();
        self.depth -= 1;
        e
    }

    fn unary_inner(&mut self) -> Result<Expr, CqlError> {
        if self.peek_word(&["not", "!"]) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        // `!attribute:x exists`: a `!` glued to a subject.
        if let Some(Tok {
            kind: Kind::Word(w),
            at,
            ..
        }) = self.peek()
        {
            if let Some(rest) = w.strip_prefix('!') {
                if !rest.is_empty() && Op::parse(w).is_none() {
                    let rest = rest.to_string();
                    let at = at + 1;
                    self.toks[self.pos] = Tok {
                        kind: Kind::Word(rest.clone()),
                        at,
                        raw: rest,
                    };
                    return Ok(Expr::Not(Box::new(self.unary()?)));
                }
            }
        }
        if matches!(
            self.peek(),
            Some(Tok {
                kind: Kind::LParen,
                ..
            })
        ) {
            let open = self.at();
            self.pos += 1;
            let e = self.or()?;
            if !matches!(
                self.peek(),
                Some(Tok {
                    kind: Kind::RParen,
                    ..
                })
            ) {
                return Err(
                    self.expected(&format!("')' to close the '(' at position {}", open + 1))
                );
            }
            self.pos += 1;
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, CqlError> {
        let subject = match self.peek() {
            Some(Tok {
                kind: Kind::Word(w),
                at,
                raw,
            }) => match Subject::parse(w) {
                Some(Subject::Attribute("")) => {
                    return Err(syntax(
                        *at,
                        "expected an attribute name after 'attribute:'".into(),
                    ))
                }
                Some(_) => raw.clone(),
                None => {
                    return Err(syntax(
                        *at,
                        format!("unknown subject '{raw}'; expected {SUBJECTS}"),
                    ))
                }
            },
            _ => return Err(self.expected(&format!("a subject ({SUBJECTS})"))),
        };
        self.pos += 1;
        let (op, op_raw) = match self.peek() {
            Some(Tok {
                kind: Kind::Word(w),
                raw,
                ..
            }) => match Op::parse(w) {
                Some(op) => (op, raw.clone()),
                None => return Err(self.expected(&format!("an operator after '{subject}'"))),
            },
            _ => return Err(self.expected(&format!("an operator after '{subject}'"))),
        };
        self.pos += 1;
        let arg = match op {
            Op::Exists | Op::NotExists => Arg::None,
            Op::In | Op::NotIn => {
                if !matches!(
                    self.peek(),
                    Some(Tok {
                        kind: Kind::LBracket,
                        ..
                    })
                ) {
                    return Err(self.expected(&format!("'[' after '{op_raw}'")));
                }
                self.pos += 1;
                let mut items: Vec<String> = Vec::new();
                if matches!(
                    self.peek(),
                    Some(Tok {
                        kind: Kind::RBracket,
                        ..
                    })
                ) {
                    self.pos += 1;
                } else {
                    loop {
                        items.push(self.literal(&subject, op, "a value in the list")?);
                        match self.peek().map(|t| &t.kind) {
                            Some(Kind::Comma) => self.pos += 1,
                            Some(Kind::RBracket) => {
                                self.pos += 1;
                                break;
                            }
                            _ => {
                                return Err(self.expected(&format!(
                                    "',' or ']' after '{}'",
                                    items.last().map(String::as_str).unwrap_or("")
                                )))
                            }
                        }
                    }
                }
                Arg::List(items)
            }
            Op::Matches | Op::NotMatches => {
                let at = self.at();
                let source = match self.peek() {
                    Some(Tok {
                        kind: Kind::Word(w) | Kind::Quoted(w),
                        ..
                    }) => w.clone(),
                    _ => return Err(self.expected(&format!("a pattern after '{op_raw}'"))),
                };
                let pattern = Pattern::new(&source).map_err(|e| {
                    syntax(
                        at,
                        format!(
                            "invalid regular expression '{source}': {}",
                            regex_reason(&e)
                        ),
                    )
                })?;
                self.pos += 1;
                Arg::Pattern(pattern)
            }
            _ => Arg::One(self.literal(&subject, op, &format!("a value after '{op_raw}'"))?),
        };
        Ok(Expr::Cmp { subject, op, arg })
    }

    /// One value token, checked to read as the type `subject` compares by.
    fn literal(&mut self, subject: &str, op: Op, what: &str) -> Result<String, CqlError> {
        let (text, at) = match self.peek() {
            Some(Tok {
                kind: Kind::Word(w) | Kind::Quoted(w),
                at,
                ..
            }) => (w.clone(), *at),
            _ => return Err(self.expected(what)),
        };
        if let Some(s) = Subject::parse(subject) {
            literal_key(s, op, &text).map_err(|m| syntax(at, m))?;
        }
        self.pos += 1;
        Ok(text)
    }
}

/// The first line of a regex error that says what is wrong.
fn regex_reason(e: &regex::Error) -> String {
    let s = e.to_string();
    s.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or_else(|| s.lines().last().unwrap_or(""))
        .to_string()
}

const DATE_FORMATS: &str =
    "2018-06-18T22:28:28+00:00, 2018-06-18T22:28:28Z, 2018-06-18T22:28:28 or 2018-06-18";

fn literal_key(subject: Subject<'_>, op: Op, text: &str) -> Result<Key, String> {
    Ok(match subject {
        Subject::RunningTasksCount => match text.parse::<u64>() {
            Ok(n) => Key::Count(n),
            Err(_) => return Err(format!("expected a whole number, found '{text}'")),
        },
        Subject::RegisteredAt => match parse_date(text) {
            Some((a, b)) => Key::Time(a, b),
            None => return Err(format!("expected a date ({DATE_FORMATS}), found '{text}'")),
        },
        Subject::AgentVersion if op.is_order() => match parse_version(text) {
            Some(v) => Key::Version(v),
            None => return Err(format!("expected a version such as 1.2.3, found '{text}'")),
        },
        Subject::Attribute(_) => match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Key::Number(n),
            _ => Key::Text,
        },
        _ => Key::Text,
    })
}

/// `[start, end)` epoch seconds a date literal stands for: a day for a bare
/// date, one second for a timestamp.
pub fn parse_date(s: &str) -> Option<(i64, i64)> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        let t = t.unix_timestamp();
        return Some((t, t + 1));
    }
    let local = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    if let Ok(t) = time::PrimitiveDateTime::parse(s, local) {
        let t = t.assume_utc().unix_timestamp();
        return Some((t, t + 1));
    }
    let day = format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, day) {
        let t = d.midnight().assume_utc().unix_timestamp();
        return Some((t, t + 86_400));
    }
    None
}

/// Dotted numbers (`1.2.3`, an optional leading `v`).
fn parse_version(s: &str) -> Option<Vec<u64>> {
    let s = s.strip_prefix('v').unwrap_or(s);
    s.split('.').map(|p| p.parse::<u64>().ok()).collect()
}

/// Parses an expression (at most [`MAX_LEN`] characters, as ECS allows).
pub fn parse(s: &str) -> Result<Expr, CqlError> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() > MAX_LEN {
        return Err(CqlError::TooLong {
            length: chars.len(),
        });
    }
    let mut p = Parser {
        toks: tokenize(&chars)?,
        pos: 0,
        end: chars.len(),
        depth: 0,
    };
    if p.toks.is_empty() {
        return Err(syntax(0, "the expression is empty".into()));
    }
    let e = p.or()?;
    if let Some(t) = p.peek() {
        let message = if t.kind == Kind::RParen {
            "found ')' without a matching '('".to_string()
        } else {
            format!(
                "expected 'and', 'or' or the end of the expression, found {}",
                describe(Some(t))
            )
        };
        return Err(syntax(t.at, message));
    }
    Ok(e)
}

// ---------------------------------------------------------------- printing

/// Whether a literal must be quoted to read back as one value token.
fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.starts_with(['"', '\''])
        || s.chars()
            .any(|c| c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ','))
}

fn write_value(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !needs_quotes(s) {
        f.write_str(s)
    } else if s.contains('\'') {
        write!(f, "\"{s}\"")
    } else {
        write!(f, "'{s}'")
    }
}

impl fmt::Display for Expr {
    /// Canonical text that `parse` reads back to an equal expression (given
    /// no value holds both quote characters and needs quoting).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grouped = |f: &mut fmt::Formatter<'_>, e: &Expr, paren: bool| {
            if paren {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        match self {
            Expr::Or(a, b) => {
                grouped(f, a, false)?;
                f.write_str(" or ")?;
                grouped(f, b, matches!(**b, Expr::Or(..)))
            }
            Expr::And(a, b) => {
                grouped(f, a, matches!(**a, Expr::Or(..)))?;
                f.write_str(" and ")?;
                grouped(f, b, matches!(**b, Expr::Or(..) | Expr::And(..)))
            }
            Expr::Not(a) => {
                f.write_str("not ")?;
                grouped(f, a, matches!(**a, Expr::Or(..) | Expr::And(..)))
            }
            Expr::Cmp { subject, op, arg } => {
                write!(f, "{subject} {}", op.symbol())?;
                match arg {
                    Arg::None => Ok(()),
                    Arg::One(l) => {
                        f.write_str(" ")?;
                        write_value(f, l)
                    }
                    Arg::Pattern(p) => {
                        f.write_str(" ")?;
                        write_value(f, &p.source)
                    }
                    Arg::List(items) => {
                        f.write_str(" [")?;
                        for (i, l) in items.iter().enumerate() {
                            if i > 0 {
                                f.write_str(", ")?;
                            }
                            write_value(f, l)?;
                        }
                        f.write_str("]")
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- evaluation

/// One value of a subject on an instance.
#[derive(Clone, Copy)]
enum Val<'a> {
    Text(&'a str),
    Count(u64),
    Time(f64),
    Version(&'a str),
}

fn text_of<'a>(v: Val<'a>, buf: &'a mut String) -> &'a str {
    match v {
        Val::Text(s) | Val::Version(s) => s,
        Val::Count(n) => {
            *buf = n.to_string();
            buf
        }
        Val::Time(t) => {
            *buf = time::OffsetDateTime::from_unix_timestamp(t.floor() as i64)
                .ok()
                .and_then(|d| {
                    d.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            buf
        }
    }
}

/// How an instance's value compares with a literal (`None`: incomparable).
fn order(v: Val<'_>, text: &str, key: &Key) -> Option<Ordering> {
    match (v, key) {
        (Val::Count(n), Key::Count(m)) => Some(n.cmp(m)),
        (Val::Time(t), Key::Time(a, b)) => Some(if t < *a as f64 {
            Ordering::Less
        } else if t >= *b as f64 {
            Ordering::Greater
        } else {
            Ordering::Equal
        }),
        (Val::Version(s), Key::Version(want)) => parse_version(s).map(|have| have.cmp(want)),
        (Val::Text(s), Key::Number(m)) => match s.parse::<f64>() {
            Ok(n) if n.is_finite() => n.partial_cmp(m),
            _ => Some(s.cmp(text)),
        },
        (Val::Text(s), _) => Some(s.cmp(text)),
        _ => None,
    }
}

/// The typed reading of a literal (`Text` when it does not read as the
/// subject's type, which `parse` refuses but a built expression may hold).
fn key_of(subject: Subject<'_>, op: Op, text: &str) -> Key {
    literal_key(subject, op, text).unwrap_or(Key::Text)
}

fn equals(v: Val<'_>, subject: Subject<'_>, text: &str) -> bool {
    match v {
        Val::Count(_) | Val::Time(_) => {
            order(v, text, &key_of(subject, Op::Eq, text)) == Some(Ordering::Equal)
        }
        Val::Text(s) | Val::Version(s) => s == text,
    }
}

fn holds(v: Val<'_>, subject: Subject<'_>, op: Op, arg: &Arg) -> bool {
    let ordered = |l: &str| order(v, l, &key_of(subject, op, l));
    match (op, arg) {
        (Op::Eq | Op::Ne, Arg::One(l)) => equals(v, subject, l),
        (Op::In | Op::NotIn, Arg::List(items)) => items.iter().any(|l| equals(v, subject, l)),
        (Op::Matches | Op::NotMatches, Arg::Pattern(p)) => {
            let mut buf = String::new();
            p.re.is_match(text_of(v, &mut buf))
        }
        (Op::Gt, Arg::One(l)) => ordered(l) == Some(Ordering::Greater),
        (Op::Ge, Arg::One(l)) => matches!(ordered(l), Some(Ordering::Greater | Ordering::Equal)),
        (Op::Lt, Arg::One(l)) => ordered(l) == Some(Ordering::Less),
        (Op::Le, Arg::One(l)) => matches!(ordered(l), Some(Ordering::Less | Ordering::Equal)),
        _ => false,
    }
}

fn compare(subject: &str, op: Op, arg: &Arg, f: &Facts) -> bool {
    let Some(subject) = Subject::parse(subject) else {
        // Not a subject `parse` accepts: nothing is known about it.
        return matches!(op, Op::NotExists | Op::Ne | Op::NotIn | Op::NotMatches);
    };
    // One value for most subjects, none for a value-less or absent
    // attribute, one per task for `task:group`: no allocation but the last.
    let (exists, one): (bool, Option<Val<'_>>) = match subject {
        Subject::AgentConnected => (
            true,
            Some(Val::Text(if f.agent_connected { "true" } else { "false" })),
        ),
        Subject::AgentVersion => (
            !f.agent_version.is_empty(),
            Some(Val::Version(&f.agent_version)),
        ),
        Subject::Ec2InstanceId => (
            !f.ec2_instance_id.is_empty(),
            Some(Val::Text(&f.ec2_instance_id)),
        ),
        Subject::RegisteredAt => (true, Some(Val::Time(f.registered_at))),
        Subject::RunningTasksCount => (true, Some(Val::Count(u64::from(f.running_tasks_count)))),
        Subject::TaskGroup => (!f.task_groups.is_empty(), None),
        Subject::Attribute(name) => match f.attributes.get(name) {
            None => (false, None),
            Some(v) => (true, v.as_deref().map(Val::Text)),
        },
    };
    let any = |op: Op| match subject {
        Subject::TaskGroup => f
            .task_groups
            .iter()
            .any(|g| holds(Val::Text(g), subject, op, arg)),
        _ => one.is_some_and(|v| holds(v, subject, op, arg)),
    };
    match op {
        Op::Exists => exists,
        Op::NotExists => !exists,
        Op::Ne | Op::NotIn | Op::NotMatches => !any(op),
        _ => any(op),
    }
}

/// Evaluates `e` for one instance.
pub fn eval(e: &Expr, f: &Facts) -> bool {
    match e {
        Expr::And(a, b) => eval(a, f) && eval(b, f),
        Expr::Or(a, b) => eval(a, f) || eval(b, f),
        Expr::Not(a) => !eval(a, f),
        Expr::Cmp { subject, op, arg } => compare(subject, *op, arg, f),
    }
}

#[cfg(test)]
mod tests;
