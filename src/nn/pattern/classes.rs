//! Escapes and character classes in Python's syntax, written in fancy-regex's: where the two
//! read the same characters otherwise (octal escapes, `\<`, a class's `[`, `&&`, `--`).

/// The escape at `cs[i]` (a `\`), written to `out` in fancy-regex's syntax; `in_class` as
/// inside `[…]`. Returns the index after it, and the group number when it is a backreference.
/// An error for an escape Python refuses (an ASCII letter it gives no meaning), and for
/// `\N{…}`, which would need Unicode's table of names.
pub(super) fn escape(
    cs: &[char],
    i: usize,
    out: &mut String,
    in_class: bool,
) -> Result<(usize, Option<usize>), String> {
    let Some(&c) = cs.get(i + 1) else { return Err("bad escape (end of pattern)".into()) };
    let octal = |k: usize| cs.get(k).is_some_and(|c| c.is_digit(8));
    let digit = |k: usize| cs.get(k).is_some_and(char::is_ascii_digit);
    // Python: `\0` and up to two more octal digits, or three octal digits, are a character;
    // in a class any octal digits are; other digits outside a class are a group number.
    let octal_len = if c == '0' || in_class && octal(i + 1) {
        1 + usize::from(octal(i + 2)) + usize::from(octal(i + 2) && octal(i + 3))
    } else if octal(i + 1) && octal(i + 2) && octal(i + 3) {
        3
    } else {
        0
    };
    if octal_len > 0 {
        let digits: String = cs[i + 1..i + 1 + octal_len].iter().collect();
        let value = u32::from_str_radix(&digits, 8).unwrap_or(0);
        if value > 0o377 {
            return Err(format!(r"octal escape value \{digits} outside of range 0-0o377"));
        }
        out.push_str(&format!("\\x{{{value:x}}}"));
        return Ok((i + 1 + octal_len, None));
    }
    if c.is_ascii_digit() && !in_class {
        // A group number of one or two digits; a digit after it is a character.
        let len = 1 + usize::from(digit(i + 2));
        let number: String = cs[i + 1..i + 1 + len].iter().collect();
        out.push_str(&format!("(?:\\{number})"));
        return Ok((i + 1 + len, number.parse().ok()));
    }
    if c == 'N' {
        return Err(r"\N{…} (a character by its Unicode name) is not supported here; write the character".into());
    }
    let known = if in_class { "dDsSwWafnrtvxuUb" } else { "AbBdDsSwWZafnrtvxuU" };
    if c.is_ascii_alphabetic() && !known.contains(c) {
        return Err(format!(r"bad escape \{c}"));
    }
    match c {
        '<' | '>' => out.push(c),
        'b' if in_class => out.push_str("\\x{8}"),
        // fancy-regex reads `\b{…}` as a kind of word boundary; Python reads a `{` after it
        // as a character, or a repeat of the boundary, which it refuses.
        'b' | 'B' if cs.get(i + 2) == Some(&'{') => {
            if super::python::quantifier(cs, i + 2)?.is_some() {
                return Err("nothing to repeat".into());
            }
            out.push_str(&format!("\\{c}\\{{"));
            return Ok((i + 3, None));
        }
        _ => {
            out.push('\\');
            out.push(c);
        }
    }
    Ok((i + 2, None))
}

/// The character class at `cs[i]` (a `[`), item by item as Python reads it, written to `out`
/// in fancy-regex's syntax. Returns the index after it; an unterminated class is copied as it
/// stands, for fancy-regex to refuse. An error for a range whose ends are out of order.
pub(super) fn class(cs: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    let mut text = String::from("[");
    let mut j = i + 1;
    if cs.get(j) == Some(&'^') {
        text.push('^');
        j += 1;
    }
    let mut first = true;
    loop {
        match cs.get(j) {
            None => {
                out.extend(&cs[i..]);
                return Ok(cs.len());
            }
            Some(']') if !first => {
                text.push(']');
                out.push_str(&text);
                return Ok(j + 1);
            }
            Some(_) => {}
        }
        first = false;
        let (next, low) = class_item(cs, j, &mut text)?;
        j = next;
        if cs.get(j) == Some(&'-') && cs.get(j + 1).is_some_and(|&c| c != ']') {
            text.push('-');
            let (next, high) = class_item(cs, j + 1, &mut text)?;
            if let (Some(low), Some(high)) = (low, high)
                && low > high
            {
                return Err(format!("bad character range {low}-{high}"));
            }
            j = next;
        }
    }
}

/// One character (or escape) of a class at `cs[j]`, written to `text`; returns the index
/// after it, and the character when it is one written as itself (or as `\` and a
/// punctuation mark).
fn class_item(cs: &[char], j: usize, text: &mut String) -> Result<(usize, Option<char>), String> {
    match cs[j] {
        '\\' => {
            let literal = cs.get(j + 1).copied().filter(|c| c.is_ascii_punctuation());
            Ok((escape(cs, j, text, true)?.0, literal))
        }
        c => {
            if "[]\\&~-^".contains(c) {
                text.push('\\');
            }
            text.push(c);
            Ok((j + 1, Some(c)))
        }
    }
}
