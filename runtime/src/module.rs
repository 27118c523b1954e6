//! Loading a plugin: is it a component, does it import only what Weir grants, does it export
//! its world's interface; then compile once and keep the artifact by content hash.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::{PluginKind, Runtime, RuntimeError};

/// A checked, compiled plugin. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    pub(crate) component: Component,
    pub(crate) kind: PluginKind,
    pub(crate) contract: Contract,
    sha256: Arc<str>,
    /// The first wasi:http interface it imports, if any (only connectors may).
    http_import: Option<Arc<str>>,
}

/// The version of the `weir:plugin` contract a component was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// A batch is a list of records, each with its own lists and strings; still run.
    V0_1,
    /// A batch is one buffer with an index of records (`sdk/wit/plugin.wit`); `patch` is 0
    /// for a component built before connectors came (0.2.0), 1 for 0.2.1, 2 for 0.2.2, 3 for
    /// 0.2.3. All are called through the current bindings: wasmtime finds an older 0.2 export
    /// under its semver-compatible name.
    V0_2 { patch: u8 },
    /// A transform exporting `packed-transformer` (0.2.2 on): the index in 32-bit words. From
    /// 0.2.3 its answer's spans may point into the input buffer ([`Contract::answers_into_input`]).
    V0_2Packed { patch: u8 },
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 { patch: 0 } => "0.2.0",
            Self::V0_2 { patch: 1 } => "0.2.1",
            Self::V0_2 { patch: 2 } | Self::V0_2Packed { patch: 2 } => "0.2.2",
            Self::V0_2 { .. } | Self::V0_2Packed { .. } => "0.2.3",
        }
    }

    /// Whether a packed answer's spans address the input buffer followed by the answer's
    /// buffer (0.2.3 on), rather than the answer's buffer alone.
    pub fn answers_into_input(self) -> bool {
        matches!(self, Self::V0_2Packed { patch } if patch >= 3)
    }

    fn parse(interface: &str, version: &str) -> Option<Self> {
        let patch = match version {
            "0.1.0" => return Some(Self::V0_1),
            "0.2.0" => 0,
            "0.2.1" => 1,
            "0.2.2" => 2,
            "0.2.3" => 3,
            _ => return None,
        };
        Some(if interface.ends_with("/packed-transformer") { Self::V0_2Packed { patch } } else { Self::V0_2 { patch } })
    }
}

impl Module {
    pub fn kind(&self) -> PluginKind {
        self.kind
    }

    /// The contract version the component was built for.
    pub fn contract(&self) -> Contract {
        self.contract
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The wasi:http interface the component imports (it sends HTTP requests), if it does: a
    /// connector granted no `http_allow` entry must not be deployed with it.
    pub fn http_import(&self) -> Option<&str> {
        self.http_import.as_deref()
    }
}

/// wasi:http interfaces, granted to connectors only, with their `http_allow` behind them.
const HTTP_IMPORTS: &[&str] = &["wasi:http/types", "wasi:http/outgoing-handler"];

/// Import interfaces a plugin may have, by name without version. Rust's standard library for
/// wasm32-wasip2 imports these even when unused; the host grants them with nothing behind
/// them: no preopened directories, no environment, no arguments, stdin empty.
const GRANTED_IMPORTS: &[&str] = &[
    "weir:plugin/types",
    "weir:plugin/source-types",
    "weir:plugin/host",
    "weir:plugin/schema-registry",
    "weir:plugin/connector",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Checks and compiles a component; with `keep`, a fresh artifact is saved to the cache once
/// every check passed (a component only tried out leaves nothing behind).
pub(crate) fn load(runtime: &Runtime, bytes: &[u8], kind: PluginKind, keep: bool) -> Result<Module, RuntimeError> {
    check_header(bytes)?;
    let sha256: Arc<str> = hex::encode(Sha256::digest(bytes)).into();
    let (component, unsaved) = compile(runtime, bytes, &sha256)?;
    let ty = component.component_type();
    let engine = runtime.engine();
    let mut http_import = None;
    for (name, _) in ty.imports(engine) {
        check_import(name)?;
        let unversioned = name.split('@').next().unwrap_or(name);
        let connector_only = if unversioned == "weir:plugin/connector" {
            Some("")
        } else if HTTP_IMPORTS.contains(&unversioned) {
            http_import.get_or_insert_with(|| Arc::from(name));
            Some(" (outgoing HTTP, to the hosts a connector's http_allow grants)")
        } else {
            None
        };
        if let Some(what) = connector_only.filter(|_| !kind.is_connector()) {
            return Err(RuntimeError::Invalid(format!(
                "the component imports {name}{what}, which only sources and sinks are granted, and it is deployed \
                 as a {}",
                kind.as_str()
            )));
        }
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let Some(contract) = contract_of(kind, &exports) else {
        let shown = if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") };
        let older: Vec<String> = kind.exports_run().iter().skip(1).map(|(i, v)| format!("{i}@{v}")).collect();
        let older = if older.is_empty() {
            String::new()
        } else {
            format!(" (nor {}, which this broker still runs)", older.join(" or "))
        };
        return Err(RuntimeError::Invalid(format!(
            "the component does not export {}{older}, so it is not a {} for this broker (it exports {shown}); \
             build it with weir-plugin's #[{}] macro",
            kind.export_name(),
            kind.as_str(),
            kind.as_str()
        )));
    };
    // Only a component that passed every check leaves a compiled artifact behind.
    if let Some(unsaved) = unsaved.filter(|_| keep) {
        unsaved.save()?;
    }
    Ok(Module { component, kind, contract, sha256, http_import })
}

/// The contract version of `kind` a component exports (the current one first), if any.
fn contract_of(kind: PluginKind, exports: &[&str]) -> Option<Contract> {
    kind.exports_run().iter().find_map(|(interface, version)| {
        let name = format!("{interface}@{version}");
        exports.contains(&name.as_str()).then(|| Contract::parse(interface, version)).flatten()
    })
}

/// What a component is, as far as Weir is concerned: read before anything is deployed, so a
/// person can see what they uploaded and why the broker would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub sha256: String,
    pub size_bytes: usize,
    /// The plugin kinds it exports the interface of, with the contract version of each.
    pub kinds: Vec<(PluginKind, Contract)>,
    /// Every interface it imports, and whether Weir grants it.
    pub imports: Vec<(String, bool)>,
    pub exports: Vec<String>,
    /// Why a deploy of it would be refused (an import not granted, no plugin export); `None`
    /// when it would be accepted as each kind in `kinds`.
    pub refusal: Option<String>,
}

/// Reads a component's imports and exports (compiling it, without keeping the artifact). Fails
/// only when it is no component at all (not Wasm, a core module, does not validate).
pub(crate) fn inspect(runtime: &Runtime, bytes: &[u8]) -> Result<Inspection, RuntimeError> {
    check_header(bytes)?;
    let sha256 = hex::encode(Sha256::digest(bytes));
    let (component, _) = compile(runtime, bytes, &sha256)?;
    let ty = component.component_type();
    let engine = runtime.engine();
    let imports: Vec<(String, bool)> =
        ty.imports(engine).map(|(name, _)| (name.to_owned(), check_import(name).is_ok())).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    let names: Vec<&str> = exports.iter().map(String::as_str).collect();
    let kinds: Vec<(PluginKind, Contract)> =
        PluginKind::ALL.iter().filter_map(|kind| Some((*kind, contract_of(*kind, &names)?))).collect();
    let refusal = match imports.iter().find(|(_, granted)| !granted) {
        Some((name, _)) => check_import(name).err().map(|e| e.to_string()),
        None if kinds.is_empty() => Some(format!(
            "the component exports no Weir plugin interface (it exports {}); build it with weir-plugin's \
             #[transform], #[partitioner], #[validator], #[source] or #[sink] macro",
            if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
        )),
        None => None,
    };
    Ok(Inspection { sha256, size_bytes: bytes.len(), kinds, imports, exports, refusal })
}

/// A compiled artifact not yet written to the cache.
struct Unsaved {
    path: PathBuf,
    artifact: Vec<u8>,
}

impl Unsaved {
    fn save(self) -> Result<(), RuntimeError> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, &self.artifact)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|source| RuntimeError::Cache { path: self.path.clone(), source })
    }
}

fn check_header(bytes: &[u8]) -> Result<(), RuntimeError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(RuntimeError::Invalid(format!(
            "not a WebAssembly file: it does not start with the \\0asm magic ({} bytes)",
            bytes.len()
        )));
    }
    // The version field is a u16 version and a u16 layer: layer 0 is a core module, 1 a component.
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    if layer == 0 {
        return Err(RuntimeError::Invalid(
            "this is a core WebAssembly module, not a component: build the plugin with \
             `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
                .into(),
        ));
    }
    Ok(())
}

fn check_import(name: &str) -> Result<(), RuntimeError> {
    let unversioned = name.split('@').next().unwrap_or(name);
    if GRANTED_IMPORTS.contains(&unversioned) || HTTP_IMPORTS.contains(&unversioned) {
        return Ok(());
    }
    let why = if unversioned.starts_with("wasi:sockets/") {
        "network access, which Weir plugins are not granted (a connector may send HTTP requests through \
         wasi:http to the hosts its http_allow lists)"
    } else if unversioned.starts_with("wasi:") {
        "a WASI capability that Weir plugins are not granted"
    } else {
        "an interface this broker does not provide"
    };
    Err(RuntimeError::Invalid(format!(
        "the component imports {name}: {why}. Plugins may import weir:plugin/host, \
         weir:plugin/schema-registry, weir:plugin/connector and wasi:http (sources and sinks) and WASI's cli, \
         io, clocks, random and filesystem interfaces (a connector sees the directory its config grants; other \
         plugins see none)"
    )))
}

/// Compiles, or loads the artifact an earlier compile left in the cache. The artifact's name
/// holds the module hash and the engine's compatibility hash, so an upgraded engine recompiles.
/// The component, from the cache or compiled now; a fresh compile comes with its artifact for
/// the caller to save once the component is accepted.
fn compile(runtime: &Runtime, bytes: &[u8], sha256: &str) -> Result<(Component, Option<Unsaved>), RuntimeError> {
    use std::hash::{Hash, Hasher};
    let engine = runtime.engine();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let path: PathBuf = runtime.inner.config.cache_dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
    if path.exists() {
        // SAFETY: the file is an artifact this runtime wrote with `precompile_component` under a
        // name that binds it to the module's hash and this engine's settings; nothing else
        // writes to the cache folder.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok((component, None)),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cached module unusable; recompiling"),
        }
    }
    let artifact = engine.precompile_component(bytes).map_err(|e| {
        RuntimeError::Invalid(format!(
            "the component does not validate: {}",
            e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
        ))
    })?;
    // SAFETY: as above; the artifact was produced by this engine a moment ago.
    #[allow(unsafe_code)]
    let component =
        unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| RuntimeError::Engine(e.to_string()))?;
    Ok((component, Some(Unsaved { path, artifact })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(dir: &std::path::Path) -> Runtime {
        Runtime::new(crate::RuntimeConfig { cache_dir: dir.into(), epoch_tick: std::time::Duration::from_millis(5) })
            .unwrap()
    }

    fn check(bytes: &[u8], expected_error: &str) {
        let dir = tempfile::tempdir().unwrap();
        let err = runtime(dir.path()).load(bytes, PluginKind::Transform).err().expect("must be refused").to_string();
        assert!(err.contains(expected_error), "{err:?} should mention {expected_error:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "a refused component leaves no compiled artifact behind: {left:?}");
    }

    #[test]
    fn refuses_what_is_not_a_plugin_component() {
        check(b"hello, I am a text file", "not a WebAssembly file");
        check(b"", "not a WebAssembly file");
        check(&wat::parse_str("(module)").unwrap(), "core WebAssembly module, not a component");
        check(b"\0asm\x0d\x00\x01\x00garbage", "does not validate");
        check(
            &wat::parse_str("(component)").unwrap(),
            "does not export weir:plugin/packed-transformer@0.2.3 (nor weir:plugin/packed-transformer@0.2.2 or \
             weir:plugin/transformer@0.2.3 or weir:plugin/transformer@0.2.2 or weir:plugin/transformer@0.2.1 or \
             weir:plugin/transformer@0.2.0 or weir:plugin/transformer@0.1.0, which this broker still runs)",
        );
        let sinks = tempfile::tempdir().unwrap();
        let err = runtime(sinks.path()).load(&wat::parse_str("(component)").unwrap(), PluginKind::Sink).err().unwrap();
        assert!(
            err.to_string().contains(
                "does not export weir:plugin/sink-connector@0.2.3 (nor weir:plugin/sink-connector@0.2.2 or \
                 weir:plugin/sink-connector@0.2.1, which this broker still runs), so it is not a sink"
            ),
            "a kind names the older versions it still runs: {err}"
        );
        check(
            &wat::parse_str(r#"(component (import "evil:thing/backdoor" (instance)))"#).unwrap(),
            "imports evil:thing/backdoor: an interface this broker does not provide",
        );
        check(
            &wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#).unwrap(),
            "imports wasi:sockets/tcp@0.2.0: network access",
        );
    }
}
