//! The rewriting of Python patterns, and matches where it matters, checked against what
//! Python 3.11's `re` does with the same patterns.

use super::python::python_to_rust;
use super::{Pattern, PatternUse};

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
        (r"(a)\1(b)\2", r"(a)(?:\1)(b)(?:\2)"),
        (r"classifier\>", "classifier>"),
        ("(?#[)[ab]", "[ab]"),
        (r"(?#\)a)b", "b"),
        ("(?a)(?ai:x)", "(?i:x)"),
        ("(?!.*classifier).*(query|value)", "(?!.*classifier).*(query|value)"),
        ("a{,2}", "a{0,2}"),
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
        // What Python refuses and fancy-regex would take (PEFT would fail on it, and an
        // adapter saved with it would not load there).
        (r"q_proj\z", PatternUse::Whole),
        (r".*\p{L}_proj", PatternUse::Whole),
        (r".*(?<n>q)_proj", PatternUse::Whole),
        (r"(?<=\d+\.)attention", PatternUse::Whole),
        (r"(?<=a|bc)x", PatternUse::Whole),
        (r"q_proj\2", PatternUse::Tail),
        (r"(a\1)", PatternUse::Whole),
        (r"\1(a)", PatternUse::Whole),
        (r"(?P=n)(?P<n>a)", PatternUse::Whole),
        (r"(?P<n>a)(?P<n>b)", PatternUse::Whole),
        ("[z-a]", PatternUse::Whole),
        ("q{2,1}", PatternUse::Whole),
        (r".*\N{DIGIT ONE}", PatternUse::Whole),
        ("a\\", PatternUse::Whole),
        ("(?x)a\\", PatternUse::Whole),
        (")b", PatternUse::Tail),
        ("(?=a){3,2}b", PatternUse::Whole),
        ("(?<=a{,1})b", PatternUse::Whole),
        ("(?P<a\u{b2}>a)", PatternUse::Whole),
        ("(a", PatternUse::Whole),
        ("(a", PatternUse::Tail),
        ("(?#a", PatternUse::Whole),
    ] {
        assert!(python_to_rust(bad, used).is_err(), "{bad}");
    }
    for (good, used) in [
        (r"(?<=\d{2})x", PatternUse::Whole),
        (r"(?<=(a))\1", PatternUse::Whole),
        (r"q_proj\1", PatternUse::Tail),
        (r"(?P<n>a)(?P=n)[\d\w-]", PatternUse::Whole),
        ("(?x)(?<=a |b)b", PatternUse::Whole),
        ("(?x:(?<=a |b)b)", PatternUse::Whole),
        ("(?<=\u{e9}|a)b", PatternUse::Whole),
        ("(?P<a\u{b7}b>a)(?P<_x>b)(?P<e\u{301}>c)", PatternUse::Whole),
    ] {
        if let Err(e) = Pattern::new(good, used) {
            panic!("{good}: {e}");
        }
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
    let matched: Vec<&str> = ["a", "x.a", "x.abc", "b", "xb", "x.b"].into_iter().filter(|p| tail.is_match(p)).collect();
    assert_eq!(matched, ["a", "x.a", "x.abc", "b"]);
    // A `{` after a word boundary is a character (fancy-regex would read `\b{…}` as a kind of
    // boundary, and refuse `\b{x}`); Python matches `layer{x}` and not `layer{`.
    assert!(whole(r"layer\b{x}").is_match("layer{x}") && !whole(r"a\B{").is_match("a{"));
    // Python refuses a repeat of the boundary and octal escapes past 0o377 (`\0777` is
    // `\077` and a `7`).
    for source in [r"\b{2}", r"\777", r"[\777]"] {
        assert!(Pattern::new(source, PatternUse::Whole).is_err(), "{source}");
    }
    assert!(whole(r"\0777").is_match("?7"));
    // In verbose mode a brace with spaces inside is characters, not a repeat.
    let verbose = whole("(?x:layer{1, 2})");
    assert!(verbose.is_match("layer{1,2}") && !verbose.is_match("layerr"));
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
