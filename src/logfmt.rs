//! Escaping of everything a client or a config file chose, wherever it is
//! printed as text: the fields of the text log format (a
//! [`FormatFields`] for `tracing-subscriber`), and single values in the
//! `check` and `plan` printouts. A walsender's `application_name` and role
//! name are whatever the client made them, so a value may hold spaces,
//! quotes, `key=value` look-alikes, newlines, ANSI escapes or bidi overrides
//! (U+202E); written through here, it stays one field on one line and reads
//! back as exactly what was written.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// True when `s` can be written without quotes: not empty, and only
/// characters that cannot be taken for a separator, a quote or an escape.
fn is_bare(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/@+,".contains(c))
}

/// `s` in double quotes, with `"` and `\` escaped and every character that is
/// not printable (control characters such as newline and ESC, invisible
/// format characters such as the bidi overrides, line and paragraph
/// separators) written as a Rust escape (`\n`, `\u{1b}`, `\u{202e}`).
pub fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// `s` as one token: bare when that is unambiguous (`rogue_receiver`,
/// `10.0.0.1`), else [`quoted`].
pub fn token(s: &str) -> String {
    if is_bare(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Free text (a log message, a line of prose) with every non-printable
/// character escaped as in [`quoted`], but quotes and `\` left as they are
/// (the text may hold values already [`quoted`]) and no quotes around: it
/// cannot break the line or hide what follows.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\'' | '\\' => out.push(c),
            _ => out.extend(c.escape_debug()),
        }
    }
    out
}

/// The field formatter of the text log format: `key=value` with the value
/// bare when it is a plain token and [`quoted`] otherwise, strings always
/// quoted (as `tracing-subscriber` does), and the message escaped with
/// [`escape_text`], or [`quoted`] if it has a `=` (so that the fields start
/// at the first `=` outside quotes). Used for event and span fields alike.
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl Visitor<'_> {
    fn write(&mut self, field: &Field, value: &str, always_quote: bool) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            // A message that could be taken for fields (it quotes text a
            // client chose, such as a superuser walsender's name) is quoted.
            let message = if value.contains('=') || value.starts_with('"') {
                quoted(value)
            } else {
                escape_text(value)
            };
            write!(self.writer, "{sep}{message}")
        } else if always_quote {
            write!(self.writer, "{sep}{}={}", field.name(), quoted(value))
        } else {
            write!(self.writer, "{sep}{}={}", field.name(), token(value))
        };
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value, true);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    /// Reads a quoted value back (Rust's escapes), from just after the
    /// opening quote; returns the value and the rest after the closing quote.
    fn unquote(s: &str) -> (String, &str) {
        let mut out = String::new();
        let mut chars = s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return (out, &s[i + 1..]),
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('0') => out.push('\0'),
                    Some('u') => {
                        let hex: String = chars
                            .by_ref()
                            .map(|(_, c)| c)
                            .skip(1)
                            .take_while(|c| *c != '}')
                            .collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                    }
                    Some(c) => out.push(c),
                    None => panic!("dangling escape"),
                },
                c => out.push(c),
            }
        }
        panic!("unterminated quoted value in {s:?}")
    }

    /// The fields of one line written by [`EscapedFields`].
    fn fields(line: &str) -> Vec<(String, String)> {
        let mut rest = line;
        let mut out = Vec::new();
        // The message runs up to the first `key=`; quoted if it has a `=`.
        if let Some(at) = rest.find('"').filter(|&at| !rest[..at].contains('=')) {
            rest = unquote(&rest[at + 1..]).1;
        }
        while let Some(at) = rest.find(|c: char| c.is_ascii_lowercase()) {
            rest = &rest[at..];
            let key_end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            if !rest[key_end..].starts_with('=') {
                rest = &rest[key_end..];
                continue;
            }
            let key = rest[..key_end].to_string();
            let value = &rest[key_end + 1..];
            let (value, after) = match value.strip_prefix('"') {
                Some(q) => unquote(q),
                None => {
                    let end = value.find(' ').unwrap_or(value.len());
                    (value[..end].to_string(), &value[end..])
                }
            };
            out.push((key, value));
            rest = after;
        }
        out
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hostile_values_stay_one_field_on_one_line() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        let app = "x rule=fake action=terminate outcome=\"terminated\" pid=1";
        let role = "e\nZ WARN poll: walsender terminated event=\"action\" rule=forged";
        let ansi = "\u{1b}[2K\u{1b}[1Aevil\r";
        let bidi = "admin\u{202e}txt.exe\u{2028}x\\n";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                event = "action",
                application_name = %app,
                user = role,
                measured = %format!("application_name={ansi} (matches *)"),
                rule = %bidi,
                pid = 42,
                "walsender terminated"
            );
            tracing::warn!(event = "preflight", "superuser walsenders: {app}");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let (text, second) = text.split_once('\n').unwrap();
        assert_eq!(second.lines().count(), 1, "{second}");
        let message = quoted(&format!("superuser walsenders: {app}"));
        assert!(
            second.contains(&format!("WARN {message} event=\"preflight\"")),
            "{second}"
        );
        assert_eq!(
            fields(second),
            [("event".to_string(), "preflight".to_string())]
        );
        assert!(
            !text.contains(['\u{1b}', '\r', '\u{202e}', '\u{2028}']),
            "{text}"
        );
        assert!(
            text.contains("WARN walsender terminated event=\"action\" "),
            "{text}"
        );
        let got = fields(text.trim_end());
        let expected: Vec<(String, String)> = [
            ("event", "action"),
            ("application_name", app),
            ("user", role),
            ("measured", &format!("application_name={ansi} (matches *)")),
            ("rule", bidi),
            ("pid", "42"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, expected, "{text}");
    }

    #[test]
    fn plain_values_are_bare_and_others_quoted() {
        assert_eq!(token("rogue_receiver"), "rogue_receiver");
        assert_eq!(token("2026-11-25T04:19:46.5Z"), "2026-11-25T04:19:46.5Z");
        assert_eq!(token(""), "\"\"");
        assert_eq!(token("a b"), "\"a b\"");
        assert_eq!(token("a=b"), "\"a=b\"");
        assert_eq!(token("\u{202e}"), "\"\\u{202e}\"");
        assert_eq!(token("é"), "\"é\"");
        assert_eq!(quoted("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(escape_text("a \"b\"\nc\u{1b}"), "a \"b\"\\nc\\u{1b}");
        assert_eq!(escape_text(&quoted("a\nb")), "\"a\\nb\"");
    }
}
