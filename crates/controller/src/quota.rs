//! `spec.quota`: a Kubernetes quantity (`10Gi`, `500M`, `1e9`, `1073741824`)
//! turned into a whole number of bytes for the server.
//!
//! The CRD's CEL rule already refuses most bad values at `kubectl apply`;
//! this parser is the controller's own check, so a CRD installed without the
//! rule (or an older one) still cannot make it send nonsense to the server.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a quota is not a number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "quota {text:?} is not a Kubernetes quantity: use a number of bytes with an optional suffix such as Ki, Mi, Gi, Ti, k, M, G or T (for example 10Gi)"
    )]
    Malformed { text: String },
    #[error("quota {text:?} is negative: use 0 or leave it unset for no limit")]
    Negative { text: String },
    #[error("quota {text:?} is not a whole number of bytes")]
    Fractional { text: String },
    #[error("quota {text:?} is larger than 16 EiB, the most the server can count")]
    TooLarge { text: String },
}

/// Bytes of a quantity, exactly: `1.5Gi` is 1610612736, `1500m` is refused
/// (1.5 bytes), `-1` is refused.
pub fn quantity_bytes(quantity: &Quantity) -> Result<u64, QuotaError> {
    parse_bytes(quantity.0.trim())
}

fn parse_bytes(text: &str) -> Result<u64, QuotaError> {
    let malformed = || QuotaError::Malformed {
        text: text.to_owned(),
    };
    let too_large = || QuotaError::TooLarge {
        text: text.to_owned(),
    };
    let fractional = || QuotaError::Fractional {
        text: text.to_owned(),
    };

    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = unsigned
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (integer_digits, fraction_digits) = number.split_once('.').unwrap_or((number, ""));
    if (integer_digits.is_empty() && fraction_digits.is_empty()) || fraction_digits.contains('.') {
        return Err(malformed());
    }

    // number = mantissa / 10^fraction_digits.len()
    let mut mantissa: u128 = 0;
    for digit in integer_digits.bytes().chain(fraction_digits.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|value| value.checked_add(u128::from(digit - b'0')))
            .ok_or_else(too_large)?;
    }
    let mut denominator: u128 = 10u128
        .checked_pow(u32::try_from(fraction_digits.len()).map_err(|_| malformed())?)
        .ok_or_else(too_large)?;

    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "m" => {
            denominator = denominator.checked_mul(1_000).ok_or_else(too_large)?;
            1
        }
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().map_err(|_| malformed())?;
            let scale = 10u128.checked_pow(power.unsigned_abs());
            match (power < 0, scale) {
                (false, Some(scale)) => scale,
                (false, None) if mantissa == 0 => 1,
                (false, None) => return Err(too_large()),
                (true, Some(scale)) => match denominator.checked_mul(scale) {
                    Some(scaled) => {
                        denominator = scaled;
                        1
                    }
                    None if mantissa == 0 => 1,
                    None => return Err(fractional()),
                },
                // any mantissa that fits in u128 over 10^39 or more is below one byte
                (true, None) if mantissa == 0 => 1,
                (true, None) => return Err(fractional()),
            }
        }
        _ => return Err(malformed()),
    };

    let numerator = mantissa.checked_mul(multiplier).ok_or_else(too_large)?;
    if numerator == 0 {
        return Ok(0);
    }
    if negative {
        return Err(QuotaError::Negative {
            text: text.to_owned(),
        });
    }
    if numerator % denominator != 0 {
        return Err(fractional());
    }
    u64::try_from(numerator / denominator).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Result<u64, QuotaError> {
        quantity_bytes(&Quantity(text.to_owned()))
    }

    #[test]
    fn binary_and_decimal_suffixes_count_bytes() {
        assert_eq!(bytes("1073741824"), Ok(1 << 30));
        assert_eq!(bytes("10Gi"), Ok(10 << 30));
        assert_eq!(bytes("1Ki"), Ok(1024));
        assert_eq!(bytes("1Ei"), Ok(1 << 60));
        assert_eq!(bytes("500M"), Ok(500_000_000));
        assert_eq!(bytes("2k"), Ok(2_000));
        assert_eq!(bytes("+3T"), Ok(3_000_000_000_000));
        assert_eq!(bytes(" 7 "), Ok(7));
    }

    #[test]
    fn fractions_and_exponents_are_exact() {
        assert_eq!(bytes("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(bytes("0.5Ki"), Ok(512));
        assert_eq!(bytes(".5k"), Ok(500));
        assert_eq!(bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(bytes("12E3"), Ok(12_000));
        assert_eq!(bytes("2000m"), Ok(2));
        assert_eq!(bytes("1000e-3"), Ok(1));
    }

    #[test]
    fn zero_means_no_limit_in_any_spelling() {
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(bytes("0Gi"), Ok(0));
        assert_eq!(bytes("-0"), Ok(0));
    }

    #[test]
    fn fractional_bytes_are_refused() {
        assert!(matches!(bytes("1500m"), Err(QuotaError::Fractional { .. })));
        assert!(matches!(bytes("0.1"), Err(QuotaError::Fractional { .. })));
        assert!(matches!(bytes("1e-1"), Err(QuotaError::Fractional { .. })));
        assert!(matches!(bytes("1e-60"), Err(QuotaError::Fractional { .. })));
        assert_eq!(bytes("0e-60"), Ok(0));
    }

    #[test]
    fn negative_quotas_are_refused_with_the_way_out() {
        let err = bytes("-1Gi").expect_err("negative");
        assert!(matches!(err, QuotaError::Negative { .. }));
        assert!(err.to_string().contains("leave it unset"));
    }

    #[test]
    fn garbage_is_refused_with_an_example() {
        for text in [
            "", "Gi", "ten", "10GB", "10 Gi", "1.2.3", "1e", "1ex", "--1", "0x10",
        ] {
            let err = bytes(text).expect_err(text);
            assert!(matches!(err, QuotaError::Malformed { .. }), "{text}: {err}");
            assert!(err.to_string().contains("10Gi"), "{err}");
        }
    }

    #[test]
    fn more_than_u64_is_too_large() {
        assert_eq!(
            bytes("16Ei"),
            Err(QuotaError::TooLarge {
                text: "16Ei".to_owned()
            })
        );
        assert!(matches!(bytes("1e40"), Err(QuotaError::TooLarge { .. })));
        assert!(matches!(
            bytes("999999999999999999999999999999999999999999"),
            Err(QuotaError::TooLarge { .. })
        ));
        assert_eq!(bytes("15Ei"), Ok(15 << 60));
    }
}
