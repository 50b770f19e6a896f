//! Exact decimal prices, `mantissa × 10^exponent`, parsed from and written as decimal strings.
//!
//! No floating point touches a price between an exchange message and a response: feeds parse
//! the venue's decimal string into this type, the book compares and averages it exactly, and the
//! encoders write it back out digit by digit.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, Div, Mul, Rem};

/// The smallest exponent a price may have: 18 fractional digits, more than any venue sends.
pub const EXPONENT_MIN: i8 = -18;
/// The largest exponent a price may have.
pub const EXPONENT_MAX: i8 = 18;
/// The longest text [`Decimal::write`] produces: sign, 19 digits, "0." and 18 zeros of padding.
pub const TEXT_BYTES_MAX: usize = 48;

/// An exact decimal number. Two values compare by their numeric value, not their spelling, via
/// [`Decimal::cmp_value`]; `==` compares the representation, so `1.50` and `1.5` are not equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    mantissa: i64,
    exponent: i8,
}

/// Why a decimal string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// The text is empty or holds something other than an optional sign, digits, one point and an
    /// optional `e` exponent.
    #[error("not a decimal number")]
    Syntax,
    /// The value needs more than 19 significant digits or an exponent outside -18..=18.
    #[error("decimal out of range")]
    Range,
}

impl Decimal {
    pub const ZERO: Self = Self { mantissa: 0, exponent: 0 };

    /// A decimal from its parts, or `None` when the exponent is outside the supported range.
    pub const fn new(mantissa: i64, exponent: i8) -> Option<Self> {
        if exponent < EXPONENT_MIN || exponent > EXPONENT_MAX {
            return None;
        }
        Some(Self { mantissa, exponent })
    }

    pub const fn mantissa(self) -> i64 {
        self.mantissa
    }

    pub const fn exponent(self) -> i8 {
        self.exponent
    }

    /// Parses `-12.340`, `97123.45`, `0.000012`, `1.5e-3` exactly. Trailing fractional zeros are
    /// kept while they fit, so a venue's `97123.40` is served back as `97123.40`.
    pub fn parse(text: &[u8]) -> Result<Self, DecimalError> {
        let (negative, rest) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            Some((b'+', rest)) => (false, rest),
            Some(_) => (false, text),
            None => return Err(DecimalError::Syntax),
        };
        let (number, exp_text) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let mut mantissa: i64 = 0;
        let mut exponent: i32 = 0;
        let mut digits = 0usize;
        let mut seen_point = false;
        // Zeros after the point not yet folded into the mantissa: folding them late lets a long
        // run of trailing zeros be dropped instead of overflowing.
        let mut pending_zeros: i32 = 0;
        for &byte in number {
            match byte {
                b'.' if !seen_point => seen_point = true,
                b'0'..=b'9' => {
                    digits += 1;
                    let digit = i64::from(byte - b'0');
                    if seen_point && digit == 0 {
                        pending_zeros += 1;
                        continue;
                    }
                    for _ in 0..pending_zeros {
                        mantissa = mantissa.checked_mul(10).ok_or(DecimalError::Range)?;
                        exponent -= 1;
                    }
                    pending_zeros = 0;
                    mantissa =
                        mantissa.checked_mul(10).and_then(|m| m.checked_add(digit)).ok_or(DecimalError::Range)?;
                    if seen_point {
                        exponent -= 1;
                    }
                }
                _ => return Err(DecimalError::Syntax),
            }
        }
        if digits == 0 {
            return Err(DecimalError::Syntax);
        }
        if let Some(exp_text) = exp_text {
            exponent += parse_small_exponent(exp_text)?;
        }
        // Keep as many trailing zeros as fit, so the spelling survives when it can.
        while pending_zeros > 0 && exponent > i32::from(EXPONENT_MIN) {
            match mantissa.checked_mul(10) {
                Some(m) => {
                    mantissa = m;
                    exponent -= 1;
                    pending_zeros -= 1;
                }
                None => break,
            }
        }
        // A positive exponent folds into the mantissa, so every parsed value is written back as
        // plain digits that parse to the same value (`1e19` does not fit an i64: refused).
        while exponent > 0 {
            mantissa = mantissa.checked_mul(10).ok_or(DecimalError::Range)?;
            exponent -= 1;
        }
        // Too many fractional digits: drop trailing zeros of the mantissa, never a significant digit.
        while exponent < i32::from(EXPONENT_MIN) && mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        let exponent = i8::try_from(exponent).map_err(|_| DecimalError::Range)?;
        let mantissa = if negative { -mantissa } else { mantissa };
        Self::new(mantissa, exponent).ok_or(DecimalError::Range)
    }

    /// Writes the plain decimal text (`97123.45`, `0.00001`, `1200`) into `out` and returns its
    /// length. Never allocates.
    pub fn write(self, out: &mut [u8; TEXT_BYTES_MAX]) -> usize {
        let mut digits = [0u8; 20];
        let mut magnitude = self.mantissa.unsigned_abs();
        let mut count = 0;
        loop {
            digits[digits.len() - 1 - count] = b'0' + (magnitude % 10) as u8;
            magnitude /= 10;
            count += 1;
            if magnitude == 0 {
                break;
            }
        }
        let digits = &digits[digits.len() - count..];
        let mut len = 0;
        if self.mantissa < 0 {
            out[0] = b'-';
            len = 1;
        }
        if self.exponent >= 0 {
            out[len..len + count].copy_from_slice(digits);
            len += count;
            if self.mantissa != 0 {
                for _ in 0..self.exponent {
                    out[len] = b'0';
                    len += 1;
                }
            }
            return len;
        }
        let fraction = usize::from(self.exponent.unsigned_abs());
        if count > fraction {
            let whole = count - fraction;
            out[len..len + whole].copy_from_slice(&digits[..whole]);
            len += whole;
            out[len] = b'.';
            len += 1;
            out[len..len + fraction].copy_from_slice(&digits[whole..]);
            len + fraction
        } else {
            out[len] = b'0';
            out[len + 1] = b'.';
            len += 2;
            for _ in 0..fraction - count {
                out[len] = b'0';
                len += 1;
            }
            out[len..len + count].copy_from_slice(digits);
            len + count
        }
    }

    /// Numeric comparison: `1.50` and `1.5` are equal here.
    pub fn cmp_value(self, other: Self) -> Ordering {
        // The venues of one symbol almost always quote with the same number of decimals.
        if self.exponent == other.exponent {
            return self.mantissa.cmp(&other.mantissa);
        }
        let (a, b, _) = align(self, other);
        match (a, b) {
            (Some(a), Some(b)) => a.cmp(&b),
            // Only the side scaled up can overflow, and then its magnitude beats any i64.
            (None, _) => sign_order(self.mantissa),
            (_, None) => sign_order(other.mantissa).reverse(),
        }
    }

    /// The exact mean of two prices, with one more fractional digit when the sum is odd. Used for
    /// the median of an even number of venues.
    pub fn midpoint(self, other: Self) -> Self {
        let (Some(a), Some(b), exponent) = align(self, other) else {
            // The two differ by more than 10^19: no meaningful mean, keep the lower.
            return if self.cmp_value(other) == Ordering::Greater { other } else { self };
        };
        let sum = a + b;
        let (mut value, mut exponent) =
            if sum % 2 == 0 || exponent == EXPONENT_MIN { (sum / 2, exponent) } else { (sum * 5, exponent - 1) };
        while i64::try_from(value).is_err() {
            value /= 10;
            exponent += 1;
        }
        let mantissa = i64::try_from(value).unwrap_or(i64::MAX);
        Self::new(mantissa, exponent.min(EXPONENT_MAX)).unwrap_or(self)
    }

    /// `|self - other|`, exact whenever the difference fits 19 digits (two prices of one symbol
    /// always do); a wider one keeps its 19 leading digits. The spread between venues.
    pub fn abs_diff(self, other: Self) -> Self {
        if self.exponent == other.exponent {
            if let Some(diff) = self.mantissa.checked_sub(other.mantissa).and_then(i64::checked_abs) {
                return Self { mantissa: diff, exponent: self.exponent };
            }
        }
        let (Some(a), Some(b), mut exponent) = align(self, other) else {
            // One side is more than 10^19 times the other: the difference is the larger one.
            let abs = |d: Self| Self { mantissa: d.mantissa.saturating_abs(), exponent: d.exponent };
            let (a, b) = (abs(self), abs(other));
            return if a.cmp_value(b) == Ordering::Greater { a } else { b };
        };
        let mut diff = (a - b).unsigned_abs();
        while diff > i64::MAX as u128 && exponent < EXPONENT_MAX {
            diff /= 10;
            exponent += 1;
        }
        Self { mantissa: i64::try_from(diff).unwrap_or(i64::MAX), exponent }
    }

    /// True when `self` lies within `bps` basis points (1/100 of a percent) of `reference`, a
    /// positive price: `|self - reference| <= reference * bps / 10000`, decided exactly.
    #[inline]
    pub fn within_bps(self, reference: Self, bps: u32) -> bool {
        // A bound over 100% counts as 100% (book.outlier_pct allows 50 at most): beyond it the
        // products in `within_fraction` could overflow.
        let bps = bps.min(10_000);
        // The venues of one symbol almost always quote with the same number of decimals.
        if self.exponent == reference.exponent {
            let diff = self.mantissa.abs_diff(reference.mantissa);
            return reference.mantissa > 0 && within_fraction(diff, reference.mantissa.unsigned_abs(), bps.into());
        }
        let (Some(value), Some(reference), _) = align(self, reference) else {
            // Scaling overflowed: the two are more than 10^19 apart in magnitude, far outside
            // any bound under 100%.
            return false;
        };
        if reference <= 0 {
            return false;
        }
        let diff = (value - reference).unsigned_abs();
        let reference = reference.unsigned_abs();
        // In u64 when it fits (every read's common case: u128 division is a libcall).
        match (u64::try_from(diff), u64::try_from(reference)) {
            (Ok(diff), Ok(reference)) => within_fraction(diff, reference, bps.into()),
            _ => within_fraction(diff, reference, bps.into()),
        }
    }
}

/// `diff <= reference * bps / 10000`, with the product's floor computed in two parts so that it
/// cannot overflow (`bps` at most 10000). The floor is exact for the comparison: `diff` is an
/// integer, so `diff <= x` iff `diff <= floor(x)`.
#[inline]
fn within_fraction<T>(diff: T, reference: T, bps: T) -> bool
where
    T: Copy + PartialOrd + From<u32> + Add<Output = T> + Mul<Output = T> + Div<Output = T> + Rem<Output = T>,
{
    let scale = T::from(10_000);
    diff <= bps * (reference / scale) + bps * (reference % scale) / scale
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; TEXT_BYTES_MAX];
        let len = self.write(&mut text);
        // The writer emits ASCII digits, '-' and '.', always valid UTF-8.
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
    }
}

fn sign_order(mantissa: i64) -> Ordering {
    mantissa.cmp(&0)
}

/// Both mantissas scaled to the smaller exponent, `None` for a side whose scaling overflows.
fn align(a: Decimal, b: Decimal) -> (Option<i128>, Option<i128>, i8) {
    let exponent = a.exponent.min(b.exponent);
    let scale = |d: Decimal| {
        let shift = u32::try_from(d.exponent - exponent).ok()?;
        i128::from(d.mantissa).checked_mul(10i128.checked_pow(shift)?)
    };
    (scale(a), scale(b), exponent)
}

fn parse_small_exponent(text: &[u8]) -> Result<i32, DecimalError> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DecimalError::Syntax);
    }
    let value = digits.iter().fold(0i32, |acc, &d| acc * 10 + i32::from(d - b'0'));
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(d: Decimal) -> String {
        d.to_string()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::parse(s.as_bytes()).expect("test literal parses")
    }

    #[test]
    fn parses_venue_spellings_exactly() {
        assert_eq!(dec("97123.45"), Decimal::new(9712345, -2).expect("in range"));
        assert_eq!(dec("97123.40"), Decimal::new(9712340, -2).expect("in range"));
        assert_eq!(dec("0.000012"), Decimal::new(12, -6).expect("in range"));
        assert_eq!(dec("1200"), Decimal::new(1200, 0).expect("in range"));
        assert_eq!(dec("-3.5"), Decimal::new(-35, -1).expect("in range"));
        assert_eq!(dec("1.5e-3"), Decimal::new(15, -4).expect("in range"));
        assert_eq!(dec(".5"), Decimal::new(5, -1).expect("in range"));
        assert_eq!(dec("5."), Decimal::new(5, 0).expect("in range"));
    }

    #[test]
    fn long_trailing_zeros_are_dropped_not_overflowed() {
        let d = dec("97123.400000000000000000000000");
        assert_eq!(d.cmp_value(dec("97123.4")), Ordering::Equal);
        assert_eq!(text(dec("0.10000000000000000000")), "0.100000000000000000");
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "1e1234", "1,5", " 1", "0x10", "1-2"] {
            assert!(Decimal::parse(bad.as_bytes()).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(Decimal::parse(b"99999999999999999999"), Err(DecimalError::Range));
        assert_eq!(Decimal::parse(b"0.0000000000000000001"), Err(DecimalError::Range));
    }

    #[test]
    fn writes_plain_text() {
        assert_eq!(text(Decimal::new(9712345, -2).expect("in range")), "97123.45");
        assert_eq!(text(Decimal::new(12, -6).expect("in range")), "0.000012");
        assert_eq!(text(Decimal::new(-12, -1).expect("in range")), "-1.2");
        assert_eq!(text(Decimal::new(12, 3).expect("in range")), "12000");
        assert_eq!(text(Decimal::new(0, 3).expect("in range")), "0");
        assert_eq!(text(Decimal::new(i64::MIN, -18).expect("in range")), "-9.223372036854775808");
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(dec("1.50").cmp_value(dec("1.5")), Ordering::Equal);
        assert_eq!(dec("1.49").cmp_value(dec("1.5")), Ordering::Less);
        assert_eq!(dec("-2").cmp_value(dec("1")), Ordering::Less);
        let huge = Decimal::new(i64::MAX, 18).expect("in range");
        let tiny = Decimal::new(1, -18).expect("in range");
        assert_eq!(huge.cmp_value(tiny), Ordering::Greater);
        assert_eq!(tiny.cmp_value(huge), Ordering::Less);
    }

    #[test]
    fn midpoint_is_exact() {
        assert_eq!(text(dec("97123.45").midpoint(dec("97123.40"))), "97123.425");
        assert_eq!(text(dec("10").midpoint(dec("20"))), "15");
        assert_eq!(text(dec("1.1").midpoint(dec("1.15"))), "1.125");
    }

    #[test]
    fn abs_diff_is_exact() {
        assert_eq!(text(dec("97123.45").abs_diff(dec("97120.4"))), "3.05");
        assert_eq!(text(dec("100").abs_diff(dec("100.00"))), "0.00");
        assert_eq!(text(dec("1.5").abs_diff(dec("2"))), "0.5");
        let huge = Decimal::new(i64::MAX, 18).expect("in range");
        let tiny = Decimal::new(1, -18).expect("in range");
        assert_eq!(tiny.abs_diff(huge), huge);
    }

    #[test]
    fn within_bps_is_exact_at_the_bound() {
        assert!(dec("105").within_bps(dec("100"), 500));
        assert!(!dec("105.000000001").within_bps(dec("100"), 500));
        assert!(dec("95").within_bps(dec("100"), 500));
        assert!(!dec("94.99").within_bps(dec("100"), 500));
        assert!(dec("0.000105").within_bps(dec("0.0001"), 500));
        let huge = Decimal::new(i64::MAX, 18).expect("in range");
        assert!(!huge.within_bps(dec("1"), 5000));
        assert!(!dec("1").within_bps(huge, 5000));
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(mantissa in any::<i64>(), exponent in EXPONENT_MIN..=0i8) {
            let d = Decimal::new(mantissa, exponent).expect("exponent in range");
            let mut out = [0u8; TEXT_BYTES_MAX];
            let len = d.write(&mut out);
            let back = Decimal::parse(&out[..len]).expect("written text parses");
            prop_assert_eq!(back.cmp_value(d), Ordering::Equal);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Decimal::parse(&bytes);
        }

        #[test]
        fn whatever_parses_writes_back_to_the_same_value(text in "-?[0-9]{0,21}(\\.[0-9]{0,21})?(e-?[0-9]{1,2})?") {
            if let Ok(d) = Decimal::parse(text.as_bytes()) {
                let mut out = [0u8; TEXT_BYTES_MAX];
                let len = d.write(&mut out);
                let back = Decimal::parse(&out[..len]).expect("written text parses");
                prop_assert_eq!(back.cmp_value(d), Ordering::Equal);
            }
        }

        #[test]
        fn within_bps_agrees_with_exact_rational_arithmetic(a in 1i64..1_000_000_000, b in 1i64..1_000_000_000,
                                                           ea in -8i8..=0, eb in -8i8..=0, bps in 0u32..5000) {
            let x = Decimal::new(a, ea).expect("in range");
            let r = Decimal::new(b, eb).expect("in range");
            // Both scaled to 10^-16: |x - r| * 10000 <= r * bps, in i128 (no overflow at these sizes).
            let xs = i128::from(a) * 10i128.pow((ea + 16) as u32);
            let rs = i128::from(b) * 10i128.pow((eb + 16) as u32);
            prop_assert_eq!(x.within_bps(r, bps), (xs - rs).abs() * 10_000 <= rs * i128::from(bps));
            let d = x.abs_diff(r);
            prop_assert_eq!(i128::from(d.mantissa()) * 10i128.pow((d.exponent() + 16) as u32), (xs - rs).abs());
        }

        #[test]
        fn midpoint_lies_between(a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000,
                                 ea in -8i8..=0, eb in -8i8..=0) {
            let a = Decimal::new(a, ea).expect("in range");
            let b = Decimal::new(b, eb).expect("in range");
            let m = a.midpoint(b);
            let (lo, hi) = if a.cmp_value(b) == Ordering::Greater { (b, a) } else { (a, b) };
            prop_assert_ne!(m.cmp_value(lo), Ordering::Less);
            prop_assert_ne!(m.cmp_value(hi), Ordering::Greater);
        }
    }
}
