//! Helpers shared by the fuzz targets.

pub mod ggml_types;

use std::sync::Once;

/// Makes panics in third-party code that our code deliberately contains (the PDF
/// reader runs pdf-extract on its own thread and turns a panic there into a
/// `Malformed` error) not count as crashes, while any panic raised in voxgate's own
/// crates still aborts, as libFuzzer's hook does. Call at the top of a target.
pub fn contain_third_party_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_pdf_thread = std::thread::current().name() == Some("pdf-extract");
            let ours = info.location().is_some_and(|l| is_ours(l.file()));
            if on_pdf_thread && !ours {
                return;
            }
            fuzzer_hook(info);
        }));
    });
}

/// True for a source file of this repository (not a dependency's).
fn is_ours(file: &str) -> bool {
    !file.contains("/.cargo/registry/") && !file.contains("/rustc/") && !file.starts_with("/rust/")
}

/// A file path private to this process, for parsers that only take a path.
pub fn scratch_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("voxgate-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}
