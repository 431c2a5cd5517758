//! `synchronous_standby_names`, parsed as the server parses it, so the
//! synchronous quorum guard knows how many synchronous standbys commits
//! wait for. Pure; the setting is read with each poll.

/// A parsed, non-empty `synchronous_standby_names`: what the guard needs
/// of it (the names are checked, not kept: the guard counts standbys by
/// their `sync_state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSpec {
    /// How many synchronous standbys each commit waits for.
    pub num_sync: u32,
}

/// Why a `synchronous_standby_names` value could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncrepError {
    #[error("unterminated quoted name")]
    UnterminatedName,
    /// The digits as written.
    #[error("number {0} too large")]
    NumberTooLarge(String),
    #[error("unexpected character {0:?}")]
    UnexpectedCharacter(char),
    /// The whole setting.
    #[error("cannot parse synchronous_standby_names {0:?}")]
    Unparsable(String),
    /// The whole setting.
    #[error("synchronous_standby_names {0:?} asks for 0 standbys")]
    ZeroStandbys(String),
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

fn tokens(text: &str) -> Result<Vec<Token>, SyncrepError> {
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
                        None => return Err(SyncrepError::UnterminatedName),
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
                        .map_err(|_| SyncrepError::NumberTooLarge(digits.clone()))?,
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
            other => return Err(SyncrepError::UnexpectedCharacter(other)),
        }
    }
    Ok(out)
}

/// Parses the setting; `Ok(None)` when it is empty (no synchronous
/// replication).
pub fn parse(text: &str) -> Result<Option<SyncSpec>, SyncrepError> {
    let toks = tokens(text)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let keyword = |t: &Token, k: &str| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(k));
    // `FIRST n (...)`, `ANY n (...)` (quorum), `n (...)` or a plain list.
    let (num_sync, list) = match toks.as_slice() {
        [first, Token::Number(n), Token::Open, rest @ .., Token::Close]
            if keyword(first, "first") || keyword(first, "any") =>
        {
            (*n, rest)
        }
        [Token::Number(n), Token::Open, rest @ .., Token::Close] => (*n, rest),
        list => (1, list),
    };
    // Names (words, quoted names, numbers or `*`) separated by commas.
    let is_name = |t: &Token| {
        matches!(
            t,
            Token::Word(_) | Token::Quoted(_) | Token::Number(_) | Token::Star
        )
    };
    let well_formed = list.len() % 2 == 1
        && list.iter().enumerate().all(|(i, t)| match i % 2 {
            0 => is_name(t),
            _ => *t == Token::Comma,
        });
    if !well_formed {
        return Err(SyncrepError::Unparsable(text.to_string()));
    }
    if num_sync == 0 {
        return Err(SyncrepError::ZeroStandbys(text.to_string()));
    }
    Ok(Some(SyncSpec { num_sync }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(num_sync: u32) -> Option<SyncSpec> {
        Some(SyncSpec { num_sync })
    }

    #[test]
    fn every_form_the_server_accepts() {
        let cases = [
            ("", None),
            ("   ", None),
            ("standby_a", spec(1)),
            ("s1, s2", spec(1)),
            ("*", spec(1)),
            ("FIRST 2 (s1, s2, s3)", spec(2)),
            ("first 1 (S1)", spec(1)),
            ("2 (s1, s2)", spec(2)),
            ("ANY 1 (standby_a, standby_lagging)", spec(1)),
            ("any 2 (*)", spec(2)),
            (r#"ANY 1 ("My Standby", "a""b")"#, spec(1)),
            ("FIRST 1 (\"first\")", spec(1)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
        for bad in [
            "FIRST 1 (a,",
            "FIRST 1 ()",
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
    fn refusals_name_what_is_wrong() {
        assert_eq!(
            parse("ANY 0 (a)").unwrap_err().to_string(),
            r#"synchronous_standby_names "ANY 0 (a)" asks for 0 standbys"#
        );
        assert_eq!(
            parse("a b").unwrap_err(),
            SyncrepError::Unparsable("a b".to_string())
        );
        assert_eq!(
            parse("a;b").unwrap_err(),
            SyncrepError::UnexpectedCharacter(';')
        );
        assert_eq!(parse("\"open"), Err(SyncrepError::UnterminatedName));
    }
}
