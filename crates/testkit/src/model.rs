//! A scripted model: no inference, but every pass counted and faults on cue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use offpath_core::{Embedding, Model, ModelError, Piece};

/// Embeds each text as `[length, 1]` and counts passes and how often each text ran.
/// Its word pieces are the whitespace-separated words of a text (id: the word's
/// length), and a sequence of pieces embeds as `[pieces, 1]`.
/// Texts containing "poison" make it panic until `cured`; texts containing "reject"
/// are refused for good. It answers "throttled" while `throttled` counts down (no
/// retry hint) and until `throttle_until` (a 300 ms hint). Each pass takes at least
/// `pass_ms` milliseconds (a heavy model).
#[derive(Default)]
pub struct TestModel {
    /// How long each pass takes at least, in milliseconds.
    pub pass_ms: AtomicU64,
    /// Forward passes attempted.
    pub passes: AtomicUsize,
    /// Passes left to answer throttled.
    pub throttled: AtomicUsize,
    /// Answer throttled until then.
    pub throttle_until: Mutex<Option<Instant>>,
    /// Throttled answers given.
    pub throttled_answers: AtomicUsize,
    /// Panics on poison given.
    pub poison_panics: AtomicUsize,
    /// Once set, poison no longer panics.
    pub cured: AtomicBool,
    /// Sequences of word pieces embedded (document chunks), in passes that succeeded.
    pub sequences_embedded: AtomicUsize,
    runs: Mutex<HashMap<String, usize>>,
}

impl TestModel {
    /// How many passes embedded `text` to completion.
    pub fn runs_of(&self, text: &str) -> usize {
        self.runs
            .lock()
            .expect("runs lock")
            .get(text)
            .copied()
            .unwrap_or(0)
    }

    fn throttle(&self) -> Option<ModelError> {
        let counted = self
            .throttled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let timed = self
            .throttle_until
            .lock()
            .expect("throttle lock")
            .is_some_and(|until| Instant::now() < until);
        (counted || timed).then(|| {
            self.throttled_answers.fetch_add(1, Ordering::SeqCst);
            ModelError::Throttled {
                retry_after: timed.then_some(Duration::from_millis(300)),
            }
        })
    }
}

impl TestModel {
    /// The faults of a pass over `texts`: throttled, poisoned (a panic) or rejected.
    fn faults(&self, texts: &[String]) -> Result<(), ModelError> {
        self.passes.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.pass_ms.load(Ordering::SeqCst)));
        if let Some(throttled) = self.throttle() {
            return Err(throttled);
        }
        if !self.cured.load(Ordering::SeqCst) && texts.iter().any(|t| t.contains("poison")) {
            self.poison_panics.fetch_add(1, Ordering::SeqCst);
            // Unwinds without the panic hook, so test output stays readable.
            std::panic::resume_unwind(Box::new("poisoned input"));
        }
        if let Some(text) = texts.iter().find(|t| t.contains("reject")) {
            return Err(ModelError::Rejected(format!("the model rejects {text:?}")));
        }
        let mut runs = self.runs.lock().expect("runs lock");
        for text in texts {
            *runs.entry(text.clone()).or_default() += 1;
        }
        Ok(())
    }
}

impl Model for TestModel {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError> {
        let owned: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        self.faults(&owned)?;
        Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
    }

    fn tokenize(&self, text: &str) -> Result<Vec<Piece>, ModelError> {
        Ok(Piece::words(text))
    }

    /// Each sequence counts as the text "pieces:<ids>" for the counts and faults; a
    /// sequence holding [`POISON_PIECE`] is poison.
    fn embed_pieces(&self, sequences: &[&[u32]]) -> Result<Vec<Embedding>, ModelError> {
        let texts: Vec<String> = sequences
            .iter()
            .map(|ids| {
                let poison = if ids.contains(&POISON_PIECE) {
                    " poison"
                } else {
                    ""
                };
                format!("pieces:{ids:?}{poison}")
            })
            .collect();
        self.faults(&texts)?;
        self.sequences_embedded
            .fetch_add(sequences.len(), Ordering::SeqCst);
        Ok(sequences
            .iter()
            .map(|s| vec![s.len() as f32, 1.0])
            .collect())
    }
}

/// A word piece [`TestModel`] panics on until cured: a word 6,666 bytes long.
pub const POISON_PIECE: u32 = 6666;
