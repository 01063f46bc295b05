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

mod classes;
mod python;
#[cfg(test)]
mod tests;

use python::python_to_rust;

/// How a [`Pattern`] is matched against a module's path, as PEFT matches each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternUse {
    /// The whole path (`re.fullmatch`): `target_modules` and `exclude_modules` as a string.
    Whole,
    /// Anywhere in the path (`re.search`): a pattern built in code.
    Anywhere,
    /// From the path's start, ending anywhere (`re.match`): PEFT's layer-index expression
    /// around a `layers_pattern`.
    Start,
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

/// Backtracking steps one match may take (fancy-regex's default): module paths are a few
/// dozen characters, so only a pattern of nested ambiguous loops gets near.
pub const BACKTRACK_LIMIT: usize = 1_000_000;

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
            PatternUse::Start => format!("^(?:{rust}{end})"),
            // PEFT's own groups, so that a group number in the key counts as in PEFT.
            // The whole of PEFT's expression under `^` (`re.match`), so that a key such as
            // `a)|(b` splits it as it splits PEFT's.
            PatternUse::Tail => format!("^(?:(.*\\.)?({rust}{end})$)"),
        };
        let re = fancy_regex::RegexBuilder::new(&anchored).backtrack_limit(BACKTRACK_LIMIT).build().map_err(|e| {
            // Its positions count in the rewritten, wrapped pattern, not in the one written.
            let text = e.to_string();
            match text.strip_prefix("Parsing error at position ").and_then(|t| t.split_once(": ")) {
                Some((_, reason)) => reason.to_string(),
                None => text,
            }
        })?;
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

    /// Whether `path` matches. A match that needs more than [`BACKTRACK_LIMIT`] steps counts
    /// as none: [`Pattern::check_cost`] on the paths a pattern is matched against refuses
    /// such a pattern first.
    pub fn is_match(&self, path: &str) -> bool {
        self.re.is_match(path).unwrap_or(false)
    }

    /// Whether `path` matches with the group named `group` taking part (Python's
    /// `m.group(name) is not None`); a match past [`BACKTRACK_LIMIT`] steps counts as none.
    pub fn matches_with_group(&self, path: &str, group: &str) -> bool {
        self.re.captures(path).ok().flatten().is_some_and(|c| c.name(group).is_some())
    }

    /// Fails, with the reason, when matching `path` takes more than [`BACKTRACK_LIMIT`]
    /// backtracking steps (nested repeats such as `(a*)*Z`), which Python's `re` would spend
    /// as long on, without a limit.
    pub fn check_cost(&self, path: &str) -> Result<(), String> {
        match self.re.is_match(path) {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "takes more than {BACKTRACK_LIMIT} backtracking steps to match `{path}`; nested repeats such as \
                 `(a*)*` make a pattern this slow: simplify it"
            )),
        }
    }
}
