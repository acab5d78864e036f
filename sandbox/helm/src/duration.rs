//! Go duration strings as Helm's `--timeout` takes them (`5m0s`, `300s`, `1h30m`, `1.5m`).

/// A malformed duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration `{0}`: expected a Go duration such as 300s, 5m0s or 1h30m")]
pub struct DurationError(pub String);

/// Parses a Go duration into whole seconds, rounding a fractional second up (so `500ms` is
/// still a positive timeout).
pub fn parse_seconds(text: &str) -> Result<u64, DurationError> {
    let error = || DurationError(text.to_string());
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(error());
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(error)?;
        if number_end == 0 {
            return Err(error());
        }
        let number: f64 = rest[..number_end].parse().map_err(|_| error())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(error()),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Ok(total.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_seconds("5m0s"), Ok(300));
        assert_eq!(parse_seconds("300s"), Ok(300));
        assert_eq!(parse_seconds("1h30m"), Ok(5400));
        assert_eq!(parse_seconds("1.5m"), Ok(90));
        assert_eq!(parse_seconds("500ms"), Ok(1));
        assert_eq!(parse_seconds("0"), Ok(0));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5", "m", "5x", "-5s", "5m0"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
