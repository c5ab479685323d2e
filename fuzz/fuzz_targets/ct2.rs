//! The CTranslate2 `model.bin` reader (`voxgate_whisper::ct2::Model::parse`) and
//! every accessor the Whisper loader uses on what it returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxgate_whisper::ct2::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Model::parse(data.to_vec()) else { return };
    for var in model.variables() {
        let len = var.len();
        let _ = var.is_empty();
        let bytes = model.data(var);
        assert_eq!(bytes.len(), len * var.dtype.size(), "{var:?}");
        if let Some(values) = model.to_f32(var) {
            assert_eq!(values.len(), len);
        }
        assert!(model.get(&var.name).is_some());
        let _ = model.scalar_int(&var.name);
    }
    for name in ["encoder/num_heads", "decoder/num_heads", "decoder/scale_embeddings"] {
        let _ = model.scalar_int(name);
    }
});
