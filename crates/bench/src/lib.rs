//! `offpath-bench`: measured figures, printed and written as JSON, with PNG plots. The
//! benchmarks are a binary of their own because they share stacks, hooks and a
//! loopback Lambda Runtime API with the tests (`offpath-testkit`), which `offpath`
//! does not link.

mod anchors;
mod document;
mod fairness;
mod model;
mod service;

pub use document::DocumentBench;
pub use fairness::FairnessBench;
pub use model::ModelBench;
pub use service::ServiceBench;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Subcommand;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// Benchmarks.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Model throughput per batch size, start-up time, peak memory, and jobs/s with and
    /// without micro-batching.
    Model(ModelBench),
    /// The thesis, side by side: submit latency with idle and saturated workers against
    /// a synchronous endpoint, submit overhead against a bare write + send, pipeline
    /// throughput, cold starts and cost.
    Service(ServiceBench),
    /// A document end to end on the embedded backend (upload, parts on 1 and 2
    /// pollers, result): chunks/s and time to result, beside sentence-transformers.
    Document(DocumentBench),
    /// Tenant fairness on the embedded backend: one owner's backlog, then another's
    /// few jobs; the second owner's queue wait with fair delivery and oldest first.
    Fairness(FairnessBench),
}

/// Runs a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Model(options) => {
            tokio::task::spawn_blocking(move || model::run(options)).await?
        }
        BenchCommand::Service(options) => service::run(options).await,
        BenchCommand::Document(options) => document::run(options).await,
        BenchCommand::Fairness(options) => fairness::run(options).await,
    }
}

/// Peak resident memory of this process (VmHWM), KiB.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}

/// `x` to `decimals` decimals.
fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Serialises a figure to one decimal.
fn dp1<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round_to(*x, 1))
}

/// Serialises a figure to two decimals.
fn dp2<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round_to(*x, 2))
}

/// Serialises a figure to three decimals.
fn dp3<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round_to(*x, 3))
}

/// Latency percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Percentiles {
    #[serde(rename = "p50_ms", serialize_with = "dp3")]
    p50: f64,
    #[serde(rename = "p95_ms", serialize_with = "dp3")]
    p95: f64,
    #[serde(rename = "p99_ms", serialize_with = "dp3")]
    p99: f64,
    #[serde(rename = "max_ms", serialize_with = "dp3")]
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` for an empty sample.
    fn of(samples: &[Duration]) -> Option<Self> {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        (!ms.is_empty()).then(|| Percentiles {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: ms[ms.len() - 1],
        })
    }
}

/// Runs `script` with `args` in the Python at `python` (an infra/bench script) and
/// returns the JSON it prints; its stderr passes through.
fn python_report(python: &Path, script: &str, args: &[&OsStr]) -> anyhow::Result<Value> {
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} {script} failed ({}); does it have infra/bench/requirements.txt?",
        python.display(),
        output.status
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples).unwrap();
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&[]), None);
        let json = serde_json::to_value(Percentiles::of(&[Duration::from_micros(1234)])).unwrap();
        assert_eq!(json["p50_ms"], 1.234);
    }
}
