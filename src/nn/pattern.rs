//! PEFT's regular expressions (`target_modules` or `exclude_modules` as a string, the keys of
//! `rank_pattern` and `alpha_pattern`) are Python `re` patterns. [`Pattern`] compiles one with
//! the meaning Python gives it. fancy-regex reads most of Python's syntax as Python does
//! (look-around, backreferences, `(?P=name)`, `{,n}`, atomic groups, numbered conditions);
//! `python_to_rust` rewrites the rest first: character classes (where Rust reads `[`, `&&`,
//! `~~` and `--` as nested classes and set operations, Python as characters and ranges),
//! octal escapes, `\<` and `\>`, comments, named conditions, quantified look-arounds and the
//! flags Rust lacks. A differential fuzz against Python 3.11 (random patterns over module
//! paths) found no pattern both compile that they match differently; fancy-regex still takes
//! some that Python refuses (variable-width look-behind, `(?<name>…)`), where PEFT would fail.

/// How a [`Pattern`] is matched against a module's path, as PEFT matches each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternUse {
    /// The whole path (`re.fullmatch`): `target_modules` and `exclude_modules` as a string.
    Whole,
    /// Anywhere in the path (`re.search`): a pattern built in code.
    Anywhere,
    /// The path's whole tail after a dot, or the whole path (`re.match(r"(.*\.)?(p)$")`):
    /// the keys of `rank_pattern` and `alpha_pattern`.
    Tail,
}

/// A Python regular expression, compiled to match as PEFT matches it.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    used: PatternUse,
    /// Boxed: a compiled fancy-regex is some hundreds of bytes, and configs hold several.
    re: Box<fancy_regex::Regex>,
}

/// Backtracking steps one match may take (fancy-regex's default is a tenth of this): module
/// paths are a few dozen characters, so only a pattern of nested ambiguous loops gets near.
const BACKTRACK_LIMIT: usize = 10_000_000;

impl Pattern {
    /// `source`, in Python's `re` syntax, matched as `used` says; an error (the reason) when it
    /// is not a regular expression.
    pub fn new(source: &str, used: PatternUse) -> Result<Pattern, String> {
        let python = python_to_rust(source, used)?;
        let rust = &python.rust;
        // In verbose mode a `#` comment runs to the end of the line: the wrapper starts a new one.
        let end = if python.verbose { "\n" } else { "" };
        let anchored = match used {
            PatternUse::Whole => format!("^(?:{rust}{end})$"),
            PatternUse::Anywhere => rust.clone(),
            // PEFT's own groups, so that a group number in the key counts as in PEFT.
            // The whole of PEFT's expression under `^` (`re.match`), so that a key such as
            // `a)|(b` splits it as it splits PEFT's.
            PatternUse::Tail => format!("^(?:(.*\\.)?({rust}{end})$)"),
        };
        let re = fancy_regex::RegexBuilder::new(&anchored)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        // fancy-regex takes a condition on a group that does not exist (and fails when it
        // matches); Python refuses it.
        if let Some(bad) = python.conditions.iter().find(|&&n| n == 0 || n >= re.captures_len()) {
            return Err(format!("invalid group reference {bad} in a condition"));
        }
        Ok(Pattern { source: source.to_string(), used, re: Box::new(re) })
    }

    /// The pattern as written (Python's syntax).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How it is matched.
    pub fn used(&self) -> PatternUse {
        self.used
    }

    /// Whether `path` matches. A match that needs more than 10 million backtracking steps
    /// counts as none.
    pub fn is_match(&self, path: &str) -> bool {
        self.re.is_match(path).unwrap_or(false)
    }
}

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
    /// Where it starts in the rewritten pattern.
    start: usize,
    /// Verbose mode outside it, back in force at its end.
    verbose: bool,
}

/// A quantifier (`?`, `*`, `+`, `{m}`, `{m,}`, `{,n}`, `{m,n}`, each maybe lazy or
/// possessive).
struct Quantifier {
    min: usize,
    max: Option<usize>,
    lazy: bool,
    /// Its length in characters.
    len: usize,
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
/// pattern key sits inside PEFT's groups, where a `)` may close one of them.
///
/// An error where Python gives one that fancy-regex would not: a condition on a group name not
/// defined before it, global flags anywhere but at the start (Python 3.11 on), the flag `L`,
/// a `)` that closes nothing.
pub(crate) fn python_to_rust(pattern: &str, used: PatternUse) -> Result<Rewritten, String> {
    let cs: Vec<char> = pattern.chars().collect();
    let mut out = Rewritten { rust: String::with_capacity(pattern.len() + 8), conditions: Vec::new(), verbose: false };
    let mut names: Vec<String> = Vec::new();
    let mut open: Vec<Group> = Vec::new();
    let mut verbose = false;
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| cs.get(i + k) == Some(&c));
    let mut i = 0;
    // Whether only global flag groups came before `i`, in a whole expression.
    let mut leading = used == PatternUse::Whole;
    while i < cs.len() {
        let c = cs[i];
        let flag_group = at(i, "(?") && cs.get(i + 2).is_some_and(|c| "aiLmsux-".contains(*c));
        leading &= flag_group;
        if c == '\\' {
            i = escape(&cs, i, &mut out.rust, false);
        } else if c == '[' {
            i = class(&cs, i, &mut out.rust);
        } else if at(i, "(?#") {
            match cs[i..].iter().position(|&c| c == ')') {
                Some(len) => i += len + 1,
                None => {
                    out.rust.extend(&cs[i..]);
                    i = cs.len();
                }
            }
        } else if verbose && c == '#' {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if at(i, "(?(") {
            let Some(len) = cs[i + 3..].iter().position(|&c| c == ')') else {
                out.rust.extend(&cs[i..]);
                break;
            };
            let id: String = cs[i + 3..i + 3 + len].iter().collect();
            let condition = if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
                let n = id.parse::<usize>().map_err(|_| format!("bad group number {id} in a condition"))?;
                out.conditions.push(n);
                n.to_string()
            } else if names.contains(&id) {
                format!("<{id}>")
            } else {
                return Err(format!("unknown group name '{id}' in a condition"));
            };
            open.push(Group { look: false, start: out.rust.len(), verbose });
            out.rust.push_str(&format!("(?({condition})"));
            i += 3 + len + 1;
        } else if at(i, "(?P<") || (at(i, "(?<") && !at(i, "(?<=") && !at(i, "(?<!")) {
            let from = i + if at(i, "(?P<") { 4 } else { 3 };
            let len = cs[from..].iter().take_while(|c| c.is_alphanumeric() || **c == '_').count();
            if len > 0 && cs.get(from + len) == Some(&'>') {
                names.push(cs[from..from + len].iter().collect());
            }
            open.push(Group { look: false, start: out.rust.len(), verbose });
            out.rust.extend(&cs[i..from]);
            i = from;
        } else if flag_group {
            let start = out.rust.len();
            let (next, scoped) = flags(&cs, i, leading, &mut out)?;
            match scoped {
                Some(inner) => {
                    open.push(Group { look: false, start, verbose });
                    verbose = inner.unwrap_or(verbose);
                }
                None => verbose |= out.verbose,
            }
            i = next;
        } else if c == '(' {
            let look = ["(?=", "(?!", "(?<=", "(?<!"].iter().any(|s| at(i, s));
            open.push(Group { look, start: out.rust.len(), verbose });
            out.rust.push(c);
            i += 1;
        } else if c == ')' {
            let Some(group) = open.pop() else {
                if used != PatternUse::Tail {
                    return Err(format!("unbalanced parenthesis at position {i}"));
                }
                out.rust.push(c);
                i += 1;
                continue;
            };
            verbose = group.verbose;
            out.rust.push(c);
            i += 1;
            if let (true, Some(q)) = (group.look, quantifier(&cs, i)) {
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
        } else {
            out.rust.push(c);
            i += 1;
        }
    }
    Ok(out)
}

/// The quantifier at `cs[k]`, if one is there.
fn quantifier(cs: &[char], k: usize) -> Option<Quantifier> {
    let (min, max, len) = match cs.get(k)? {
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
                return None;
            }
            let min = number(k + 1, low).unwrap_or(0);
            let max = match comma {
                false => Some(min),
                true => number(k + 2 + low, high),
            };
            (min, max, close + 1 - k)
        }
        _ => return None,
    };
    let suffix = cs.get(k + len).copied();
    let lazy = suffix == Some('?');
    Some(Quantifier { min, max, lazy, len: len + usize::from(matches!(suffix, Some('?' | '+'))) })
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

/// The escape at `cs[i]` (a `\`), written to `out` in fancy-regex's syntax; `in_class` as
/// inside `[…]`. Returns the index after it.
fn escape(cs: &[char], i: usize, out: &mut String, in_class: bool) -> usize {
    let Some(&c) = cs.get(i + 1) else {
        out.push('\\');
        return i + 1;
    };
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
        out.push_str(&format!("\\x{{{value:x}}}"));
        return i + 1 + octal_len;
    }
    if c.is_ascii_digit() && !in_class {
        // A group number of one or two digits; a digit after it is a character.
        let len = 1 + usize::from(digit(i + 2));
        out.push_str("(?:\\");
        out.extend(&cs[i + 1..i + 1 + len]);
        out.push(')');
        return i + 1 + len;
    }
    match c {
        '<' | '>' => out.push(c),
        'b' if in_class => out.push_str("\\x{8}"),
        _ => {
            out.push('\\');
            out.push(c);
        }
    }
    i + 2
}

/// The character class at `cs[i]` (a `[`), item by item as Python reads it, written to `out`
/// in fancy-regex's syntax. Returns the index after it; an unterminated class is copied as it
/// stands, for fancy-regex to refuse.
fn class(cs: &[char], i: usize, out: &mut String) -> usize {
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
                return cs.len();
            }
            Some(']') if !first => {
                text.push(']');
                out.push_str(&text);
                return j + 1;
            }
            Some(_) => {}
        }
        first = false;
        j = class_item(cs, j, &mut text);
        if cs.get(j) == Some(&'-') && cs.get(j + 1).is_some_and(|&c| c != ']') {
            text.push('-');
            j = class_item(cs, j + 1, &mut text);
        }
    }
}

/// One character (or escape) of a class at `cs[j]`, written to `text`; returns the index
/// after it.
fn class_item(cs: &[char], j: usize, text: &mut String) -> usize {
    match cs[j] {
        '\\' => escape(cs, j, text, true),
        c => {
            if "[]\\&~-^".contains(c) {
                text.push('\\');
            }
            text.push(c);
            j + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(python: &str) -> String {
        python_to_rust(python, PatternUse::Whole).unwrap_or_else(|e| panic!("{python}: {e}")).rust
    }

    #[test]
    fn python_syntax_is_rewritten_where_rust_reads_it_otherwise() {
        for (python, rust_form) in [
            ("[a&&b]", r"[a\&\&b]"),
            ("[a~~b]", r"[a\~\~b]"),
            ("[+--]", r"[+-\-]"),
            ("[--x]", r"[\--x]"),
            ("[a-z--x]", r"[a-z\--x]"),
            ("[[]", r"[\[]"),
            ("[]a]", r"[\]a]"),
            ("[]-h]", r"[\]-h]"),
            ("[^]a&]", r"[^\]a\&]"),
            (r"[\]&]x&y", r"[\]\&]x&y"),
            (r"[\2e]", r"[\x{2}e]"),
            (r"\056query\0", r"\x{2e}query\x{0}"),
            (r"(a)\1", r"(a)(?:\1)"),
            (r"(a)\1(b)\12", r"(a)(?:\1)(b)(?:\12)"),
            (r"classifier\>", "classifier>"),
            ("(?#[)[ab]", "[ab]"),
            ("(?a)(?ai:x)", "(?i:x)"),
            ("(?!.*classifier).*(query|value)", "(?!.*classifier).*(query|value)"),
            ("a{,2}", "a{,2}"),
            (r".*(?=\.)?query", r".*(?:(?=\.)|)query"),
            ("a(?!b){2,}c(?<=c)+?", "a(?!b)c(?<=c)"),
            ("(?!x){0}y(?=z)??", "(?:(?!)(?!x)|)y(?:|(?=z))"),
            ("(?P<n>a)?(?(n)b|c)(?(1)d)", "(?P<n>a)?(?(<n>)b|c)(?(1)d)"),
        ] {
            assert_eq!(rust(python), rust_form, "{python}");
        }
        let verbose = python_to_rust("(?x) vit # a [ comment\n .*", PatternUse::Whole).expect("verbose");
        assert!(verbose.verbose && verbose.rust == "(?x) vit \n .*", "{verbose:?}");
        // Verbose mode scoped to a group ends with it.
        assert_eq!(rust("(?x:a # [ \n b)# [c]"), "(?x:a \n b)# [c]");
        assert!(python_to_rust("(?(n)a)(?P<n>b)", PatternUse::Whole).is_err(), "a name used before it is defined");
        let named = python_to_rust("(?P<n>b)(?(n)a)(?(2)c)", PatternUse::Whole).expect("defined");
        assert_eq!(named.conditions, [2]);
        // A name that does not end in `>` right away names no group (and is read only as far
        // as it goes): refused, as Python refuses it.
        let long = "(?P<".repeat(20_000) + ">";
        assert!(Pattern::new(&long, PatternUse::Whole).is_err());
        // Global flags open a whole expression only (Python 3.11 on); `L` is for bytes.
        assert_eq!(rust("(?i)(?s)a(?i:b)"), "(?i)(?s)a(?i:b)");
        for (bad, used) in [
            ("a(?i)b", PatternUse::Whole),
            ("(?i)query", PatternUse::Tail),
            ("(?L)a", PatternUse::Whole),
            ("(?L:a)", PatternUse::Whole),
            ("a)|(b", PatternUse::Whole),
        ] {
            assert!(python_to_rust(bad, used).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_as_python_where_the_rewriting_matters() {
        let whole = |p: &str| Pattern::new(p, PatternUse::Whole).unwrap_or_else(|e| panic!("{p}: {e}"));
        // A named condition tests the group, not the text.
        let p = whole("(?P<n>a)?(?(n)b|c)");
        assert!(p.is_match("ab") && p.is_match("c") && !p.is_match("ac"));
        // A group number, then a digit: group 12 and the character 8.
        let p = whole(r"(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)\128");
        assert!(p.is_match("abcdefghijkll8"));
        // A look-around that may be skipped keeps its group: `\1` is unset when it is.
        let p = whole(r"(?=(a))?(b)\2");
        assert!(p.is_match("bb") && !whole(r"(?=(a))?(b)\1").is_match("bb"));
        // A rank pattern key inside PEFT's groups: `a)|(b` splits PEFT's expression in two,
        // `(.*\.)?(a)` matched from the start and `(b)$`.
        let tail = Pattern::new("a)|(b", PatternUse::Tail).expect("a key PEFT compiles");
        let matched: Vec<&str> =
            ["a", "x.a", "x.abc", "b", "xb", "x.b"].into_iter().filter(|p| tail.is_match(p)).collect();
        assert_eq!(matched, ["a", "x.a", "x.abc", "b"]);
    }

    #[test]
    fn conditions_on_missing_groups_are_refused_not_matched() {
        for source in ["(?(3))", "(?(2)a|b)", "(a)(?(2)b)", "(?(0)a)"] {
            let e = Pattern::new(source, PatternUse::Whole).expect_err(source);
            assert!(e.contains("invalid group reference"), "{source}: {e}");
        }
        let p = Pattern::new("(a)?(?(1)b|c)", PatternUse::Whole).expect("a condition on group 1");
        assert!(p.is_match("ab") && p.is_match("c") && !p.is_match("ac"));
        // In a rank pattern key, PEFT's two groups come first.
        assert!(Pattern::new("(?(2)x)", PatternUse::Tail).is_ok());
    }
}
