//! `offpath-bench model`: the cores' measured peak, throughput per batch size (also as
//! GFLOP/s and a fraction of that peak), 256-token windows, start-up, memory,
//! micro-batching, and optionally the anchors (sentence-transformers, ONNX Runtime,
//! OpenVINO) on the same sentences and windows.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use offpath_core::{JsonText, Prepared};
use offpath_inference::peak::Peak;
use offpath_inference::{MAX_TOKENS, MiniLm, Precision, weights};
use serde_json::{Value, json};

use super::{anchors, peak_rss_kib, round_to};

/// `offpath-bench model` options.
#[derive(Debug, Clone, Args)]
pub struct ModelBench {
    /// Seconds to spend on each measurement.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// A Python with sentence-transformers, torch, ONNX Runtime and OpenVINO
    /// (infra/bench/requirements.txt): runs the same sentences and windows through
    /// each of them (infra/bench/anchors_bench.py) in the same run, side by side.
    #[arg(long)]
    pub python: Option<std::path::PathBuf>,
    /// The products' precision, `bfloat16` or `float32`; when unset, the one the model's
    /// load picks (a race of the two where the CPU has both). `float32` is what CPUs
    /// without AVX-512 BF16 run.
    #[arg(long)]
    pub precision: Option<Precision>,
}

/// Batch sizes the model benchmark measures.
const BATCHES: [usize; 4] = [1, 8, 32, 64];
/// Jobs in one SQS batch of the micro-batching measurement (SQS's most per receive).
const SQS_BATCH: usize = 10;
/// Windows per pass of the long-window measurement.
const WINDOW_BATCHES: [usize; 3] = [1, 8, 32];
/// How long each peak measurement runs.
const PEAK_TIME: Duration = Duration::from_secs(2);

/// Sentences of everyday length (10-22 tokens), walked in batches by [`batches`].
pub(super) fn sentences() -> Vec<String> {
    let subjects = [
        "A man",
        "The new intern",
        "Our support team",
        "A small dog",
        "The committee",
        "My neighbour's daughter",
        "The queue worker",
        "A tired traveller",
    ];
    let actions = [
        "is reading a long report about",
        "quietly asked a question about",
        "spent the whole afternoon fixing",
        "wrote a short note on",
        "could not stop talking about",
        "carefully measured",
        "is eating a piece of bread near",
        "published an article on",
    ];
    let objects = [
        "the weather.",
        "the broken printer in the office.",
        "renewable energy and its costs over the next decade.",
        "the history of the Roman empire.",
        "a recipe for sourdough bread.",
        "why the train was late again this morning.",
        "the results of the football match.",
        "how message queues keep web requests fast.",
    ];
    let mut out = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        for (j, a) in actions.iter().enumerate() {
            out.push(format!("{s} {a} {}", objects[(i + j) % objects.len()]));
        }
    }
    out
}

/// Runs the model benchmark (blocking).
pub(super) fn run(options: ModelBench) -> anyhow::Result<()> {
    let budget = Duration::from_secs_f64(options.seconds);
    let files = weights::resolve(true)?;
    let ready_ms = startup_ms()?;
    let model = MiniLm::load_in(&files, options.precision.unwrap_or_else(Precision::best))?;
    let corpus = sentences();
    println!("products in {}", model.precision().name());
    let threads = rayon::current_num_threads();
    let peak = offpath_inference::peak::measure(threads, PEAK_TIME);
    let rate = |gflops: Option<f64>| gflops.map_or("(none here)".to_owned(), |g| format!("{g:.0}"));
    println!(
        "peak on {threads} threads, GFLOP/s: bfloat16 tiles {} register-only, {} fed from L1; \
         bfloat16 dot products {}; f32 FMA ({}) {:.0}",
        rate(peak.tile_gflops),
        rate(peak.fed_tile_gflops),
        rate(peak.bf16_gflops),
        peak.f32_kind,
        peak.f32_gflops
    );
    let limit = match model.precision() {
        Precision::Bfloat16 => peak.bf16_limit(),
        Precision::Float32 => peak.f32_gflops,
    };
    // Prints one rate with its GFLOP/s and fraction of the peak; returns its JSON row.
    let measured = |label: String, unit: &str, batch: usize, per_second: f64, flops: f64| {
        let gflops = per_second * flops / 1e9;
        println!(
            "{label}: {per_second:>7.1} {unit}/s, {gflops:>5.1} GFLOP/s, {:.0}% of peak",
            100.0 * gflops / limit
        );
        json!({
            "batch": batch,
            format!("{unit}_per_second"): round_to(per_second, 1),
            "gflops": round_to(gflops, 1),
            "fraction_of_peak": round_to(gflops / limit, 3),
        })
    };

    let mut throughput = Vec::new();
    for batch in BATCHES {
        let batches = batches(&corpus, batch);
        let flops_per_sentence = flops_per_text(&model, &batches)?;
        model.embed(&batches[0])?; // warm-up
        let (sentences, elapsed) =
            repeat(budget, &batches, |texts| model.embed(texts).map(|_| batch))?;
        let per_second = sentences as f64 / elapsed.as_secs_f64();
        let label = format!("batch {batch:>2}");
        throughput.push(measured(
            label,
            "sentences",
            batch,
            per_second,
            flops_per_sentence,
        ));
    }

    // Documents embed windows of 256 tokens, where attention weighs more.
    let windows = windows(&model, &corpus)?;
    let window_flops = model.flops(&[MAX_TOKENS]);
    let mut long = Vec::new();
    for batch in WINDOW_BATCHES {
        let groups: Vec<Vec<&[u32]>> = windows
            .chunks(batch)
            .filter(|group| group.len() == batch)
            .map(|group| group.iter().map(Vec::as_slice).collect())
            .collect();
        model.embed_pieces(&groups[0])?; // warm-up
        let (chunks, elapsed) = repeat(budget, &groups, |group| {
            model.embed_pieces(group).map(|_| batch)
        })?;
        let per_second = chunks as f64 / elapsed.as_secs_f64();
        let label = format!("256-token windows, {batch:>2} a pass");
        long.push(measured(label, "chunks", batch, per_second, window_flops));
    }

    let anchors = match &options.python {
        Some(python) => {
            let measured = anchors::Measured {
                corpus: &corpus,
                batches: &BATCHES,
                windows: &windows,
                window_batches: &WINDOW_BATCHES,
                throughput: &throughput,
                windows_256: &long,
            };
            Some(anchors::run(
                python,
                &files.dir,
                &model,
                &measured,
                &peak,
                options.seconds,
            )?)
        }
        None => None,
    };

    // SQS batches of ten one-text embed jobs, over the corpus: one pass for each SQS
    // batch, or one pass for each job.
    let tasks = offpath_tasks::registry();
    let embed = tasks.get("embed")?;
    let job = |text: &&str| {
        embed
            .prepare(&JsonText::of(&json!({"texts": [text]})).expect("JSON"))
            .expect("valid input")
    };
    let jobs: Vec<Vec<Prepared>> = batches(&corpus, SQS_BATCH)
        .iter()
        .map(|texts| texts.iter().map(job).collect())
        .collect();
    let (batched, t1) = repeat(budget, &jobs, |batch| {
        embed.run(&model, batch).map(|o| o.len())
    })?;
    let (single, t2) = repeat(budget, &jobs, |batch| {
        batch
            .iter()
            .map(|job| {
                embed
                    .run(&model, std::slice::from_ref(job))
                    .map(|o| o.len())
            })
            .sum::<Result<usize, _>>()
    })?;
    let with = batched as f64 / t1.as_secs_f64();
    let without = single as f64 / t2.as_secs_f64();
    let best = throughput
        .iter()
        .filter_map(|row| row["sentences_per_second"].as_f64())
        .fold(0.0, f64::max);
    println!(
        "jobs/s, 10 per batch: {with:.1} micro-batched ({:.0}% of the best batch rate), {without:.1} one pass per job ({:.2}x)",
        100.0 * with / best,
        with / without
    );
    let peak_rss_mib = peak_rss_kib()? as f64 / 1024.0;
    println!("process start -> model ready: {ready_ms:.0} ms; peak RSS {peak_rss_mib:.0} MiB");

    let result = json!({
        "benchmark": "model",
        "model": offpath_inference::MODEL_NAME,
        "command": match options.precision {
            Some(precision) => format!("offpath-bench model --precision {}", precision.name()),
            None => "offpath-bench model".to_owned(),
        },
        "threads": threads,
        "precision": model.precision().name(),
        "peak": peak_json(&peak),
        "throughput": throughput,
        "windows_256": long,
        "jobs_per_second": {"micro_batched": round_to(with, 1), "one_pass_per_job": round_to(without, 1), "speedup": round_to(with / without, 1), "of_best_batch_rate": round_to(with / best, 3)},
        "start_to_ready_ms": round_to(ready_ms, 1),
        "peak_rss_mib": round_to(peak_rss_mib, 1),
        "anchors": anchors,
    });
    if let Some(path) = options.json {
        std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The mean floating-point operations of embedding one text of `batches`.
fn flops_per_text(model: &MiniLm, batches: &[Vec<&str>]) -> anyhow::Result<f64> {
    let texts: Vec<&str> = batches.concat();
    let counts = model.token_counts(&texts)?;
    Ok(model.flops(&counts) / texts.len() as f64)
}

/// Windows of `MAX_TOKENS - 2` word pieces (256 tokens with the special ones) over the
/// corpus, repeated into one long document: 64 of them.
fn windows(model: &MiniLm, corpus: &[String]) -> anyhow::Result<Vec<Vec<u32>>> {
    let document = corpus.join(" ");
    let pieces: Vec<u32> = model
        .tokenize(&document)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let width = MAX_TOKENS - 2;
    Ok(pieces
        .iter()
        .copied()
        .cycle()
        .take(width * 64)
        .collect::<Vec<_>>()
        .chunks(width)
        .map(<[u32]>::to_vec)
        .collect())
}

/// The peak as the JSON report holds it.
fn peak_json(peak: &Peak) -> Value {
    json!({
        "threads": peak.threads,
        "tile_gflops": peak.tile_gflops.map(|g| round_to(g, 1)),
        "fed_tile_gflops": peak.fed_tile_gflops.map(|g| round_to(g, 1)),
        "bf16_gflops": peak.bf16_gflops.map(|g| round_to(g, 1)),
        "f32_gflops": round_to(peak.f32_gflops, 1),
        "f32_instructions": peak.f32_kind,
    })
}

/// Consecutive batches of `size` sentences that together walk the corpus whole (the
/// last wraps round to its start), so that every batch size measures the same mix of
/// lengths. anchors_bench.py batches the same way.
fn batches(corpus: &[String], size: usize) -> Vec<Vec<&str>> {
    let count = corpus.len().div_ceil(size);
    (0..count)
        .map(|k| {
            (0..size)
                .map(|i| corpus[(k * size + i) % corpus.len()].as_str())
                .collect()
        })
        .collect()
}

/// Runs `step` on each of `inputs` in turn, round and round, until `budget` is
/// spent; returns the summed counts and the time taken.
fn repeat<T, E: std::error::Error + Send + Sync + 'static>(
    budget: Duration,
    inputs: &[T],
    mut step: impl FnMut(&T) -> Result<usize, E>,
) -> anyhow::Result<(usize, Duration)> {
    let start = Instant::now();
    let mut count = 0;
    for input in inputs.iter().cycle() {
        if start.elapsed() >= budget {
            break;
        }
        count += step(input)?;
    }
    Ok((count, start.elapsed()))
}

/// Median wall time of a fresh `offpath model fetch` process (start, resolve the
/// cached weights, load the model, exit), over five runs: the `offpath` built beside
/// this binary.
fn startup_ms() -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?.with_file_name("offpath");
    anyhow::ensure!(
        exe.exists(),
        "{} is missing: build it beside offpath-bench (cargo build --release -p offpath)",
        exe.display()
    );
    let mut runs = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let status = Command::new(&exe)
            .args(["model", "fetch"])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "offpath model fetch failed");
        runs.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_walk_the_whole_corpus_in_order() {
        let corpus = sentences();
        for size in BATCHES.into_iter().chain([SQS_BATCH]) {
            let batches = batches(&corpus, size);
            assert!(batches.iter().all(|b| b.len() == size));
            let walked: Vec<&str> = batches.concat();
            // Every sentence once, in order, then the start again to fill the last batch.
            for (i, text) in walked.iter().enumerate() {
                assert_eq!(*text, corpus[i % corpus.len()], "batch size {size}");
            }
            assert!(walked.len() >= corpus.len() && walked.len() < corpus.len() + size);
        }
    }
}
