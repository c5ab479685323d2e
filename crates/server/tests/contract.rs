//! The served OpenAPI document against the server's real answers (real server on
//! port 0, real HTTP): the regressions of what `scripts/schemathesis.sh` found.
//! Every error answer below must be in the error shape and documented, with the
//! error schema, for the operation that gave it.

mod common;

use common::{TestServer, error_code};
use reqwest::Method;
use serde_json::{Value, json};
use voxgate_domain::clock::new_id;
use voxgate_domain::key::KeyKind;

async fn openapi(s: &TestServer) -> Value {
    let res = TestServer::http()
        .get(s.at("/api/openapi.json"))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Follows a `$ref` inside the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local reference");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling reference {r}")),
            )
        }
        None => v,
    }
}

/// Every operation: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, Method, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            out.push((path.clone(), m, op.clone()));
        }
    }
    assert!(
        out.len() >= 20,
        "the document lists {} operations",
        out.len()
    );
    out
}

/// Asserts that `status` is documented for `op` with the error schema, and that
/// the answer has the error shape.
async fn documented_error(doc: &Value, what: &str, op: &Value, res: reqwest::Response) -> u16 {
    let (status, code, body) = error_code(res).await;
    assert!((400..500).contains(&status), "{what}: {status} {body}");
    let Some(response) = op["responses"].get(status.to_string()) else {
        panic!(
            "{what}: answered {status} ({code}), which the document does not list: {}",
            op["responses"]
        );
    };
    let schema = &resolve(doc, response)["content"]["application/json"]["schema"];
    assert_eq!(
        resolve(doc, schema),
        &doc["components"]["schemas"]["ErrorBody"],
        "{what}: {status} is documented without the error schema"
    );
    status
}

fn concrete(path: &str) -> String {
    path.replace("{id}", &new_id())
}

/// No token, a public key, a JSON body without its content type, a body that is
/// not JSON, an unknown field, a bad query parameter: each answer is a 4xx in the
/// error shape that the operation documents (the document listed none of 401,
/// 403, 400, 415 for most operations).
#[tokio::test]
async fn every_error_the_layers_answer_is_documented() {
    let s = TestServer::start().await;
    let doc = openapi(&s).await;
    let http = TestServer::http();
    let assistant = s.assistant("contract").await;
    let public = s.key(KeyKind::Public, &[&assistant]).await;

    for (path, method, op) in operations(&doc) {
        let url = s.at(&concrete(&path));
        let secured = op
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if secured {
            let what = format!("{method} {path} without a token");
            let res = http.request(method.clone(), &url).send().await.unwrap();
            assert_eq!(documented_error(&doc, &what, &op, res).await, 401, "{what}");

            let what = format!("{method} {path} with a public key");
            let res = http
                .request(method.clone(), &url)
                .bearer_auth(&public)
                .send()
                .await
                .unwrap();
            if res.status().is_client_error() {
                documented_error(&doc, &what, &op, res).await;
            }
        }
        let json_body = op
            .pointer("/requestBody/content/application~1json")
            .is_some();
        if json_body {
            let what = format!("{method} {path} without a content type");
            let res = http
                .request(method.clone(), &url)
                .bearer_auth(&s.admin)
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(documented_error(&doc, &what, &op, res).await, 415, "{what}");

            let what = format!("{method} {path} with a body that is not JSON");
            let res = http
                .request(method.clone(), &url)
                .bearer_auth(&s.admin)
                .header("content-type", "application/json")
                .body("{\"a\":")
                .send()
                .await
                .unwrap();
            assert_eq!(documented_error(&doc, &what, &op, res).await, 400, "{what}");

            let what = format!("{method} {path} with an unknown field");
            let res = http
                .request(method.clone(), &url)
                .bearer_auth(&s.admin)
                .json(&json!({"x-unknown": 1}))
                .send()
                .await
                .unwrap();
            documented_error(&doc, &what, &op, res).await;
        }
        let has_query = op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        if has_query && method == Method::GET {
            for query in ["limit=0", "limit=101", "x-unknown=1", "cursor=not-a-cursor"] {
                let what = format!("{method} {path}?{query}");
                let res = http
                    .get(format!("{url}?{query}"))
                    .bearer_auth(&s.admin)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(documented_error(&doc, &what, &op, res).await, 400, "{what}");
            }
            // The document says which limits are good.
            let limit = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "limit")
                .unwrap();
            assert_eq!(
                (
                    limit["schema"]["minimum"].as_f64(),
                    limit["schema"]["maximum"].as_f64()
                ),
                (Some(1.0), Some(100.0)),
                "{path}"
            );
        }
    }
}

/// An assistant as answered matches the documented `Assistant` schema. It was an
/// `allOf` of `AssistantSpec` (closed: `additionalProperties: false`) and the id
/// and timestamps, so no answer could match it.
#[tokio::test]
async fn assistants_match_their_documented_schema() {
    let s = TestServer::start().await;
    let doc = openapi(&s).await;
    let id = s.assistant("schema").await;
    let res = TestServer::http()
        .get(s.at(&format!("/api/assistants/{id}")))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();

    let op = &doc["paths"]["/api/assistants/{id}"]["get"];
    let schema = resolve(
        &doc,
        &op["responses"]["200"]["content"]["application/json"]["schema"],
    );
    assert!(schema.get("allOf").is_none(), "{schema}");
    let properties = schema["properties"].as_object().expect("an object schema");
    for key in body.as_object().unwrap().keys() {
        assert!(
            properties.contains_key(key) || schema["additionalProperties"] != false,
            "`{key}` is answered but not documented"
        );
    }
    for key in schema["required"].as_array().unwrap() {
        assert!(
            body.get(key.as_str().unwrap()).is_some(),
            "`{key}` is required but not answered"
        );
    }
    for key in ["id", "name", "createdAt", "updatedAt", "model"] {
        assert!(properties.contains_key(key), "`{key}` is not documented");
    }
}

/// serde reads a struct from an array of its fields, so `"realtime": [null, null]`
/// was accepted as a speech-to-speech setting (201). Objects only: 422 naming the field.
#[tokio::test]
async fn objects_sent_as_arrays_are_refused() {
    let s = TestServer::start().await;
    let http = TestServer::http();
    for (body, field) in [
        (json!({"name": "a", "realtime": [null, null]}), "realtime"),
        (
            json!({"name": "a", "model": ["local", null, 0.7, 250, null]}),
            "model",
        ),
        (
            json!({"name": "a", "endpointing": [500, 0.7, 200, 0.0]}),
            "endpointing",
        ),
        (
            json!({"name": "a", "tools": [["end-call", "bye", "", {}, null, 5000, null]]}),
            "tools[0]",
        ),
        (
            json!({"name": "a", "knowledgeBase": [[], 3, 300]}),
            "knowledgeBase",
        ),
    ] {
        let res = http
            .post(s.at("/api/assistants"))
            .bearer_auth(&s.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, code, err) = error_code(res).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "validation_failed"),
            "{body}: {err}"
        );
        assert_eq!(err["error"]["fields"][0]["field"], field, "{body}: {err}");
    }

    let id = s.assistant("patched").await;
    let res = http
        .patch(s.at(&format!("/api/assistants/{id}")))
        .bearer_auth(&s.admin)
        .json(&json!({"voice": ["local", null, null, 1.0, null]}))
        .send()
        .await
        .unwrap();
    let (status, _, err) = error_code(res).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["fields"][0]["field"], "voice");

    // The same settings as objects are fine.
    let res = http
        .post(s.at("/api/assistants"))
        .bearer_auth(&s.admin)
        .json(&json!({"name": "a", "realtime": {}, "model": {"temperature": 0.5}, "tools": [{"type": "end-call", "name": "bye"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

/// A NUL byte in a query parameter is a 400 (PostgreSQL refuses one in text); the
/// document says so with a pattern on every free-form string parameter, so a
/// schema-valid request is never refused. Schemathesis sent `type=%00…` to
/// `GET /api/webhooks` and flagged the undocumented 400.
#[tokio::test]
async fn query_strings_that_refuse_nul_say_so() {
    let s = TestServer::start().await;
    let doc = openapi(&s).await;
    let mut free_form = Vec::new();
    for (path, method, op) in operations(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            let p = resolve(&doc, p);
            if p["in"] != "query" {
                continue;
            }
            let schema = resolve(&doc, &p["schema"]);
            let ty = &schema["type"];
            let string = ty == "string" || ty.as_array().is_some_and(|t| t.contains(&json!("string")));
            if !string || schema.get("enum").is_some() {
                continue;
            }
            let pattern = schema["pattern"].as_str().unwrap_or_else(|| panic!("{method} {path} ?{}: no pattern", p["name"]));
            if pattern == voxgate_api::openapi_doc::NO_NUL {
                free_form.push(format!("{method} {path} ?{}", p["name"].as_str().unwrap()));
            }
        }
    }
    assert!(free_form.iter().any(|p| p == "GET /api/webhooks ?type"), "{free_form:?}");
    // And the server does what the document says.
    let res = TestServer::http().get(s.at("/api/webhooks?type=%00a")).bearer_auth(&s.admin).send().await.unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    // maxLength counts characters: 64 two-byte characters are a valid filter.
    let get = |t: String| TestServer::http().get(s.at(&format!("/api/webhooks?type={t}"))).bearer_auth(&s.admin).send();
    assert_eq!(get("%C3%A9".repeat(64)).await.unwrap().status(), 200);
    assert_eq!(get("%C3%A9".repeat(65)).await.unwrap().status(), 400);
}
