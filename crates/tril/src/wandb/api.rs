//! W&B's HTTP API as the Python client uses it (`wandb/sdk/internal/internal_api.py`,
//! `file_stream.py`):
//!
//! - `POST {base}/graphql`, HTTP basic auth user `api`, password the API key:
//!   `upsertBucket` creates or updates the run (its `name` is our run id, `modelName` the
//!   project), `createRunFiles` gives upload URLs for run files;
//! - `POST {base}/files/{entity}/{project}/{run}/file_stream`: history rows, summary,
//!   `uploaded` notices and the final `{"complete": true, "exitcode": n}`;
//! - `PUT` of each file to its upload URL, with the `uploadHeaders` given (`Name:Value`).
//!
//! Every request has a timeout; nothing here retries (the uploader does, with backoff).
//! The key is only ever put in the Authorization header; errors name the URL, never it.

use super::spool::{config_payload, RunInfo};
use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// What `upsertBucket` answered: where the run lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    /// The entity (the key's default one when the config named none).
    pub entity: String,
    /// The project.
    pub project: String,
}

/// A W&B client. Not `Debug`: it holds the key.
pub struct Api {
    client: reqwest::blocking::Client,
    base: String,
    key: String,
}

/// The `upsertBucket` mutation (fields as in the Python client).
const UPSERT_BUCKET: &str = "mutation UpsertBucket($name: String, $project: String, $entity: String, \
$groupName: String, $displayName: String, $notes: String, $config: JSONString, $tags: [String!], $host: String, \
$jobType: String) { upsertBucket(input: {name: $name, groupName: $groupName, modelName: $project, \
entityName: $entity, displayName: $displayName, notes: $notes, config: $config, tags: $tags, host: $host, \
jobType: $jobType}) { bucket { id name displayName project { id name entity { id name } } historyLineCount } \
inserted } }";

/// The `createRunFiles` mutation.
const CREATE_RUN_FILES: &str = "mutation CreateRunFiles($entity: String!, $project: String!, $run: String!, \
$files: [String!]!) { createRunFiles(input: {entityName: $entity, projectName: $project, runName: $run, \
files: $files}) { runID uploadHeaders files { name uploadUrl } } }";

/// The variables of `upsertBucket` for a run.
pub fn upsert_variables(info: &RunInfo) -> Value {
    json!({
        "name": info.run_id,
        "project": info.project,
        "entity": info.entity,
        "groupName": info.group,
        "displayName": info.display_name,
        "notes": info.notes,
        "config": config_payload(&info.config),
        "tags": info.tags,
        "host": hostname(),
        "jobType": "train",
    })
}

/// The machine's name, when it has one.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Reads the `upsertBucket` answer.
pub fn parse_upserted(data: &Value) -> anyhow::Result<Upserted> {
    let project = &data["upsertBucket"]["bucket"]["project"];
    let name = |v: &Value| v.as_str().map(str::to_string);
    match (name(&project["entity"]["name"]), name(&project["name"])) {
        (Some(entity), Some(project)) => Ok(Upserted { entity, project }),
        _ => bail!("upsertBucket answered without the run's project and entity: {}", short(&data.to_string())),
    }
}

/// The first 200 characters of a server's answer, for an error message.
fn short(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

impl Api {
    /// A client for `base` (e.g. `https://api.wandb.ai`) authenticating with `key`.
    pub fn new(base: &str, key: String) -> anyhow::Result<Api> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("tril/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the W&B HTTP client")?;
        Ok(Api { client, base: base.trim_end_matches('/').to_string(), key })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Runs a GraphQL query; its `data`.
    fn graphql(&self, query: &str, variables: Value, timeout: Duration) -> anyhow::Result<Value> {
        let url = format!("{}/graphql", self.base);
        let response = self
            .client
            .post(&url)
            .basic_auth("api", Some(&self.key))
            .timeout(timeout)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .map_err(|e| anyhow!("POST {url}: {}", without_url(&e)))?;
        let status = response.status();
        let text = response.text().map_err(|e| anyhow!("POST {url}: {}", without_url(&e)))?;
        if !status.is_success() {
            bail!("POST {url}: HTTP {status}{}", auth_hint(status));
        }
        let body: Value =
            serde_json::from_str(&text).with_context(|| format!("POST {url}: not JSON: {}", short(&text)))?;
        if let Some(errors) = body.get("errors").filter(|e| !e.is_null()) {
            bail!("POST {url}: {}", short(&errors.to_string()));
        }
        Ok(body["data"].clone())
    }

    /// Creates or updates the run.
    pub fn upsert_run(&self, info: &RunInfo, timeout: Duration) -> anyhow::Result<Upserted> {
        parse_upserted(&self.graphql(UPSERT_BUCKET, upsert_variables(info), timeout)?)
    }

    /// Posts one `file_stream` request.
    pub fn file_stream(&self, at: &Upserted, run_id: &str, body: &Value, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/files/{}/{}/{}/file_stream", self.base, at.entity, at.project, run_id);
        let response = self
            .client
            .post(&url)
            .basic_auth("api", Some(&self.key))
            .timeout(timeout)
            .json(body)
            .send()
            .map_err(|e| anyhow!("POST {url}: {}", without_url(&e)))?;
        let status = response.status();
        if !status.is_success() {
            bail!("POST {url}: HTTP {status}{}", auth_hint(status));
        }
        Ok(())
    }

    /// Uploads files (`(name on W&B, local path)`) as run files: `createRunFiles`, then a
    /// `PUT` of each to its upload URL.
    pub fn upload_run_files(
        &self,
        at: &Upserted,
        run_id: &str,
        files: &[(String, std::path::PathBuf)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let variables = json!({"entity": at.entity, "project": at.project, "run": run_id, "files": names});
        let data = self.graphql(CREATE_RUN_FILES, variables, timeout)?;
        let result = &data["createRunFiles"];
        let headers: Vec<(String, String)> = result["uploadHeaders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str()?.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect();
        for (name, path) in files {
            let url = result["files"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| f["name"].as_str() == Some(name))
                .and_then(|f| f["uploadUrl"].as_str())
                .ok_or_else(|| anyhow!("createRunFiles gave no upload URL for {name}"))?;
            self.put_file(url, &headers, path, timeout)?;
        }
        Ok(())
    }

    /// `PUT`s one file to an upload URL (which carries its own authorization).
    fn put_file(&self, url: &str, headers: &[(String, String)], path: &Path, timeout: Duration) -> anyhow::Result<()> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let size = bytes.len() as u64;
        let mut request = self.client.put(url).timeout(timeout + Duration::from_secs(size / 1_000_000));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response =
            request.body(bytes).send().map_err(|e| anyhow!("uploading {}: {}", path.display(), without_url(&e)))?;
        if !response.status().is_success() {
            bail!("uploading {}: HTTP {}", path.display(), response.status());
        }
        Ok(())
    }
}

/// A reqwest error without its URL (an upload URL may carry a signature); the caller
/// names the endpoint.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({detail})")
    }
}

/// A hint for the statuses that mean the key is wrong.
fn auth_hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => " (is WANDB_API_KEY right for this server and entity?)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            run_id: "abc12345".into(),
            project: "p".into(),
            entity: None,
            display_name: "exp".into(),
            group: Some("g".into()),
            tags: vec!["t1".into(), "t2".into()],
            notes: Some("n".into()),
            config: json!({"seed": 1}),
            started_at: 0.0,
        }
    }

    #[test]
    fn upsert_variables_name_the_run_and_its_metadata() {
        let v = upsert_variables(&info());
        assert_eq!(v["name"], "abc12345");
        assert_eq!(v["project"], "p");
        assert!(v["entity"].is_null());
        assert_eq!(v["groupName"], "g");
        assert_eq!(v["displayName"], "exp");
        assert_eq!(v["tags"], json!(["t1", "t2"]));
        assert_eq!(v["notes"], "n");
        let config: Value = serde_json::from_str(v["config"].as_str().unwrap()).unwrap();
        assert_eq!(config, json!({"seed": {"value": 1}}));
        assert!(UPSERT_BUCKET.contains("modelName: $project") && UPSERT_BUCKET.contains("entityName: $entity"));
    }

    #[test]
    fn the_answer_gives_entity_and_project() {
        let data = json!({"upsertBucket": {"bucket": {"name": "abc12345", "project": {"name": "p", "entity": {"name": "me"}}}}});
        assert_eq!(parse_upserted(&data).unwrap(), Upserted { entity: "me".into(), project: "p".into() });
        assert!(parse_upserted(&json!({})).is_err());
    }

    #[test]
    fn long_answers_are_cut() {
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(&"x".repeat(300)).len(), 203);
    }
}
