//! The ECS cluster query language: parsing an expression and evaluating it
//! against one container instance. Used by `ListContainerInstances --filter`
//! and the `memberOf` placement constraint.
//!
//! Grammar (as the ECS developer guide gives it): `subject operator [argument]`
//! joined with `and`/`&&`, `or`/`||`, negated with `not`/`!`, grouped with
//! parentheses. Subjects: `agentConnected`, `agentVersion`, `attribute:NAME`,
//! `ec2InstanceId`, `registeredAt`, `runningTasksCount`, `task:group`.
//! Operators: `==`/`equals`, `!=`/`not_equals`, `exists`, `!exists`/`not_exists`,
//! `in`/`!in`/`not_in` with `[a, b]`, `=~`/`matches`, `!~`/`not_matches`
//! (a full-match regular expression), `>`, `>=`, `<`, `<=`.
//!
//! Pure: no I/O; the caller supplies the instance's facts.

use std::collections::BTreeMap;

use regex::Regex;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CqlError {
    #[error("Invalid expression: {0}")]
    Syntax(String),
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

/// A comparison operator.
#[derive(Debug, Clone, PartialEq)]
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

/// A comparison's argument.
#[derive(Debug, Clone)]
pub enum Arg {
    None,
    One(String),
    List(Vec<String>),
    Pattern(Regex),
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp { subject: String, op: Op, arg: Arg },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, CqlError> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '"' | '\'' => {
                let quote = c;
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != quote {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(CqlError::Syntax("unterminated quote".into()));
                }
                out.push(Tok::Word(chars[start..j].iter().collect()));
                i = j + 1;
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '(' | ')' | '[' | ']' | ',')
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

fn op_of(w: &str) -> Option<Op> {
    Some(match w {
        "==" | "equals" => Op::Eq,
        "!=" | "not_equals" => Op::Ne,
        "exists" => Op::Exists,
        "!exists" | "not_exists" => Op::NotExists,
        "in" => Op::In,
        "!in" | "not_in" => Op::NotIn,
        "=~" | "matches" => Op::Matches,
        "!~" | "not_matches" => Op::NotMatches,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn peek_word(&self, words: &[&str]) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if words.contains(&w.as_str()))
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
        if self.peek_word(&["not", "!"]) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.next() != Some(Tok::RParen) {
                return Err(CqlError::Syntax("missing ')'".into()));
            }
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, CqlError> {
        let subject = match self.next() {
            Some(Tok::Word(w)) => w,
            other => {
                return Err(CqlError::Syntax(format!(
                    "expected a subject, found {other:?}"
                )))
            }
        };
        let known = matches!(
            subject.as_str(),
            "agentConnected"
                | "agentVersion"
                | "ec2InstanceId"
                | "registeredAt"
                | "runningTasksCount"
                | "task:group"
        ) || subject
            .strip_prefix("attribute:")
            .is_some_and(|n| !n.is_empty());
        if !known {
            return Err(CqlError::Syntax(format!("unknown subject {subject}")));
        }
        let op = match self.next() {
            Some(Tok::Word(w)) => {
                op_of(&w).ok_or_else(|| CqlError::Syntax(format!("unknown operator {w}")))?
            }
            other => {
                return Err(CqlError::Syntax(format!(
                    "expected an operator, found {other:?}"
                )))
            }
        };
        let arg = match op {
            Op::Exists | Op::NotExists => Arg::None,
            Op::In | Op::NotIn => {
                if self.next() != Some(Tok::LBracket) {
                    return Err(CqlError::Syntax("expected '[' after in".into()));
                }
                let mut items = Vec::new();
                loop {
                    match self.next() {
                        Some(Tok::Word(w)) => items.push(w),
                        Some(Tok::RBracket) if items.is_empty() => break,
                        other => return Err(CqlError::Syntax(format!("bad list item {other:?}"))),
                    }
                    match self.next() {
                        Some(Tok::Comma) => continue,
                        Some(Tok::RBracket) => break,
                        other => {
                            return Err(CqlError::Syntax(format!(
                                "expected ',' or ']', found {other:?}"
                            )))
                        }
                    }
                }
                Arg::List(items)
            }
            Op::Matches | Op::NotMatches => match self.next() {
                Some(Tok::Word(w)) => {
                    let re = Regex::new(&format!("^(?:{w})$"))
                        .map_err(|e| CqlError::Syntax(format!("bad pattern {w}: {e}")))?;
                    Arg::Pattern(re)
                }
                other => {
                    return Err(CqlError::Syntax(format!(
                        "expected a pattern, found {other:?}"
                    )))
                }
            },
            _ => match self.next() {
                Some(Tok::Word(w)) => Arg::One(w),
                other => {
                    return Err(CqlError::Syntax(format!(
                        "expected a value, found {other:?}"
                    )))
                }
            },
        };
        Ok(Expr::Cmp { subject, op, arg })
    }
}

/// Parses an expression (at most 2000 characters, as ECS allows).
pub fn parse(s: &str) -> Result<Expr, CqlError> {
    if s.len() > 2000 {
        return Err(CqlError::Syntax(
            "expression longer than 2000 characters".into(),
        ));
    }
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
    };
    if p.toks.is_empty() {
        return Err(CqlError::Syntax("empty expression".into()));
    }
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(CqlError::Syntax(format!("unexpected {:?}", p.toks[p.pos])));
    }
    Ok(e)
}

fn compare(values: &[String], op: &Op, arg: &Arg) -> bool {
    let num = |s: &str| s.parse::<f64>().ok();
    match (op, arg) {
        (Op::Exists, _) => !values.is_empty(),
        (Op::NotExists, _) => values.is_empty(),
        (Op::Eq, Arg::One(a)) => values.iter().any(|v| v == a),
        (Op::Ne, Arg::One(a)) => !values.iter().any(|v| v == a),
        (Op::In, Arg::List(l)) => values.iter().any(|v| l.contains(v)),
        (Op::NotIn, Arg::List(l)) => !values.iter().any(|v| l.contains(v)),
        (Op::Matches, Arg::Pattern(re)) => values.iter().any(|v| re.is_match(v)),
        (Op::NotMatches, Arg::Pattern(re)) => !values.iter().any(|v| re.is_match(v)),
        (Op::Gt | Op::Ge | Op::Lt | Op::Le, Arg::One(a)) => {
            let Some(b) = num(a) else {
                return false;
            };
            values.iter().filter_map(|v| num(v)).any(|v| match op {
                Op::Gt => v > b,
                Op::Ge => v >= b,
                Op::Lt => v < b,
                _ => v <= b,
            })
        }
        _ => false,
    }
}

/// Evaluates `e` for one instance.
pub fn eval(e: &Expr, f: &Facts) -> bool {
    match e {
        Expr::And(a, b) => eval(a, f) && eval(b, f),
        Expr::Or(a, b) => eval(a, f) || eval(b, f),
        Expr::Not(a) => !eval(a, f),
        Expr::Cmp { subject, op, arg } => {
            let values: Vec<String> = match subject.as_str() {
                "agentConnected" => vec![f.agent_connected.to_string()],
                "agentVersion" => vec![f.agent_version.clone()],
                "ec2InstanceId" => vec![f.ec2_instance_id.clone()],
                "registeredAt" => vec![f.registered_at.to_string()],
                "runningTasksCount" => vec![f.running_tasks_count.to_string()],
                "task:group" => f.task_groups.clone(),
                other => {
                    let name = other.strip_prefix("attribute:").unwrap_or(other);
                    match f.attributes.get(name) {
                        // A value-less attribute exists but equals nothing.
                        Some(v) => vec![v.clone().unwrap_or_default()],
                        None => vec![],
                    }
                }
            };
            compare(&values, op, arg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        let mut attributes = BTreeMap::new();
        attributes.insert("ecs.os-type".to_string(), Some("linux".to_string()));
        attributes.insert(
            "ecs.instance-type".to_string(),
            Some("t2.small".to_string()),
        );
        attributes.insert("stack".to_string(), Some("prod".to_string()));
        attributes.insert("gpu".to_string(), None);
        Facts {
            agent_connected: true,
            agent_version: "1.2.3".into(),
            ec2_instance_id: "mi-0123456789abcdef0".into(),
            registered_at: 1000.0,
            running_tasks_count: 3,
            attributes,
            task_groups: vec!["family:web".into(), "service:api".into()],
        }
    }

    #[test]
    fn eval_table() {
        let f = facts();
        let table = [
            ("attribute:stack == prod", true),
            ("attribute:stack equals dev", false),
            ("attribute:stack != dev", true),
            ("attribute:ecs.instance-type =~ t2.*", true),
            ("attribute:ecs.instance-type !~ g2.*", true),
            ("attribute:ecs.instance-type in [t2.small, t2.medium]", true),
            ("attribute:ecs.instance-type not_in [t2.small]", false),
            ("attribute:gpu exists", true),
            ("attribute:missing exists", false),
            ("attribute:missing !exists", true),
            ("runningTasksCount > 2", true),
            ("runningTasksCount <= 2", false),
            ("registeredAt >= 1000", true),
            ("agentConnected == true", true),
            ("ec2InstanceId == mi-0123456789abcdef0", true),
            ("task:group == service:api", true),
            ("attribute:stack == prod and attribute:ecs.os-type == windows", false),
            ("attribute:stack == prod && (attribute:ecs.os-type == windows || runningTasksCount < 5)", true),
            ("not attribute:stack == prod", false),
            ("!(attribute:stack == dev)", true),
            ("attribute:stack == 'prod'", true),
        ];
        for (expr, want) in table {
            let e = parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
            assert_eq!(eval(&e, &f), want, "{expr}");
        }
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "",
            "attribute:stack",
            "attribute:stack ~~ prod",
            "bogus == 1",
            "attribute: == x",
            "(attribute:stack == prod",
            "attribute:stack == prod and",
            "attribute:stack in [a b]",
            "attribute:stack =~ (",
            "attribute:stack == 'prod",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse(&"a".repeat(2001)).is_err());
    }
}
