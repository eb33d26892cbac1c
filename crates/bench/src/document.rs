//! `offpath-bench document`: a document end to end on the embedded backend (upload,
//! split into parts, parts on 1 and 2 pollers, result assembled): chunks/second and
//! time to result; with `--python`, sentence-transformers embedding the same chunks
//! (the same word-piece windows) in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Args;
use offpath_api::{AppState, Auth, app};
use offpath_aws::provision::ResourceNames;
use offpath_core::blob::upload_key;
use offpath_core::{JobId, JobStatus, Model, QueueSettings};
use offpath_inference::{MiniLm, weights};
use offpath_testkit::{Backend, Stack};
use offpath_worker::poller::{PollSettings, Pool};
use offpath_worker::{Worker, WorkerConfig};
use serde::Serialize;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{dp1, dp2};

/// `offpath-bench document` options.
#[derive(Debug, Clone, Args)]
pub struct DocumentBench {
    /// Size of the document, in MiB.
    #[arg(long, default_value_t = 1.0)]
    pub mib: f64,
    /// Pollers to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub pollers: Vec<usize>,
    /// A Python with sentence-transformers and torch: embeds the same chunks
    /// (infra/bench/document_bench.py) in the same run.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The sentence-transformers side.
const ST_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../infra/bench/document_bench.py"
);

/// One run: the document through the backend with `pollers` pollers.
#[derive(Debug, Serialize)]
struct Run {
    pollers: usize,
    chunks: u64,
    parts: u32,
    #[serde(serialize_with = "dp2")]
    seconds_to_result: f64,
    #[serde(serialize_with = "dp1")]
    chunks_per_second: f64,
    result_bytes: u64,
}

/// What `offpath-bench document` measured.
#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    command: String,
    document_bytes: usize,
    threads: usize,
    runs: Vec<Run>,
    sentence_transformers: Option<Value>,
}

/// Runs the document benchmark.
pub(super) async fn run(options: DocumentBench) -> anyhow::Result<()> {
    let files = tokio::task::spawn_blocking(|| weights::resolve(true)).await??;
    let model_files = files.clone();
    let model: Arc<MiniLm> =
        Arc::new(tokio::task::spawn_blocking(move || MiniLm::load(&model_files)).await??);
    let document = document((options.mib * 1024.0 * 1024.0) as usize);
    println!(
        "document: {:.2} MiB of English text",
        document.len() as f64 / (1024.0 * 1024.0)
    );
    let mut runs = Vec::new();
    for &pollers in &options.pollers {
        let run = through_the_backend(&model, &document, pollers).await?;
        println!(
            "{pollers} poller(s): {} chunks in {} parts, result in {:.2} s: {:.1} chunks/s",
            run.chunks, run.parts, run.seconds_to_result, run.chunks_per_second
        );
        runs.push(run);
    }
    let reference = match &options.python {
        Some(python) => Some(sentence_transformers(
            python, &files.dir, &model, &document,
        )?),
        None => None,
    };
    let report = Report {
        benchmark: "document",
        command: format!(
            "offpath-bench document --mib {} --pollers {}{}",
            options.mib,
            options
                .pollers
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
            if options.python.is_some() {
                " --python PYTHON"
            } else {
                ""
            }
        ),
        document_bytes: document.len(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        runs,
        sentence_transformers: reference,
    };
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// About `bytes` of varied English prose, the same every run.
fn document(bytes: usize) -> String {
    let sentences = super::model::sentences();
    let mut text = String::with_capacity(bytes + 200);
    let mut i = 0;
    while text.len() < bytes {
        text.push_str(&sentences[(i * 7) % sentences.len()]);
        text.push(if i % 9 == 8 { '\n' } else { ' ' });
        i += 1;
    }
    text
}

/// Uploads the document, submits it through the API and waits for its result with
/// `pollers` pollers on the embedded backend.
async fn through_the_backend(
    model: &Arc<MiniLm>,
    document: &str,
    pollers: usize,
) -> anyhow::Result<Run> {
    let names = ResourceNames {
        bucket: format!("offpath-bench-{}-document-{pollers}", std::process::id()),
        ..ResourceNames::default()
    };
    let stack = Stack::named(Backend::Embedded, &names, QueueSettings::default()).await;
    let tasks = Stack::tasks();
    let config = WorkerConfig {
        max_receive_count: stack.ports.queue.max_receive_count().await?,
        ..WorkerConfig::default()
    };
    let model: Arc<dyn Model> = model.clone();
    let worker = Arc::new(Worker::new(&stack.ports, model, Arc::clone(&tasks), config));
    let state = AppState::new(&stack.ports, tasks, Auth::SingleTenant);
    let upload = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    stack
        .ports
        .blobs
        .put(&upload_key("local", &upload), document.as_bytes().to_vec())
        .await?;
    let body = json!({"task": "embed_document", "input": {"upload": upload}}).to_string();
    let request = Request::post("/jobs")
        .header("content-type", "application/json")
        .body(Body::from(body))?;
    let response = app(state).oneshot(request).await?;
    anyhow::ensure!(
        response.status() == StatusCode::ACCEPTED,
        "submit answered {}",
        response.status()
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let id: JobId = serde_json::from_slice::<Value>(&bytes)?["id"]
        .as_str()
        .context("no id")?
        .parse()?;
    let settings = PollSettings {
        batch_size: 10,
        wait: Duration::from_millis(100),
    };
    let pool = Pool::start(worker, Arc::clone(&stack.ports.queue), settings, pollers);
    let job = loop {
        let job = stack
            .ports
            .store
            .get(id)
            .await?
            .context("the job vanished")?;
        if job.status.is_terminal() {
            break job;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "no result in an hour"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    pool.stop().await;
    anyhow::ensure!(
        job.status == JobStatus::Succeeded,
        "the job ended {}: {:?}",
        job.status,
        job.error
    );
    let parts = job.parts.context("a document job runs in parts")?;
    let output = job.output.context("a succeeded job has an output")?;
    stack
        .ports
        .blobs
        .delete_prefix(offpath_core::blob::RESULTS)
        .await?;
    Ok(Run {
        pollers,
        chunks: parts.chunks_total,
        parts: parts.total,
        seconds_to_result: seconds,
        chunks_per_second: parts.chunks_total as f64 / seconds,
        result_bytes: output.to_value()["result"]["bytes"].as_u64().unwrap_or(0),
    })
}

/// Embeds the document's chunks (its word-piece windows, as offpath makes them)
/// through sentence-transformers in a child Python and returns its report.
fn sentence_transformers(
    python: &std::path::Path,
    model_dir: &std::path::Path,
    model: &MiniLm,
    document: &str,
) -> anyhow::Result<Value> {
    let pieces = model.tokenize(document)?;
    let (window, stride) = (254, 254 - 32);
    let mut windows: Vec<Vec<u32>> = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + window).min(pieces.len());
        windows.push(pieces[start..end].iter().map(|(id, _)| *id).collect());
        if end == pieces.len() {
            break;
        }
        start += stride;
    }
    let path = std::env::temp_dir().join(format!("offpath-chunks-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&windows)?)?;
    let report = super::python_report(
        python,
        ST_SCRIPT,
        &[model_dir.as_os_str(), path.as_os_str()],
    );
    std::fs::remove_file(&path)?;
    let report = report?;
    println!(
        "sentence-transformers, the same {} chunks at batch 32: {} chunks/s",
        windows.len(),
        report["chunks_per_second"]
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_are_the_size_asked() {
        let text = super::document(100_000);
        assert!((100_000..100_200).contains(&text.len()));
        assert_eq!(text, super::document(100_000));
    }
}
