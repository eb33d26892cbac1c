//! Tasks as modules. A [`Task`] owns everything about one kind of job: its input type
//! (serde, with validation and limits), its output type, how a group of its jobs runs
//! on the model in one batched pass, and, through utoipa's `ToSchema`, the OpenAPI
//! schemas of both. A [`DocumentTask`] is the same for jobs too long for one pass: it
//! splits a document into parts that run on many workers, and the worker assembles
//! their outputs. A [`Registry`] maps task names to tasks; the API, the worker, the
//! CLI and the OpenAPI document all read it, so adding a task is one module and one
//! line of registration (`docs/adding-a-task.md`).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::id::JobId;
use crate::job::Parts;
use crate::json::JsonText;
use crate::model::{Model, ModelError};
use crate::task_name::TaskName;

/// One kind of job. Implement it in a module of its own and register it in a
/// [`Registry`].
pub trait Task: Send + Sync + 'static {
    /// The task's name in requests and records: 1-64 of `a-z`, `0-9` and `_`, starting
    /// with a letter.
    const NAME: &'static str;
    /// One line on what the task does, for help texts and the OpenAPI document.
    const SUMMARY: &'static str;
    /// What a job asks for: deserialised from the request's `input` (unknown fields,
    /// wrong types and limits a type can express are refused there).
    type Input: Serialize + DeserializeOwned + ToSchema + Send + Sync + 'static;
    /// What a job produces, serialised once as the job's `output`.
    type Output: Serialize + ToSchema + 'static;

    /// Checks what the input's type cannot say (how many items, distinct labels).
    fn validate(&self, input: &Self::Input) -> Result<(), InputError> {
        let _ = input;
        Ok(())
    }

    /// Runs a group of jobs in one batched pass over the model: one output per input,
    /// in order. An error fails the group; the worker then runs each job alone.
    fn run(
        &self,
        model: &dyn Model,
        inputs: &[&Self::Input],
    ) -> Result<Vec<Self::Output>, ModelError>;

    /// The input for a list of plain texts, for `offpath submit TASK --text ...`; `None`
    /// when the task does not take one.
    fn input_from_texts(&self, texts: Vec<String>) -> Option<Self::Input> {
        let _ = texts;
        None
    }
}

/// Where a document job's text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An upload of the job's owner, by id (`POST /uploads`).
    Upload(String),
    /// Inline in the job's input.
    Text(String),
}

/// A document split into parts: each part's input, as the worker stores it for
/// [`DocumentTask::run_parts`], and how many chunks the document makes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// One input per part, in order.
    pub parts: Vec<Vec<u8>>,
    /// Chunks in all the parts.
    pub chunks: u64,
}

/// What one part produced: the lines it adds to the result, and how many chunks
/// it embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartOutput {
    /// The part's share of the result (the worker appends the parts in order).
    pub bytes: Vec<u8>,
    /// Chunks in the part.
    pub chunks: u64,
}

/// A kind of job over a document too long for one pass. The worker reads the
/// document, [`split`](DocumentTask::split)s it into parts, runs each part (on as many
/// workers as the queue feeds, parts of several jobs in one pass), appends the parts'
/// outputs in order into the result, and records the job's
/// [`output`](DocumentTask::output). Part bookkeeping (claims, retries, cancel,
/// dead letters) is the worker's; the task only knows documents.
pub trait DocumentTask: Send + Sync + 'static {
    /// The task's name in requests and records.
    const NAME: &'static str;
    /// One line on what the task does.
    const SUMMARY: &'static str;
    /// What a job asks for.
    type Input: Serialize + DeserializeOwned + ToSchema + Send + Sync + 'static;
    /// What a finished job records as its output (the result itself is a blob).
    type Output: Serialize + ToSchema + 'static;

    /// Checks what the input's type cannot say.
    fn validate(&self, input: &Self::Input) -> Result<(), InputError> {
        let _ = input;
        Ok(())
    }

    /// Where the document is.
    fn source(&self, input: &Self::Input) -> Source;

    /// Splits the document's text into parts, or says why it cannot be (the job then
    /// fails `invalid_input`).
    fn split(
        &self,
        model: &dyn Model,
        input: &Self::Input,
        text: &str,
    ) -> Result<Split, InputError>;

    /// Runs parts (inputs as [`split`](DocumentTask::split) made them) in one batched
    /// pass: one output per part, in order.
    fn run_parts(&self, model: &dyn Model, parts: &[&[u8]]) -> Result<Vec<PartOutput>, ModelError>;

    /// The output of a job once all its parts are done and its result assembled.
    fn output(&self, input: &Self::Input, assembled: &Assembled<'_>) -> Self::Output;
}

/// A document job whose result is assembled: what [`DocumentTask::output`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Assembled<'a> {
    /// The job.
    pub job: JobId,
    /// How its parts stand (all done).
    pub parts: &'a Parts,
    /// The first bytes of the result (its first line at least).
    pub head: &'a [u8],
    /// The result's size.
    pub bytes: u64,
    /// When it was assembled.
    pub at_epoch_ms: u64,
}

/// An input that breaks its task's schema; `field` is a path such as `input.texts[2]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InputError {
    /// Where the problem is.
    pub field: String,
    /// What is wrong, as a sentence fragment.
    pub problem: String,
}

impl InputError {
    /// An error at `field` (a path below the request body, such as `input.labels[1]`).
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        InputError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A task name no registered task has.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown task {name:?}; known tasks are {known}")]
pub struct UnknownTask {
    /// The name asked for (at most 64 characters of it).
    pub name: String,
    /// The registered names, as a readable list.
    pub known: String,
}

/// A task's input in its own type, ready to run: validated at submit, read back from
/// the job by the worker. Shared cheaply.
#[derive(Clone)]
pub struct Prepared(Arc<dyn Any + Send + Sync>);

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prepared(..)")
    }
}

/// The OpenAPI schemas a task contributes: its input and output as named components,
/// and the components they refer to.
#[derive(Clone)]
pub struct TaskSchemas {
    /// The input's component name and schema.
    pub input: (String, RefOr<Schema>),
    /// The output's component name and schema.
    pub output: (String, RefOr<Schema>),
    /// Components the two refer to.
    pub referenced: Vec<(String, RefOr<Schema>)>,
}

/// A task behind its input's text, so tasks of different types live in one registry.
trait Erased: Send + Sync {
    fn read(&self, input: &RawValue) -> Result<Prepared, InputError>;
    fn validate(&self, input: &Prepared) -> Result<(), InputError>;
    fn write(&self, input: &Prepared) -> Result<JsonText, InputError>;
    fn run(&self, model: &dyn Model, inputs: &[Prepared]) -> Result<Vec<JsonText>, ModelError>;
    fn input_from_texts(&self, texts: Vec<String>) -> Option<JsonText>;
    fn schemas(&self) -> TaskSchemas;
    fn document(&self) -> Option<&dyn ErasedDocument>;
}

/// A [`DocumentTask`] behind its input's text.
trait ErasedDocument: Send + Sync {
    fn source(&self, input: &Prepared) -> Result<Source, ModelError>;
    fn split(&self, model: &dyn Model, input: &Prepared, text: &str) -> Result<Split, InputError>;
    fn run_parts(&self, model: &dyn Model, parts: &[&[u8]]) -> Result<Vec<PartOutput>, ModelError>;
    fn output(&self, input: &Prepared, assembled: &Assembled<'_>) -> Result<JsonText, ModelError>;
}

/// Reads an input's text into its type, naming the field of any problem.
fn read<I: DeserializeOwned + Send + Sync + 'static>(
    input: &RawValue,
) -> Result<Prepared, InputError> {
    if !input.get().starts_with('{') {
        return Err(InputError::new("input", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_str(input.get());
    let parsed: I = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            "input".to_owned()
        } else {
            format!("input.{path}")
        };
        InputError::new(field, crate::json::error_message(err.inner()))
    })?;
    Ok(Prepared(Arc::new(parsed)))
}

/// Writes an input in its type's form: what the job stores.
fn write<I: Serialize + 'static>(input: &Prepared, task: &str) -> Result<JsonText, InputError> {
    let input = input_of::<I>(input, task).map_err(|e| InputError::new("input", e.to_string()))?;
    JsonText::of(input).map_err(|e| InputError::new("input", e.to_string()))
}

/// The input `prepared` holds, if it was prepared for `I`.
fn input_of<'a, I: 'static>(prepared: &'a Prepared, task: &str) -> Result<&'a I, ModelError> {
    prepared.0.downcast_ref::<I>().ok_or_else(|| {
        ModelError::Rejected(format!("an input prepared for another task reached {task}"))
    })
}

/// An output serialised once, as the job stores and the API serves it (an f32 keeps
/// its shortest decimal form: 0.1, not 0.10000000149011612).
fn output_text(output: &impl Serialize) -> Result<JsonText, ModelError> {
    JsonText::of(output).map_err(|e| ModelError::Rejected(format!("output not serialisable: {e}")))
}

/// The schemas of an input and an output type.
fn schemas<I: ToSchema, O: ToSchema>() -> TaskSchemas {
    let mut referenced = Vec::new();
    I::schemas(&mut referenced);
    O::schemas(&mut referenced);
    TaskSchemas {
        input: (I::name().into_owned(), I::schema()),
        output: (O::name().into_owned(), O::schema()),
        referenced,
    }
}

impl<T: Task> Erased for T {
    fn read(&self, input: &RawValue) -> Result<Prepared, InputError> {
        read::<T::Input>(input)
    }

    fn validate(&self, input: &Prepared) -> Result<(), InputError> {
        let input = input_of::<T::Input>(input, T::NAME)
            .map_err(|e| InputError::new("input", e.to_string()))?;
        Task::validate(self, input)
    }

    fn write(&self, input: &Prepared) -> Result<JsonText, InputError> {
        write::<T::Input>(input, T::NAME)
    }

    fn run(&self, model: &dyn Model, inputs: &[Prepared]) -> Result<Vec<JsonText>, ModelError> {
        let typed = inputs
            .iter()
            .map(|p| input_of::<T::Input>(p, T::NAME))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = Task::run(self, model, &typed)?;
        if outputs.len() != inputs.len() {
            return Err(ModelError::Rejected(format!(
                "task {} returned {} outputs for {} inputs",
                T::NAME,
                outputs.len(),
                inputs.len()
            )));
        }
        outputs.iter().map(output_text).collect()
    }

    fn input_from_texts(&self, texts: Vec<String>) -> Option<JsonText> {
        Task::input_from_texts(self, texts).and_then(|input| JsonText::of(&input).ok())
    }

    fn schemas(&self) -> TaskSchemas {
        schemas::<T::Input, T::Output>()
    }

    fn document(&self) -> Option<&dyn ErasedDocument> {
        None
    }
}

/// A registered [`DocumentTask`].
struct Document<T>(T);

impl<T: DocumentTask> Erased for Document<T> {
    fn read(&self, input: &RawValue) -> Result<Prepared, InputError> {
        read::<T::Input>(input)
    }

    fn validate(&self, input: &Prepared) -> Result<(), InputError> {
        let input = input_of::<T::Input>(input, T::NAME)
            .map_err(|e| InputError::new("input", e.to_string()))?;
        self.0.validate(input)
    }

    fn write(&self, input: &Prepared) -> Result<JsonText, InputError> {
        write::<T::Input>(input, T::NAME)
    }

    fn run(&self, _model: &dyn Model, _inputs: &[Prepared]) -> Result<Vec<JsonText>, ModelError> {
        Err(ModelError::Rejected(format!(
            "{} runs in parts, not in one pass",
            T::NAME
        )))
    }

    fn input_from_texts(&self, _texts: Vec<String>) -> Option<JsonText> {
        None
    }

    fn schemas(&self) -> TaskSchemas {
        schemas::<T::Input, T::Output>()
    }

    fn document(&self) -> Option<&dyn ErasedDocument> {
        Some(self)
    }
}

impl<T: DocumentTask> ErasedDocument for Document<T> {
    fn source(&self, input: &Prepared) -> Result<Source, ModelError> {
        Ok(self.0.source(input_of::<T::Input>(input, T::NAME)?))
    }

    fn split(&self, model: &dyn Model, input: &Prepared, text: &str) -> Result<Split, InputError> {
        let input = input_of::<T::Input>(input, T::NAME)
            .map_err(|e| InputError::new("input", e.to_string()))?;
        self.0.split(model, input, text)
    }

    fn run_parts(&self, model: &dyn Model, parts: &[&[u8]]) -> Result<Vec<PartOutput>, ModelError> {
        let outputs = self.0.run_parts(model, parts)?;
        if outputs.len() != parts.len() {
            return Err(ModelError::Rejected(format!(
                "task {} returned {} outputs for {} parts",
                T::NAME,
                outputs.len(),
                parts.len()
            )));
        }
        Ok(outputs)
    }

    fn output(&self, input: &Prepared, assembled: &Assembled<'_>) -> Result<JsonText, ModelError> {
        let input = input_of::<T::Input>(input, T::NAME)?;
        output_text(&self.0.output(input, assembled))
    }
}

/// A registered task.
#[derive(Clone)]
pub struct TaskEntry {
    name: TaskName,
    summary: &'static str,
    task: Arc<dyn Erased>,
}

impl TaskEntry {
    /// The task's name.
    pub fn name(&self) -> &TaskName {
        &self.name
    }

    /// One line on what it does.
    pub fn summary(&self) -> &'static str {
        self.summary
    }

    /// Reads and validates a request's input (a JSON object) into what
    /// [`TaskEntry::run`] takes: the one validation an input gets.
    pub fn prepare(&self, input: &JsonText) -> Result<Prepared, InputError> {
        let prepared = self.task.read(input.as_raw())?;
        self.task.validate(&prepared)?;
        Ok(prepared)
    }

    /// The input as the job stores it: the input type's own serialisation.
    pub fn write(&self, input: &Prepared) -> Result<JsonText, InputError> {
        self.task.write(input)
    }

    /// Reads a stored job's input back (validated when the job was submitted, so it
    /// is not validated again).
    pub fn read(&self, input: &JsonText) -> Result<Prepared, InputError> {
        self.task.read(input.as_raw())
    }

    /// Runs prepared inputs of this task in one batched pass; one output each,
    /// serialised.
    pub fn run(&self, model: &dyn Model, inputs: &[Prepared]) -> Result<Vec<JsonText>, ModelError> {
        self.task.run(model, inputs)
    }

    /// The input for plain texts, if the task takes them (`offpath submit --text`).
    pub fn input_from_texts(&self, texts: Vec<String>) -> Option<JsonText> {
        self.task.input_from_texts(texts)
    }

    /// The task's OpenAPI schemas.
    pub fn schemas(&self) -> TaskSchemas {
        self.task.schemas()
    }

    /// True for a [`DocumentTask`]: its jobs run in parts.
    pub fn runs_in_parts(&self) -> bool {
        self.task.document().is_some()
    }

    /// Where a document job's text is (`None` for other tasks).
    pub fn source(&self, input: &Prepared) -> Option<Source> {
        self.task.document()?.source(input).ok()
    }

    /// Splits a document job's text into parts.
    pub fn split(
        &self,
        model: &dyn Model,
        input: &Prepared,
        text: &str,
    ) -> Result<Split, InputError> {
        match self.task.document() {
            Some(document) => document.split(model, input, text),
            None => Err(InputError::new("task", "does not run in parts")),
        }
    }

    /// Runs parts of document jobs of this task in one batched pass.
    pub fn run_parts(
        &self,
        model: &dyn Model,
        parts: &[&[u8]],
    ) -> Result<Vec<PartOutput>, ModelError> {
        match self.task.document() {
            Some(document) => document.run_parts(model, parts),
            None => Err(ModelError::Rejected(format!(
                "{} does not run in parts",
                self.name
            ))),
        }
    }

    /// The output of a document job whose parts are all done.
    pub fn document_output(
        &self,
        input: &Prepared,
        assembled: &Assembled<'_>,
    ) -> Result<JsonText, ModelError> {
        match self.task.document() {
            Some(document) => document.output(input, assembled),
            None => Err(ModelError::Rejected(format!(
                "{} does not run in parts",
                self.name
            ))),
        }
    }
}

impl fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskEntry")
            .field("name", &self.name)
            .finish()
    }
}

/// The tasks a deployment runs, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tasks: BTreeMap<TaskName, TaskEntry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `task` under [`Task::NAME`].
    ///
    /// # Panics
    /// When a task of that name is registered already: a bug in the wiring.
    pub fn with<T: Task>(self, task: T) -> Self {
        self.register(T::NAME, T::SUMMARY, Arc::new(task))
    }

    /// Registers a document task under [`DocumentTask::NAME`].
    ///
    /// # Panics
    /// When a task of that name is registered already: a bug in the wiring.
    pub fn with_document<T: DocumentTask>(self, task: T) -> Self {
        self.register(T::NAME, T::SUMMARY, Arc::new(Document(task)))
    }

    fn register(
        mut self,
        name: &'static str,
        summary: &'static str,
        task: Arc<dyn Erased>,
    ) -> Self {
        let entry = TaskEntry {
            name: TaskName::new(name),
            summary,
            task,
        };
        assert!(
            self.tasks.insert(entry.name.clone(), entry).is_none(),
            "task {name} is registered twice"
        );
        self
    }

    /// The task registered under `name`.
    pub fn get(&self, name: &str) -> Result<&TaskEntry, UnknownTask> {
        self.tasks.get(name).ok_or_else(|| UnknownTask {
            name: name.chars().take(64).collect(),
            known: self.known(),
        })
    }

    /// Every registered task, by name.
    pub fn entries(&self) -> impl Iterator<Item = &TaskEntry> {
        self.tasks.values()
    }

    /// The registered names as a readable list: "a, b and c".
    fn known(&self) -> String {
        let names: Vec<&str> = self.tasks.keys().map(TaskName::as_str).collect();
        match names.split_last() {
            None => "none".to_owned(),
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        }
    }
}
