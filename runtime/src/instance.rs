//! One plugin instance: a store with its limits and host state, created on the first call and
//! re-created after a failed one (a trapped component instance cannot be entered again).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::batch::{check_count, packed_answer, InputBatch, OutputBuilder, TransformOutput};
use crate::bindings::{self, connector, host, schema_registry, source_types, v0_1};
use crate::error::CallError;
use crate::http::{request_slots, Denials, HttpHooks};
use crate::module::Contract;
use crate::{Limits, Module, PluginKind, Runtime};

/// The broker's schema registry as plugins see it.
pub trait SchemaLookup: Send + Sync {
    /// `(schema type, schema text)` of `id`, or why there is none.
    fn lookup(&self, id: u32) -> Result<(String, String), String>;
}

/// Named counters a plugin adds to (`counter-add`), shared with the broker's metrics.
#[derive(Debug, Default)]
pub struct Counters(Mutex<BTreeMap<String, u64>>);

/// The last lines a plugin logged (`log`), newest last: at most [`RecentLogs::LINES_MAX`], each
/// cut to the log message limit, shared with the broker's metrics (the console shows them).
#[derive(Debug, Default)]
pub struct RecentLogs(Mutex<std::collections::VecDeque<String>>);

impl RecentLogs {
    pub const LINES_MAX: usize = 50;

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == Self::LINES_MAX {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

impl Counters {
    /// Bounds the memory a module can make the host spend on counter names.
    pub const NAMES_MAX: usize = 64;
    pub const NAME_BYTES_MAX: usize = 128;

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn add(&self, name: &str, delta: u64) {
        let mut counters = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = counters.get_mut(name) {
            *value = value.saturating_add(delta);
        } else if counters.len() < Self::NAMES_MAX && name.len() <= Self::NAME_BYTES_MAX {
            counters.insert(name.to_owned(), delta);
        }
    }
}

#[derive(Clone)]
pub struct InstanceConfig {
    pub limits: Limits,
    pub params: Arc<BTreeMap<String, String>>,
    /// Names the instance in logs, e.g. `mask@3/orders[2]`.
    pub label: Arc<str>,
    pub counters: Arc<Counters>,
    /// Where the lines it logs are kept (besides the broker's own log).
    pub logs: Arc<RecentLogs>,
    pub schemas: Option<Arc<dyn SchemaLookup>>,
    /// What a source or sink is granted; `None` for other plugins.
    pub connector: Option<ConnectorHost>,
}

/// A connector's own key-value state, kept by the broker.
pub trait ConnectorState: Send + Sync {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Fails past the state's limits, naming the limit.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, key: &str);
}

/// The directory a connector is granted, seen by the module as [`DirGrant::GUEST_PATH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host_path: std::path::PathBuf,
    /// Read-write; otherwise read-only (files and the directory).
    pub writable: bool,
}

impl DirGrant {
    pub const GUEST_PATH: &'static str = "/data";
}

/// What a source or sink gets beyond other plugins: its secrets, its state and, if granted, one
/// directory and HTTP to the hosts it lists. Nothing else: no sockets (refused at load), no
/// environment, no other files.
#[derive(Clone)]
pub struct ConnectorHost {
    pub secrets: Arc<BTreeMap<String, String>>,
    pub state: Arc<dyn ConnectorState>,
    pub dir: Option<DirGrant>,
    /// Where it may send HTTP requests (see `crate::http`); empty: nowhere.
    pub http_allow: Arc<[weir_plugin_types::HttpTarget]>,
}

/// What a source's poll found, in the host's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBatch {
    pub records: Vec<SourceRecord>,
    pub position: Vec<u8>,
}

const STDERR_BYTES_MAX: usize = 16 << 10;
/// Largest position a source may answer (it is stored, and carried in a record header).
pub const POSITION_BYTES_MAX: usize = 64 << 10;

/// Milliseconds since the Unix epoch, for log lines.
fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: HttpHooks,
    limiter: MemoryLimiter,
    config: InstanceConfig,
}

struct MemoryLimiter {
    memory_bytes_max: u64,
    high_water_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("memory cap")]
struct MemoryCapHit {
    desired_bytes: u64,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.memory_bytes_max {
            // An error, not `false`: a refused memory.grow returns -1 to the guest, which may
            // spin on it; an error traps at once and names the cause.
            return Err(wasmtime::Error::new(MemoryCapHit { desired_bytes: desired }));
        }
        self.high_water_bytes = self.high_water_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl bindings::types::Host for HostState {}
impl v0_1::types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        let message = crate::cut_text(message, crate::REASON_BYTES_MAX);
        let module = &*self.config.label;
        let name = match level {
            host::LogLevel::Trace => "TRACE",
            host::LogLevel::Debug => "DEBUG",
            host::LogLevel::Info => "INFO",
            host::LogLevel::Warn => "WARN",
            host::LogLevel::Error => "ERROR",
        };
        self.config.logs.push(format!("{} {name} {module}: {message}", now_ms()));
        match level {
            host::LogLevel::Trace => tracing::trace!(target: "weir::plugin", module, "{message}"),
            host::LogLevel::Debug => tracing::debug!(target: "weir::plugin", module, "{message}"),
            host::LogLevel::Info => tracing::info!(target: "weir::plugin", module, "{message}"),
            host::LogLevel::Warn => tracing::warn!(target: "weir::plugin", module, "{message}"),
            host::LogLevel::Error => tracing::error!(target: "weir::plugin", module, "{message}"),
        }
    }

    fn param(&mut self, name: String) -> Option<String> {
        self.config.params.get(&name).cloned()
    }

    fn params(&mut self) -> Vec<(String, String)> {
        self.config.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.config.counters.add(&name, delta);
    }
}

impl source_types::Host for HostState {}

impl connector::Host for HostState {
    fn secret(&mut self, name: String) -> Option<String> {
        self.config.connector.as_ref()?.secrets.get(&name).cloned()
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.config.connector.as_ref()?.state.get(&key)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        match &self.config.connector {
            Some(c) => c.state.set(&key, &value),
            None => Err("only sources and sinks have a state".into()),
        }
    }

    fn state_delete(&mut self, key: String) {
        if let Some(c) = &self.config.connector {
            c.state.delete(&key);
        }
    }
}

impl schema_registry::Host for HostState {
    fn lookup(&mut self, id: u32) -> Result<schema_registry::Schema, String> {
        let Some(schemas) = &self.config.schemas else {
            return Err("no schema registry is configured for this broker".into());
        };
        let (schema_type, schema) = schemas.lookup(id)?;
        Ok(schema_registry::Schema { id, schema_type, schema })
    }
}

/// The 0.1.0 imports are the same functions under the older package name.
impl v0_1::host::Host for HostState {
    fn log(&mut self, level: v0_1::host::LogLevel, message: String) {
        let level = match level {
            v0_1::host::LogLevel::Trace => host::LogLevel::Trace,
            v0_1::host::LogLevel::Debug => host::LogLevel::Debug,
            v0_1::host::LogLevel::Info => host::LogLevel::Info,
            v0_1::host::LogLevel::Warn => host::LogLevel::Warn,
            v0_1::host::LogLevel::Error => host::LogLevel::Error,
        };
        host::Host::log(self, level, message)
    }

    fn param(&mut self, name: String) -> Option<String> {
        host::Host::param(self, name)
    }

    fn params(&mut self) -> Vec<(String, String)> {
        host::Host::params(self)
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        host::Host::counter_add(self, name, delta)
    }
}

impl v0_1::schema_registry::Host for HostState {
    fn lookup(&mut self, id: u32) -> Result<v0_1::schema_registry::Schema, String> {
        let schema_registry::Schema { id, schema_type, schema } = schema_registry::Host::lookup(self, id)?;
        Ok(v0_1::schema_registry::Schema { id, schema_type, schema })
    }
}

enum Bindings {
    Transform(bindings::transform::Transform),
    TypedTransform(bindings::typed_transform::TypedTransform),
    Partitioner(bindings::partitioner::Partitioner),
    Validator(bindings::validator::Validator),
    TransformV0_1(v0_1::transform::Transform),
    PartitionerV0_1(v0_1::partitioner::Partitioner),
    ValidatorV0_1(v0_1::validator::Validator),
    Source(bindings::source::Source),
    Sink(bindings::sink::Sink),
}

struct Live {
    store: Store<HostState>,
    bindings: Bindings,
    stderr: MemoryOutputPipe,
}

/// One linker for every world of both versions: WASI and wasi:http (nothing granted, see
/// `instantiate`; wasi:http imports are refused at load but for connectors) plus Weir's host
/// imports of each version. The worlds of a version import the same.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
    bindings::transform::Transform::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    bindings::source::weir::plugin::connector::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    bindings::source::weir::plugin::source_types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    v0_1::transform::Transform::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// A plugin instance for one deployment and partition, reused across batches.
pub struct Instance {
    runtime: Runtime,
    module: Module,
    config: InstanceConfig,
    live: Option<Live>,
    memory_high_water_bytes: u64,
    /// What the host refused the module's HTTP requests, for the call's error.
    denials: Denials,
    /// Its open HTTP requests, across its stores.
    http_slots: Arc<tokio::sync::Semaphore>,
}

impl Instance {
    pub(crate) fn new(runtime: Runtime, module: Module, config: InstanceConfig) -> Self {
        Self {
            runtime,
            module,
            config,
            live: None,
            memory_high_water_bytes: 0,
            denials: Denials::default(),
            http_slots: request_slots(),
        }
    }

    /// A module's own error, with what the host refused it during the call (a denied HTTP
    /// request), so that the connector's status says both.
    fn with_denial(&self, reason: String) -> String {
        match self.denials.take() {
            Some(denied) => format!("{reason} (the host refused: {denied})"),
            None => reason,
        }
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    /// The most linear memory any of this instance's incarnations has held.
    pub fn memory_high_water_bytes(&self) -> u64 {
        let live = self.live.as_ref().map_or(0, |l| l.store.data().limiter.high_water_bytes);
        self.memory_high_water_bytes.max(live)
    }

    /// One outcome per record: outputs, or the module's error for that record.
    pub fn transform(&mut self, batch: &InputBatch) -> Result<TransformOutput, CallError> {
        if self.module.contract == Contract::V0_1 {
            let records = v0_1_records(batch);
            let results = self.call(|store, bindings| match bindings {
                Bindings::TransformV0_1(t) => t.weir_plugin_transformer().call_transform(store, &records),
                _ => unreachable!("instance kind and contract are checked on load"),
            })?;
            check_count(results.len(), batch.len())?;
            return v0_1_answer(results);
        }
        if let Contract::V0_2 { .. } = self.module.contract {
            let answer = self.call(|store, bindings| match bindings {
                Bindings::TypedTransform(t) => t.weir_plugin_transformer().call_transform(store, &batch.wit),
                _ => unreachable!("instance kind and contract are checked on load"),
            })?;
            return TransformOutput::checked(packed_answer(answer)?, batch.len());
        }
        let index = batch.packed_index();
        let wit = &batch.wit;
        let answer = self.call(|store, bindings| match bindings {
            Bindings::Transform(t) => t.weir_plugin_packed_transformer().call_transform(
                store,
                &wit.topic,
                wit.partition,
                &wit.buffer,
                &index.offsets,
                &index.timestamps,
                &index.records,
                &index.headers,
            ),
            _ => unreachable!("instance kind and contract are checked on load"),
        })?;
        if self.module.contract.answers_into_input() {
            TransformOutput::checked_over(answer, batch.len(), batch.shared_buffer())
        } else {
            TransformOutput::checked(answer, batch.len())
        }
    }

    /// One partition per record, each checked to be below `partition_count`.
    pub fn partition(&mut self, batch: &InputBatch, partition_count: u32) -> Result<Vec<u32>, CallError> {
        let partitions = if self.module.contract == Contract::V0_1 {
            let records = v0_1_records(batch);
            self.call(|store, bindings| match bindings {
                Bindings::PartitionerV0_1(p) => {
                    p.weir_plugin_partition_chooser().call_partition(store, &records, partition_count)
                }
                _ => unreachable!("instance kind and contract are checked on load"),
            })?
        } else {
            self.call(|store, bindings| match bindings {
                Bindings::Partitioner(p) => {
                    p.weir_plugin_partition_chooser().call_partition(store, &batch.wit, partition_count)
                }
                _ => unreachable!("instance kind and contract are checked on load"),
            })?
        };
        check_count(partitions.len(), batch.len())?;
        if let Some((index, p)) = partitions.iter().enumerate().find(|(_, p)| **p >= partition_count) {
            return Err(CallError::Contract(format!(
                "the partitioner answered partition {p} for record {index}, but the topic has {partition_count} \
                 partitions (0 to {})",
                partition_count - 1
            )));
        }
        Ok(partitions)
    }

    /// One verdict per record: `None` accepts, `Some(reason)` rejects.
    pub fn validate(&mut self, batch: &InputBatch) -> Result<Vec<Option<String>>, CallError> {
        let verdicts = if self.module.contract == Contract::V0_1 {
            let records = v0_1_records(batch);
            self.call(|store, bindings| match bindings {
                Bindings::ValidatorV0_1(v) => v.weir_plugin_record_validator().call_validate(store, &records),
                _ => unreachable!("instance kind and contract are checked on load"),
            })?
        } else {
            self.call(|store, bindings| match bindings {
                Bindings::Validator(v) => v.weir_plugin_record_validator().call_validate(store, &batch.wit),
                _ => unreachable!("instance kind and contract are checked on load"),
            })?
        };
        check_count(verdicts.len(), batch.len())?;
        Ok(verdicts)
    }

    /// A source's poll from `position` (`None`: from the start) of at most `max_records`.
    pub fn poll(
        &mut self,
        position: Option<&[u8]>,
        max_records: u32,
    ) -> Result<Result<SourceBatch, String>, CallError> {
        self.denials.take();
        let answer = self.call(|store, bindings| match bindings {
            Bindings::Source(s) => s.weir_plugin_source_connector().call_poll(store, position, max_records),
            _ => unreachable!("instance kind and contract are checked on load"),
        })?;
        let batch = match answer {
            Ok(batch) => batch,
            Err(reason) => return Ok(Err(self.with_denial(reason))),
        };
        if batch.position.len() > POSITION_BYTES_MAX {
            return Err(CallError::Contract(format!(
                "the source answered a position of {} bytes; the limit is {POSITION_BYTES_MAX}",
                batch.position.len()
            )));
        }
        if batch.records.len() > max_records as usize {
            return Err(CallError::Contract(format!(
                "the source answered {} records to a poll of at most {max_records}",
                batch.records.len()
            )));
        }
        let records = batch
            .records
            .into_iter()
            .map(|r| SourceRecord { key: r.key, value: r.value, headers: r.headers, timestamp: r.timestamp })
            .collect();
        Ok(Ok(SourceBatch { records, position: batch.position }))
    }

    /// A sink's delivery of a batch: one verdict per record (`None` delivered, `Some(reason)`
    /// rejected), or why the batch was not delivered.
    pub fn write(&mut self, batch: &InputBatch) -> Result<Result<Vec<Option<String>>, String>, CallError> {
        self.denials.take();
        let answer = self.call(|store, bindings| match bindings {
            Bindings::Sink(s) => s.weir_plugin_sink_connector().call_write(store, &batch.wit),
            _ => unreachable!("instance kind and contract are checked on load"),
        })?;
        match answer {
            Ok(verdicts) => {
                check_count(verdicts.len(), batch.len())?;
                Ok(Ok(verdicts))
            }
            Err(reason) => Ok(Err(self.with_denial(reason))),
        }
    }

    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<HostState>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        if self.live.is_none() {
            self.live = Some(self.instantiate()?);
        }
        let live = self.live.as_mut().expect("instantiated above");
        live.store.set_epoch_deadline(self.runtime.ticks_for(self.config.limits.deadline_ms));
        let started = Instant::now();
        match f(&mut live.store, &live.bindings) {
            Ok(r) => Ok(r),
            Err(e) => {
                let failed = self.live.take().expect("live during the call");
                self.memory_high_water_bytes =
                    self.memory_high_water_bytes.max(failed.store.data().limiter.high_water_bytes);
                let error = classify(&e, &failed.stderr, self.config.limits);
                tracing::debug!(module = %self.config.label, elapsed_ms = started.elapsed().as_millis() as u64, error = %error, "plugin call failed");
                Err(error)
            }
        }
    }

    fn instantiate(&self) -> Result<Live, CallError> {
        let stderr = MemoryOutputPipe::new(STDERR_BYTES_MAX);
        // Nothing granted but a connector's directory: no environment or arguments, no network
        // (socket imports are refused at load as well), stdin empty, stdout discarded.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        if let Some(grant) = self.config.connector.as_ref().and_then(|c| c.dir.as_ref()) {
            let perms =
                if grant.writable { wasmtime_wasi::FsPerms::ReadWrite } else { wasmtime_wasi::FsPerms::ReadOnly };
            wasi.preopened_dir(&grant.host_path, DirGrant::GUEST_PATH, perms).map_err(|e| {
                CallError::Trap(format!("cannot open the granted directory {}: {e}", grant.host_path.display()))
            })?;
        }
        let wasi = wasi.build();
        let http_allow = self.config.connector.as_ref().map_or_else(|| Arc::from(Vec::new()), |c| c.http_allow.clone());
        let deadline = std::time::Duration::from_millis(self.config.limits.deadline_ms);
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: HttpHooks::new(http_allow, self.denials.clone(), self.http_slots.clone(), deadline),
            limiter: MemoryLimiter { memory_bytes_max: self.config.limits.memory_bytes, high_water_bytes: 0 },
            config: self.config.clone(),
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(self.runtime.ticks_for(self.config.limits.deadline_ms));
        let linker = &self.runtime.inner.linker;
        let component = &self.module.component;
        let instantiated = match (self.module.kind, self.module.contract) {
            (PluginKind::Source, _) => {
                bindings::source::Source::instantiate(&mut store, component, linker).map(Bindings::Source)
            }
            (PluginKind::Sink, _) => {
                bindings::sink::Sink::instantiate(&mut store, component, linker).map(Bindings::Sink)
            }
            (PluginKind::Transform, Contract::V0_2Packed { .. }) => {
                bindings::transform::Transform::instantiate(&mut store, component, linker).map(Bindings::Transform)
            }
            (PluginKind::Transform, Contract::V0_2 { .. }) => {
                bindings::typed_transform::TypedTransform::instantiate(&mut store, component, linker)
                    .map(Bindings::TypedTransform)
            }
            // Only a transform exports the packed interface (the contract is read on load).
            (PluginKind::Partitioner, Contract::V0_2 { .. } | Contract::V0_2Packed { .. }) => {
                bindings::partitioner::Partitioner::instantiate(&mut store, component, linker)
                    .map(Bindings::Partitioner)
            }
            (PluginKind::Validator, Contract::V0_2 { .. } | Contract::V0_2Packed { .. }) => {
                bindings::validator::Validator::instantiate(&mut store, component, linker).map(Bindings::Validator)
            }
            (PluginKind::Transform, Contract::V0_1) => {
                v0_1::transform::Transform::instantiate(&mut store, component, linker).map(Bindings::TransformV0_1)
            }
            (PluginKind::Partitioner, Contract::V0_1) => {
                v0_1::partitioner::Partitioner::instantiate(&mut store, component, linker)
                    .map(Bindings::PartitionerV0_1)
            }
            (PluginKind::Validator, Contract::V0_1) => {
                v0_1::validator::Validator::instantiate(&mut store, component, linker).map(Bindings::ValidatorV0_1)
            }
        };
        match instantiated {
            Ok(bindings) => Ok(Live { store, bindings, stderr }),
            Err(e) => Err(classify(&e, &stderr, self.config.limits)),
        }
    }
}

/// A batch as an 0.1.0 module takes it: a list of records, each with its own copies.
fn v0_1_records(batch: &InputBatch) -> Vec<v0_1::types::InputRecord> {
    batch
        .records()
        .map(|r| v0_1::types::InputRecord {
            topic: batch.topic().to_owned(),
            partition: batch.partition(),
            offset: r.offset(),
            timestamp: r.timestamp(),
            key: r.key().map(<[u8]>::to_vec),
            value: r.value().map(<[u8]>::to_vec),
            headers: r
                .headers()
                .map(|(key, value)| v0_1::types::Header { key: key.to_owned(), value: value.map(<[u8]>::to_vec) })
                .collect(),
        })
        .collect()
}

/// An 0.1.0 module's answer in the current form.
fn v0_1_answer(results: Vec<Result<Vec<v0_1::types::OutputRecord>, String>>) -> Result<TransformOutput, CallError> {
    let mut out = OutputBuilder::default();
    for result in results {
        match result {
            Ok(outputs) => {
                for o in &outputs {
                    let headers = o.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref()));
                    out.output(o.topic.as_deref(), o.key.as_deref(), o.value.as_deref(), headers, o.timestamp)?;
                }
                out.emitted()?;
            }
            Err(reason) => out.failed(&reason)?,
        }
    }
    Ok(out.finish())
}

fn classify(e: &wasmtime::Error, stderr: &MemoryOutputPipe, limits: Limits) -> CallError {
    if let Some(hit) = e.downcast_ref::<MemoryCapHit>() {
        return CallError::MemoryCap { memory_bytes: limits.memory_bytes, desired_bytes: hit.desired_bytes };
    }
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        return CallError::Timeout { deadline_ms: limits.deadline_ms };
    }
    // A Rust guest's panic message goes to stderr before the trap; it says more than the trap.
    let printed = String::from_utf8_lossy(&stderr.contents()).trim().to_owned();
    let trap = e.downcast_ref::<wasmtime::Trap>().map_or_else(|| e.to_string(), |t| t.to_string());
    if printed.is_empty() {
        CallError::Trap(trap)
    } else {
        let last: Vec<&str> = printed.lines().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        CallError::Trap(format!("{trap}; the module printed: {}", last.join(" | ")))
    }
}
