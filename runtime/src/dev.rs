//! For this workspace's tests and benchmarks: builds a plugin crate of the workspace for
//! wasm32-wasip2 and returns the component's path. Not for use by the broker.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate lives in `runtime/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("runtime/ has a parent").to_path_buf()
}

/// `cargo build --release --target wasm32-wasip2 -p <package>` into `target/wasm-plugins`
/// (its own target dir, so it never waits on the lock of the build running the tests).
/// Cargo's own lock makes concurrent callers safe; a built module is not rebuilt.
pub fn build_plugin(package: &str) -> PathBuf {
    let root = workspace_root();
    let target_dir = root.join("target").join("wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "--locked", "--target", "wasm32-wasip2", "-p", package])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {package}: {e}"));
    assert!(status.success(), "building {package} for wasm32-wasip2 failed ({status})");
    let path = target_dir.join("wasm32-wasip2").join("release").join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.exists(), "{} was not produced", path.display());
    path
}
