//! Whole-number flags, parsed with messages that say what is wrong with a value: negative,
//! fractional, or too large.

/// A count flag (`--steps`, `--batch-size`): a whole number, with a message saying what is
/// wrong with a negative, fractional or too large one. 0 passes, for the library to refuse
/// with the flag's name.
pub(crate) fn count(text: &str) -> Result<usize, String> {
    whole(text, "of at least 1", &usize::MAX)
}

/// `--seed`: a whole number from 0 to 2^64 − 1.
pub(crate) fn seed(text: &str) -> Result<u64, String> {
    whole(text, "from 0", &u64::MAX)
}

fn whole<T: std::str::FromStr + std::fmt::Display>(text: &str, range: &str, max: &T) -> Result<T, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<T>() {
        return Ok(n);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("is not a whole number (digits only, e.g. 100); give one {range}"));
    }
    if digits.bytes().all(|b| b == b'0') {
        // `-0`: zero, for the caller to judge.
        return "0".parse::<T>().map_err(|_| format!("give a whole number {range}"));
    }
    Err(if negative {
        format!("is negative; give a whole number {range}")
    } else {
        format!("is too large; the largest is {max}")
    })
}
