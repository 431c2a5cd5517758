//! The two exposition formats (OpenMetrics 1.0.0 and the classic text
//! format 0.0.4): negotiation from the `Accept` header, and the rendering
//! of the registry's families in either.

use super::*;

/// The exposition format of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`, the classic Prometheus text format.
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// What the official client libraries serve for an `Accept` header:
    /// OpenMetrics when the scraper prefers it (highest q; the first listed
    /// of equal q) over the text format, the text format otherwise (no
    /// header, nothing known asked for).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best: Option<(f64, Format)> = None;
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut q = 1.0;
            let mut version = None;
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_string()),
                    _ => {}
                }
            }
            let format = match (media.as_str(), version.as_deref()) {
                ("application/openmetrics-text", None | Some("1.0.0" | "0.0.1")) => {
                    Format::OpenMetrics
                }
                ("text/plain", None | Some("0.0.4")) | ("text/*" | "*/*", _) => Format::Text,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Text, |(_, f)| f)
    }
}

/// A duration in seconds, correctly rounded (`Duration::as_secs_f64` adds
/// the fraction to the whole seconds and gives 2.8742419999999997 for
/// 2.874242 s).
pub(super) fn seconds(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e9
}

/// A sample value: the shortest text that parses back to the same `f64`
/// (Rust's `Display` for floats), and the spellings both formats use for
/// the non-finite values.
pub(super) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        v.to_string()
    }
}

/// A label value with `\`, `"` and newlines escaped (both formats).
pub(super) fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

pub(super) fn sample(out: &mut String, name: &str, suffix: &str, labels: &Labels, value: f64) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label(out, value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(value));
    out.push('\n');
}

pub(super) fn render(s: &State, format: Format) -> String {
    let mut out = String::with_capacity(4096);
    for def in FAMILIES {
        // The text format declares a counter under its sample name.
        let declared = match (def.kind, format) {
            (Kind::Counter, Format::Text) => format!("{}_total", def.name),
            _ => def.name.to_string(),
        };
        let kind = match def.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        // Help texts are constants without `\`, `"` or newlines.
        let _ = writeln!(out, "# HELP {declared} {}", def.help);
        let _ = writeln!(out, "# TYPE {declared} {kind}");
        match def.kind {
            Kind::Histogram => {
                let h = &s.poll_duration;
                for (count, bound) in h.counts.iter().zip(POLL_BUCKETS) {
                    let le = vec![("le", number(bound))];
                    sample(&mut out, def.name, "_bucket", &le, *count as f64);
                }
                let le = vec![("le", "+Inf".to_string())];
                sample(&mut out, def.name, "_bucket", &le, h.count as f64);
                sample(&mut out, def.name, "_sum", &vec![], h.sum);
                sample(&mut out, def.name, "_count", &vec![], h.count as f64);
            }
            Kind::Counter | Kind::Gauge => {
                let suffix = if def.kind == Kind::Counter {
                    "_total"
                } else {
                    ""
                };
                for (labels, value) in s.series.get(def.name).into_iter().flatten() {
                    sample(&mut out, def.name, suffix, labels, *value);
                }
            }
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}
