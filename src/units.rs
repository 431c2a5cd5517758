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

/// Parses a size such as `"512MB"`, `"1GiB"` or `"16kB"`.
///
/// Units follow PostgreSQL's own settings (`shared_buffers = 1GB`): `kB`, `MB`,
/// `GB` and `TB` are powers of 1024, exactly like `KiB`, `MiB`, `GiB`, `TiB`.
/// A bare number (`"4096"`) or `B` means bytes. Unit names are case-insensitive.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a size: write a number and a unit, like \"512MB\" or \"1GiB\""
        ));
    }
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: {number:?} is not a number"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "kib" | "k" => 1 << 10,
        "mb" | "mib" | "m" => 1 << 20,
        "gb" | "gib" | "g" => 1 << 30,
        "tb" | "tib" | "t" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?} has an unknown size unit {other:?}: use B, kB, MB, GB, TB (or KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(ByteSize(bytes.round() as u64))
}

/// Parses a duration such as `"250ms"`, `"5m"`, `"2h 30m"` (humantime syntax).
/// A number without a unit is refused: `"5"` could mean seconds or minutes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!("{text:?} is negative: durations must be positive"));
    }
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{text:?} has no unit: write it as \"{trimmed}s\", \"{trimmed}ms\" or \"{trimmed}m\""
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("{text:?} is not a duration ({e}): write a number and a unit, like \"250ms\", \"30s\", \"5m\", \"6h\"")
    })
}

/// Prints a duration compactly for logs (`1m 30s`, `250ms`).
pub fn fmt_duration(d: Duration) -> String {
    // Milliseconds are the finest grain anything here is measured in.
    let rounded = Duration::from_millis(d.as_millis().min(u64::MAX as u128) as u64);
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

    #[test]
    fn sizes_and_durations_print_readably() {
        assert_eq!(ByteSize(512).to_string(), "512 B");
        assert_eq!(ByteSize(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(fmt_duration(Duration::from_millis(90_250)), "1m 30s 250ms");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
    }
}
