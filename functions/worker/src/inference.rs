//! Batched passes over the model: one pass per group, each input alone when the
//! group's pass fails, so one poisonous input fails only its own job or part.

use std::sync::Arc;

use offpath_core::{JsonText, Model, ModelError, TaskName, metrics};

use crate::panic::panic_text;
use crate::worker::Worker;

/// One batched pass of a task over inputs of type `I`: one output each.
pub(crate) type Runner<I, O> =
    Arc<dyn Fn(&dyn Model, &[I]) -> Result<Vec<O>, ModelError> + Send + Sync>;

/// What inference did for one job.
pub(crate) enum Inference<T = JsonText> {
    Output(T),
    Failed(ModelError),
    Crashed(String),
}

impl<T> Inference<T> {
    /// A failed attempt as the job's error tells its client: one fixed phrase per kind
    /// of failure. The detail (a panic's text, a backend's message, which can name
    /// endpoints and ARNs) is only logged, with the job's id.
    pub(crate) fn public_cause(&self) -> &'static str {
        match self {
            Inference::Output(_) => "none",
            Inference::Failed(ModelError::Throttled { .. }) => "inference throttled",
            Inference::Failed(ModelError::Unavailable(_)) => "inference unavailable",
            Inference::Failed(ModelError::Rejected(_)) => "the model rejected the input",
            Inference::Crashed(_) => "inference crashed",
        }
    }
}

impl Worker {
    /// Runs `inputs` on a blocking thread in one batched pass of `run`. If the pass
    /// fails or panics, each input runs alone, so one poisonous input fails only its
    /// own job (or part).
    pub(crate) async fn run_batched<I, O>(
        &self,
        task: &TaskName,
        inputs: Vec<I>,
        run: Runner<I, O>,
    ) -> Vec<Inference<O>>
    where
        I: Clone + Send + Sync + 'static,
        O: Send + 'static,
    {
        let count = inputs.len();
        match self.run_model(task, inputs.clone(), Arc::clone(&run)).await {
            Ok(outputs) => outputs.into_iter().map(Inference::Output).collect(),
            Err(whole) if count == 1 => vec![whole],
            Err(_) => {
                let mut results = Vec::with_capacity(count);
                for input in inputs {
                    results.push(
                        match self.run_model(task, vec![input], Arc::clone(&run)).await {
                            Ok(mut one) => Inference::Output(one.remove(0)),
                            Err(failed) => failed,
                        },
                    );
                }
                results
            }
        }
    }

    /// One batched pass of `run` over `inputs`: one output per input, or what went
    /// wrong.
    async fn run_model<I, O>(
        &self,
        task: &TaskName,
        inputs: Vec<I>,
        run: Runner<I, O>,
    ) -> Result<Vec<O>, Inference<O>>
    where
        I: Send + Sync + 'static,
        O: Send + 'static,
    {
        let model = Arc::clone(&self.model);
        let count = inputs.len();
        let started = std::time::Instant::now();
        let ran = tokio::task::spawn_blocking(move || run(model.as_ref(), &inputs)).await;
        metrics::inference(task.as_str(), started.elapsed().as_secs_f64() * 1000.0);
        match ran {
            Ok(Ok(outputs)) if outputs.len() == count => Ok(outputs),
            Ok(Ok(_)) => Err(Inference::Crashed(
                "the task returned the wrong number of outputs".into(),
            )),
            Ok(Err(err)) => Err(Inference::Failed(err)),
            Err(join) => Err(Inference::Crashed(match join.try_into_panic() {
                Ok(panic) => panic_text(panic.as_ref()),
                Err(join) => join.to_string(),
            })),
        }
    }
}
