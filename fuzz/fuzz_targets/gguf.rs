//! The GGUF header check (`voxgate_llama::gguf::inspect`), the same source file
//! compiled in here (see Cargo.toml), on a file holding the fuzzer's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

// gguf.rs names `llama_cpp_sys_2::{GGML_TYPE_COUNT, ggml_blck_size, ggml_type_size}`:
// this crate stands in for it, with ggml's table copied in `voxgate_fuzz::ggml_types`.
extern crate self as llama_cpp_sys_2;
pub use voxgate_fuzz::ggml_types::{GGML_TYPE_COUNT, ggml_blck_size, ggml_type_size};

#[allow(dead_code)]
#[path = "../../crates/llama/src/gguf.rs"]
mod gguf;

fuzz_target!(|data: &[u8]| {
    let path = voxgate_fuzz::scratch_file("model.gguf");
    std::fs::write(&path, data).expect("write the scratch file");
    if let Ok(info) = gguf::inspect(&path) {
        // What the engine reads from a valid header.
        let _ = (info.architecture(), info.name(), info.context_length(), info.chat_template());
        assert!(info.data_offset <= info.file_len);
        for t in &info.tensors {
            assert!(info.data_offset + t.offset + t.size <= info.file_len, "{t:?} is past the end");
        }
    }
});
