//! Hugging Face chat templates: the Jinja `chat_template` of a tokenizer, rendered with
//! minijinja in the environment transformers' `apply_chat_template` gives, and TRL's
//! conversational prompt/completion split.
//!
//! - [`ChatTemplate`]: loaded by [`ChatTemplate::from_dir`] from a model directory
//!   (`chat_template.jinja`, else `tokenizer_config.json`'s `chat_template`, a string or
//!   HF's list of named templates, of which `default` is used), with its `bos_token` and
//!   `eos_token`; [`ChatTemplate::render`] is `apply_chat_template(messages, tokenize=False,
//!   add_generation_prompt=...)`; [`ChatTemplate::render_prompt_completion`] is TRL's
//!   `apply_chat_template` for a prompt + completion row.
//! - [`Message`]: one `{role, content, ...}` message; every other key of the row (tool calls,
//!   names, reasoning) is kept, in file order, for the template to read.
//! - [`parse_messages`]: a data cell as a conversation (a JSON list of messages), as plain
//!   text (`None`), or an error naming what was expected.
//! - [`render_cell_pair`] and [`render_prompt_cell`]: what trainers call on dataset cells:
//!   text passes through, conversations render through the policy tokenizer's template.
//!
//! The environment, as transformers 4.5x/5.x builds it: `trim_blocks` and `lstrip_blocks`,
//! loop controls, the globals `raise_exception(msg)` (an error carrying `msg`),
//! `strftime_now(fmt)`, `namespace` and `dict`, the variables `messages`, `tools` (none),
//! `documents` (none), `add_generation_prompt`, `bos_token` and `eos_token`, a `tojson`
//! filter equal to Python's `json.dumps(x, ensure_ascii=False, indent=None,
//! separators=None, sort_keys=False)`, and Python's string, dict and list methods
//! (`.strip()`, `.startswith()`, `.split()`, `.items()`, ... from minijinja-contrib's
//! `pycompat`). `None`, `True` and `False` print as Python prints them.
//!
//! # Deviations from Jinja2
//! - `none`/`true`/`false` turned into text by `|string` or `~` read `none`/`true`/`false`
//!   (minijinja's spelling); printed directly they read `None`/`True`/`False` as in Python.
//! - The `{% generation %}` tag of TRL's training templates (assistant masks) is not
//!   supported: such a template is a parse error naming the line.
//!
//! ```
//! use tril_models::chat_template::{ChatTemplate, Message};
//! let chatml = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}\
//!               {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
//! let t = ChatTemplate::new(chatml, None, Some("<|im_end|>".into())).unwrap();
//! let prompt = [Message::text("user", "Hi")];
//! let completion = [Message::text("assistant", "Hello!")];
//! let (p, c) = t.render_prompt_completion(&prompt, &completion).unwrap();
//! assert_eq!(p, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
//! assert_eq!(c, "Hello!<|im_end|>\n");
//! ```

use crate::error::{ModelError, Result};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt::{self, Write as _};
use std::path::Path;

/// Name the template is registered under inside its environment.
const TEMPLATE: &str = "chat_template";
/// Name of a template given as a string rather than read from a file.
const IN_MEMORY: &str = "<in memory>";
/// transformers' marker for `continue_final_message`.
const CONTINUE_TAG: &str = "CONTINUE_FINAL_MESSAGE_TAG ";
/// The names a message's reasoning goes by (transformers `_REASONING_FIELDS`).
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// A JSON value that keeps the order of object keys as written (Python's `json.loads`
/// does), so that `tojson` and `.items()` see keys in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number as serde_json read it.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// A list.
    Array(Vec<Json>),
    /// An object, keys in file order (a repeated key keeps its first place and last value).
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses JSON text, keeping key order.
    pub fn parse(text: &str) -> std::result::Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Compact JSON text (serde_json's spelling), keys in their order: the canonical form in
    /// which datasets keep conversational cells.
    pub fn to_json_string(&self) -> String {
        let mut out = String::new();
        self.write_compact(&mut out);
        out
    }

    fn write_compact(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(&n.to_string()),
            Json::String(s) => out.push_str(&serde_json::Value::String(s.clone()).to_string()),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_compact(out);
                }
                out.push(']');
            }
            Json::Object(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    v.write_compact(out);
                }
                out.push('}');
            }
        }
    }

    /// The value a template sees.
    fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::from(()),
            Json::Bool(b) => Value::from(*b),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::from(i)
                } else if let Some(u) = n.as_u64() {
                    Value::from(u)
                } else {
                    Value::from(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Json::String(s) => Value::from(s.as_str()),
            Json::Array(items) => Value::from(items.iter().map(Json::to_value).collect::<Vec<_>>()),
            Json::Object(fields) => ordered_map(fields.iter().map(|(k, v)| (k.as_str(), v.to_value()))),
        }
    }

    /// The JSON type, as an error message names it.
    fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "a list",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> std::result::Result<Json, E> {
        Ok(Json::Number(i.into()))
    }
    fn visit_u64<E>(self, u: u64) -> std::result::Result<Json, E> {
        Ok(Json::Number(u.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, x: f64) -> std::result::Result<Json, E> {
        serde_json::Number::from_f64(x).map(Json::Number).ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Json, A::Error> {
        let mut fields: Vec<(String, Json)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            match fields.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => fields.push((k, v)),
            }
        }
        Ok(Json::Object(fields))
    }
}

/// A template map whose keys keep their order.
fn ordered_map<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::from(pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect::<indexmap::IndexMap<Value, Value>>())
}

/// One chat message: `role`, `content` and every other key of the row, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The content: a string, a list of content blocks, or null (absent).
    pub content: Json,
    /// The other keys (`tool_calls`, `name`, `reasoning_content`, ...), in file order.
    pub extra: Vec<(String, Json)>,
}

impl Message {
    /// A message with text content and no other keys.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: Json::String(content.into()), extra: Vec::new() }
    }

    /// The message as a JSON object (`role`, `content`, then the other keys).
    pub fn to_json(&self) -> Json {
        let mut fields = vec![("role".to_string(), Json::String(self.role.clone()))];
        fields.push(("content".to_string(), self.content.clone()));
        fields.extend(self.extra.iter().cloned());
        Json::Object(fields)
    }

    /// The message as the template sees it: transformers drops `None`-valued keys and
    /// aliases reasoning (`_normalize_chat_messages`, `_alias_reasoning_fields`).
    fn to_value(&self, content: Option<&Json>) -> Value {
        let mut fields: Vec<(String, Json)> = match self.to_json() {
            Json::Object(fields) => fields,
            _ => Vec::new(),
        };
        if let Some(content) = content {
            if let Some(slot) = fields.iter_mut().find(|(k, _)| k == "content") {
                slot.1 = content.clone();
            }
        }
        fields.retain(|(_, v)| *v != Json::Null);
        let reasoning =
            REASONING_FIELDS.iter().find_map(|name| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        if let Some(reasoning) = reasoning {
            if !fields.iter().any(|(k, _)| k == "thinking") {
                fields.insert(0, ("thinking".into(), reasoning.clone()));
            }
            match fields.iter_mut().find(|(k, _)| k == "reasoning_content") {
                Some(slot) => slot.1 = reasoning,
                None => fields.push(("reasoning_content".into(), reasoning)),
            }
        }
        Json::Object(fields).to_value()
    }
}

/// A conversation as canonical JSON text (see [`Json::to_json_string`]).
pub fn messages_to_json(messages: &[Message]) -> String {
    Json::Array(messages.iter().map(Message::to_json).collect()).to_json_string()
}

/// Reads a data cell: a JSON list of `{role, content}` objects is a conversation
/// (`Some`), anything that is not a JSON list or object is plain text (`None`). A JSON
/// object, an empty list, or a list of anything but messages is an error saying what
/// was expected.
pub fn parse_messages(cell: &str) -> Result<Option<Vec<Message>>> {
    parse_cell(cell, "chat messages")
}

/// [`parse_messages`], errors saying `what` was read.
fn parse_cell(cell: &str, what: &str) -> Result<Option<Vec<Message>>> {
    let fail = |reason: String| ModelError::input(what, reason);
    let trimmed = cell.trim_start();
    if !trimmed.starts_with(['[', '{']) {
        return Ok(None);
    }
    let Ok(json) = Json::parse(trimmed) else {
        return Ok(None);
    };
    const EXPECTED: &str = "(expected a list of messages like [{\"role\": \"user\", \"content\": \"...\"}])";
    let items = match json {
        Json::Array(items) => items,
        Json::Object(_) => return Err(fail(format!("a JSON object is not a conversation {EXPECTED}"))),
        _ => return Ok(None),
    };
    if items.is_empty() {
        return Err(fail(format!("the list is empty {EXPECTED}")));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Json::Object(fields) = item else {
                return Err(fail(format!("message {i} is {} {EXPECTED}", item.type_name())));
            };
            let mut role = None;
            let mut content = None;
            let mut extra = Vec::new();
            for (k, v) in fields {
                match (k.as_str(), v) {
                    ("role", Json::String(r)) => role = Some(r),
                    ("role", other) => {
                        return Err(fail(format!("message {i}: `role` is {}, expected a string", other.type_name())))
                    }
                    ("content", v) => content = Some(v),
                    (_, v) => extra.push((k, v)),
                }
            }
            let Some(role) = role else {
                return Err(fail(format!("message {i} has no `role` {EXPECTED}")));
            };
            let Some(content) = content else {
                return Err(fail(format!("message {i} (role `{role}`) has no `content` {EXPECTED}")));
            };
            Ok(Message { role, content, extra })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A tokenizer's chat template, compiled, with the special tokens it reads. `Send + Sync`
/// and cheap to render from many threads.
#[derive(Clone)]
pub struct ChatTemplate {
    /// The file the template came from, or `<in memory>`.
    name: String,
    source: String,
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` (a Jinja chat template); a syntax error names the line.
    pub fn new(source: impl Into<String>, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        Self::named(IN_MEMORY, source.into(), bos_token, eos_token)
    }

    /// Compiles `source`, naming it `name` (a file) in errors.
    fn named(name: &str, source: String, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let mut env = environment().map_err(|e| template_error(name, &e))?;
        env.add_template_owned(TEMPLATE, source.clone()).map_err(|e| template_error(name, &e))?;
        Ok(ChatTemplate { name: name.to_string(), source, env, bos_token, eos_token })
    }

    /// The chat template of the tokenizer in `dir`: `chat_template.jinja` when present
    /// (newer transformers write it), else `tokenizer_config.json`'s `chat_template`;
    /// `None` when neither has one. `bos_token`/`eos_token` come from
    /// `tokenizer_config.json` (or `special_tokens_map.json`), as strings or AddedToken
    /// objects `{"content": ...}`.
    pub fn from_dir(dir: &Path) -> Result<Option<ChatTemplate>> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json_if_present(&config_path)?;
        let specials_path = dir.join("special_tokens_map.json");
        let specials = read_json_if_present(&specials_path)?;
        let token = |key: &str| -> Result<Option<String>> {
            for (file, json) in [(&config_path, &config), (&specials_path, &specials)] {
                if let Some(json) = json {
                    if let Some(t) = special_token(json, key, file)? {
                        return Ok(Some(t));
                    }
                }
            }
            Ok(None)
        };
        let (bos, eos) = (token("bos_token")?, token("eos_token")?);
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let source = std::fs::read_to_string(&jinja).map_err(|e| ModelError::io(&jinja, e))?;
            return Self::named(&jinja.display().to_string(), source, bos, eos).map(Some);
        }
        let Some(config) = config else { return Ok(None) };
        let source = match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => named_default(list, &config_path)?,
            Some(other) => {
                let reason = "expected a string or a list of {\"name\", \"template\"}".to_string();
                return Err(invalid(&config_path, "chat_template", &other.to_string(), reason));
            }
        };
        Self::named(&config_path.display().to_string(), source, bos, eos).map(Some)
    }

    /// The file the template came from (`<in memory>` for [`ChatTemplate::new`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The `bos_token` the template sees.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The `eos_token` the template sees.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let values: Vec<Value> = messages.iter().map(|m| m.to_value(None)).collect();
        self.render_values(values, add_generation_prompt)
    }

    fn render_values(&self, messages: Vec<Value>, add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template(TEMPLATE).map_err(|e| template_error(&self.name, &e))?;
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from(messages)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        if let Some(bos) = &self.bos_token {
            ctx.push(("bos_token", Value::from(bos.as_str())));
        }
        if let Some(eos) = &self.eos_token {
            ctx.push(("eos_token", Value::from(eos.as_str())));
        }
        template.render(ordered_map(ctx)).map_err(|e| template_error(&self.name, &e))
    }

    /// `apply_chat_template(messages, tokenize=False, continue_final_message=True)`: the
    /// conversation rendered so that it ends inside the last message's content (no
    /// end-of-turn token after it), as transformers does it.
    pub fn render_continue(&self, messages: &[Message]) -> Result<String> {
        let fail = |reason: &str| ModelError::input("continue_final_message", reason.to_string());
        let Some(last) = messages.last() else {
            return Err(fail("continue_final_message is set but the conversation is empty"));
        };
        if !self.source.contains("content") {
            return Err(fail("continue_final_message needs a template that reads `content`"));
        }
        let (final_text, tagged) = match &last.content {
            Json::String(s) => (s.clone(), Json::String(format!("{s}{CONTINUE_TAG}"))),
            Json::Array(blocks) => {
                let mut blocks = blocks.clone();
                let mut found = None;
                for block in blocks.iter_mut().rev() {
                    if let Json::Object(fields) = block {
                        if let Some((_, Json::String(t))) = fields.iter_mut().find(|(k, _)| k == "text") {
                            found = Some(t.clone());
                            t.push_str(CONTINUE_TAG);
                            break;
                        }
                    }
                }
                match found {
                    Some(t) => (t, Json::Array(blocks)),
                    None => return Err(fail("the final message has no text block to continue")),
                }
            }
            _ => return Err(fail("the final message has no content to continue")),
        };
        let mut values: Vec<Value> = messages.iter().map(|m| m.to_value(None)).collect();
        values.pop();
        values.push(last.to_value(Some(&tagged)));
        let rendered = self.render_values(values, false)?;
        let tag = CONTINUE_TAG.trim();
        let Some(at) = rendered.rfind(tag).filter(|_| rendered.contains(final_text.trim())) else {
            return Err(fail(
                "the final message does not appear in the rendered chat (the template changes it); it cannot \
                 be continued",
            ));
        };
        if rendered[at..].starts_with(CONTINUE_TAG) {
            Ok(rendered[..at].to_string())
        } else {
            Ok(rendered[..at].trim_end().to_string())
        }
    }

    /// A prompt as TRL renders it: with the generation prompt when it ends with a `user`
    /// or `tool` turn, continuing the final message when it ends with an `assistant` turn;
    /// any other last role is an error.
    pub fn render_prompt(&self, prompt: &[Message]) -> Result<String> {
        match prompt.last().map(|m| m.role.as_str()) {
            Some("user" | "tool") => self.render(prompt, true),
            Some("assistant") => self.render_continue(prompt),
            Some(other) => Err(ModelError::input(
                "prompt",
                format!("invalid role `{other}` in the last prompt message (expected user, tool or assistant)"),
            )),
            None => Err(ModelError::input("prompt", "the prompt conversation is empty")),
        }
    }

    /// TRL's `apply_chat_template` for a prompt + completion row: the prompt rendered by
    /// [`ChatTemplate::render_prompt`], the whole conversation rendered without a
    /// generation prompt, the prompt cut to the prefix both share (DeepSeek-R1's template
    /// renders them differently), and the completion the rest of the whole.
    pub fn render_prompt_completion(&self, prompt: &[Message], completion: &[Message]) -> Result<(String, String)> {
        let prompt_text = self.render_prompt(prompt)?;
        let whole: Vec<Message> = prompt.iter().chain(completion).cloned().collect();
        let whole_text = self.render(&whole, false)?;
        let shared = common_prefix(&prompt_text, &whole_text);
        Ok((whole_text[..shared].to_string(), whole_text[shared..].to_string()))
    }
}

/// Byte length of the longest common prefix of `a` and `b`, whole characters only
/// (Python's `takewhile` over characters).
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices().zip(b.chars()).find(|((_, x), y)| x != y).map_or_else(|| a.len().min(b.len()), |((i, _), _)| i)
}

/// The `default` template of HF's list-of-named-templates form.
fn named_default(list: &[serde_json::Value], file: &Path) -> Result<String> {
    let fail = |reason: String| invalid(file, "chat_template", "[...]", reason);
    let mut names = Vec::new();
    for entry in list {
        let name = entry.get("name").and_then(|n| n.as_str());
        let template = entry.get("template").and_then(|t| t.as_str());
        match (name, template) {
            (Some("default"), Some(t)) => return Ok(t.to_string()),
            (Some(n), Some(_)) => names.push(n.to_string()),
            _ => return Err(fail(format!("expected entries {{\"name\": ..., \"template\": ...}}, found {entry}"))),
        }
    }
    Err(fail(format!("no template named `default` (names: {})", names.join(", "))))
}

/// A special token of a tokenizer config: a string, an AddedToken `{"content": ...}`, or
/// absent/null.
fn special_token(config: &serde_json::Value, key: &str, file: &Path) -> Result<Option<String>> {
    let fail = |value: &serde_json::Value| {
        invalid(file, key, &value.to_string(), "expected a string or {\"content\": \"...\"}".into())
    };
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(obj @ serde_json::Value::Object(_)) => match obj.get("content") {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(fail(obj)),
        },
        Some(other) => Err(fail(other)),
    }
}

fn invalid(file: &Path, key: &str, value: &str, reason: String) -> ModelError {
    let value: String = value.chars().take(60).collect();
    ModelError::InvalidConfigValue { file: file.to_path_buf(), key: key.into(), value, reason }
}

fn read_json_if_present(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })
}

/// Marks an error raised by the template's `raise_exception(msg)`.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// A minijinja error as a [`ModelError::ChatTemplate`] naming the template file.
fn template_error(name: &str, err: &minijinja::Error) -> ModelError {
    let mut raised = None;
    let mut line = err.line();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<Raised>() {
            raised = Some(r.0.clone());
        }
        if let Some(inner) = e.downcast_ref::<minijinja::Error>() {
            line = line.or(inner.line());
        }
        source = e.source();
    }
    let message = match raised {
        Some(msg) => format!("raise_exception: {msg}"),
        None => match err.detail() {
            Some(detail) => format!("{}: {detail}", err.kind()),
            None => err.kind().to_string(),
        },
    };
    ModelError::ChatTemplate { template: name.to_string(), line, message }
}

/// The environment of transformers' `_compile_jinja_template`.
fn environment() -> std::result::Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_syntax(minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build()?);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", |msg: Value| -> std::result::Result<Value, minijinja::Error> {
        let text = msg.as_str().map_or_else(|| msg.to_string(), str::to_string);
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, text.clone()).with_source(Raised(text)))
    });
    env.add_function("strftime_now", |format: &str| -> std::result::Result<String, minijinja::Error> {
        let mut out = String::new();
        write!(out, "{}", chrono::Local::now().format(format)).map_err(|_| {
            minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: invalid format {format:?}"))
        })?;
        Ok(out)
    });
    env.set_formatter(|out, state, value| match value.kind() {
        ValueKind::None => out.write_str("None").map_err(minijinja::Error::from),
        ValueKind::Bool => {
            out.write_str(if value.is_true() { "True" } else { "False" }).map_err(minijinja::Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    });
    Ok(env)
}

/// HF's `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, positional or keyword.
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<String, minijinja::Error> {
    let ensure_ascii = match kwargs.get::<Option<Value>>("ensure_ascii")?.or(ensure_ascii) {
        Some(v) => v.is_true(),
        None => false,
    };
    let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                let n = i64::try_from(v)?;
                if n > 1024 {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("tojson: indent {n} is over 1024"),
                    ));
                }
                Some(" ".repeat(n.max(0) as usize))
            }
        },
    };
    let separators = match kwargs.get::<Option<Value>>("separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v.try_iter()?.map(|p| p.to_string()).collect();
            match parts.as_slice() {
                [item, key] => Some((item.clone(), key.clone())),
                _ => {
                    return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair"))
                }
            }
        }
        _ => None,
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) =
        separators.unwrap_or_else(|| (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()));
    let dumper = Dumper { ensure_ascii, indent, item_sep, key_sep, sort_keys };
    let mut out = String::new();
    dumper.dump(value, 0, &mut out)?;
    Ok(out)
}

/// Python's `json.dumps` over a template value.
struct Dumper {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl Dumper {
    fn dump(&self, value: &Value, depth: usize, out: &mut String) -> std::result::Result<(), minijinja::Error> {
        let unsupported = |what: &str| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: Object of type {what} is not JSON serializable"),
            )
        };
        match value.kind() {
            ValueKind::Undefined => return Err(unsupported("Undefined")),
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if value.is_integer() {
                    out.push_str(&value.to_string());
                } else {
                    out.push_str(&python_float(f64::try_from(value.clone())?));
                }
            }
            ValueKind::String => self.string(value.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.container(out, depth, '[', ']', &items, |item, out| self.dump(item, depth + 1, out))?;
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort_by_key(|a| a.to_string());
                }
                self.container(out, depth, '{', '}', &keys, |key, out| {
                    match key.as_str() {
                        Some(s) => self.string(s, out),
                        None if key.is_none() => out.push_str("\"null\""),
                        None if key.kind() == ValueKind::Bool => {
                            out.push_str(if key.is_true() { "\"true\"" } else { "\"false\"" })
                        }
                        None => self.string(&key.to_string(), out),
                    }
                    out.push_str(&self.key_sep);
                    self.dump(&value.get_item(key)?, depth + 1, out)
                })?;
            }
            ValueKind::Bytes => return Err(unsupported("bytes")),
            _ => return Err(unsupported("object")),
        }
        Ok(())
    }

    fn container<F>(
        &self,
        out: &mut String,
        depth: usize,
        open: char,
        close: char,
        items: &[Value],
        mut each: F,
    ) -> std::result::Result<(), minijinja::Error>
    where
        F: FnMut(&Value, &mut String) -> std::result::Result<(), minijinja::Error>,
    {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        let newline = |out: &mut String, level: usize| {
            if let Some(indent) = &self.indent {
                out.push('\n');
                for _ in 0..level {
                    out.push_str(indent);
                }
            }
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            newline(out, depth + 1);
            each(item, out)?;
        }
        newline(out, depth);
        out.push(close);
        Ok(())
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c if self.ensure_ascii && (c as u32) > 0x7e => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `float.__repr__` (as `json.dumps` writes floats).
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    // Shortest round-trip digits and exponent, from Rust's `{:e}`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{text}")
    } else {
        let rest = if digits.len() > 1 { format!(".{}", &digits[1..]) } else { String::new() };
        let esign = if exp < 0 { "-" } else { "+" };
        format!("{sign}{}{rest}e{esign}{:02}", &digits[..1], exp.abs())
    }
}

/// A cell of a row as a conversation or text (`None`); errors name the row and column.
fn cell_messages(cell: &str, row_name: &str, column: &str) -> Result<Option<Vec<Message>>> {
    parse_cell(cell, &format!("{row_name}: {column}"))
}

fn no_template(row_name: &str) -> ModelError {
    ModelError::input(
        row_name,
        "this row is conversational (a list of messages) but the tokenizer has no chat_template; use a model \
         whose tokenizer_config.json (or chat_template.jinja) has one, or give the row as plain text",
    )
}

/// A prompt and a completion cell as the text a model reads: plain text passes through
/// unchanged; two conversations render through `template` with TRL's semantics
/// ([`ChatTemplate::render_prompt_completion`]). A conversation without a template, a
/// conversation beside plain text, or a bad message list is an error naming `row_name`.
pub fn render_cell_pair(
    template: Option<&ChatTemplate>,
    prompt_cell: &str,
    completion_cell: &str,
    row_name: &str,
) -> Result<(String, String)> {
    let prompt = cell_messages(prompt_cell, row_name, "prompt")?;
    let completion = cell_messages(completion_cell, row_name, "completion")?;
    match (prompt, completion) {
        (None, None) => Ok((prompt_cell.to_string(), completion_cell.to_string())),
        (Some(prompt), Some(completion)) => {
            let template = template.ok_or_else(|| no_template(row_name))?;
            template.render_prompt_completion(&prompt, &completion).map_err(|e| e.with_key(row_name))
        }
        (Some(_), None) | (None, Some(_)) => Err(ModelError::input(
            row_name,
            "one of prompt and completion is a list of messages and the other plain text: a row is either \
             conversational in every column or text in every column",
        )),
    }
}

/// A prompt cell alone (GRPO prompts, logp prompts): plain text passes through; a
/// conversation renders with [`ChatTemplate::render_prompt`] (generation prompt after a
/// user turn, continued after an assistant turn). Errors name `row_name`.
pub fn render_prompt_cell(template: Option<&ChatTemplate>, cell: &str, row_name: &str) -> Result<String> {
    match cell_messages(cell, row_name, "prompt")? {
        None => Ok(cell.to_string()),
        Some(prompt) => {
            let template = template.ok_or_else(|| no_template(row_name))?;
            template.render_prompt(&prompt).map_err(|e| e.with_key(row_name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] \
                          + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn templates_are_shared_across_threads() {
        fn send_sync<T: Send + Sync + Clone>() {}
        send_sync::<ChatTemplate>();
    }

    #[test]
    fn json_keeps_key_order_and_round_trips() {
        let text = r#"[{"role":"assistant","content":null,"tool_calls":[{"b":1,"a":2.5}]}]"#;
        assert_eq!(Json::parse(text).unwrap().to_json_string(), text);
        let msgs = parse_messages(text).unwrap().unwrap();
        assert_eq!(messages_to_json(&msgs), text);
    }

    #[test]
    fn parse_messages_tells_text_from_conversations_and_errors() {
        assert_eq!(parse_messages("Hello [world]").unwrap(), None);
        assert_eq!(parse_messages("[not json").unwrap(), None);
        assert!(parse_messages("[1, 2]").unwrap_err().to_string().contains("message 0 is a number"));
        let e = parse_messages(r#"{"role": "user"}"#).unwrap_err().to_string();
        assert!(e.contains("a JSON object is not a conversation (expected a list of messages"), "{e}");
        let e = parse_messages("[]").unwrap_err().to_string();
        assert!(e.contains("the list is empty"), "{e}");
        let e = parse_messages(r#"[{"content": "x"}]"#).unwrap_err().to_string();
        assert!(e.contains("message 0 has no `role`"), "{e}");
        let e = parse_messages(r#"[{"role": "user"}]"#).unwrap_err().to_string();
        assert!(e.contains("has no `content`"), "{e}");
        let m = parse_messages(r#" [{"role": "user", "content": "hi", "name": "bob"}]"#).unwrap().unwrap();
        assert_eq!(m[0].extra, vec![("name".to_string(), Json::String("bob".into()))]);
    }

    #[test]
    fn python_floats() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1.5e16, "1.5e+16"),
            (-2.25, "-2.25"),
            (123456.0, "123456.0"),
            (1e22, "1e+22"),
            (0.0001, "0.0001"),
        ] {
            assert_eq!(python_float(x), want, "{x}");
        }
    }

    #[test]
    fn tojson_matches_json_dumps() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ 'é\"' | tojson }}|{{ 'é' | tojson(ensure_ascii=True) }}|{{ [] | tojson }}",
            None,
            None,
        )
        .unwrap();
        let m = parse_messages(r#"[{"role": "user", "content": "hi", "n": [1, 2.5, true, null]}]"#).unwrap().unwrap();
        let got = t.render(&m, false).unwrap();
        let want = "{\"role\": \"user\", \"content\": \"hi\", \"n\": [1, 2.5, true, null]}|{\n  \"role\": \"user\",\n  \"content\": \"hi\",\n  \"n\": [\n    1,\n    2.5,\n    true,\n    null\n  ]\n}|\"é\\\"\"|\"\\u00e9\"|[]";
        assert_eq!(got, want);
    }

    #[test]
    fn strftime_now_and_python_printing() {
        let t = ChatTemplate::new("{{ strftime_now('%Y') }}|{{ none }}|{{ true }}|{{ 'a b'.split() }}", None, None)
            .unwrap();
        let got = t.render(&[], false).unwrap();
        let (year, rest) = got.split_once('|').unwrap();
        assert!(year.len() == 4 && year.chars().all(|c| c.is_ascii_digit()), "{got}");
        assert_eq!(rest, "None|True|['a', 'b']");
        let t = ChatTemplate::new("{{ strftime_now('%Q%') }}", None, None).unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("strftime_now: invalid format"), "{e}");
        let t = ChatTemplate::new("{{ 1 | tojson(indent=100000000000) }}", None, None).unwrap();
        assert!(t.render(&[], false).unwrap_err().to_string().contains("over 1024"));
    }

    #[test]
    fn raise_exception_and_syntax_errors_name_the_template() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", None, None).unwrap();
        let e = t.render(&[Message::text("user", "x")], false).unwrap_err().to_string();
        assert!(e.contains("<in memory>") && e.contains("raise_exception: roles must alternate"), "{e}");
        let e = ChatTemplate::new("line one\n{% if %}", None, None).unwrap_err().to_string();
        assert!(e.contains("<in memory>") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn prompt_completion_split_and_continue() {
        let t = ChatTemplate::new(CHATML, None, None).unwrap();
        let prompt = [Message::text("user", "Hi"), Message::text("assistant", "Well")];
        let (p, c) = t.render_prompt_completion(&prompt, &[Message::text("assistant", " then")]).unwrap();
        assert_eq!(p, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nWell");
        assert_eq!(c, "<|im_end|>\n<|im_start|>assistant\n then<|im_end|>\n");
        let e = t.render_prompt(&[Message::text("system", "s")]).unwrap_err().to_string();
        assert!(e.contains("invalid role `system`"), "{e}");
    }

    #[test]
    fn cells_pass_through_or_render() {
        let t = ChatTemplate::new(CHATML, None, None).unwrap();
        assert_eq!(
            render_cell_pair(Some(&t), "The sky is", " blue.", "r").unwrap(),
            ("The sky is".into(), " blue.".into())
        );
        let p = r#"[{"role": "user", "content": "Sky?"}]"#;
        let c = r#"[{"role": "assistant", "content": "Blue."}]"#;
        let (rp, rc) = render_cell_pair(Some(&t), p, c, "r").unwrap();
        assert_eq!(
            (rp.as_str(), rc.as_str()),
            ("<|im_start|>user\nSky?<|im_end|>\n<|im_start|>assistant\n", "Blue.<|im_end|>\n")
        );
        let e = render_cell_pair(None, p, c, "data.jsonl:row 3").unwrap_err().to_string();
        assert!(e.contains("data.jsonl:row 3") && e.contains("no chat_template"), "{e}");
        let e = render_cell_pair(Some(&t), p, "Blue.", "row 4").unwrap_err().to_string();
        assert!(e.contains("row 4") && e.contains("plain text"), "{e}");
        let e = render_prompt_cell(Some(&t), r#"{"role": "user"}"#, "row 5").unwrap_err().to_string();
        assert!(e.contains("row 5: prompt") && e.contains("JSON object is not a conversation"), "{e}");
        assert_eq!(render_prompt_cell(None, "plain", "r").unwrap(), "plain");
    }
}
