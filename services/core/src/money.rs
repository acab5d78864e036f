//! Exact decimal money amounts. Binance sends amounts as padded decimal strings
//! (`"0.00999800"`); they are parsed exactly into [`Decimal`] and compared numerically. No
//! floating point anywhere.

pub use rust_decimal::Decimal;

/// An amount string that is not an exact, non-negative plain decimal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount `{0}` is not a plain decimal number (digits with at most one `.`)")]
    NotDecimal(String),
    #[error("amount `{0}` is negative")]
    Negative(String),
    #[error("amount `{0}` has more precision or magnitude than can be represented exactly")]
    Inexact(String),
}

/// Parses a decimal amount exactly: `"0.00999800"` equals `"0.009998"`. Rejects exponents,
/// signs other than a leading `-` (reported as negative), and anything that would round.
pub fn parse_amount(raw: &str) -> Result<Decimal, MoneyError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(MoneyError::Empty);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut dots = 0;
    let mut any_digit = false;
    for character in digits.chars() {
        match character {
            '0'..='9' => any_digit = true,
            '.' => dots += 1,
            _ => return Err(MoneyError::NotDecimal(text.to_owned())),
        }
    }
    if !any_digit || dots > 1 {
        return Err(MoneyError::NotDecimal(text.to_owned()));
    }
    let value = Decimal::from_str_exact(text).map_err(|_| MoneyError::Inexact(text.to_owned()))?;
    if negative && !value.is_zero() {
        return Err(MoneyError::Negative(text.to_owned()));
    }
    Ok(value.normalize())
}

/// The canonical text of an amount (no trailing zeros), as used in webhook payloads.
pub fn format_amount(amount: Decimal) -> String {
    amount.normalize().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_binance_amounts_parse_exactly() {
        let padded = parse_amount("0.00999800").unwrap();
        let plain = parse_amount("0.009998").unwrap();
        assert_eq!(padded, plain);
        assert_eq!(format_amount(padded), "0.009998");
        assert_eq!(format_amount(parse_amount("100.00000000").unwrap()), "100");
        assert_eq!(
            format_amount(parse_amount("12.3456789012345678").unwrap()),
            "12.3456789012345678"
        );
    }

    #[test]
    fn rejects_non_decimals() {
        assert_eq!(parse_amount(""), Err(MoneyError::Empty));
        assert!(matches!(
            parse_amount("1e5"),
            Err(MoneyError::NotDecimal(_))
        ));
        assert!(matches!(
            parse_amount("1.2.3"),
            Err(MoneyError::NotDecimal(_))
        ));
        assert!(matches!(parse_amount("."), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(
            parse_amount("NaN"),
            Err(MoneyError::NotDecimal(_))
        ));
        assert!(matches!(parse_amount("-1.5"), Err(MoneyError::Negative(_))));
    }

    #[test]
    fn rejects_what_would_round() {
        assert!(matches!(
            parse_amount("0.00000000000000000000000000001"),
            Err(MoneyError::Inexact(_))
        ));
    }
}
