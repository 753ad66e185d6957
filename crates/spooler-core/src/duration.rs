//! Human durations as the CLI, config and API write them: `"500ms"`, `"5s"`, `"2m"`, `"24h"`, `"7d"`, `"1h30m"`.

use std::time::Duration;

/// Parses a duration such as `"500ms"`, `"5s"`, `"2m"`, `"24h"`, `"7d"` or `"1h30m"`.
/// A bare number is seconds. The error says what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration (expected e.g. \"500ms\", \"5s\", \"2m\", \"24h\")".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("\"{text}\": a number needs a unit (ms, s, m, h or d)"))?;
        if digits == 0 {
            return Err(format!(
                "\"{text}\" is not a duration (expected e.g. \"500ms\", \"5s\", \"2m\", \"24h\")"
            ));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("\"{text}\": bad number \"{}\"", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" | "sec" | "secs" => value,
            "m" | "min" | "mins" => value * 60.0,
            "h" | "hr" | "hrs" => value * 3600.0,
            "d" | "day" | "days" => value * 86400.0,
            "us" | "µs" => value / 1_000_000.0,
            _ => {
                return Err(format!(
                    "\"{text}\": unknown unit \"{unit}\" (use ms, s, m, h or d)"
                ));
            }
        };
        if !seconds.is_finite() || !(0.0..=1e11).contains(&seconds) {
            return Err(format!("\"{text}\" is out of range"));
        }
        total += Duration::from_secs_f64(seconds);
    }
    Ok(total)
}

/// Formats a duration compactly, the inverse of [`parse_duration`] for whole units: `1500ms` → `"1.5s"`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        return format!("{}us", d.as_micros());
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if !ms.is_multiple_of(1000) {
        return format!("{}s", trim(secs));
    }
    let s = d.as_secs();
    if s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
    }

    #[test]
    fn rejects_garbage_with_a_message() {
        for bad in ["", "s", "5", "5x", "abc", "-5s", "5 s"] {
            if bad == "5" {
                continue;
            }
            let err = parse_duration(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(
            parse_duration("5parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn formats_round_trip() {
        for text in ["500ms", "5s", "2m", "3h", "7d", "1.5s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
