//! The Wasm host of Weir: loads plugin components, checks them against the
//! `weir:plugin@0.2.3` contract (`sdk/wit/plugin.wit`; components built for 0.2.2, 0.2.1, 0.2.0
//! and 0.1.0, the last kept in `wit-0.1.0/`, still run), compiles them once (cached on disk by
//! content hash), and calls them under a deadline and a memory cap. A batch crosses into the
//! module as one buffer with an index, packed into 32-bit words for a transform, whose answer
//! may point into that buffer instead of copying what it forwards (`batch.rs`).
//!
//! *Boundary*: this is the only crate that knows wasmtime. The broker hands it bytes and
//! records and gets back outputs, verdicts, partitions or a [`CallError`].

mod batch;
mod bindings;
mod error;
mod http;
mod instance;
mod module;

pub mod dev;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use batch::{
    BatchTooLarge, InputBatch, InputView, OutputBuilder, OutputView, Outputs, TransformOutput, BATCH_BYTES_MAX,
};
pub use error::CallError;
pub use instance::{
    ConnectorHost, ConnectorState, Counters, DirGrant, Instance, InstanceConfig, RecentLogs, SchemaLookup, SourceBatch,
    SourceRecord,
};
pub use module::{Contract, Inspection, Module};

pub use http::REQUESTS_IN_FLIGHT_MAX;
pub use weir_plugin_types::{HttpTarget, Limits, PluginKind, CONTRACT_VERSION};

/// Most bytes of a reason or message a module gives (an error, a rejection, a log line) the
/// broker keeps: in a dead letter's `weir.error` header, in a deployment's last error.
pub const REASON_BYTES_MAX: usize = 4 << 10;

/// `text` cut to at most `max` bytes (at a character boundary) with `...` after, or whole.
pub fn cut_text(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bytes are not a Weir plugin component; the message says why and what to do.
    #[error("{0}")]
    Invalid(String),
    #[error("module cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
    #[error("wasm engine: {0}")]
    Engine(String),
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are kept, named by the module's SHA-256.
    pub cache_dir: PathBuf,
    /// How often the epoch advances; deadlines are rounded up to whole ticks.
    pub epoch_tick: Duration,
}

/// One wasmtime engine, its epoch ticker and the linker of the plugin worlds.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: wasmtime::Engine,
    config: RuntimeConfig,
    linker: wasmtime::component::Linker<instance::HostState>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true);
        // Epoch checks cost less than fuel; the deadline is what stops a spinning module,
        // including one spinning on a failed memory.grow.
        wasm.epoch_interruption(true);
        wasm.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // `WEIR_WASM_PERFMAP=1`: name compiled plugin code in /tmp/perf-<pid>.map, so `perf
        // report` shows a plugin's functions rather than bare addresses.
        if std::env::var_os("WEIR_WASM_PERFMAP").is_some() {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = wasmtime::Engine::new(&wasm).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        std::fs::create_dir_all(&config.cache_dir)
            .map_err(|source| RuntimeError::Cache { path: config.cache_dir.clone(), source })?;
        let linker = instance::linker(&engine).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        }
        Ok(Self { inner: Arc::new(Inner { engine, config, linker, ticker_stop }) })
    }

    /// Checks `bytes` as a plugin of `kind` and compiles it, or loads the compiled artifact
    /// from the cache. The error names what is wrong (not Wasm, a core module, a refused
    /// import, a missing export).
    pub fn load(&self, bytes: &[u8], kind: PluginKind) -> Result<Module, RuntimeError> {
        module::load(self, bytes, kind, true)
    }

    /// As [`Runtime::load`], keeping no compiled artifact: for a component only tried out.
    pub fn load_transient(&self, bytes: &[u8], kind: PluginKind) -> Result<Module, RuntimeError> {
        module::load(self, bytes, kind, false)
    }

    /// What a component imports and exports, which plugin kinds it is, and why a deploy of it
    /// would be refused, without keeping anything (see [`Inspection`]).
    pub fn inspect(&self, bytes: &[u8]) -> Result<module::Inspection, RuntimeError> {
        module::inspect(self, bytes)
    }

    /// A new instance of `module`; it is created on first call and re-created after a failure.
    pub fn instance(&self, module: &Module, config: InstanceConfig) -> Instance {
        Instance::new(self.clone(), module.clone(), config)
    }

    fn engine(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    fn ticks_for(&self, deadline_ms: u64) -> u64 {
        let tick_ms = self.inner.config.epoch_tick.as_millis().max(1) as u64;
        deadline_ms.div_ceil(tick_ms).max(1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(super::cut_text("short".into(), 10), "short");
        assert_eq!(super::cut_text("abcdef".into(), 3), "abc...");
        // "é" is two bytes: a cut inside it moves back before it.
        assert_eq!(super::cut_text("aé".into(), 2), "a...");
        assert_eq!(super::cut_text("x".repeat(1 << 20), super::REASON_BYTES_MAX).len(), super::REASON_BYTES_MAX + 3);
    }
}
