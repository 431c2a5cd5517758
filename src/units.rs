//! Small value types the rest of the program speaks in: WAL positions
//! ([`Lsn`]), byte sizes ([`ByteSize`]) and the parsers for the duration and
//! size strings of the config file.

use std::fmt;
use std::time::Duration;

/// A WAL position (`pg_lsn`), printed as PostgreSQL prints it: `16/B374D848`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl From<tokio_postgres::types::PgLsn> for Lsn {
    fn from(lsn: tokio_postgres::types::PgLsn) -> Self {
        Lsn(u64::from(lsn))
    }
}

/// A number of bytes, printed with a binary unit (`1.5 GiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

/// Why a size or duration string was refused; the message quotes the
/// string and says how to write it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a size: write a number and a unit, like \"512MB\" or \"1GiB\"")]
    NotASize(String),
    #[error("{text:?} is not a size: {number:?} is not a number")]
    NotANumber { text: String, number: String },
    #[error(
        "{text:?} has an unknown size unit {unit:?}: use B, kB, MB, GB, TB (or KiB, MiB, GiB, TiB)"
    )]
    UnknownSizeUnit { text: String, unit: String },
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0:?} is negative: durations must be positive")]
    Negative(String),
    #[error("{text:?} has no unit: write it as \"{number}s\", \"{number}ms\" or \"{number}m\"")]
    NoUnit { text: String, number: String },
    /// `reason` is humantime's word on it, shown inside the message (it is
    /// not a source, so the chain does not print it again).
    #[error("{text:?} is not a duration ({reason}): write a number and a unit, like \"250ms\", \"30s\", \"5m\", \"6h\"")]
    NotADuration {
        text: String,
        reason: humantime::DurationError,
    },
}

/// Parses a size such as `"512MB"`, `"1GiB"` or `"16kB"`.
///
/// Units follow PostgreSQL's own settings (`shared_buffers = 1GB`): `kB`, `MB`,
/// `GB` and `TB` are powers of 1024, exactly like `KiB`, `MiB`, `GiB`, `TiB`.
/// A bare number (`"4096"`) or `B` means bytes. Unit names are case-insensitive.
pub fn parse_size(text: &str) -> Result<ByteSize, UnitError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(UnitError::NotASize(text.to_string()));
    }
    let number: f64 = number.parse().map_err(|_| UnitError::NotANumber {
        text: text.to_string(),
        number: number.to_string(),
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "kib" | "k" => 1 << 10,
        "mb" | "mib" | "m" => 1 << 20,
        "gb" | "gib" | "g" => 1 << 30,
        "tb" | "tib" | "t" => 1 << 40,
        other => {
            return Err(UnitError::UnknownSizeUnit {
                text: text.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(UnitError::TooLarge(text.to_string()));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked above: finite, not negative (digits and dots only) and below 2^64"
    )]
    let bytes = bytes.round() as u64;
    Ok(ByteSize(bytes))
}

/// Parses a duration such as `"250ms"`, `"5m"`, `"2h 30m"` (humantime syntax).
/// A number without a unit is refused: `"5"` could mean seconds or minutes.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(UnitError::Negative(text.to_string()));
    }
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(UnitError::NoUnit {
            text: text.to_string(),
            number: trimmed.to_string(),
        });
    }
    humantime::parse_duration(trimmed).map_err(|reason| UnitError::NotADuration {
        text: text.to_string(),
        reason,
    })
}

/// Prints a duration compactly for logs (`1m 30s`, `250ms`).
pub fn fmt_duration(d: Duration) -> String {
    // Milliseconds are the finest grain anything here is measured in.
    let rounded = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if rounded.is_zero() {
        return "0s".to_string();
    }
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_prints_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x3000060).to_string(), "0/3000060");
    }

    #[test]
    fn sizes_follow_postgres_units() {
        let cases = [
            ("4096", 4096),
            ("10B", 10),
            ("16kB", 16 << 10),
            ("512MB", 512 << 20),
            ("1GB", 1 << 30),
            ("1GiB", 1 << 30),
            ("1.5 GiB", 3 << 29),
            ("2tb", 2 << 40),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in [
            "",
            "GB",
            "1 parsec",
            "-1GB",
            "1..2MB",
            "99999999999999999999TB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h 30m"), Ok(Duration::from_secs(9000)));
        for bad in ["", "5", "-1s", "five minutes", "1 fortnight"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    /// Each refusal quotes the text and says how to write it.
    #[test]
    fn refusals_say_how_to_write_it() {
        let size = |t: &str| parse_size(t).unwrap_err().to_string();
        let duration = |t: &str| parse_duration(t).unwrap_err().to_string();
        assert_eq!(
            size("GB"),
            r#""GB" is not a size: write a number and a unit, like "512MB" or "1GiB""#
        );
        assert_eq!(
            size("1 parsec"),
            r#""1 parsec" has an unknown size unit "parsec": use B, kB, MB, GB, TB (or KiB, MiB, GiB, TiB)"#
        );
        assert_eq!(
            duration("5"),
            r#""5" has no unit: write it as "5s", "5ms" or "5m""#
        );
        assert_eq!(
            duration("-1s"),
            r#""-1s" is negative: durations must be positive"#
        );
        assert!(
            duration("five minutes").starts_with(r#""five minutes" is not a duration ("#),
            "{}",
            duration("five minutes")
        );
    }

    #[test]
    fn sizes_and_durations_print_readably() {
        assert_eq!(ByteSize(512).to_string(), "512 B");
        assert_eq!(ByteSize(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(fmt_duration(Duration::from_millis(90_250)), "1m 30s 250ms");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
    }
}
