//! Corrections to the generated OpenAPI document. First the error answers that
//! come from the layers in front of the handlers, added to
//! every operation of the OpenAPI document they can reach, so the document lists
//! every status the server really answers with.
//!
//! The handlers document their own errors (404 for an unknown id, 409, the 422 of
//! their own checks). What is added here depends only on the stack of layers in
//! [`crate::router`] and on the operation's shape:
//!
//! - every operation: 408 (the request timeout) and 429 (the per-address limit,
//!   which runs before authentication, so `/api/health` has it too);
//! - operations with a `security` requirement: 401 (no or a bad token), 403 (a
//!   key that may not do this, such as a public key), and 503 (the key is looked
//!   up in the database, which may be unavailable);
//! - every other operation that reads the database (all but `/api/health`): 503;
//! - operations with parameters: 400 (a parameter that does not parse, an unknown
//!   query parameter);
//! - operations with a body: 413 (the body limit); with a JSON body also 400
//!   (not JSON), 415 (no JSON content type) and 422 (the wrong fields or types).
//!
//! Each is a shared response in `components.responses` with the error schema.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

/// Statuses, the shared response's name, and its description.
const SHARED: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "The request is malformed: a parameter that does not parse, an unknown query parameter, or a body that is not JSON (`bad_request`, `invalid_json`)",
    ),
    (
        "401",
        "Unauthorized",
        "No token, or one that is unknown, revoked or not valid (`unauthorized`); with `WWW-Authenticate: Bearer`",
    ),
    (
        "403",
        "Forbidden",
        "The token may not do this, e.g. a public key (`forbidden`)",
    ),
    (
        "408",
        "RequestTimeout",
        "The request took longer than `REQUEST_TIMEOUT` (`request_timeout`)",
    ),
    (
        "413",
        "PayloadTooLarge",
        "The body is larger than `BODY_LIMIT` (`UPLOAD_MAX_BYTES` for uploads) (`payload_too_large`)",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "The body is not sent as the content type this operation takes (`unsupported_media_type`)",
    ),
    (
        "422",
        "ValidationFailed",
        "The body has unknown fields, missing fields or values of the wrong type or range (`validation_failed`, with `fields`)",
    ),
    (
        "429",
        "RateLimited",
        "A rate limit was reached (`rate_limited`); `Retry-After` says when to try again",
    ),
    (
        "503",
        "Unavailable",
        "The database is unavailable or the instance is draining (`unavailable`); `Retry-After` says when to try again",
    ),
];

/// Adds the shared error responses to `doc` and to each operation they apply to.
pub fn add_layer_errors(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for (_, name, description) in SHARED {
        let response = ResponseBuilder::new()
            .description(*description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build();
        components
            .responses
            .insert((*name).to_string(), RefOr::T(response));
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in operations_mut(item) {
            for status in statuses(path, op) {
                let name = SHARED
                    .iter()
                    .find(|(s, _, _)| *s == status)
                    .map(|(_, n, _)| *n)
                    .expect("a shared status");
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

/// Every operation of a path item.
fn operations_mut(item: &mut utoipa::openapi::path::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The shared statuses `op` (at `path`) can answer with.
fn statuses(path: &str, op: &Operation) -> Vec<&'static str> {
    let mut out = vec!["408", "429"];
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    if secured {
        out.extend(["401", "403"]);
    }
    if path != "/api/health" {
        out.push("503");
    }
    if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
        out.push("400");
    }
    if let Some(RefOr::T(body)) = &op.request_body {
        out.push("413");
        if body.content.contains_key("application/json") {
            out.extend(["400", "415", "422"]);
        }
    }
    out
}

/// Makes the `allOf` that `#[serde(flatten)]` produces describe the real object.
///
/// `Assistant` flattens `AssistantSpec`, which refuses unknown fields
/// (`additionalProperties: false`), so `allOf: [AssistantSpec, {id, createdAt,
/// updatedAt}]` matched no assistant at all: the first part forbids the fields
/// the second requires. Each component that is such an `allOf` of objects (a
/// reference to a component object, or an inline object) becomes one object
/// with the properties and required fields of all its parts, closed when any
/// part was closed.
pub fn merge_flattened_objects(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{AdditionalProperties, Object, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let resolve = |r: &RefOr<Schema>,
                   schemas: &std::collections::BTreeMap<String, RefOr<Schema>>|
     -> Option<Object> {
        match r {
            RefOr::T(Schema::Object(o)) => Some(o.clone()),
            RefOr::Ref(r) => {
                let name = r.ref_location.strip_prefix("#/components/schemas/")?;
                match schemas.get(name)? {
                    RefOr::T(Schema::Object(o)) => Some(o.clone()),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    let mut merged = Vec::new();
    for (name, schema) in &components.schemas {
        let RefOr::T(Schema::AllOf(all)) = schema else {
            continue;
        };
        let Some(parts) = all
            .items
            .iter()
            .map(|p| resolve(p, &components.schemas))
            .collect::<Option<Vec<Object>>>()
        else {
            continue;
        };
        let mut object = Object::new();
        object.description = all.description.clone();
        let mut closed = false;
        for part in parts {
            closed |= matches!(
                part.additional_properties.as_deref(),
                Some(AdditionalProperties::FreeForm(false))
            );
            for (key, value) in part.properties {
                object.properties.insert(key, value);
            }
            for key in part.required {
                if !object.required.contains(&key) {
                    object.required.push(key);
                }
            }
        }
        if closed {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
        merged.push((name.clone(), object));
    }
    for (name, object) in merged {
        components
            .schemas
            .insert(name, RefOr::T(Schema::Object(object)));
    }
}

/// Closes each variant of the internally tagged enums whose Rust type refuses
/// unknown fields (utoipa leaves their variant objects open), so the document
/// says what the server does: an unknown field is a 422.
pub fn close_tagged_variants(doc: &mut utoipa::openapi::OpenApi, names: &[&str]) {
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in names {
        if let Some(RefOr::T(Schema::OneOf(one))) = components.schemas.get_mut(*name) {
            for item in &mut one.items {
                if let RefOr::T(Schema::Object(o)) = item {
                    o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}

/// The pattern every free-form string query parameter carries: no NUL byte.
pub const NO_NUL: &str = "^[^\\u0000]*$";

/// Says in the document what [`crate::error::ApiQuery`] enforces: no query
/// parameter holds a NUL byte (a 400). Every string query parameter without an
/// enum or a pattern of its own gets [`NO_NUL`], so a client (or a schema-driven
/// test) knows such a value is refused rather than meeting an undocumented 400.
pub fn forbid_nul_in_queries(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    let is_string = |t: &SchemaType| match t {
        SchemaType::Type(t) => *t == Type::String,
        SchemaType::Array(ts) => ts.contains(&Type::String),
        SchemaType::AnyValue => false,
    };
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            for p in op.parameters.iter_mut().flatten() {
                let RefOr::T(p) = p else { continue };
                if p.parameter_in != ParameterIn::Query {
                    continue;
                }
                if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut()
                    && is_string(&o.schema_type)
                    && o.enum_values.is_none()
                    && o.pattern.is_none()
                {
                    o.pattern = Some(NO_NUL.to_string());
                }
            }
        }
    }
}
