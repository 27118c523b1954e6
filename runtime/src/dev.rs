//! For this workspace's tests and benchmarks: builds a plugin crate of the workspace for
//! wasm32-wasip2, and sets up the identity plugin beside its native equivalent. Not for use
//! by the broker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Counters, InputBatch, Instance, InstanceConfig, Limits, OutputBuilder, PluginKind, Runtime, RuntimeConfig,
    TransformOutput,
};

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

/// An instance of the identity plugin (`wasm-modules/identity`) with default limits, its
/// compiled artifact cached in `cache_dir`; for benchmarks.
pub fn identity_instance(cache_dir: &Path) -> Instance {
    transform_instance(cache_dir, "weir-module-identity", &[])
}

/// The identity written with the borrowed API (`wasm-modules/forward`): it answers with spans
/// of the input batch (`weir:plugin@0.2.3`), copying none of the records' bytes.
pub fn forward_instance(cache_dir: &Path) -> Instance {
    transform_instance(cache_dir, "weir-module-forward", &[])
}

/// The same identity built for the `weir:plugin@0.1.0` contract (`tests/modules/identity-v0-1`),
/// to measure the current contract against the one before it.
pub fn identity_v0_1_instance(cache_dir: &Path) -> Instance {
    transform_instance(cache_dir, "weir-test-identity-v0-1", &[])
}

/// The same identity built for the `weir:plugin@0.2.0` contract (`tests/modules/identity-v0-2`):
/// the index as lists of records, as transforms had it before 0.2.2 packed it into words.
pub fn identity_v0_2_instance(cache_dir: &Path) -> Instance {
    transform_instance(cache_dir, "weir-test-identity-v0-2", &[])
}

/// An instance of the transform plugin `package` of this workspace with these parameters and
/// default limits, its compiled artifact cached in `cache_dir`.
pub fn transform_instance(cache_dir: &Path, package: &str, params: &[(&str, &str)]) -> Instance {
    transform_instance_of(cache_dir, &build_plugin(package), params)
}

/// An instance of the transform component at `path` (e.g. one built from another commit, to
/// measure against), as [`transform_instance`].
pub fn transform_instance_of(cache_dir: &Path, path: &Path, params: &[(&str, &str)]) -> Instance {
    let package = path.display().to_string();
    let runtime = Runtime::new(RuntimeConfig { cache_dir: cache_dir.into(), epoch_tick: Duration::from_millis(10) })
        .expect("wasm runtime");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{package}: {e}"));
    let module = runtime.load(&bytes, PluginKind::Transform).unwrap_or_else(|e| panic!("{package} loads: {e}"));
    runtime.instance(
        &module,
        InstanceConfig {
            limits: Limits::default(),
            params: Arc::new(params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            label: package.into(),
            counters: Arc::new(Counters::default()),
            logs: Arc::default(),
            schemas: None,
            connector: None,
        },
    )
}

/// What the identity plugin answers, computed natively: the cost of the same stage with no Wasm.
pub fn native_identity(batch: &InputBatch) -> TransformOutput {
    let mut out = OutputBuilder::sized_for(batch);
    for r in batch.records() {
        // An identity's answer is no larger than its batch, which fit the same limit.
        out.output(None, r.key(), r.value(), r.headers(), Some(r.timestamp()))
            .and_then(|()| out.emitted())
            .expect("the identity's answer fits as its batch did");
    }
    out.finish()
}
