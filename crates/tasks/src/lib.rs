//! offpath's tasks, one module each, and [`registry`], which registers them. Adding a
//! task is a module here and one line in [`registry`] (`docs/adding-a-task.md`).

pub mod classify;
pub mod document;
pub mod embed;
pub mod rank;
#[cfg(test)]
mod test_model;
pub mod text;

use offpath_core::Registry;

/// The tasks every offpath deployment runs.
pub fn registry() -> Registry {
    Registry::new()
        .with(embed::Embed)
        .with(rank::Rank)
        .with(classify::Classify)
        .with_document(document::EmbedDocument)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_registry_names_its_tasks() {
        let registry = registry();
        let names: Vec<&str> = registry.entries().map(|e| e.name().as_str()).collect();
        assert_eq!(names, ["classify", "embed", "embed_document", "rank"]);
        let err = registry.get("summarise").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown task \"summarise\"; known tasks are classify, embed, embed_document and rank"
        );
    }

    #[test]
    #[should_panic(expected = "task embed is registered twice")]
    fn a_name_registers_once() {
        let _ = registry().with(embed::Embed);
    }

    #[test]
    fn inputs_must_be_objects() {
        let err = registry()
            .get("rank")
            .unwrap()
            .prepare(&json!([]).into())
            .unwrap_err();
        assert_eq!(err.to_string(), "input: must be a JSON object");
    }
}
