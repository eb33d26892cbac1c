//! The reference embeddings of `tests/fixtures/minilm_reference.json`: what an
//! independent numpy implementation of all-MiniLM-L6-v2
//! (`tests/fixtures/minilm_reference.py`: float64, inputs truncated at 256 tokens as
//! sentence-transformers does) gives for a set of sentences.

use serde_json::Value;

/// Every sentence of the fixture with its embedding (unit length).
pub fn reference_embeddings() -> Vec<(String, Vec<f32>)> {
    let fixture: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/minilm_reference.json"
    ))
    .expect("the reference fixture is JSON");
    fixture["sentences"]
        .as_array()
        .expect("a list of sentences")
        .iter()
        .map(|s| {
            let vector = s["embedding"]
                .as_array()
                .expect("an embedding")
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32);
            (
                s["text"].as_str().expect("a text").to_owned(),
                vector.collect(),
            )
        })
        .collect()
}

/// The reference embedding of `text`, which must be one of the fixture's sentences.
pub fn reference_embedding(text: &str) -> Vec<f32> {
    reference_embeddings()
        .into_iter()
        .find(|(t, _)| t == text)
        .map(|(_, vector)| vector)
        .unwrap_or_else(|| panic!("{text:?} is not a sentence of the reference fixture"))
}
