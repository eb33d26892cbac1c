//! JSON carried as text: a job's input and a task's output are serialised once and
//! handed on as they are (worker -> store -> response), never parsed into a tree and
//! printed again on the way.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One JSON value as its text. Two are equal when their texts are.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// `value` serialised (an `f32` keeps its shortest decimal form).
    pub fn of(value: &impl Serialize) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(JsonText)
    }

    /// Text that must hold exactly one JSON value (a stored record's attribute).
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(JsonText)
    }

    /// The text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value read into `T` (tests, and readers that need the fields).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.get())
    }

    /// The value as a tree, for readers that inspect it.
    pub fn to_value(&self) -> serde_json::Value {
        self.parse()
            .expect("a JsonText always holds one JSON value")
    }

    /// The raw value, for serialising inside another document.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

/// A parse error's message without serde_json's " at line L column C", for errors
/// whose field path names the place.
pub fn error_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&position).unwrap_or(&text).to_owned()
}

impl From<serde_json::Value> for JsonText {
    fn from(value: serde_json::Value) -> Self {
        JsonText::of(&value).expect("a JSON value always serialises")
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for JsonText {}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_goes_through_unchanged() {
        let text = JsonText::of(&[0.1f32, -1.5e-8]).unwrap();
        assert_eq!(text.get(), "[0.1,-1.5e-8]");
        let nested = serde_json::to_string(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(JsonText::from_text(nested).unwrap().get(), r#"{"a":1}"#);
        assert!(JsonText::from_text("{".into()).is_err());
        #[derive(Serialize, Deserialize)]
        struct Holder {
            output: JsonText,
        }
        let held: Holder = serde_json::from_str(r#"{"output": {"x": [1, 2]}}"#).unwrap();
        assert_eq!(held.output.get(), r#"{"x": [1, 2]}"#);
        assert_eq!(
            serde_json::to_string(&held).unwrap(),
            r#"{"output":{"x": [1, 2]}}"#
        );
    }
}
