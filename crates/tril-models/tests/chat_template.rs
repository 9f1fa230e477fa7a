//! Chat templates render byte-equal to transformers' `apply_chat_template`, and split
//! prompt/completion rows as TRL's `apply_chat_template` does, on real model templates
//! (fixtures/chat_templates: `make_chat.py` wrote `expected.json`; sources in NOTICE).

mod common;

use common::fixture;
use tril_models::chat_template::{parse_messages, render_cell_pair, render_prompt_cell, ChatTemplate, Json, Message};
use tril_models::ModelError;

fn dir() -> std::path::PathBuf {
    fixture("chat_templates")
}

/// expected.json, read with key order kept (tool-call arguments render in file order).
fn expected() -> Json {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    Json::parse(&text).unwrap()
}

fn get<'a>(json: &'a Json, key: &str) -> &'a Json {
    match json {
        Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v).unwrap_or(&Json::Null),
        _ => &Json::Null,
    }
}

fn str_of(json: &Json) -> Option<&str> {
    match json {
        Json::String(s) => Some(s),
        _ => None,
    }
}

fn list(json: &Json) -> &[Json] {
    match json {
        Json::Array(items) => items,
        _ => &[],
    }
}

fn messages(json: &Json) -> Vec<Message> {
    parse_messages(&json.to_json_string()).unwrap().unwrap()
}

fn template(expected: &Json, name: &str) -> ChatTemplate {
    let source = std::fs::read_to_string(dir().join("templates").join(format!("{name}.jinja"))).unwrap();
    let specials = get(get(expected, "templates"), name);
    let token = |k: &str| str_of(get(specials, k)).map(str::to_string);
    ChatTemplate::new(source, token("bos_token"), token("eos_token")).unwrap()
}

#[test]
fn renders_equal_transformers_on_real_templates() {
    let expected = expected();
    let conversations = get(&expected, "conversations");
    let cases = list(get(&expected, "cases"));
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = str_of(get(case, "template")).unwrap();
        let conv = str_of(get(case, "conversation")).unwrap();
        let agp = matches!(get(case, "add_generation_prompt"), Json::Bool(true));
        let got = template(&expected, name).render(&messages(get(conversations, conv)), agp);
        let label = format!("{name} / {conv} / add_generation_prompt={agp}");
        match (str_of(get(case, "output")), got) {
            (Some(want), Ok(got)) if want == got => {}
            (Some(want), Ok(got)) => failures.push(format!("{label}:\n want {want:?}\n  got {got:?}")),
            (Some(_), Err(e)) => failures.push(format!("{label}: transformers renders, tril fails: {e}")),
            (None, Ok(got)) => failures.push(format!("{label}: transformers fails, tril renders {got:?}")),
            (None, Err(e)) => {
                // An exception the template raises keeps its message.
                let msg = e.to_string();
                if str_of(get(case, "error_type")) == Some("TemplateError") {
                    let want = str_of(get(case, "error")).unwrap();
                    if !msg.contains(&format!("raise_exception: {want}")) {
                        failures.push(format!("{label}: want the message {want:?}, got {msg}"));
                    }
                }
                assert!(msg.contains("chat template <in memory>"), "{msg}");
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} renders differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn prompt_completion_split_equals_trl() {
    let expected = expected();
    let rows = list(get(&expected, "prompt_completion"));
    let mut failures = Vec::new();
    for split in list(get(&expected, "splits")) {
        let name = str_of(get(split, "template")).unwrap();
        let row_name = str_of(get(split, "row")).unwrap();
        let row = rows.iter().find(|r| str_of(get(r, "row")) == Some(row_name)).unwrap();
        let (prompt, completion) = (messages(get(row, "prompt")), messages(get(row, "completion")));
        if matches!(get(split, "prompt_only"), Json::Bool(true)) {
            // TRL's prompt-only row: the prompt as render_prompt_cell gives it.
            let t = template(&expected, name);
            let got = render_prompt_cell(Some(&t), &get(row, "prompt").to_json_string(), "row");
            match (str_of(get(split, "prompt")), got) {
                (Some(want), Ok(got)) if want == got => {}
                (None, Err(_)) => {}
                (want, got) => failures.push(format!("{name} / {row_name} prompt only: want {want:?}, got {got:?}")),
            }
            continue;
        }
        let got = template(&expected, name).render_prompt_completion(&prompt, &completion);
        let label = format!("{name} / {row_name}");
        match (str_of(get(split, "prompt")), str_of(get(split, "completion")), got) {
            (Some(p), Some(c), Ok((gp, gc))) if p == gp && c == gc => {}
            (Some(p), c, Ok(got)) => failures.push(format!("{label}:\n want {:?}\n  got {got:?}", (p, c))),
            (Some(_), _, Err(e)) => failures.push(format!("{label}: TRL splits, tril fails: {e}")),
            (None, _, Ok(got)) => failures.push(format!("{label}: TRL fails, tril gives {got:?}")),
            (None, _, Err(_)) => {}
        }
        // The cells as a dataset holds them render the same way.
        if let (Some(p), Some(c)) = (str_of(get(split, "prompt")), str_of(get(split, "completion"))) {
            let t = template(&expected, name);
            let cells = render_cell_pair(
                Some(&t),
                &get(row, "prompt").to_json_string(),
                &get(row, "completion").to_json_string(),
                "row",
            )
            .unwrap();
            assert_eq!(cells, (p.to_string(), c.to_string()), "{label}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn from_dir_reads_what_save_pretrained_writes() {
    let t = ChatTemplate::from_dir(&dir().join("tokenizer_dir")).unwrap().expect("a template");
    assert!(t.name().ends_with("chat_template.jinja"), "{}", t.name());
    assert_eq!((t.bos_token(), t.eos_token()), (Some("<|begin_of_text|>"), Some("<|eot_id|>")));
    let expected = expected();
    let case = list(get(&expected, "cases"))
        .iter()
        .find(|c| {
            str_of(get(c, "template")) == Some("llama3_1")
                && str_of(get(c, "conversation")) == Some("multi_turn")
                && matches!(get(c, "add_generation_prompt"), Json::Bool(true))
        })
        .unwrap();
    let conv = messages(get(get(&expected, "conversations"), "multi_turn"));
    assert_eq!(t.render(&conv, true).unwrap(), str_of(get(case, "output")).unwrap());
    // A GPT-2 directory has no template.
    assert!(ChatTemplate::from_dir(&fixture("gpt2")).unwrap().is_none());
}

#[test]
fn from_dir_reads_tokenizer_config_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |text: &str| std::fs::write(tmp.path().join("tokenizer_config.json"), text).unwrap();
    let user = [Message::text("user", "hi")];
    // A string, with AddedToken objects for the special tokens.
    write(
        r#"{"chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>"}"#,
    );
    let t = ChatTemplate::from_dir(tmp.path()).unwrap().unwrap();
    assert_eq!(t.render(&user, false).unwrap(), "<s>hi</s>");
    // HF's list of named templates: `default` is used.
    write(
        r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages|length }}"}]}"#,
    );
    assert_eq!(ChatTemplate::from_dir(tmp.path()).unwrap().unwrap().render(&user, false).unwrap(), "D1");
    write(r#"{"chat_template": [{"name": "tool_use", "template": "T"}]}"#);
    let e = ChatTemplate::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json") && e.contains("no template named `default` (names: tool_use)"), "{e}");
    write(r#"{"chat_template": 3}"#);
    assert!(ChatTemplate::from_dir(tmp.path()).unwrap_err().to_string().contains("`chat_template`"));
    // No template, or none at all.
    write(r#"{"eos_token": "</s>"}"#);
    assert!(ChatTemplate::from_dir(tmp.path()).unwrap().is_none());
    write("{not json");
    assert!(ChatTemplate::from_dir(tmp.path()).unwrap_err().to_string().contains("invalid JSON"));
}

#[test]
fn malformed_template_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("chat_template.jinja"), "{% for m in messages %}\n{{ m.content }\n{% endfor %}")
        .unwrap();
    let e = ChatTemplate::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(e, ModelError::ChatTemplate { line: Some(2), .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("chat_template.jinja (line 2): syntax error"), "{msg}");
    // A render-time error: calling an unknown function.
    let t = ChatTemplate::new("\n\n{{ nope() }}", None, None).unwrap();
    let msg = t.render(&[Message::text("user", "x")], false).unwrap_err().to_string();
    assert!(msg.contains("<in memory> (line 3)"), "{msg}");
}

#[test]
fn raise_exception_message_surfaces() {
    let expected = expected();
    let t = template(&expected, "mistral_v0_3");
    let e = t.render(&[Message::text("user", "a"), Message::text("user", "b")], false).unwrap_err().to_string();
    assert!(e.contains("raise_exception: After the optional system message, conversation roles must alternate"), "{e}");
    // Through a dataset cell, the row is named too.
    let e = render_cell_pair(
        Some(&t),
        r#"[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]"#,
        r#"[{"role": "assistant", "content": "c"}]"#,
        "train.jsonl:row 7",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("train.jsonl:row 7: chat template <in memory>") && e.contains("must alternate"), "{e}");
}

#[test]
fn bad_message_rows_are_errors_naming_the_row() {
    let t = ChatTemplate::new("{{ messages[0].content }}", None, None).unwrap();
    for (cell, want) in [
        (r#"{"role": "user", "content": "x"}"#, "JSON object is not a conversation"),
        (r#"["just", "strings"]"#, "message 0 is a string"),
        ("[]", "the list is empty"),
        (r#"[{"role": 1, "content": "x"}]"#, "`role` is a number"),
        (r#"[{"role": "user"}]"#, "has no `content`"),
    ] {
        let e = render_prompt_cell(Some(&t), cell, "d.jsonl:row 2").unwrap_err().to_string();
        assert!(e.contains("d.jsonl:row 2: prompt") && e.contains(want), "{cell}: {e}");
    }
    let e = render_prompt_cell(None, r#"[{"role": "user", "content": "x"}]"#, "d.jsonl:row 3").unwrap_err().to_string();
    assert!(
        e.contains("d.jsonl:row 3") && e.contains("no chat_template") && e.contains("tokenizer_config.json"),
        "{e}"
    );
    // Text that merely starts with a bracket is text.
    assert_eq!(render_prompt_cell(None, "[1] is a citation", "r").unwrap(), "[1] is a citation");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of JSON and Jinja, so random cells and templates reach the parsers' corners.
    const PIECES: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"role\"",
        "\"content\"",
        "\"user\"",
        "\"assistant\"",
        "null",
        "1",
        "\"x\"",
        "{%",
        "%}",
        "{{",
        "}}",
        "{#",
        "#}",
        " for m in messages ",
        " endfor ",
        " if ",
        " endif ",
        "m.content",
        "|tojson",
        "|trim",
        ".strip()",
        "raise_exception('e')",
        "loop.last",
        " ",
        "\n",
        "-",
        "'",
        "é",
        "🙂",
    ];

    fn pieces() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Any cell is text, a conversation or an error naming the row; never a panic.
        #[test]
        fn cells_never_panic(prompt in pieces(), completion in pieces()) {
            let t = ChatTemplate::new("{% for m in messages %}{{ m.role }}:{{ m.content }}\n{% endfor %}", None, None).unwrap();
            if let Err(e) = render_cell_pair(Some(&t), &prompt, &completion, "row 1") {
                prop_assert!(e.to_string().contains("row 1"), "{e}");
            }
            let _ = render_prompt_cell(None, &prompt, "row 2");
        }

        /// Any template source compiles or is an error naming it; rendering never panics.
        #[test]
        fn templates_never_panic(source in pieces()) {
            match ChatTemplate::new(source, Some("<s>".into()), None) {
                Ok(t) => {
                    let conv = [Message::text("user", "hi"), Message::text("assistant", "ho")];
                    let _ = t.render(&conv, true);
                    let _ = t.render_prompt_completion(&conv[..1], &conv[1..]);
                }
                Err(e) => prop_assert!(e.to_string().contains("chat template <in memory>"), "{e}"),
            }
        }
    }
}
