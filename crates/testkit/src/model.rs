//! A scripted model: no inference, but every pass counted and faults on cue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use offpath_core::{Embedding, Model, ModelError};

/// Embeds each text as `[length, 1]` and counts passes and how often each text ran.
/// Texts containing "poison" make it panic until `cured`; texts containing "reject"
/// are refused for good. It answers "throttled" while `throttled` counts down (no
/// retry hint) and until `throttle_until` (a 300 ms hint).
#[derive(Default)]
pub struct TestModel {
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

impl Model for TestModel {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError> {
        self.passes.fetch_add(1, Ordering::SeqCst);
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
            *runs.entry((*text).to_owned()).or_default() += 1;
        }
        Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
    }
}
