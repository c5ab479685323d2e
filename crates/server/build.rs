//! Points the embedded UI at `ui/dist` when the web app has been built, and at a
//! small fallback page otherwise, so the binary always builds.

fn main() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dist = manifest.join("../../ui/dist");
    let dir = if dist.join("index.html").exists() { dist } else { manifest.join("fallback-ui") };
    println!("cargo:rustc-env=VOXGATE_UI_DIR={}", dir.canonicalize().unwrap().display());
    println!("cargo:rerun-if-changed=../../ui/dist");
    println!("cargo:rerun-if-changed=fallback-ui");
}
