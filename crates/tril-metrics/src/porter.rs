//! The Porter stemmer exactly as NLTK's `PorterStemmer()` (mode `NLTK_EXTENSIONS`, the
//! default), which both `rouge_score` (`use_stemmer=True`) and NLTK's METEOR use.
//!
//! Why not a crate: `rust-stemmers` implements Snowball English (Porter2), which stems
//! differently from NLTK's Porter (e.g. `generously`: Porter2 `generous`, NLTK
//! `gener`); ROUGE with stemming would then disagree with TRIL's numbers. This is a
//! line-by-line port of `nltk/stem/porter.py` (Porter 1980 plus Martin Porter's and
//! NLTK's extensions), checked word by word against NLTK in the parity fixture
//! (`tests/fixtures/lexical.json`, key `stems`).

/// NLTK's irregular forms (`PorterStemmer.pool`): word -> stem, applied before the steps.
const IRREGULAR: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

type W = Vec<char>;

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Consonant flags: a `y` is a consonant iff it starts the word or follows a vowel.
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

fn is_consonant(w: &[char], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// Porter's measure m: the number of VC sequences.
fn measure(w: &[char]) -> usize {
    let f = consonant_flags(w);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(w: &[char]) -> bool {
    !consonant_flags(w).iter().all(|&c| c)
}

fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// Condition *o (cvc, last not w/x/y), plus NLTK's two-letter vc case.
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], s: &str) -> bool {
    let s: W = s.chars().collect();
    w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
}

fn strip(w: &[char], suffix: &str) -> W {
    w[..w.len() - suffix.chars().count()].to_vec()
}

fn cat(stem: &[char], tail: &str) -> W {
    let mut out = stem.to_vec();
    out.extend(tail.chars());
    out
}

/// A suffix rule: (suffix, replacement, condition on the stem).
type Rule<'a> = (&'a str, &'a str, &'a dyn Fn(&[char]) -> bool);

/// NLTK's `_apply_rule_list`: the first rule whose suffix matches decides (applied or not).
fn apply_rules(w: &[char], rules: &[Rule<'_>]) -> W {
    for &(suffix, replacement, cond) in rules {
        if ends_with(w, suffix) {
            let stem = strip(w, suffix);
            return if cond(&stem) { cat(&stem, replacement) } else { w.to_vec() };
        }
    }
    w.to_vec()
}

fn positive(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn always(_: &[char]) -> bool {
    true
}

fn step1a(w: &[char]) -> W {
    if ends_with(w, "ies") && w.len() == 4 {
        return cat(&strip(w, "ies"), "ie");
    }
    apply_rules(w, &[("sses", "ss", &always), ("ies", "i", &always), ("ss", "ss", &always), ("s", "", &always)])
}

fn step1b(w: &[char]) -> W {
    if ends_with(w, "ied") {
        return cat(&strip(w, "ied"), if w.len() == 4 { "ie" } else { "i" });
    }
    if ends_with(w, "eed") {
        let stem = strip(w, "eed");
        return if measure(&stem) > 0 { cat(&stem, "ee") } else { w.to_vec() };
    }
    let mut inter = None;
    for suffix in ["ed", "ing"] {
        if ends_with(w, suffix) {
            let s = strip(w, suffix);
            if contains_vowel(&s) {
                inter = Some(s);
                break;
            }
        }
    }
    let Some(s) = inter else { return w.to_vec() };
    for (suffix, rep) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if ends_with(&s, suffix) {
            return cat(&strip(&s, suffix), rep);
        }
    }
    // ("*d", last letter, last not in l/s/z): a double consonant is undoubled.
    if ends_double_consonant(&s) {
        let last = s[s.len() - 1];
        return if !matches!(last, 'l' | 's' | 'z') {
            let mut out = s[..s.len() - 2].to_vec();
            out.push(last);
            out
        } else {
            s
        };
    }
    // ("", "e", m == 1 and *o): the empty suffix always matches.
    if measure(&s) == 1 && ends_cvc(&s) {
        cat(&s, "e")
    } else {
        s
    }
}

fn step1c(w: &[char]) -> W {
    let cond = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[("y", "i", &cond)])
}

fn step2(w: &[char]) -> W {
    if ends_with(w, "alli") && positive(&strip(w, "alli")) {
        return step2(&cat(&strip(w, "alli"), "al"));
    }
    let word = w.to_vec();
    let logi = move |_: &[char]| positive(&word[..word.len() - 3]);
    apply_rules(
        w,
        &[
            ("ational", "ate", &positive),
            ("tional", "tion", &positive),
            ("enci", "ence", &positive),
            ("anci", "ance", &positive),
            ("izer", "ize", &positive),
            ("bli", "ble", &positive),
            ("alli", "al", &positive),
            ("entli", "ent", &positive),
            ("eli", "e", &positive),
            ("ousli", "ous", &positive),
            ("ization", "ize", &positive),
            ("ation", "ate", &positive),
            ("ator", "ate", &positive),
            ("alism", "al", &positive),
            ("iveness", "ive", &positive),
            ("fulness", "ful", &positive),
            ("ousness", "ous", &positive),
            ("aliti", "al", &positive),
            ("iviti", "ive", &positive),
            ("biliti", "ble", &positive),
            ("fulli", "ful", &positive),
            ("logi", "log", &logi),
        ],
    )
}

fn step3(w: &[char]) -> W {
    apply_rules(
        w,
        &[
            ("icate", "ic", &positive),
            ("ative", "", &positive),
            ("alize", "al", &positive),
            ("iciti", "ic", &positive),
            ("ical", "ic", &positive),
            ("ful", "", &positive),
            ("ness", "", &positive),
        ],
    )
}

fn step4(w: &[char]) -> W {
    let gt1 = |s: &[char]| measure(s) > 1;
    let ion = |s: &[char]| measure(s) > 1 && matches!(s.last(), Some('s' | 't'));
    let rules: Vec<Rule<'_>> = [
        "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism", "ate",
        "iti", "ous", "ive", "ize",
    ]
    .iter()
    .map(|&s| -> Rule<'_> { (s, "", if s == "ion" { &ion } else { &gt1 }) })
    .collect();
    apply_rules(w, &rules)
}

fn step5a(w: &[char]) -> W {
    if ends_with(w, "e") {
        let stem = strip(w, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w.to_vec()
}

fn step5b(w: &[char]) -> W {
    let word = w.to_vec();
    let cond = move |_: &[char]| measure(&word[..word.len() - 1]) > 1;
    apply_rules(w, &[("ll", "l", &cond)])
}

/// Stems one word as NLTK's `PorterStemmer().stem(word)` (lowercases first).
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, s)) = IRREGULAR.iter().find(|(w, _)| *w == lower) {
        return (*s).to_string();
    }
    // NLTK tests the length of the word as given (before lowercasing), in code points.
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: W = lower.chars().collect();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(&w);
    }
    w.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn paper_examples() {
        // Examples from Porter (1980), as NLTK stems them.
        for (w, s) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("cats", "cat"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generously", "gener"),
            ("dying", "die"),
            ("ties", "tie"),
            ("controlling", "control"),
            ("is", "is"),
        ] {
            assert_eq!(stem(w), s, "{w}");
        }
    }
}
