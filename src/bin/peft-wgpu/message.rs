//! Error lines as the binary prints them: one line, control characters escaped, long values
//! cut to their start and end.

/// `message` on one line: the lines of a multi-line message (a regex error's caret diagram,
/// say) joined with " | ", and every other control character escaped (`\r`, `\u{1b}`), so
/// that a name read from a file or a flag cannot move the cursor or hide the rest of the line
/// on a terminal.
pub(crate) fn one_line(message: &str) -> String {
    let joined = message.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" | ");
    bounded(&printable(&joined))
}

/// Longest run of characters without a space kept whole in a message, and longest message.
const MAX_WORD: usize = 240;
const MAX_MESSAGE: usize = 1000;

/// `text` with each run of more than [`MAX_WORD`] characters without a space cut to its
/// start and end, then the whole to about [`MAX_MESSAGE`] characters the same way: a value
/// quoted from a file (a key of megabytes, a list of 200,000 targets) does not make the line
/// that names it megabytes long.
pub(crate) fn bounded(text: &str) -> String {
    let words: Vec<String> = text.split(' ').map(|w| elide(w, MAX_WORD)).collect();
    elide(&words.join(" "), MAX_MESSAGE)
}

/// `text` itself when it has at most `max` characters, else its first and last parts with a
/// note of how many characters were left out between them.
fn elide(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let (head, tail) = (max * 3 / 5, max / 4);
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!("{start}…[{} characters left out]…{end}", n - head - tail)
}

/// `text` with its control characters escaped.
pub(crate) fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_words_and_long_lines_are_cut_to_their_ends() {
        let ordinary = format!("{}: `r` must be at least 1", "a/".repeat(60));
        assert_eq!(one_line(&ordinary), ordinary, "an ordinary line stays whole");
        let sentence = "word ".repeat(190);
        assert_eq!(bounded(&sentence), sentence, "a long sentence of short words stays whole");
        let key = format!("`{}`", "é".repeat(1_000_000));
        let line = one_line(&format!("file.safetensors: tensor {key} is unknown"));
        assert!(line.starts_with("file.safetensors: tensor `éé") && line.ends_with("éé` is unknown"), "{line}");
        assert!(line.contains("characters left out]") && line.chars().count() < 300, "{line}");
        let list = format!("targets [{}]", (0..100_000).map(|i| format!("\"m{i}\"")).collect::<Vec<_>>().join(", "));
        let line = one_line(&list);
        assert!(line.starts_with("targets [\"m0\"") && line.ends_with("\"m99999\"]"), "{line}");
        assert!(line.chars().count() <= MAX_MESSAGE, "{} characters", line.chars().count());
        assert_eq!(one_line("a\n\n  b\x1b"), "a |   b\\u{1b}", "lines joined, control characters escaped");
    }
}
