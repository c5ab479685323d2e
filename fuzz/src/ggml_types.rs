//! ggml's type table, as `llama_cpp_sys_2` exposes it to `crates/llama/src/gguf.rs`
//! (`GGML_TYPE_COUNT`, `ggml_blck_size`, `ggml_type_size`), so the fuzz target can
//! compile that file without building llama.cpp. The values were printed by the
//! bundled ggml of llama-cpp-sys-2 0.1.161 (`ggml_blck_size`, `ggml_type_size` for
//! every type below `GGML_TYPE_COUNT`); removed and deprecated types have 0, as there.

#![allow(non_camel_case_types, clippy::missing_safety_doc)]

pub type ggml_type = u32;

pub const GGML_TYPE_COUNT: ggml_type = 43;

/// (block size, bytes per block) by type id.
const TABLE: [(i64, usize); GGML_TYPE_COUNT as usize] = [
    (1, 4),     // f32
    (1, 2),     // f16
    (32, 18),   // q4_0
    (32, 20),   // q4_1
    (0, 0),     // deprecated
    (0, 0),     // deprecated
    (32, 22),   // q5_0
    (32, 24),   // q5_1
    (32, 34),   // q8_0
    (32, 36),   // q8_1
    (256, 84),  // q2_K
    (256, 110), // q3_K
    (256, 144), // q4_K
    (256, 176), // q5_K
    (256, 210), // q6_K
    (256, 292), // q8_K
    (256, 66),  // iq2_xxs
    (256, 74),  // iq2_xs
    (256, 98),  // iq3_xxs
    (256, 50),  // iq1_s
    (32, 18),   // iq4_nl
    (256, 110), // iq3_s
    (256, 82),  // iq2_s
    (256, 136), // iq4_xs
    (1, 1),     // i8
    (1, 2),     // i16
    (1, 4),     // i32
    (1, 8),     // i64
    (1, 8),     // f64
    (256, 56),  // iq1_m
    (1, 2),     // bf16
    (0, 0),     // removed q4_0_4_4
    (0, 0),     // removed q4_0_4_8
    (0, 0),     // removed q4_0_8_8
    (256, 54),  // tq1_0
    (256, 66),  // tq2_0
    (0, 0),     // removed iq4_nl_4_4
    (0, 0),     // removed iq4_nl_4_8
    (0, 0),     // removed iq4_nl_8_8
    (32, 17),   // mxfp4
    (64, 36),   // nvfp4
    (128, 18),  // q1_0
    (64, 18),   // q2_0
];

pub unsafe fn ggml_blck_size(t: ggml_type) -> i64 {
    TABLE[t as usize].0
}

pub unsafe fn ggml_type_size(t: ggml_type) -> usize {
    TABLE[t as usize].1
}
