//! The Rust MiniLM against reference embeddings from an independent numpy
//! implementation (tests/fixtures/minilm_reference.py), and the tasks built on it.

use std::sync::OnceLock;

use offpath_core::{JsonText, Prepared, TaskEntry};
use offpath_inference::{DIMENSIONS, MiniLm, Precision, weights};
use offpath_testkit::reference_embeddings;
use serde_json::{Value, json};

/// The model files `tests/run` fetched.
fn files() -> weights::ModelFiles {
    weights::resolve(false).expect("model files (tests/run fetches them)")
}

fn model() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| MiniLm::load(&files()).expect("model loads"))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks `model`'s embeddings of the fixture's sentences against the reference and
/// returns the lowest cosine.
fn check_against_the_reference(model: &MiniLm) -> f32 {
    let reference = reference_embeddings();
    let texts: Vec<&str> = reference.iter().map(|(t, _)| t.as_str()).collect();
    let vectors = model.embed(&texts).unwrap();
    let mut lowest = f32::INFINITY;
    for ((text, want), got) in reference.iter().zip(&vectors) {
        assert_eq!(got.len(), DIMENSIONS);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?} has norm {norm}");
        let similarity = cosine(want, got);
        assert!(similarity >= 0.999, "{text:?}: cosine {similarity}");
        lowest = lowest.min(similarity);
    }
    lowest
}

#[test]
fn embeddings_match_the_reference_implementation() {
    let lowest = check_against_the_reference(model());
    let precision = model().precision().name();
    eprintln!("lowest cosine against the reference, {precision}: {lowest}");
}

/// Every precision this CPU runs, checked end to end whichever is the default: `f32`
/// (packed AVX-512 FMA here, candle's product on arm64) within cosine 0.99999 of the
/// reference, bfloat16 within 0.999.
#[test]
fn every_precision_matches_the_reference_implementation() {
    for precision in Precision::supported() {
        let model = MiniLm::load_in(&files(), precision).expect("model loads");
        assert_eq!(model.precision(), precision);
        let lowest = check_against_the_reference(&model);
        eprintln!(
            "lowest cosine against the reference, {}: {lowest}",
            precision.name()
        );
        if precision == Precision::Float32 {
            assert!(lowest >= 0.99999, "float32: {lowest}");
        }
    }
}

#[test]
fn batching_and_order_do_not_change_results() {
    let reference = reference_embeddings();
    let texts: Vec<&str> = reference.iter().map(|(t, _)| t.as_str()).rev().collect();
    let batched = model().embed(&texts).unwrap();
    for (text, vector) in texts.iter().zip(&batched) {
        let alone = model().embed(&[text]).unwrap();
        assert!(cosine(&alone[0], vector) > 0.99999, "{text:?}");
    }
}

/// The built-in task `name`.
fn task(name: &str) -> TaskEntry {
    offpath_tasks::registry().get(name).unwrap().clone()
}

/// Runs one job of task `name` on the model.
fn run(name: &str, input: Value) -> Value {
    let task = task(name);
    let input = task.prepare(&JsonText::of(&input).unwrap()).unwrap();
    task.run(model(), &[input]).unwrap().remove(0).to_value()
}

#[test]
fn embed_returns_floats_or_base64() {
    let float = run("embed", json!({"texts": ["hello", "world"]}));
    assert_eq!(float["model"], "all-MiniLM-L6-v2");
    assert_eq!(float["dimensions"], 384);
    assert_eq!(float["embeddings"].as_array().unwrap().len(), 2);
    let first: Vec<f32> = float["embeddings"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let encoded = run(
        "embed",
        json!({"texts": ["hello"], "encoding_format": "base64"}),
    );
    let text = encoded["embeddings"][0].as_str().unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, first, "base64 is the little-endian f32 bytes");
}

#[test]
fn rank_puts_the_relevant_document_first() {
    let out = run(
        "rank",
        json!({
            "query": "How do I bake bread at home?",
            "documents": [
                "The stock market fell sharply on Tuesday.",
                "A simple recipe for homemade bread: flour, water, yeast and salt, baked at 230°C.",
                "Football fans celebrated the championship win."
            ]
        }),
    );
    assert_eq!(out["order"][0], 1, "{out}");
    assert_eq!(out["scores"].as_array().unwrap().len(), 3);
}

#[test]
fn classify_picks_the_obvious_label() {
    let out = run(
        "classify",
        json!({
            "text": "The team scored in the last minute and won the cup final.",
            "labels": ["cooking", "sports", "finance", "politics"]
        }),
    );
    assert_eq!(out["label"], "sports", "{out}");
    assert_eq!(out["scores"][0]["label"], "sports");
}

#[test]
fn jobs_of_one_group_share_one_pass_and_get_their_own_results() {
    let embed = task("embed");
    let inputs: Vec<Prepared> = ["first job", "second job"]
        .iter()
        .map(|t| {
            embed
                .prepare(&JsonText::of(&json!({"texts": [t]})).unwrap())
                .unwrap()
        })
        .collect();
    let outputs = embed.run(model(), &inputs).unwrap();
    let alone = embed.run(model(), &inputs[1..]).unwrap();
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[1], alone[0]);
    assert_ne!(outputs[0], outputs[1]);
}

#[test]
fn a_truncated_weights_file_fails_with_a_sentence_that_says_what_to_do() {
    let good = files();
    let dir = std::env::temp_dir().join(format!("offpath-bad-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["tokenizer.json", "config.json"] {
        std::fs::copy(good.dir.join(name), dir.join(name)).unwrap();
    }
    let bytes = std::fs::read(good.weights()).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..1_000_000]).unwrap();

    let err = match MiniLm::load(&weights::ModelFiles { dir: dir.clone() }) {
        Ok(_) => panic!("a truncated model must not load"),
        Err(err) => err.to_string(),
    };
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("is corrupt"), "{err}");
    assert!(err.contains("offpath model fetch"), "{err}");
}

/// A model directory given by OFFPATH_MODEL_DIR (the Lambda layer) is checked before it
/// loads: a copy with one changed byte (same size, and safetensors that still load),
/// or a truncated one, is refused with a sentence naming the file; the real one passes.
#[test]
fn a_given_model_directory_is_checked_for_size_and_hash() {
    let good = files();
    let dir = std::env::temp_dir().join(format!("offpath-given-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["tokenizer.json", "config.json"] {
        std::fs::copy(good.dir.join(name), dir.join(name)).unwrap();
    }
    let mut bytes = std::fs::read(good.weights()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    let changed = weights::given(dir.clone())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    std::fs::write(dir.join("model.safetensors"), &bytes[..1_000_000]).unwrap();
    let truncated = weights::given(dir.clone())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        changed.contains("model.safetensors") && changed.contains("SHA-256"),
        "{changed}"
    );
    assert!(truncated.contains("1000000 bytes, expected"), "{truncated}");
    assert_eq!(weights::given(good.dir.clone()).unwrap(), good);
}
