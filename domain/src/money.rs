//! Money as integer minor units (cents). Parsed from and printed as exact decimal text: no binary
//! floating point ever touches an amount.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An amount of the shop's one currency in minor units (1 major unit = 100 minor units).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

/// Why a decimal text is not an amount of money.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("expected a decimal number such as 12.34")]
    NotANumber,
    #[error("at most two decimals are allowed")]
    TooManyDecimals,
    #[error("amount is too large: the maximum is {}", Money::MAX)]
    TooLarge,
}

impl Money {
    pub const ZERO: Money = Money(0);
    /// The largest amount a single price or payment may have: 1,000,000,000.00.
    pub const MAX: Money = Money(100_000_000_000);

    pub const fn from_minor(minor_units: i64) -> Money {
        Money(minor_units)
    }

    pub const fn minor(self) -> i64 {
        self.0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn checked_mul(self, quantity: u32) -> Option<Money> {
        self.0.checked_mul(i64::from(quantity)).map(Money)
    }

    /// Parses the text of a JSON number (`12`, `12.5`, `12.34`, `1.234e3`, `-3.10`) exactly.
    /// Trailing zeros after the second decimal are accepted (`1.500`), other digits there are not.
    pub fn parse_decimal(text: &str) -> Result<Money, MoneyError> {
        let text = text.trim();
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(idx) => {
                let exponent_text = &unsigned[idx + 1..];
                let exponent_digits = exponent_text.trim_start_matches(['+', '-']);
                if exponent_digits.is_empty()
                    || !exponent_digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(MoneyError::NotANumber);
                }
                // A valid exponent beyond i32 is far out of range either way.
                let exponent: i32 =
                    exponent_text
                        .parse()
                        .unwrap_or(if exponent_text.starts_with('-') {
                            -(i32::MAX / 2)
                        } else {
                            i32::MAX / 2
                        });
                (&unsigned[..idx], exponent)
            }
            None => (unsigned, 0),
        };
        let (integer_digits, fraction_digits) = match mantissa.split_once('.') {
            Some((integer, fraction)) => (integer, fraction),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if integer_digits.is_empty()
            || !all_digits(integer_digits)
            || !all_digits(fraction_digits)
            || (mantissa.contains('.') && fraction_digits.is_empty())
        {
            return Err(MoneyError::NotANumber);
        }
        // digits * 10^(exponent - fraction_len) must be a whole number of cents.
        let mut digits: String = format!("{integer_digits}{fraction_digits}");
        let mut scale = i64::from(exponent) - fraction_digits.len() as i64 + 2; // power of ten to apply to get cents
        // Drop trailing zeros that only shift the scale.
        while scale < 0 && digits.ends_with('0') && digits.len() > 1 {
            digits.pop();
            scale += 1;
        }
        if scale < 0 {
            if digits.bytes().all(|b| b == b'0') {
                return Ok(Money::ZERO);
            }
            return Err(MoneyError::TooManyDecimals);
        }
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(Money::ZERO);
        }
        if digits.len() as i64 + scale > 18 {
            return Err(MoneyError::TooLarge);
        }
        let mut minor: i64 = digits.parse().map_err(|_| MoneyError::TooLarge)?;
        for _ in 0..scale {
            minor = minor.checked_mul(10).ok_or(MoneyError::TooLarge)?;
        }
        if minor > Money::MAX.0 {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money(if negative { -minor } else { minor }))
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Money::parse_decimal(text)
    }
}

/// Prints the shortest exact decimal: `12`, `12.5`, `12.34`, `-0.05`.
impl fmt::Display for Money {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let absolute = self.0.unsigned_abs();
        let (major, cents) = (absolute / 100, absolute % 100);
        match cents {
            0 => write!(formatter, "{sign}{major}"),
            c if c % 10 == 0 => write!(formatter, "{sign}{major}.{}", c / 10),
            c => write!(formatter, "{sign}{major}.{c:02}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_text_exactly() {
        let cases = [
            ("12", 1200),
            ("12.5", 1250),
            ("12.34", 1234),
            ("0.1", 10),
            ("0.01", 1),
            ("1.500", 150),
            ("1.2e1", 1200),
            ("1234e-2", 1234),
            ("-3.10", -310),
            ("0", 0),
            ("0.00", 0),
            ("1000000000", 100_000_000_000),
        ];
        for (text, minor) in cases {
            assert_eq!(
                Money::parse_decimal(text),
                Ok(Money::from_minor(minor)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_more_than_two_decimals_and_garbage() {
        assert_eq!(
            Money::parse_decimal("0.001"),
            Err(MoneyError::TooManyDecimals)
        );
        assert_eq!(
            Money::parse_decimal("12.345"),
            Err(MoneyError::TooManyDecimals)
        );
        assert_eq!(
            Money::parse_decimal("1e-3"),
            Err(MoneyError::TooManyDecimals)
        );
        for text in [
            "", "-", "abc", "1.", ".5", "1.2.3", "1e", "0x10", "NaN", "1_000",
        ] {
            assert_eq!(
                Money::parse_decimal(text),
                Err(MoneyError::NotANumber),
                "{text:?}"
            );
        }
    }

    #[test]
    fn rejects_amounts_above_the_maximum() {
        assert_eq!(
            Money::parse_decimal("1000000000.01"),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(Money::parse_decimal("1e300"), Err(MoneyError::TooLarge));
        assert_eq!(
            Money::parse_decimal("1e99999999999"),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            Money::parse_decimal("1e-99999999999"),
            Err(MoneyError::TooManyDecimals)
        );
        assert_eq!(Money::parse_decimal("0e-99999999999"), Ok(Money::ZERO));
        assert_eq!(
            Money::parse_decimal("99999999999999999999999"),
            Err(MoneyError::TooLarge)
        );
    }

    #[test]
    fn prints_the_shortest_exact_decimal() {
        for (minor, text) in [
            (1200, "12"),
            (1250, "12.5"),
            (1234, "12.34"),
            (5, "0.05"),
            (-310, "-3.1"),
        ] {
            assert_eq!(Money::from_minor(minor).to_string(), text);
            assert_eq!(Money::parse_decimal(text), Ok(Money::from_minor(minor)));
        }
    }
}
