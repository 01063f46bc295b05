//! PEFT's regular expressions (`target_modules` or `exclude_modules` as a string, the keys of
//! `rank_pattern` and `alpha_pattern`) are Python `re` patterns. [`Pattern`] compiles one with
//! the meaning Python gives it: look-around, backreferences (`\1`, `(?P=name)`), `{,n}`, `\Z`
//! and comments are taken as they are (fancy-regex reads Python's syntax), and inside a
//! character class `[`, `&&`, `~~` and `--`, which Rust's regex syntax reads as a nested class
//! and set operations but Python as characters, are escaped first ([`python_to_rust`]).

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

impl Pattern {
    /// `source`, in Python's `re` syntax, matched as `used` says; an error (the reason) when it
    /// is not a regular expression.
    pub fn new(source: &str, used: PatternUse) -> Result<Pattern, String> {
        let rust = python_to_rust(source);
        let anchored = match used {
            PatternUse::Whole => format!("^(?:{rust})$"),
            PatternUse::Anywhere => rust,
            // PEFT's own groups, so that a backreference in the key counts as in PEFT.
            PatternUse::Tail => format!(r"^(.*\.)?({rust})$"),
        };
        let re = fancy_regex::Regex::new(&anchored).map_err(|e| e.to_string())?;
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

    /// Whether `path` matches. A match that needs more backtracking than fancy-regex allows
    /// (a pattern whose look-around or backreferences explode on a module path of a few
    /// dozen characters) counts as none.
    pub fn is_match(&self, path: &str) -> bool {
        self.re.is_match(path).unwrap_or(false)
    }
}

/// `pattern` (Python's syntax) in the syntax fancy-regex reads with the same meaning: inside a
/// character class, `[`, `&` and `~` escaped, and a `-` right after a `-` (Python: the end of
/// a range, as in `[+--]`; Rust: set difference). Elsewhere the two agree.
pub fn python_to_rust(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    // Right after `[` or `[^`, where `]` is a character; after an unescaped `-` in a class.
    let (mut class_start, mut after_dash) = (false, false);
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(c);
            out.extend(chars.next());
            (class_start, after_dash) = (false, false);
            continue;
        }
        if !in_class {
            out.push(c);
            if c == '[' {
                in_class = true;
                if chars.peek() == Some(&'^') {
                    out.extend(chars.next());
                }
                (class_start, after_dash) = (true, false);
            }
            continue;
        }
        match c {
            ']' if !class_start => {
                in_class = false;
                out.push(c);
            }
            '[' | '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '-' if after_dash => out.push_str("\\-"),
            _ => out.push(c),
        }
        after_dash = c == '-' && !after_dash;
        class_start = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_escaped_where_rust_reads_operators() {
        for (python, rust) in [
            ("[a&&b]", r"[a\&\&b]"),
            ("[a~~b]", r"[a\~\~b]"),
            ("[+--]", r"[+-\-]"),
            ("[[]", r"[\[]"),
            ("[]a]", "[]a]"),
            ("[^]a&]", r"[^]a\&]"),
            (r"[\]&]x&y", r"[\]\&]x&y"),
            ("(?!.*classifier).*(query|value)", "(?!.*classifier).*(query|value)"),
            ("a{,2}", "a{,2}"),
        ] {
            assert_eq!(python_to_rust(python), rust, "{python}");
        }
    }
}
