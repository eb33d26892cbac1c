//! `offpath submit`, `status` and `wait`: the HTTP API from the command line, against
//! the local stack or a deployment (`offpath jobs` lists, in `jobs.rs`).

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Where the API is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct Api {
    /// Base URL of the API (`offpath dev`'s address, or the stack's ApiUrl output).
    #[arg(
        long,
        env = "OFFPATH_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key for `offpath dev` with OFFPATH_API_KEYS (sent as x-api-key).
    #[arg(long, env = "OFFPATH_API_KEY", global = true)]
    pub api_key: Option<String>,
    /// Bearer token (a JWT) for a deployment with a JWT authorizer.
    #[arg(long, env = "OFFPATH_TOKEN", global = true)]
    pub token: Option<String>,
}

/// `offpath submit` options.
#[derive(Debug, Clone, Args)]
pub struct Submit {
    /// The task (the registered tasks are listed below).
    #[arg(value_parser = task_names())]
    pub task: String,
    /// The task input as JSON, e.g. '{"texts":["hello"]}'.
    #[arg(long, conflicts_with_all = ["input_file", "text"])]
    pub input: Option<String>,
    /// Read the input JSON from a file, or from standard input with `-`.
    #[arg(long, conflicts_with_all = ["text", "file"])]
    pub input_file: Option<PathBuf>,
    /// For tasks over documents (embed_document): upload this file (UTF-8 text, at
    /// most 10 MiB) and name the upload in the input (`--input` adds other fields).
    #[arg(long, conflicts_with = "text")]
    pub file: Option<PathBuf>,
    /// With --wait, write a document job's result (JSON Lines) here.
    #[arg(long, requires = "wait")]
    pub out: Option<PathBuf>,
    /// A text, for tasks that take a list of texts such as embed (repeat for several).
    #[arg(long)]
    pub text: Vec<String>,
    /// Idempotency-Key: the same key and input return the same job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// How long the job is kept, in seconds.
    #[arg(long)]
    pub ttl_seconds: Option<u64>,
    /// Wait for the job to finish, showing its status (and a document's progress in
    /// chunks), and print the finished job.
    #[arg(long)]
    pub wait: bool,
    /// With --wait, give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_seconds: u64,
}

/// The registered tasks, as `submit`'s possible values with their summaries.
fn task_names() -> PossibleValuesParser {
    let registry = offpath_tasks::registry();
    PossibleValuesParser::new(
        registry
            .entries()
            .map(|task| PossibleValue::new(task.name().to_string()).help(task.summary())),
    )
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

pub(crate) fn authorize(api: &Api, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let request = match &api.api_key {
        Some(key) => request.header("x-api-key", key),
        None => request,
    };
    match &api.token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Sends a request; an error answer becomes an error naming its code and message.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        anyhow::bail!(
            "{status}: {} ({})",
            body["error"]["message"].as_str().unwrap_or("no message"),
            body["error"]["code"].as_str().unwrap_or("no code")
        )
    }
}

/// `offpath submit`: the API validates the input (its 400 names the field).
pub async fn submit(api: &Api, options: Submit) -> anyhow::Result<()> {
    let registry = offpath_tasks::registry();
    let task = registry.get(&options.task)?;
    let mut input: Value = match (&options.input, &options.input_file) {
        (Some(text), _) => serde_json::from_str(text)?,
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            serde_json::from_str(&text)?
        }
        (None, Some(path)) => serde_json::from_str(&std::fs::read_to_string(path)?)?,
        (None, None) if options.file.is_some() => json!({}),
        (None, None) if !options.text.is_empty() => task
            .input_from_texts(options.text.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} takes no --text; give its input with --input",
                    task.name()
                )
            })?
            .to_value(),
        (None, None) => anyhow::bail!("give the input with --input, --input-file or --text"),
    };
    if let Some(path) = &options.file {
        anyhow::ensure!(
            task.runs_in_parts(),
            "{} takes no --file; give its input with --input",
            task.name()
        );
        let upload = upload(api, path).await?;
        input
            .as_object_mut()
            .ok_or_else(|| anyhow::anyhow!("--input must be a JSON object"))?
            .insert("upload".into(), upload.into());
    }
    let mut body = json!({ "task": options.task, "input": input });
    if let Some(ttl) = options.ttl_seconds {
        body["ttl_seconds"] = ttl.into();
    }
    let mut request = client()?.post(format!("{}/jobs", api.url)).json(&body);
    if let Some(key) = &options.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let job = send(authorize(api, request)).await?;
    if options.wait {
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        wait(api, &id, Duration::from_secs(options.timeout_seconds)).await?;
        if let Some(path) = &options.out {
            let bytes = download(api, &id, path).await?;
            eprintln!("wrote {bytes} bytes to {}", path.display());
        }
        return Ok(());
    }
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

/// `offpath status ID`.
pub async fn status(api: &Api, id: &str) -> anyhow::Result<()> {
    let job = get(api, id, 0).await?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

/// `GET /jobs/{id}`, long-polling up to `wait` seconds (0: answer at once).
async fn get(api: &Api, id: &str, wait: u64) -> anyhow::Result<Value> {
    let url = match wait {
        0 => format!("{}/jobs/{id}", api.url),
        wait => format!("{}/jobs/{id}?wait={wait}", api.url),
    };
    send(authorize(api, client()?.get(url))).await
}

/// Uploads a document (`POST /uploads`, then a PUT of the file to its URL); returns
/// the upload's id.
async fn upload(api: &Api, path: &std::path::Path) -> anyhow::Result<String> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let upload = send(authorize(
        api,
        client()?.post(format!("{}/uploads", api.url)),
    ))
    .await?;
    let url = upload["url"].as_str().unwrap_or_default();
    // A URL of this API (local backend) is relative to it.
    let url = if url.starts_with('/') {
        format!("{}{url}", api.url)
    } else {
        url.to_owned()
    };
    let put = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?
        .put(url)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(bytes);
    let response = put.send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "uploading {} answered {}: {}",
        path.display(),
        response.status(),
        response.text().await.unwrap_or_default()
    );
    Ok(upload["id"].as_str().unwrap_or_default().to_owned())
}

/// Writes a document job's result to `path` (following the API's redirect to S3);
/// returns the bytes written.
async fn download(api: &Api, id: &str, path: &std::path::Path) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let request = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?
        .get(format!("{}/jobs/{id}/result", api.url));
    let mut response = authorize(api, request).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET /jobs/{id}/result answered {}",
        response.status()
    );
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let mut written = 0;
    while let Some(chunk) = response.chunk().await? {
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
    }
    file.flush().await?;
    Ok(written)
}

/// `offpath wait ID`: long-polls (`GET /jobs/{id}?wait=20`, which answers as soon as
/// the job ends) with a spinner until the job is terminal; a document's progress bar
/// refreshes every 2 s. Fails unless the job succeeded.
pub async fn wait(api: &Api, id: &str, timeout: Duration) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    let start = Instant::now();
    let mut wait = 0;
    loop {
        let job = get(api, id, wait).await?;
        let status = job["status"].as_str().unwrap_or_default().to_owned();
        spinner.set_message(format!("job {id} {status} (attempts {})", job["attempts"]));
        if let (Some(done), Some(total)) = (
            job["progress"]["done"].as_u64(),
            job["progress"]["total"].as_u64(),
        ) && spinner.length() != Some(total)
        {
            spinner.set_length(total);
            spinner.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} chunks {elapsed}")
                    .expect("valid template"),
            );
            spinner.set_position(done);
        } else if let Some(done) = job["progress"]["done"].as_u64() {
            spinner.set_position(done);
        }
        if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
            spinner.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&job)?);
            anyhow::ensure!(status == "succeeded", "job {id} ended {status}");
            return Ok(());
        }
        let left = timeout.saturating_sub(start.elapsed());
        anyhow::ensure!(!left.is_zero(), "job {id} still {status} after {timeout:?}");
        let most = if job["progress"].is_object() { 2 } else { 20 };
        wait = left.as_secs().clamp(1, most);
    }
}
