//! NLTK's word tokenizer (`NLTKWordTokenizer`, the Treebank tokenizer NLTK's
//! `word_tokenize` applies to each sentence), ported regex by regex from
//! `nltk/tokenize/destructive.py` (NLTK 3.10). METEOR tokenizes with it, as HF's
//! `meteor` metric does (reference/tril.md §2.4).
//!
//! # Deviation
//! `word_tokenize` first splits sentences with the Punkt model, which is NLTK *data*
//! that cannot be downloaded here; tril tokenizes the whole text as one sentence
//! (`word_tokenize(text, preserve_line=True)`). The only difference: a period that ends
//! a sentence in the middle of a text stays attached to its word (`them.`), where
//! Punkt would split it off. The parity fixture uses the same convention.

use fancy_regex::{Captures, Regex};
use std::sync::OnceLock;

/// One substitution: a pattern and a replacement template in which `\N` is group N
/// (empty when the group did not take part) and `\0` the whole match.
struct Sub(Regex, &'static str);

fn expand(template: &str, caps: &Captures<'_, str>) -> String {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                chars.next();
                out.push_str(caps.get(d as usize).map_or("", |m| m.as_str()));
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The rules before and after NLTK pads the text with a space on each side.
fn rules() -> &'static (Vec<Sub>, Vec<Sub>) {
    static RULES: OnceLock<(Vec<Sub>, Vec<Sub>)> = OnceLock::new();
    RULES.get_or_init(|| {
        // Python's `$` (no MULTILINE) also matches before a final newline.
        let end = r"(?=\n?\z)";
        let spec: Vec<(String, &'static str)> = vec![
            // STARTING_QUOTES
            ("([«“‘„]|[`]+)".into(), r" \1 "),
            (r#"^""#.into(), "``"),
            ("(``)".into(), r" \1 "),
            (r#"([ \(\[{<])("|'{2})"#.into(), r"\1 `` "),
            (r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)".into(), r"\1 "),
            // PUNCTUATION
            (format!(r#"([^\.])(\.)((?>[\]\)}}>"'»”’ ]*))\s*{end}"#), r"\1 \2 \3 "),
            (r"([:,])([^\d])".into(), r" \1 \2"),
            (format!(r"([:,]){end}"), r" \1 "),
            (r"\.{2,}".into(), r" \0 "),
            (r"[;@#$%&]".into(), r" \0 "),
            ("[\u{2012}-\u{2015}]".into(), r" \0 "),
            (format!(r#"([^\.])(\.)([\]\)}}>"']*)\s*{end}"#), r"\1 \2\3 "),
            (r"[?!]".into(), r" \0 "),
            (r"([^'])' ".into(), r"\1 ' "),
            (r"[*]".into(), r" \0 "),
            // PARENS_BRACKETS, DOUBLE_DASHES
            (r"[\]\[\(\)\{\}<>]".into(), r" \0 "),
            ("--".into(), r" -- "),
        ];
        let ending: Vec<(String, &'static str)> = vec![
            // ENDING_QUOTES (after padding the text with spaces)
            ("([»”’])".into(), r" \1 "),
            ("''".into(), " '' "),
            ("\"".into(), " '' "),
            (r"\s+".into(), " "),
            (r"([^' ])('[sS]|'[mM]|'[dD]|') ".into(), r"\1 \2 "),
            (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ".into(), r"\1 \2 "),
            // MacIntyre contractions (CONTRACTIONS2, CONTRACTIONS3)
            (r"(?i)\b(can)(not)\b".into(), r" \1 \2 "),
            (r"(?i)\b(d)('ye)\b".into(), r" \1 \2 "),
            (r"(?i)\b(gim)(me)\b".into(), r" \1 \2 "),
            (r"(?i)\b(gon)(na)\b".into(), r" \1 \2 "),
            (r"(?i)\b(got)(ta)\b".into(), r" \1 \2 "),
            (r"(?i)\b(lem)(me)\b".into(), r" \1 \2 "),
            (r"(?i)\b(more)('n)\b".into(), r" \1 \2 "),
            (r"(?i)\b(wan)(na)(?=\s)".into(), r" \1 \2 "),
            (r"(?i) ('t)(is)\b".into(), r" \1 \2 "),
            (r"(?i) ('t)(was)\b".into(), r" \1 \2 "),
        ];
        let compile = |list: Vec<(String, &'static str)>| -> Vec<Sub> {
            list.into_iter().map(|(p, t)| Sub(Regex::new(&p).expect("valid NLTK pattern"), t)).collect()
        };
        (compile(spec), compile(ending))
    })
}

/// Tokenizes `text` as `nltk.word_tokenize(text, preserve_line=True)`.
pub fn word_tokenize(text: &str) -> Vec<String> {
    let (before, after) = rules();
    let text = apply(before, text.to_string());
    let text = apply(after, format!(" {text} "));
    text.split_whitespace().map(str::to_string).collect()
}

fn apply(rules: &[Sub], mut text: String) -> String {
    for Sub(re, template) in rules {
        // A pathological input can exceed fancy-regex's backtrack limit; keep the text
        // unchanged for that rule rather than panic.
        let mut out = String::with_capacity(text.len() + 8);
        let mut last = 0;
        for caps in re.captures_iter(text.as_str()) {
            let Ok(caps) = caps else { break };
            let m = caps.get(0).expect("group 0");
            out.push_str(&text[last..m.start()]);
            out.push_str(&expand(template, &caps));
            last = m.end();
        }
        out.push_str(&text[last..]);
        text = out;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::word_tokenize;

    #[test]
    fn treebank_examples() {
        // NLTK's own docstring example (one "sentence", so `them.` keeps its period).
        let s = "Good muffins cost $3.88 (roughly 3,36 euros)\nin New York.  Please buy me\ntwo of them.\nThanks.";
        assert_eq!(
            word_tokenize(s),
            [
                "Good", "muffins", "cost", "$", "3.88", "(", "roughly", "3,36", "euros", ")", "in", "New", "York.",
                "Please", "buy", "me", "two", "of", "them.", "Thanks", "."
            ]
        );
        assert_eq!(
            word_tokenize("I can't \"go\", cannot."),
            ["I", "ca", "n't", "``", "go", "''", ",", "can", "not", "."]
        );
    }
}
