//! Tasks as modules. A [`Task`] owns everything about one kind of job: its input type
//! (serde, with validation and limits), its output type, how a group of its jobs runs
//! on the model in one batched pass, and, through utoipa's `ToSchema`, the OpenAPI
//! schemas of both. A [`Registry`] maps task names to tasks; the API, the worker, the
//! CLI and the OpenAPI document all read it, so adding a task is one module and one
//! line of registration (`docs/adding-a-task.md`).

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::model::{Model, ModelError};

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
    /// What a job produces, stored as JSON and shown in the job's `output`.
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

/// A task's name as requests and records carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskName(Cow<'static, str>);

impl TaskName {
    /// The name of a task defined in code (a [`Task::NAME`]).
    ///
    /// # Panics
    /// When `name` is not a valid task name: a bug in the task's definition.
    pub fn new(name: &'static str) -> Self {
        assert!(valid_name(name), "{name:?} is not a valid task name");
        TaskName(Cow::Borrowed(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=64).contains(&name.len())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl std::borrow::Borrow<str> for TaskName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that cannot be a task name.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a task name (1-64 of a-z, 0-9 and _, starting with a letter)")]
pub struct InvalidTaskName(pub String);

impl FromStr for TaskName {
    type Err = InvalidTaskName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if valid_name(s) {
            Ok(TaskName(Cow::Owned(s.to_owned())))
        } else {
            Err(InvalidTaskName(s.chars().take(64).collect()))
        }
    }
}

impl TryFrom<String> for TaskName {
    type Error = InvalidTaskName;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TaskName> for String {
    fn from(name: TaskName) -> Self {
        name.0.into_owned()
    }
}

impl PartialSchema for TaskName {
    fn schema() -> RefOr<Schema> {
        Object::builder()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some("^[a-z][a-z0-9_]{0,63}$"))
            .into()
    }
}

/// In the API's document the registry narrows this to the registered names.
impl ToSchema for TaskName {}

/// The schema of a job's `output`: in the API's document, any of the registered
/// tasks' outputs. This type only names that schema.
#[derive(Debug)]
pub enum JobOutput {}

impl PartialSchema for JobOutput {
    fn schema() -> RefOr<Schema> {
        Object::builder()
            .schema_type(SchemaType::Type(Type::Object))
            .into()
    }
}

impl ToSchema for JobOutput {}

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

/// A validated input, ready to run: the task's own input type, shared cheaply.
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

/// A [`Task`] behind JSON, so tasks of different types live in one registry.
trait Erased: Send + Sync {
    fn prepare(&self, input: &Value) -> Result<Prepared, InputError>;
    fn run(&self, model: &dyn Model, inputs: &[Prepared]) -> Result<Vec<Value>, ModelError>;
    fn input_from_texts(&self, texts: Vec<String>) -> Option<Value>;
    fn schemas(&self) -> TaskSchemas;
}

impl<T: Task> Erased for T {
    fn prepare(&self, input: &Value) -> Result<Prepared, InputError> {
        if !input.is_object() {
            return Err(InputError::new("input", "must be a JSON object"));
        }
        let parsed: T::Input = serde_path_to_error::deserialize(input).map_err(|err| {
            let path = err.path().to_string();
            let field = if path == "." {
                "input".to_owned()
            } else {
                format!("input.{path}")
            };
            InputError::new(field, err.into_inner().to_string())
        })?;
        self.validate(&parsed)?;
        Ok(Prepared(Arc::new(parsed)))
    }

    fn run(&self, model: &dyn Model, inputs: &[Prepared]) -> Result<Vec<Value>, ModelError> {
        let typed = inputs
            .iter()
            .map(|p| p.0.downcast_ref::<T::Input>())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ModelError::Rejected(format!(
                    "an input prepared for another task reached {}",
                    T::NAME
                ))
            })?;
        let outputs = Task::run(self, model, &typed)?;
        if outputs.len() != inputs.len() {
            return Err(ModelError::Rejected(format!(
                "task {} returned {} outputs for {} inputs",
                T::NAME,
                outputs.len(),
                inputs.len()
            )));
        }
        // Through text, not `to_value`: an f32 then keeps its shortest decimal form
        // (0.1, not 0.10000000149011612) in the stored and served JSON.
        outputs
            .iter()
            .map(|output| {
                serde_json::to_string(output)
                    .and_then(|text| serde_json::from_str(&text))
                    .map_err(|e| ModelError::Rejected(format!("output not serialisable: {e}")))
            })
            .collect()
    }

    fn input_from_texts(&self, texts: Vec<String>) -> Option<Value> {
        Task::input_from_texts(self, texts).and_then(|input| serde_json::to_value(input).ok())
    }

    fn schemas(&self) -> TaskSchemas {
        let mut referenced = Vec::new();
        T::Input::schemas(&mut referenced);
        T::Output::schemas(&mut referenced);
        TaskSchemas {
            input: (T::Input::name().into_owned(), T::Input::schema()),
            output: (T::Output::name().into_owned(), T::Output::schema()),
            referenced,
        }
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

    /// Validates an input (a JSON object) into what [`TaskEntry::run`] takes.
    pub fn prepare(&self, input: &Value) -> Result<Prepared, InputError> {
        self.task.prepare(input)
    }

    /// Runs prepared inputs of this task in one batched pass; one JSON output each.
    pub fn run(&self, model: &dyn Model, inputs: &[Prepared]) -> Result<Vec<Value>, ModelError> {
        self.task.run(model, inputs)
    }

    /// The input for plain texts, if the task takes them (`offpath submit --text`).
    pub fn input_from_texts(&self, texts: Vec<String>) -> Option<Value> {
        self.task.input_from_texts(texts)
    }

    /// The task's OpenAPI schemas.
    pub fn schemas(&self) -> TaskSchemas {
        self.task.schemas()
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
    pub fn with<T: Task>(mut self, task: T) -> Self {
        let name = TaskName::new(T::NAME);
        let entry = TaskEntry {
            name: name.clone(),
            summary: T::SUMMARY,
            task: Arc::new(task),
        };
        assert!(
            self.tasks.insert(name, entry).is_none(),
            "task {} is registered twice",
            T::NAME
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(
            "embed_document".parse::<TaskName>().unwrap().as_str(),
            "embed_document"
        );
        for bad in ["", "Embed", "1st", "a-b", "a b", &"x".repeat(65)] {
            assert!(bad.parse::<TaskName>().is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&TaskName::new("rank")).unwrap();
        assert_eq!(json, "\"rank\"");
        assert!(serde_json::from_str::<TaskName>("\"RANK\"").is_err());
    }
}
