//! Responsiveness: light submits at a fixed rate, with idle and with saturated
//! workers, against offpath and against a synchronous endpoint that runs the same
//! inference inline. Inference gets one core of its own in both (the workers stand in
//! for Lambda instances on other machines); the API, the load and the endpoint get the
//! rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{self, StatusCode};
use axum::routing::post;
use offpath_api::{AppState, Auth, app};
use offpath_core::{JsonText, Model, TaskEntry};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::overhead::Floor;
use super::{Bench, LIGHT_TEXT, PooledModel, Server, create_jobs, unfinished};
use crate::{Percentiles, dp1, dp2};

/// Texts in a heavy embed job.
const HEAVY_TEXTS: usize = 32;
/// Worker pollers in the responsiveness runs.
const POLLERS: usize = 2;
/// Most bare write + send pairs timed after each offpath responsiveness run, at its
/// rate (never longer than the run itself).
const FLOOR_SAMPLES: usize = 200;

/// What the responsiveness runs found.
#[derive(Debug, Serialize)]
pub(super) struct Responsiveness {
    /// Light submits offered per second.
    pub(super) rate_per_second: u32,
    seconds: u64,
    heavy_job: HeavyJob,
    backlog_jobs: usize,
    inference_threads: usize,
    /// The four runs.
    pub(super) runs: Runs,
    p99_ratio: Ratios,
}

/// One heavy job: its texts and how long its inference takes on one core.
#[derive(Debug, Serialize)]
struct HeavyJob {
    texts: usize,
    #[serde(serialize_with = "dp1")]
    inference_ms: f64,
}

/// offpath and the synchronous endpoint, each with idle and saturated workers.
#[derive(Debug, Serialize)]
pub(super) struct Runs {
    pub(super) offpath_idle: Run,
    pub(super) offpath_saturated: Run,
    pub(super) sync_idle: Run,
    pub(super) sync_saturated: Run,
}

/// Saturated over idle p99.
#[derive(Debug, Serialize)]
struct Ratios {
    #[serde(serialize_with = "dp2")]
    offpath: f64,
    #[serde(serialize_with = "dp2")]
    sync: f64,
}

/// One run: the latencies of the answered requests and what went wrong with the
/// others.
#[derive(Debug, Serialize)]
pub(super) struct Run {
    answered: usize,
    errors: usize,
    error_kinds: Vec<String>,
    /// Latency percentiles of the answered requests.
    pub(super) latency: Option<Percentiles>,
    /// A bare write + send right after an offpath run, in the same state.
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_after_load: Option<Percentiles>,
    /// Heavy jobs still unfinished when an offpath run ended (the backlog lasted).
    #[serde(skip_serializing_if = "Option::is_none")]
    heavy_jobs_unfinished_at_end: Option<usize>,
}

impl Run {
    fn of(latencies: &[Duration], mut errors: Vec<String>) -> Self {
        let count = errors.len();
        errors.sort();
        errors.dedup();
        Run {
            answered: latencies.len(),
            errors: count,
            error_kinds: errors,
            latency: Percentiles::of(latencies),
            floor_after_load: None,
            heavy_jobs_unfinished_at_end: None,
        }
    }

    fn p99(&self) -> f64 {
        self.latency.map_or(f64::NAN, |l| l.p99)
    }

    fn print(&self, name: &str) {
        if let Some(l) = &self.latency {
            println!(
                "{name:>18}: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms ({} answered, {} errors)",
                l.p50, l.p95, l.p99, self.answered, self.errors
            );
        }
        if let Some(floor) = &self.floor_after_load {
            println!(
                "{:>18}  bare write + send meanwhile: p50 {:.3} ms, p99 {:.3} ms",
                "", floor.p50, floor.p99
            );
        }
    }
}

/// Runs the four responsiveness runs.
pub(super) async fn measure(bench: &Bench) -> anyhow::Result<Responsiveness> {
    let confined: Arc<dyn Model> = Arc::new(PooledModel::new(Arc::clone(&bench.model), 1)?);
    let started = Instant::now();
    bench.run_embed(&confined, heavy_input()).await?;
    let one_heavy = started.elapsed();
    // Three times the work the load and the floor samples after it last, so the
    // workers stay busy throughout.
    let busy = 2.0 * bench.options.seconds as f64;
    let backlog = (3.0 * busy / one_heavy.as_secs_f64()).ceil() as usize + 4;
    println!(
        "one heavy job ({HEAVY_TEXTS} long texts) takes {:.0} ms on the inference core; backlog {backlog}",
        one_heavy.as_secs_f64() * 1000.0
    );
    let offpath_idle = offpath_run(bench, "offpath_idle", &confined, 0).await?;
    let offpath_saturated = offpath_run(bench, "offpath_saturated", &confined, backlog).await?;
    let sync_idle = sync_run(bench, &confined, 0).await?;
    sync_idle.print("sync_idle");
    let sync_saturated = sync_run(bench, &confined, POLLERS).await?;
    sync_saturated.print("sync_saturated");
    let ratios = Ratios {
        offpath: offpath_saturated.p99() / offpath_idle.p99(),
        sync: sync_saturated.p99() / sync_idle.p99(),
    };
    println!(
        "saturated/idle p99: offpath {:.2}x (target <= 1.2), synchronous {:.1}x (target >= 10)",
        ratios.offpath, ratios.sync
    );
    Ok(Responsiveness {
        rate_per_second: bench.options.rate,
        seconds: bench.options.seconds,
        heavy_job: HeavyJob {
            texts: HEAVY_TEXTS,
            inference_ms: one_heavy.as_secs_f64() * 1000.0,
        },
        backlog_jobs: backlog,
        inference_threads: 1,
        runs: Runs {
            offpath_idle,
            offpath_saturated,
            sync_idle,
            sync_saturated,
        },
        p99_ratio: ratios,
    })
}

async fn offpath_run(
    bench: &Bench,
    name: &str,
    model: &Arc<dyn Model>,
    backlog: usize,
) -> anyhow::Result<Run> {
    let stack = bench.stack(&name.replace('_', "-")).await;
    let heavy = create_jobs(&stack.ports, backlog, |_| heavy_input()).await?;
    let workers = bench
        .workers(&stack.ports, Arc::clone(model), POLLERS, 1)
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = AppState::new(&stack.ports, Arc::clone(&bench.tasks), Auth::SingleTenant);
    let server = Server::start(app(state)).await?;
    let body = json!({"task": "embed", "input": {"texts": [LIGHT_TEXT]}}).to_string();
    let mut run = open_loop(bench, &server.url("/jobs"), body).await;
    server.stop().await;
    // The same endpoint without offpath, at the same rate, in the same state: does
    // it slow down too?
    let interval = Duration::from_secs(1) / bench.options.rate;
    let samples = FLOOR_SAMPLES.min((bench.options.rate as u64 * bench.options.seconds) as usize);
    let floor = Floor::new(&stack).await.latency(samples, interval).await?;
    let busy_after = unfinished(stack.ports.store.as_ref(), &heavy).await?;
    workers.stop().await;
    run.floor_after_load = Some(floor);
    run.heavy_jobs_unfinished_at_end = Some(busy_after);
    run.print(name);
    anyhow::ensure!(
        backlog == 0 || busy_after > 0,
        "{name}: the backlog ran out before the load ended; raise it"
    );
    Ok(run)
}

async fn sync_run(
    bench: &Bench,
    model: &Arc<dyn Model>,
    heavy_clients: usize,
) -> anyhow::Result<Run> {
    let embed = bench.tasks.get("embed")?.clone();
    let router = Router::new()
        .route("/embed", post(sync_embed))
        .with_state((Arc::clone(model), embed));
    let server = Server::start(router).await?;
    let url = server.url("/embed");
    let (stop, stopped) = watch::channel(false);
    let heavy_body = heavy_input().to_string();
    let clients: Vec<_> = (0..heavy_clients)
        .map(|_| {
            let (client, url, body) = (bench.client.clone(), url.clone(), heavy_body.clone());
            let stopped = stopped.clone();
            tokio::spawn(async move {
                while !*stopped.borrow() {
                    let _ = post_json(&client, &url, body.clone()).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let body = json!({"texts": [LIGHT_TEXT]}).to_string();
    let run = open_loop(bench, &url, body).await;
    stop.send(true)?;
    for client in clients {
        client.await?;
    }
    server.stop().await;
    Ok(run)
}

/// Offers `rate` POSTs per second for `seconds`, each on its own schedule (open
/// loop: a slow answer does not delay the next request); latency counts from the
/// scheduled send.
async fn open_loop(bench: &Bench, url: &str, body: String) -> Run {
    let interval = Duration::from_secs(1) / bench.options.rate;
    let total = bench.options.rate as u64 * bench.options.seconds;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let requests: Vec<_> = (0..total)
        .map(|i| {
            let at = start + interval * i as u32;
            let (client, url, body) = (bench.client.clone(), url.to_owned(), body.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let status = post_json(&client, &url, body).await;
                (status, at.elapsed())
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    for request in requests {
        match request.await {
            Ok((Ok(status), took)) if status.is_success() => latencies.push(took),
            Ok((Ok(status), _)) => errors.push(status.to_string()),
            Ok((Err(err), _)) => errors.push(err.to_string()),
            Err(err) => errors.push(err.to_string()),
        }
    }
    Run::of(&latencies, errors)
}

/// POSTs a JSON body, reads the whole answer and returns its status.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<StatusCode, reqwest::Error> {
    let response = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let status = response.status();
    response.bytes().await?;
    Ok(status)
}

/// The anti-pattern: `POST /embed {"texts": [...]}` runs the model on the request path.
async fn sync_embed(
    State((model, embed)): State<(Arc<dyn Model>, TaskEntry)>,
    axum::Json(body): axum::Json<JsonText>,
) -> Result<axum::Json<JsonText>, (StatusCode, String)> {
    let input = embed
        .prepare(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut outputs = tokio::task::spawn_blocking(move || embed.run(model.as_ref(), &[input]))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(axum::Json(outputs.remove(0)))
}

/// An embed input of long texts (about 150 tokens each): the heavy job.
fn heavy_input() -> Value {
    let corpus = crate::model::sentences();
    let texts: Vec<String> = (0..HEAVY_TEXTS)
        .map(|i| {
            (0..6)
                .map(|j| corpus[(i * 7 + j * 13) % corpus.len()].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    json!({ "texts": texts })
}
