//! The OpenAPI document, generated from the types: the routes and their answers come
//! from the handlers' `#[utoipa::path]` attributes, the bodies from the types' `ToSchema`,
//! and what depends on the deployment from the task registry (each task's input and
//! output schema, the request variants, the task names) and the submit limits.
//! `/openapi.json` serves it; `functions/api/openapi.json` is a copy for readers, kept
//! equal by a test (`OFFPATH_UPDATE_OPENAPI=1` rewrites it).

use axum::Extension;
use axum::body::Bytes;
use axum::response::IntoResponse;
use http::header;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOf, Object, OneOf, Ref, Schema, SchemaType, Type,
};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{OpenApi, PartialSchema};

use offpath_core::Registry;

use crate::SubmitLimits;
use crate::submit::SubmitBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "offpath",
        description = "Queue-backed model inference off the request path. Submit a job, get 202 and a job id at once; learn the result by long-poll (GET /jobs/{id}?wait=20), a signed webhook, or Prefer: wait=N."
    ),
    paths(
        crate::jobs::submit,
        crate::listing::list,
        crate::jobs::get,
        crate::jobs::cancel,
        crate::uploads::result,
        crate::uploads::create,
        crate::uploads::put,
        crate::webhooks::secret,
        crate::health::health,
        crate::admin::me,
        crate::admin::queues,
        crate::admin::list_letters,
        crate::admin::redrive,
        crate::admin::purge,
        openapi_json
    )
)]
struct Routes;

/// The document as served: JSON text, made once per router.
#[derive(Debug, Clone)]
pub(crate) struct Served(Bytes);

impl Served {
    /// The JSON text of `document`.
    pub(crate) fn new(document: &Document) -> Self {
        Served(Bytes::from(
            document
                .to_json()
                .expect("an OpenAPI document always serialises"),
        ))
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3 document.", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json(Extension(served): Extension<Served>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], served.0)
}

/// The document for a deployment running `tasks` with `limits`.
pub fn document(tasks: &Registry, limits: &SubmitLimits) -> Document {
    let mut document = Routes::openapi();
    let components = document.components.get_or_insert_with(Default::default);
    let RefOr::T(Schema::Object(envelope)) = SubmitBody::schema() else {
        unreachable!("a struct's schema is an object")
    };
    let mut variants = OneOf::builder();
    let mut outputs = AnyOf::builder();
    let mut names = Vec::new();
    for entry in tasks.entries() {
        let schemas = entry.schemas();
        let (input, output) = (schemas.input.0.clone(), schemas.output.0.clone());
        components.schemas.extend(schemas.referenced);
        components.schemas.extend([schemas.input, schemas.output]);
        let name = entry.name().as_str();
        names.push(name.to_owned());
        // The envelope's own schema, its task narrowed to this one and its input to
        // this task's input.
        let mut variant = envelope.clone();
        variant.title = Some(name.to_owned());
        variant.description = Some(entry.summary().to_owned());
        variant.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        variant.properties.insert(
            "task".into(),
            Object::builder()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some([name]))
                .into(),
        );
        variant
            .properties
            .insert("input".into(), Ref::from_schema_name(input).into());
        variants = variants.item(variant);
        outputs = outputs.item(Ref::from_schema_name(output));
    }
    components
        .schemas
        .insert("SubmitRequest".into(), variants.into());
    components
        .schemas
        .insert("JobOutput".into(), outputs.into());
    components.schemas.insert(
        "TaskName".into(),
        Object::builder()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(names))
            .into(),
    );
    components.schemas.insert(
        "WebhookUrl".into(),
        Object::builder()
            .schema_type(SchemaType::Type(Type::String))
            .max_length(Some(2048))
            .description(Some(
                "An https URL on a public address: each event of the job is POSTed to it, signed (Standard Webhooks; see GET /webhooks/secret). Private, loopback, link-local and unique-local addresses are refused with 400, before or after DNS resolution.",
            ))
            .into(),
    );
    components.schemas.insert(
        "WebhookEvents".into(),
        utoipa::openapi::schema::Array::builder()
            .items(Ref::from_schema_name("EventKind"))
            .min_items(Some(1))
            .unique_items(true)
            .description(Some(
                "Which events to send (default [\"completed\"]): started (job.started), progress (job.progress, documents, at most one a second), completed (job.succeeded, job.failed or job.cancelled).",
            ))
            .into(),
    );
    components
        .schemas
        .insert("EventKind".into(), offpath_core::EventKind::schema());
    components.schemas.insert(
        "Ttl".into(),
        Object::builder()
            .schema_type(SchemaType::Type(Type::Integer))
            .minimum(Some(limits.min_ttl.as_secs()))
            .maximum(Some(limits.max_ttl.as_secs()))
            .description(Some(format!(
                "How long the job is kept, in seconds (default {}).",
                limits.default_ttl.as_secs()
            )))
            .into(),
    );
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed copy is what the code generates; `OFFPATH_UPDATE_OPENAPI=1`
    /// rewrites it after a change.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = document(&offpath_tasks::registry(), &SubmitLimits::default())
            .to_pretty_json()
            .unwrap()
            + "\n";
        if std::env::var_os("OFFPATH_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == generated,
            "{path} differs from the generated document; run \
             `OFFPATH_UPDATE_OPENAPI=1 cargo test -p offpath-api openapi` and commit it"
        );
    }
}
