//! The JSON of `POST /api/assistants` and `PATCH /api/assistants/{id}`, the way the
//! API reads it: a JSON value, deserialized into `AssistantSpec` with field paths
//! (serde_path_to_error, as `spec_from`), then `validate`; a patch is merged
//! (RFC 7396, `merge_patch`) into a stored spec first. A spec that validates is
//! stored as JSON and read back: it must come back the same.
//!
//! Input: the body; for the patch, the same bytes are the patch on a valid spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use voxgate_domain::AssistantSpec;
use voxgate_domain::assistant::merge_patch;

fn spec_from(value: Value) -> Option<AssistantSpec> {
    let mut track = serde_path_to_error::Track::new();
    match AssistantSpec::deserialize(serde_path_to_error::Deserializer::new(value, &mut track)) {
        Ok(spec) => Some(spec),
        Err(e) => {
            let _ = (track.path().to_string(), e.to_string());
            None
        }
    }
}

fn check(spec: &AssistantSpec) -> bool {
    match spec.validate() {
        Ok(()) => {
            let stored = serde_json::to_string(spec).expect("a spec serializes");
            let back: AssistantSpec = serde_json::from_str(&stored).expect("a stored spec reads back");
            assert_eq!(&back, spec, "stored as {stored}");
            true
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            false
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    // Create.
    let created = spec_from(body.clone()).filter(check);
    // Update: the patch on what was created, or on a minimal valid spec.
    if body.is_object() {
        let base = created.unwrap_or_else(|| AssistantSpec { name: "Front desk".into(), ..AssistantSpec::default() });
        let mut doc = serde_json::to_value(&base).expect("a spec serializes");
        merge_patch(&mut doc, &body);
        if let Some(spec) = spec_from(doc) {
            check(&spec);
        }
    }
});
