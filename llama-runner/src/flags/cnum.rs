//! C number parsing, as llama.cpp's `std::stoi` / `std::stoul` / `std::stof` (and ggml's `atoi`)
//! read a value: a prefix, stopping at the first character that does not fit.

use super::lex::flag_error;
use super::{CParser, FlagReason};
use crate::error::Result;

/// A number read from the start of a value, and whether the whole value was used.
pub(crate) struct CNum<T> {
    pub(crate) value: T,
    pub(crate) exact: bool,
}

pub(crate) fn skip_c_space(s: &str) -> &str {
    s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
}

/// The sign, the magnitude (saturated) and the rest of `strtol`'s base-10 prefix, or `None`
/// when there is no digit.
pub(crate) fn c_integer_prefix(s: &str) -> Option<(bool, u128, &str)> {
    let s = skip_c_space(s);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let mut mag: u128 = 0;
    for b in digits[..n].bytes() {
        mag = mag.saturating_mul(10).saturating_add(u128::from(b - b'0'));
    }
    Some((neg, mag, &digits[n..]))
}

/// C `atoi`: the leading decimal number (after spaces and a sign), 0 when there is none.
pub fn c_atoi(v: &str) -> i64 {
    match c_integer_prefix(v) {
        Some((neg, mag, _)) => {
            let m = i64::try_from(mag).unwrap_or(i64::MAX);
            if neg { -m } else { m }
        }
        None => 0,
    }
}

/// `std::stoi`.
pub(super) fn stoi(flag: &str, v: &str) -> Result<CNum<i32>> {
    let (neg, mag, rest) = c_integer_prefix(v)
        .ok_or_else(|| flag_error(flag, Some(v), FlagReason::NotANumber { parser: CParser::Stoi }))?;
    let signed = if neg { -i128::try_from(mag).unwrap_or(i128::MAX) } else { i128::try_from(mag).unwrap_or(i128::MAX) };
    let value = i32::try_from(signed)
        .map_err(|_| flag_error(flag, Some(v), FlagReason::OutOfRange { parser: CParser::Stoi }))?;
    Ok(CNum { value, exact: rest.is_empty() })
}

/// `std::stoul` (64-bit `unsigned long`): a leading `-` negates modulo 2^64.
pub(super) fn stoul(flag: &str, v: &str) -> Result<CNum<u64>> {
    let (neg, mag, rest) = c_integer_prefix(v)
        .ok_or_else(|| flag_error(flag, Some(v), FlagReason::NotANumber { parser: CParser::Stoul }))?;
    let mag =
        u64::try_from(mag).map_err(|_| flag_error(flag, Some(v), FlagReason::OutOfRange { parser: CParser::Stoul }))?;
    let value = if neg { mag.wrapping_neg() } else { mag };
    Ok(CNum { value, exact: rest.is_empty() })
}

/// `std::stof` for decimal numbers, `inf` and `nan`; hexadecimal floats are refused.
pub(crate) fn stof(flag: &str, v: &str) -> Result<CNum<f32>> {
    let s = skip_c_space(v);
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0f32, &s[1..]),
        Some(b'+') => (1.0f32, &s[1..]),
        _ => (1.0f32, s),
    };
    let lower = body.to_ascii_lowercase();
    for (word, value) in [("infinity", f32::INFINITY), ("inf", f32::INFINITY), ("nan", f32::NAN)] {
        if lower.starts_with(word) {
            return Ok(CNum { value: sign * value, exact: body.len() == word.len() });
        }
    }
    if lower.starts_with("0x") {
        return Err(flag_error(flag, Some(v), FlagReason::HexFloat));
    }
    let bytes = body.as_bytes();
    let mut end = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut digits = end;
    if bytes.get(end) == Some(&b'.') {
        let frac = bytes[end + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        digits += frac;
        end += 1 + frac;
    }
    if digits == 0 {
        return Err(flag_error(flag, Some(v), FlagReason::NotANumber { parser: CParser::Stof }));
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut e = end + 1;
        if matches!(bytes.get(e), Some(b'+' | b'-')) {
            e += 1;
        }
        let n = bytes[e.min(bytes.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n > 0 {
            end = e + n;
        }
    }
    let magnitude: f32 =
        body[..end].parse().map_err(|_| flag_error(flag, Some(v), FlagReason::NotANumber { parser: CParser::Stof }))?;
    let has_nonzero_digit =
        body[..end].bytes().take_while(|b| *b != b'e' && *b != b'E').any(|b| matches!(b, b'1'..=b'9'));
    if magnitude.is_infinite() || (has_nonzero_digit && (magnitude == 0.0 || magnitude.is_subnormal())) {
        return Err(flag_error(flag, Some(v), FlagReason::OutOfRange { parser: CParser::Stof }));
    }
    Ok(CNum { value: sign * magnitude, exact: end == body.len() })
}
