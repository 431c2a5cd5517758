//! `synchronous_standby_names`, parsed as the server parses it, so the
//! synchronous quorum guard knows how many synchronous standbys commits
//! wait for. Pure; the setting is read with each poll.

use std::fmt;

/// How the server picks synchronous standbys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `FIRST n (...)`, `n (...)` or a plain list: priority order.
    First,
    /// `ANY n (...)`: quorum.
    Any,
}

/// A parsed, non-empty `synchronous_standby_names`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSpec {
    pub method: Method,
    /// How many synchronous standbys each commit waits for.
    pub num_sync: u32,
    /// The names as the server keeps them (`*` matches any standby).
    pub names: Vec<String>,
}

impl fmt::Display for SyncSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match self.method {
            Method::First => "FIRST",
            Method::Any => "ANY",
        };
        write!(f, "{method} {} ({})", self.num_sync, self.names.join(", "))
    }
}

impl SyncSpec {
    /// Whether a walsender with this application_name is a candidate
    /// (compared case-insensitively, as the server does).
    pub fn is_candidate(&self, application_name: &str) -> bool {
        self.names
            .iter()
            .any(|n| n == "*" || n.eq_ignore_ascii_case(application_name))
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Number(u32),
    Star,
    Comma,
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' | '(' | ')' | '*' => {
                chars.next();
                out.push(match c {
                    ',' => Token::Comma,
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Star,
                });
            }
            '"' => {
                chars.next();
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            name.push('"');
                        }
                        Some('"') => break,
                        Some(c) => name.push(c),
                        None => return Err("unterminated quoted name".to_string()),
                    }
                }
                out.push(Token::Quoted(name));
            }
            c if c.is_ascii_digit() => {
                let mut digits = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(d);
                    chars.next();
                }
                out.push(Token::Number(
                    digits
                        .parse()
                        .map_err(|_| format!("number {digits} too large"))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' || !c.is_ascii() => {
                let mut word = String::new();
                while let Some(&w) = chars
                    .peek()
                    .filter(|w| w.is_alphanumeric() || **w == '_' || **w == '$' || !w.is_ascii())
                {
                    word.push(w);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

/// Parses the setting; `Ok(None)` when it is empty (no synchronous
/// replication).
pub fn parse(text: &str) -> Result<Option<SyncSpec>, String> {
    let toks = tokens(text)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let keyword = |t: &Token, k: &str| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(k));
    let (method, num_sync, list) = match toks.as_slice() {
        [first, Token::Number(n), Token::Open, rest @ .., Token::Close]
            if keyword(first, "first") =>
        {
            (Method::First, *n, rest)
        }
        [first, Token::Number(n), Token::Open, rest @ .., Token::Close]
            if keyword(first, "any") =>
        {
            (Method::Any, *n, rest)
        }
        [Token::Number(n), Token::Open, rest @ .., Token::Close] => (Method::First, *n, rest),
        list => (Method::First, 1, list),
    };
    let mut names = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let expect_name = i % 2 == 0;
        match (t, expect_name) {
            (Token::Word(w), true) => names.push(w.to_lowercase()),
            (Token::Quoted(q), true) => names.push(q.clone()),
            (Token::Number(n), true) => names.push(n.to_string()),
            (Token::Star, true) => names.push("*".to_string()),
            (Token::Comma, false) => {}
            _ => return Err(format!("cannot parse synchronous_standby_names {text:?}")),
        }
    }
    if names.is_empty() || list.len() % 2 == 0 {
        return Err(format!("cannot parse synchronous_standby_names {text:?}"));
    }
    if num_sync == 0 {
        return Err(format!(
            "synchronous_standby_names {text:?} asks for 0 standbys"
        ));
    }
    Ok(Some(SyncSpec {
        method,
        num_sync,
        names,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: Method, n: u32, names: &[&str]) -> Option<SyncSpec> {
        Some(SyncSpec {
            method,
            num_sync: n,
            names: names.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn every_form_the_server_accepts() {
        let cases = [
            ("", None),
            ("   ", None),
            ("standby_a", spec(Method::First, 1, &["standby_a"])),
            ("s1, s2", spec(Method::First, 1, &["s1", "s2"])),
            ("*", spec(Method::First, 1, &["*"])),
            (
                "FIRST 2 (s1, s2, s3)",
                spec(Method::First, 2, &["s1", "s2", "s3"]),
            ),
            ("first 1 (S1)", spec(Method::First, 1, &["s1"])),
            ("2 (s1, s2)", spec(Method::First, 2, &["s1", "s2"])),
            (
                "ANY 1 (standby_a, standby_lagging)",
                spec(Method::Any, 1, &["standby_a", "standby_lagging"]),
            ),
            ("any 2 (*)", spec(Method::Any, 2, &["*"])),
            (
                r#"ANY 1 ("My Standby", "a""b")"#,
                spec(Method::Any, 1, &["My Standby", "a\"b"]),
            ),
            ("FIRST 1 (\"first\")", spec(Method::First, 1, &["first"])),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
        for bad in [
            "FIRST 1 (a,",
            "a,,b",
            "ANY 0 (a)",
            "(a)",
            "\"open",
            "a b",
            "a;b",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn candidates_compare_case_insensitively_and_star_matches_all() {
        let s = parse("FIRST 1 (Standby_A)").unwrap().unwrap();
        assert!(s.is_candidate("standby_a"));
        assert!(s.is_candidate("STANDBY_A"));
        assert!(!s.is_candidate("standby_b"));
        assert!(parse("*").unwrap().unwrap().is_candidate("anything"));
        assert_eq!(
            parse("any 2 (a, b)").unwrap().unwrap().to_string(),
            "ANY 2 (a, b)"
        );
    }
}
