//! A task's name.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

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
