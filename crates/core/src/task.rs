//! Tasks and their inputs, validated with errors that name the field.
//!
//! Limits keep a job's input and output inside DynamoDB's 400 KiB item: at most
//! [`MAX_TEXTS`] texts of at most [`MAX_TEXT_CHARS`] characters each (a float
//! embedding output of 32 texts is about 150 KB of JSON).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most texts (embed), documents (rank) or labels (classify) in one job.
pub const MAX_TEXTS: usize = 32;
/// Most characters in one text, document, query or label. The model reads at most
/// 256 tokens; longer text is truncated, as sentence-transformers does.
pub const MAX_TEXT_CHARS: usize = 8192;

/// The tasks offpath runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Texts to embedding vectors.
    Embed,
    /// Documents ordered by similarity to a query.
    Rank,
    /// Zero-shot label scores for a text.
    Classify,
}

impl Task {
    /// Every task.
    pub const ALL: [Task; 3] = [Task::Embed, Task::Rank, Task::Classify];

    /// The task's name in requests and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Embed => "embed",
            Task::Rank => "rank",
            Task::Classify => "classify",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task name offpath does not run.
#[derive(Debug, thiserror::Error)]
#[error("unknown task {0:?}; known tasks are embed, rank and classify")]
pub struct UnknownTask(pub String);

impl FromStr for Task {
    type Err = UnknownTask;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTask(s.chars().take(64).collect()))
    }
}

/// How `embed` returns vectors: JSON floats, or base64 of little-endian f32 (as the
/// OpenAI embeddings API does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
}

/// `embed` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedInput {
    /// Texts to embed.
    pub texts: Vec<String>,
    /// Output encoding.
    pub encoding_format: EncodingFormat,
}

/// `rank` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankInput {
    /// The query.
    pub query: String,
    /// Documents to order by similarity to the query.
    pub documents: Vec<String>,
}

/// `classify` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifyInput {
    /// The text to classify.
    pub text: String,
    /// Candidate labels.
    pub labels: Vec<String>,
}

/// A validated task input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskInput {
    /// See [`EmbedInput`].
    Embed(EmbedInput),
    /// See [`RankInput`].
    Rank(RankInput),
    /// See [`ClassifyInput`].
    Classify(ClassifyInput),
}

/// An input that breaks the task's schema; `field` is a path such as `input.texts[2]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InputError {
    /// Where the problem is.
    pub field: String,
    /// What is wrong, as a sentence fragment.
    pub problem: String,
}

impl InputError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        InputError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl TaskInput {
    /// Validates `input` for `task`.
    pub fn parse(task: Task, input: &Value) -> Result<Self, InputError> {
        let fields = Fields::new(input)?;
        let parsed = match task {
            Task::Embed => {
                fields.only(&["texts", "encoding_format"])?;
                let encoding_format = match fields.optional("encoding_format") {
                    None => EncodingFormat::Float,
                    Some(Value::String(s)) if s == "float" => EncodingFormat::Float,
                    Some(Value::String(s)) if s == "base64" => EncodingFormat::Base64,
                    Some(_) => {
                        return Err(InputError::new(
                            "input.encoding_format",
                            "must be \"float\" or \"base64\"",
                        ));
                    }
                };
                TaskInput::Embed(EmbedInput {
                    texts: fields.strings("texts", 1)?,
                    encoding_format,
                })
            }
            Task::Rank => {
                fields.only(&["query", "documents"])?;
                TaskInput::Rank(RankInput {
                    query: fields.string("query")?,
                    documents: fields.strings("documents", 1)?,
                })
            }
            Task::Classify => {
                fields.only(&["text", "labels"])?;
                let text = fields.string("text")?;
                let labels = fields.strings("labels", 2)?;
                if let Some(repeat) = (1..labels.len()).find(|&i| labels[..i].contains(&labels[i]))
                {
                    return Err(InputError::new(
                        format!("input.labels[{repeat}]"),
                        "repeats an earlier label; labels must be distinct",
                    ));
                }
                TaskInput::Classify(ClassifyInput { text, labels })
            }
        };
        Ok(parsed)
    }

    /// The task this input is for.
    pub fn task(&self) -> Task {
        match self {
            TaskInput::Embed(_) => Task::Embed,
            TaskInput::Rank(_) => Task::Rank,
            TaskInput::Classify(_) => Task::Classify,
        }
    }
}

/// The members of an input object, read with field-naming errors.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn new(input: &'a Value) -> Result<Self, InputError> {
        input
            .as_object()
            .map(Fields)
            .ok_or_else(|| InputError::new("input", "must be a JSON object"))
    }

    fn only(&self, allowed: &[&str]) -> Result<(), InputError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(InputError::new(
                format!("input.{}", truncate(unknown)),
                format!("unknown field; expected one of {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn optional(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<String, InputError> {
        let field = format!("input.{name}");
        let value = self
            .optional(name)
            .ok_or_else(|| InputError::new(&field, "is required"))?;
        text(&field, value)
    }

    fn strings(&self, name: &str, min: usize) -> Result<Vec<String>, InputError> {
        let field = format!("input.{name}");
        let items = match self.optional(name) {
            None => return Err(InputError::new(&field, "is required")),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(InputError::new(&field, "must be an array of strings")),
        };
        if items.len() < min || items.len() > MAX_TEXTS {
            return Err(InputError::new(
                &field,
                format!(
                    "must hold {min} to {MAX_TEXTS} strings (it holds {})",
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| text(&format!("{field}[{i}]"), item))
            .collect()
    }
}

fn text(field: &str, value: &Value) -> Result<String, InputError> {
    let s = value
        .as_str()
        .ok_or_else(|| InputError::new(field, "must be a string"))?;
    if s.trim().is_empty() {
        return Err(InputError::new(field, "must not be empty"));
    }
    let chars = s.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(InputError::new(
            field,
            format!("is {chars} characters long; the limit is {MAX_TEXT_CHARS}"),
        ));
    }
    Ok(s.to_owned())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(task: Task, input: Value) -> String {
        TaskInput::parse(task, &input).unwrap_err().to_string()
    }

    #[test]
    fn valid_inputs_parse() {
        let embed = TaskInput::parse(Task::Embed, &json!({"texts": ["a", "b"]})).unwrap();
        assert_eq!(
            embed,
            TaskInput::Embed(EmbedInput {
                texts: vec!["a".into(), "b".into()],
                encoding_format: EncodingFormat::Float
            })
        );
        assert!(TaskInput::parse(Task::Rank, &json!({"query": "q", "documents": ["d"]})).is_ok());
        assert!(
            TaskInput::parse(Task::Classify, &json!({"text": "t", "labels": ["x", "y"]})).is_ok()
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(Task::Embed, json!([])), "input: must be a JSON object");
        assert_eq!(err(Task::Embed, json!({})), "input.texts: is required");
        assert_eq!(
            err(Task::Embed, json!({"texts": ["a", 3]})),
            "input.texts[1]: must be a string"
        );
        assert_eq!(
            err(
                Task::Embed,
                json!({"texts": ["a"], "encoding_format": "int8"})
            ),
            "input.encoding_format: must be \"float\" or \"base64\""
        );
        assert!(
            err(Task::Embed, json!({"texts": []})).starts_with("input.texts: must hold 1 to 32")
        );
        assert!(err(Task::Embed, json!({"texts": vec!["a"; 33]})).contains("it holds 33"));
        assert!(
            err(
                Task::Embed,
                json!({"texts": ["x".repeat(MAX_TEXT_CHARS + 1)]})
            )
            .contains("the limit is 8192")
        );
        assert_eq!(
            err(Task::Embed, json!({"texts": ["  "]})),
            "input.texts[0]: must not be empty"
        );
        assert!(
            err(Task::Rank, json!({"query": "q", "docs": ["d"]}))
                .starts_with("input.docs: unknown field")
        );
        assert!(
            err(Task::Classify, json!({"text": "t", "labels": ["one"]}))
                .contains("must hold 2 to 32")
        );
        assert_eq!(
            err(
                Task::Classify,
                json!({"text": "t", "labels": ["a", "b", "a"]})
            ),
            "input.labels[2]: repeats an earlier label; labels must be distinct"
        );
    }

    #[test]
    fn task_names_round_trip() {
        for task in Task::ALL {
            assert_eq!(task.as_str().parse::<Task>().unwrap(), task);
        }
        assert!("summarise".parse::<Task>().is_err());
    }
}
