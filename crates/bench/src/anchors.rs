//! The anchors of `bench model --python`: sentence-transformers (float32, bfloat16),
//! ONNX Runtime (as exported, and with its BERT fusions) and OpenVINO (float32,
//! bfloat16) run by infra/bench/anchors_bench.py in a child Python on the sentences and
//! 256-token windows offpath measured, in the same run. Each is printed beside offpath
//! with its cosine to the float32 reference (sentence-transformers), its GFLOP/s and
//! fraction of the measured peak of its precision, and offpath's ratio to it.

use std::path::Path;

use offpath_inference::MiniLm;
use offpath_inference::peak::Peak;
use serde_json::{Value, json};

use super::round_to;

/// The script that runs the anchors.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../infra/bench/anchors_bench.py"
);

/// What offpath measured, which the anchors are measured against.
pub(super) struct Measured<'a> {
    /// The sentences.
    pub corpus: &'a [String],
    /// The batch sizes that walked them.
    pub batches: &'a [usize],
    /// The windows' word pieces.
    pub windows: &'a [Vec<u32>],
    /// How many windows ran a pass.
    pub window_batches: &'a [usize],
    /// offpath's rows per batch size: `sentences_per_second` and `gflops`.
    pub throughput: &'a [Value],
    /// offpath's rows per windows batch: `chunks_per_second` and `gflops`.
    pub windows_256: &'a [Value],
}

/// Runs the anchors and prints them beside offpath; returns the JSON the report keeps
/// (the reference embeddings left out).
pub(super) fn run(
    python: &Path,
    model_dir: &Path,
    model: &MiniLm,
    measured: &Measured,
    peak: &Peak,
    seconds: f64,
) -> anyhow::Result<Value> {
    let inputs = std::env::temp_dir().join(format!("offpath-anchors-{}.json", std::process::id()));
    let body = json!({
        "sentences": measured.corpus,
        "windows": measured.windows,
        "batches": measured.batches,
        "window_batches": measured.window_batches,
    });
    std::fs::write(&inputs, serde_json::to_vec(&body)?)?;
    let seconds = seconds.to_string();
    let args = [
        model_dir.as_os_str(),
        inputs.as_os_str(),
        std::ffi::OsStr::new(&seconds),
    ];
    let report = super::python_report(python, SCRIPT, &args);
    std::fs::remove_file(&inputs)?;
    let mut report = report?;
    let reference = report
        .as_object_mut()
        .and_then(|r| r.remove("reference"))
        .ok_or_else(|| anyhow::anyhow!("the anchors' report has no reference"))?;
    let cosine = offpath_cosine(model, measured, &reference)?;
    println!(
        "offpath ({}): lowest cosine to the float32 reference {:.7} (sentences), {:.7} (windows)",
        model.precision().name(),
        cosine.0,
        cosine.1
    );
    let mut anchors = Vec::new();
    for anchor in report["anchors"].as_array().into_iter().flatten() {
        anchors.push(compare(anchor, measured, peak));
    }
    Ok(json!({
        "versions": report["versions"],
        "threads": report["threads"],
        "offpath_cosine": {"sentences": round_to(cosine.0, 7), "windows": round_to(cosine.1, 7)},
        "anchors": anchors,
    }))
}

/// offpath's lowest cosine to the reference over the sentences and over the windows
/// (embedded 32 and 8 a pass).
fn offpath_cosine(
    model: &MiniLm,
    measured: &Measured,
    reference: &Value,
) -> anyhow::Result<(f64, f64)> {
    let texts: Vec<&str> = measured.corpus.iter().map(String::as_str).collect();
    let mut sentences = Vec::new();
    for chunk in texts.chunks(32) {
        sentences.extend(model.embed(chunk)?);
    }
    let pieces: Vec<&[u32]> = measured.windows.iter().map(Vec::as_slice).collect();
    let mut windows = Vec::new();
    for chunk in pieces.chunks(8) {
        windows.extend(model.embed_pieces(chunk)?);
    }
    Ok((
        lowest_cosine(&sentences, &reference["sentences"])?,
        lowest_cosine(&windows, &reference["windows"])?,
    ))
}

/// The lowest cosine between `embeddings` and the matching rows of `reference` (both
/// unit vectors).
fn lowest_cosine(embeddings: &[Vec<f32>], reference: &Value) -> anyhow::Result<f64> {
    let rows = reference
        .as_array()
        .filter(|rows| rows.len() == embeddings.len())
        .ok_or_else(|| anyhow::anyhow!("the reference has another number of rows"))?;
    let mut lowest = f64::INFINITY;
    for (ours, theirs) in embeddings.iter().zip(rows) {
        let theirs = theirs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64);
        let dot: f64 = ours
            .iter()
            .zip(theirs)
            .map(|(&a, b)| f64::from(a) * b)
            .sum();
        lowest = lowest.min(dot);
    }
    Ok(lowest)
}

/// One anchor beside offpath: printed, and returned with each rate's GFLOP/s, fraction
/// of the peak of the anchor's precision, and offpath's ratio to it.
fn compare(anchor: &Value, measured: &Measured, peak: &Peak) -> Value {
    let precision = anchor["precision"].as_str().unwrap_or("float32");
    let limit = match precision {
        "bfloat16" => peak.bf16_limit(),
        _ => peak.f32_gflops,
    };
    let rows = |key: &str, unit: &str, ours: &[Value]| -> Vec<Value> {
        anchor[key]
            .as_array()
            .into_iter()
            .flatten()
            .zip(ours)
            .map(|(theirs, ours)| {
                let rate_key = format!("{unit}_per_second");
                let rate = theirs[&rate_key].as_f64().unwrap_or(f64::NAN);
                let our_rate = ours[&rate_key].as_f64().unwrap_or(f64::NAN);
                // The same texts: the same operations per text as offpath's row.
                let flops = ours["gflops"].as_f64().unwrap_or(f64::NAN) / our_rate;
                let gflops = rate * flops;
                json!({
                    "batch": theirs["batch"],
                    rate_key: rate,
                    "gflops": round_to(gflops, 1),
                    "fraction_of_peak": round_to(gflops / limit, 3),
                    "offpath_ratio": round_to(our_rate / rate, 2),
                })
            })
            .collect()
    };
    let throughput = rows("throughput", "sentences", measured.throughput);
    let windows = rows("windows_256", "chunks", measured.windows_256);
    // "rate (offpath's ratio)" for each row.
    let list = |rows: &[Value], unit: &str| {
        rows.iter()
            .map(|r| {
                let rate = r[format!("{unit}_per_second")].as_f64();
                let ratio = r["offpath_ratio"].as_f64();
                format!(
                    "{:.0} ({:.2})",
                    rate.unwrap_or(f64::NAN),
                    ratio.unwrap_or(f64::NAN)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{} ({precision}), cosine {} / {}: sentences/s at batch {:?} (offpath x): {}; 256-token chunks/s at {:?} (offpath x): {}; fraction of the {precision} peak: {}",
        anchor["name"].as_str().unwrap_or("?"),
        anchor["cosine"]["sentences"],
        anchor["cosine"]["windows"],
        measured.batches,
        list(&throughput, "sentences"),
        measured.window_batches,
        list(&windows, "chunks"),
        throughput
            .iter()
            .chain(&windows)
            .map(|r| format!(
                "{:.0}%",
                100.0 * r["fraction_of_peak"].as_f64().unwrap_or(f64::NAN)
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    json!({
        "name": anchor["name"],
        "precision": precision,
        "cosine": anchor["cosine"],
        "throughput": throughput,
        "windows_256": windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_cosine_is_the_worst_matching_row() {
        let ours = vec![vec![1.0, 0.0], vec![0.6, 0.8]];
        let reference = json!([[1.0, 0.0], [0.8, 0.6]]);
        let lowest = lowest_cosine(&ours, &reference).unwrap();
        assert!((lowest - 0.96).abs() < 1e-6, "{lowest}");
        let short = json!([[1.0, 0.0]]);
        assert!(lowest_cosine(&ours, &short).is_err());
    }
}
