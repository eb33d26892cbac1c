//! Cold starts: a loopback Lambda Runtime API that notes when a function process first
//! asks for an event, which is when Lambda counts it ready.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use tokio::sync::mpsc;

/// Longest a function may take to become ready.
const LIMIT: Duration = Duration::from_secs(30);

/// Starts `bootstrap` as Lambda would (its Runtime API on loopback) with `env` added,
/// and returns the time from process start to its first request for an event. The
/// process is killed afterwards.
pub(super) async fn time_to_ready(
    bootstrap: &Path,
    function: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Duration> {
    let (ready, mut asked) = mpsc::channel::<Instant>(1);
    let app = Router::new().route(
        "/2018-06-01/runtime/invocation/next",
        get(move || {
            let ready = ready.clone();
            async move {
                let _ = ready.try_send(Instant::now());
                // No event comes: the function waits here until it is killed.
                std::future::pending::<&'static str>().await
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let start = Instant::now();
    let mut child = std::process::Command::new(bootstrap)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bootstrap.display()))?;
    let outcome = loop {
        if let Ok(at) = asked.try_recv() {
            break Ok(at - start);
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "{function} exited ({status}) before it was ready"
            ));
        }
        if start.elapsed() > LIMIT {
            break Err(anyhow::anyhow!("{function} was not ready after {LIMIT:?}"));
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    if outcome.is_err()
        && let Some(mut stderr) = child.stderr.take()
    {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        eprintln!("{function} said:\n{text}");
    }
    server.abort();
    outcome
}
