//! Python's regular-expression syntax rewritten into fancy-regex's ([`python_to_rust`]),
//! with the errors Python gives where fancy-regex would take a pattern.

use super::PatternUse;
use super::classes::{class, escape};

/// A Python pattern rewritten for fancy-regex ([`python_to_rust`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// The pattern in fancy-regex's syntax.
    pub(crate) rust: String,
    /// The groups its conditionals `(?(n)…)` name by number, to be checked once the groups
    /// are counted (those named by name are checked as they are met).
    pub(crate) conditions: Vec<usize>,
    /// Whether it starts in verbose mode (`(?x)`), so that a `#` comment may end it.
    pub(crate) verbose: bool,
}

/// A group open while a pattern is rewritten.
struct Group {
    /// A look-around, which fancy-regex does not repeat.
    look: bool,
    /// A look-behind, whose width Python requires fixed.
    behind: bool,
    /// Where it starts in the rewritten pattern.
    start: usize,
    /// Verbose mode outside it, back in force at its end.
    verbose: bool,
    /// Its group number, when it captures.
    capture: Option<usize>,
}

impl Group {
    /// A group that is no look-around, starting at `start`, with verbose mode `verbose`
    /// outside it.
    fn plain(start: usize, verbose: bool, capture: Option<usize>) -> Group {
        Group { look: false, behind: false, start, verbose, capture }
    }
}

/// A quantifier (`?`, `*`, `+`, `{m}`, `{m,}`, `{,n}`, `{m,n}`, each maybe lazy or
/// possessive).
pub(super) struct Quantifier {
    min: usize,
    max: Option<usize>,
    lazy: bool,
    /// Its length in characters.
    len: usize,
}

/// The groups of a pattern as it is read: those open, and the captures met so far.
struct Groups {
    open: Vec<Group>,
    /// Capturing groups opened so far (PEFT's own two first in a rank pattern key).
    count: usize,
    names: Vec<(String, usize)>,
}

impl Groups {
    /// Fails as Python does for a reference to group `n`: one not opened yet, or still open.
    fn check_reference(&self, n: usize) -> Result<(), String> {
        if n == 0 || n > self.count {
            return Err(format!("invalid group reference {n}"));
        }
        if self.open.iter().any(|g| g.capture == Some(n)) {
            return Err(format!("cannot refer to an open group ({n})"));
        }
        Ok(())
    }

    /// The number of the group named `name`, defined before.
    fn named(&self, name: &str) -> Result<usize, String> {
        self.names
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, k)| k)
            .ok_or_else(|| format!("unknown group name '{name}'"))
    }
}

/// `pattern` (Python's syntax) in the syntax fancy-regex reads with the same meaning:
/// - a character class item by item as Python reads it (a `-` between two items is a range,
///   any other `-` a character; `]` first is a character), each character escaped where Rust
///   reads it otherwise (`[`, `]`, `&`, `~`, `-`, `^`, `\`);
/// - octal escapes (`\0`, `\012`, `\101`, and in a class any `\` digits) as `\x{…}`, a
///   backreference as `(?:\n)` (so that a digit after it stays a character), and `\<`, `\>`
///   as the characters they are in Python;
/// - comments `(?#…)` (and in verbose mode `#` to the end of the line) dropped, so that what
///   they hold is not read as syntax;
/// - a condition on a named group as `(?(<name>)…)` (fancy-regex reads `(?(name)…)` as a
///   look-ahead for the text `name`);
/// - a look-around under a quantifier once when it must hold at least once, else as an
///   alternative with nothing (never tried, for at most zero times), keeping its groups:
///   fancy-regex repeats nothing zero-width;
/// - the flags `a` and `u` dropped (on module paths, ASCII, they change nothing).
///
/// `used` says how PEFT wraps it: a whole expression may open with global flags, and a rank
/// pattern key sits inside PEFT's second group (`(.*\.)?(key)$`), which a `)` in it may close.
///
/// An error where Python refuses a pattern that fancy-regex would take: an escape Python does
/// not know (`\z`, `\p{…}`, `\h`), a reference to a group not yet opened or still open, a
/// look-behind of varying width, a range or repeat whose ends are out of order, `(?<name>…)`,
/// a condition on a group name not defined before it, global flags anywhere but at the start
/// (Python 3.11 on), the flag `L`, unbalanced parentheses.
pub(crate) fn python_to_rust(pattern: &str, used: PatternUse) -> Result<Rewritten, String> {
    let cs: Vec<char> = pattern.chars().collect();
    let mut out = Rewritten { rust: String::with_capacity(pattern.len() + 8), conditions: Vec::new(), verbose: false };
    let mut groups = Groups { open: Vec::new(), count: 0, names: Vec::new() };
    if used == PatternUse::Tail {
        // PEFT's `(.*\.)?` is closed before the key, its second group open around it.
        let peft = Group::plain(0, false, Some(2));
        groups = Groups { open: vec![peft], count: 2, names: Vec::new() };
    }
    let mut verbose = false;
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| cs.get(i + k) == Some(&c));
    let mut i = 0;
    // Whether only global flag groups came before `i`, in a whole expression.
    let mut leading = matches!(used, PatternUse::Whole | PatternUse::Start);
    while i < cs.len() {
        let c = cs[i];
        let flag_group = at(i, "(?") && cs.get(i + 2).is_some_and(|c| "aiLmsux-".contains(*c));
        leading &= flag_group;
        if c == '\\' {
            let (next, reference) = escape(&cs, i, &mut out.rust, false)?;
            if let Some(n) = reference {
                groups.check_reference(n)?;
            }
            i = next;
        } else if c == '[' {
            i = class(&cs, i, &mut out.rust)?;
        } else if at(i, "(?#") {
            // Python reads a comment as its tokens: an escaped `)` does not end it.
            let mut j = i + 3;
            while j < cs.len() && cs[j] != ')' {
                j += if cs[j] == '\\' { 2 } else { 1 };
            }
            if j >= cs.len() {
                return Err("missing ), unterminated comment".into());
            }
            i = j + 1;
        } else if verbose && c == '#' {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if at(i, "(?(") {
            let (id, next) = name_before_paren(&cs, i + 3)?;
            let condition = if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
                let n = id.parse::<usize>().map_err(|_| format!("bad group number {id} in a condition"))?;
                out.conditions.push(n);
                n.to_string()
            } else {
                groups.named(&id)?;
                format!("<{id}>")
            };
            groups.open.push(Group::plain(out.rust.len(), verbose, None));
            out.rust.push_str(&format!("(?({condition})"));
            i = next;
        } else if at(i, "(?P=") {
            let (name, next) = name_before_paren(&cs, i + 4)?;
            groups.check_reference(groups.named(&name)?)?;
            out.rust.push_str(&format!("(?P={name})"));
            i = next;
        } else if at(i, "(?P<") {
            let from = i + 4;
            // A Python identifier: XID_Start or `_`, then XID_Continue.
            let len = cs[from..].iter().take_while(|&&c| unicode_ident::is_xid_continue(c)).count();
            let start = cs.get(from).is_some_and(|&c| c == '_' || unicode_ident::is_xid_start(c));
            if !start || cs.get(from + len) != Some(&'>') {
                return Err("bad character in group name".into());
            }
            let name: String = cs[from..from + len].iter().collect();
            if groups.names.iter().any(|(n, _)| *n == name) {
                return Err(format!("redefinition of group name '{name}'"));
            }
            groups.count += 1;
            groups.names.push((name, groups.count));
            groups.open.push(Group::plain(out.rust.len(), verbose, Some(groups.count)));
            out.rust.extend(&cs[i..from]);
            i = from;
        } else if at(i, "(?<") && !at(i, "(?<=") && !at(i, "(?<!") {
            return Err(format!("unknown extension ?<{}", cs.get(i + 3).copied().unwrap_or(' ')));
        } else if flag_group {
            let start = out.rust.len();
            let (next, scoped) = flags(&cs, i, leading, &mut out)?;
            match scoped {
                Some(inner) => {
                    groups.open.push(Group::plain(start, verbose, None));
                    verbose = inner.unwrap_or(verbose);
                }
                None => verbose |= out.verbose,
            }
            i = next;
        } else if c == '(' {
            let behind = at(i, "(?<=") || at(i, "(?<!");
            let look = behind || at(i, "(?=") || at(i, "(?!");
            let capture = (cs.get(i + 1) != Some(&'?')).then(|| {
                groups.count += 1;
                groups.count
            });
            groups.open.push(Group { look, behind, start: out.rust.len(), verbose, capture });
            out.rust.push(c);
            i += 1;
        } else if c == ')' {
            let Some(group) = groups.open.pop() else {
                return Err(format!("unbalanced parenthesis at position {i}"));
            };
            let inner_verbose = std::mem::replace(&mut verbose, group.verbose);
            out.rust.push(c);
            i += 1;
            if group.behind {
                check_fixed_width(&out.rust[group.start + 4..out.rust.len() - 1], inner_verbose)?;
            }
            if let (true, Some(q)) = (group.look, quantifier(&cs, i)?) {
                i += q.len;
                if q.min == 0 {
                    let look = out.rust.split_off(group.start);
                    out.rust.push_str(&match (q.max, q.lazy) {
                        (Some(0), _) => format!("(?:(?!){look}|)"),
                        (_, false) => format!("(?:{look}|)"),
                        (_, true) => format!("(?:|{look})"),
                    });
                }
            }
        } else if c == '{' && quantifier(&cs, i)?.is_some() {
            // `{,n}` as `{0,n}`: the same to fancy-regex, and what regex-syntax (which measures
            // a look-behind's width) reads as a repeat.
            if cs.get(i + 1) == Some(&',') {
                out.rust.push_str("{0");
                i += 1;
            } else {
                out.rust.push(c);
                i += 1;
            }
        } else if c == '{' {
            // Not a repeat, so a character to Python; escaped, so that fancy-regex does not
            // read a repeat in it after dropping verbose mode's spaces (`{1, 2}`).
            out.rust.push_str("\\{");
            i += 1;
        } else {
            out.rust.push(c);
            i += 1;
        }
    }
    // A whole expression closes every group; a rank pattern key leaves one open, which
    // PEFT's `)` closes.
    let left = usize::from(used == PatternUse::Tail);
    match groups.open.len().cmp(&left) {
        std::cmp::Ordering::Greater => Err("missing ), unterminated subpattern".into()),
        std::cmp::Ordering::Less => Err("unbalanced parenthesis: the key closes PEFT's group and opens none".into()),
        std::cmp::Ordering::Equal => Ok(out),
    }
}

/// Fails unless `body`, a look-behind's pattern (fancy-regex's syntax; `verbose` as in force
/// inside it), matches text of one length in characters only, as Python requires. A body
/// regex-syntax cannot read (a backreference, a nested look-around) is left to fancy-regex.
fn check_fixed_width(body: &str, verbose: bool) -> Result<(), String> {
    let parsed = regex_syntax::ParserBuilder::new().ignore_whitespace(verbose).build().parse(body);
    let Ok(hir) = parsed else { return Ok(()) };
    match width(&hir) {
        Some((low, high)) if high != Some(low) => Err("look-behind requires fixed-width pattern".into()),
        _ => Ok(()),
    }
}

/// The fewest and most characters `hir` matches (`None` for no bound), or `None` when it
/// matches nothing.
fn width(hir: &regex_syntax::hir::Hir) -> Option<(usize, Option<usize>)> {
    use regex_syntax::hir::{Class, HirKind};
    Some(match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => (0, Some(0)),
        HirKind::Literal(literal) => {
            let n = String::from_utf8_lossy(&literal.0).chars().count();
            (n, Some(n))
        }
        HirKind::Class(Class::Unicode(c)) if c.ranges().is_empty() => return None,
        HirKind::Class(Class::Bytes(c)) if c.ranges().is_empty() => return None,
        HirKind::Class(_) => (1, Some(1)),
        HirKind::Capture(capture) => width(&capture.sub)?,
        HirKind::Repetition(repeat) => {
            let (low, high) = width(&repeat.sub)?;
            let max = match (high, repeat.max) {
                (Some(0), _) => Some(0),
                (Some(h), Some(m)) => Some(h.saturating_mul(m as usize)),
                _ => None,
            };
            (low.saturating_mul(repeat.min as usize), max)
        }
        HirKind::Concat(items) => items.iter().try_fold((0usize, Some(0usize)), |(low, high), item| {
            let (l, h) = width(item)?;
            Some((low.saturating_add(l), high.zip(h).map(|(a, b)| a.saturating_add(b))))
        })?,
        HirKind::Alternation(items) => {
            let widths: Vec<_> = items.iter().filter_map(width).collect();
            let low = widths.iter().map(|w| w.0).min()?;
            (low, widths.iter().try_fold(0, |most, w| w.1.map(|h| most.max(h))))
        }
    })
}

/// The quantifier at `cs[k]`, if one is there; an error, as Python's, for `{m,n}` with
/// `m > n`.
pub(super) fn quantifier(cs: &[char], k: usize) -> Result<Option<Quantifier>, String> {
    let Some(&c) = cs.get(k) else { return Ok(None) };
    let (min, max, len) = match c {
        '?' => (0, Some(1), 1),
        '*' => (0, None, 1),
        '+' => (1, None, 1),
        '{' => {
            let digits = |from: usize| cs[from.min(cs.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
            let number = |from: usize, len: usize| cs[from..from + len].iter().collect::<String>().parse().ok();
            let low = digits(k + 1);
            let comma = cs.get(k + 1 + low) == Some(&',');
            let high = if comma { digits(k + 2 + low) } else { 0 };
            let close = k + 1 + low + usize::from(comma) + high;
            if cs.get(close) != Some(&'}') || (low == 0 && !comma) {
                return Ok(None);
            }
            let min = number(k + 1, low).unwrap_or(0);
            let max = match comma {
                false => Some(min),
                true => number(k + 2 + low, high),
            };
            (min, max, close + 1 - k)
        }
        _ => return Ok(None),
    };
    if max.is_some_and(|max| max < min) {
        return Err("min repeat greater than max repeat".into());
    }
    let suffix = cs.get(k + len).copied();
    let lazy = suffix == Some('?');
    Ok(Some(Quantifier { min, max, lazy, len: len + usize::from(matches!(suffix, Some('?' | '+'))) }))
}

/// The name (or group number) from `cs[from]` to the next `)`, and the index after that `)`.
fn name_before_paren(cs: &[char], from: usize) -> Result<(String, usize), String> {
    match cs[from..].iter().position(|&c| c == ')') {
        Some(len) => Ok((cs[from..from + len].iter().collect(), from + len + 1)),
        None => Err("missing ), unterminated name".into()),
    }
}

/// An inline flag group at `cs[i]` (`(?aimsux)` or `(?aimsux-imsx:`), without `a` and `u`
/// (and dropped whole when nothing is left of a global one); `leading` when only global flag
/// groups come before it in a whole expression, where global ones may be (and `x` starts
/// verbose mode, noted in `out`). Returns the index after it and, for a scoped group, the
/// verbose mode inside it where the group sets it.
fn flags(cs: &[char], i: usize, leading: bool, out: &mut Rewritten) -> Result<(usize, Option<Option<bool>>), String> {
    let mut j = i + 2;
    let mut kept = String::new();
    while let Some(&c) = cs.get(j).filter(|c| "aiLmsux-".contains(**c)) {
        if c == 'L' {
            return Err("bad inline flags: cannot use 'L' flag with a str pattern".into());
        }
        if !"au".contains(c) {
            kept.push(c);
        }
        j += 1;
    }
    let (on, off) = kept.split_once('-').unwrap_or((&kept, ""));
    let inner_verbose = if on.contains('x') {
        Some(true)
    } else if off.contains('x') {
        Some(false)
    } else {
        None
    };
    match cs.get(j) {
        Some(')') if !leading => Err("global flags not at the start of the expression".into()),
        Some(')') => {
            out.verbose |= on.contains('x');
            if !kept.is_empty() {
                out.rust.push_str(&format!("(?{kept})"));
            }
            Ok((j + 1, None))
        }
        Some(':') => {
            out.rust.push_str(&format!("(?{kept}:"));
            Ok((j + 1, Some(inner_verbose)))
        }
        // Not a flag group after all: left for fancy-regex to refuse.
        _ => {
            out.rust.extend(&cs[i..j]);
            Ok((j, None))
        }
    }
}
