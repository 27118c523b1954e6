//! The broker's side of Wasm plugins: component bytes by content hash (fjall keyspace
//! `module_blobs`), compiled modules, pooled instances for validators and partitioners,
//! transform progress (keyspace `module_progress`) and per-deployment metrics. The rules of
//! deployments are in `deployments.rs`; running transforms is `transforms.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use weir_runtime::{
    BatchTooLarge, CallError, ConnectorHost, ConnectorState, Counters, DirGrant, HttpTarget, InputBatch, Instance,
    InstanceConfig, Limits, Module, OutputView, PluginKind, RecentLogs, Runtime, RuntimeConfig, SchemaLookup,
    BATCH_BYTES_MAX,
};
use weir_sdk::wire::ModuleMetrics;
use weir_sdk::{ErrorCode, WireError};
use weir_storage::keys::ConnectorValue;
use weir_storage::modules::ModuleStore;

use crate::controller::Controller;
use weir_meta::deployments::{Deployment, DeploymentVersion};

#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Compiled artifacts, by module hash.
    pub cache_dir: PathBuf,
    /// Limits of a deployment that sets none.
    pub limits: Limits,
    pub failures_max: u32,
    /// Largest component accepted.
    pub module_bytes_max: usize,
    /// Folders a connector's directory must be inside.
    pub connector_dir_roots: Vec<PathBuf>,
}

/// Pooled instances per deployment version, so concurrent produce requests do not queue on one.
const POOL_INSTANCES_MAX: usize = 4;

#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    config: PluginConfig,
    store: ModuleStore,
    compiled: DashMap<String, Module>,
    metrics: DashMap<String, Arc<Metrics>>,
    pools: DashMap<(String, u32), Arc<Mutex<Vec<Instance>>>>,
    schemas: Arc<dyn SchemaLookup>,
    controller: Controller,
    /// Transform tasks running now.
    tasks_running: Arc<AtomicUsize>,
    /// Held by a deploy or removal from storing a component to deciding whether it is used, so
    /// one deploy's cleanup never drops a component another is about to use.
    changes: tokio::sync::Mutex<()>,
}

/// Counts a transform task as running while it lives.
pub struct RunningTask(Arc<AtomicUsize>);

impl Drop for RunningTask {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The schema registry in the controller's state, for the schema-lookup host import.
struct RegistrySchemas(Controller);

impl SchemaLookup for RegistrySchemas {
    fn lookup(&self, id: u32) -> Result<(String, String), String> {
        let state = self.0.state();
        let stored = state.registry.schemas.get(&id).ok_or_else(|| format!("schema id {id} is not registered"))?;
        // With references written out, so the plugin can parse it on its own.
        let text = state
            .registry
            .resolve(stored.schema_type, &stored.schema, &stored.references)
            .map_err(|e| format!("schema id {id}: {e}"))?;
        Ok((stored.schema_type.api_name().to_owned(), text))
    }
}

impl Plugins {
    pub fn open(store: ModuleStore, config: PluginConfig, controller: Controller) -> Result<Self, WireError> {
        let runtime =
            Runtime::new(RuntimeConfig { cache_dir: config.cache_dir.clone(), epoch_tick: Duration::from_millis(10) })
                .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                runtime,
                config,
                store,
                compiled: DashMap::new(),
                metrics: DashMap::new(),
                pools: DashMap::new(),
                schemas: Arc::new(RegistrySchemas(controller.clone())),
                controller,
                tasks_running: Arc::default(),
                changes: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Marks a transform task as started; it counts as running until the value is dropped.
    pub fn task_started(&self) -> RunningTask {
        self.inner.tasks_running.fetch_add(1, Ordering::AcqRel);
        RunningTask(self.inner.tasks_running.clone())
    }

    /// Transform tasks running now (across deployments and partitions).
    pub fn transform_tasks_running(&self) -> usize {
        self.inner.tasks_running.load(Ordering::Acquire)
    }

    pub fn config(&self) -> &PluginConfig {
        &self.inner.config
    }

    fn check_size(&self, bytes: &[u8]) -> Result<(), WireError> {
        let limit = self.inner.config.module_bytes_max;
        if bytes.len() > limit {
            return Err(WireError::new(
                ErrorCode::InvalidModule,
                format!("the component is {} bytes; module_bytes_max is {limit}", bytes.len()),
            ));
        }
        Ok(())
    }

    /// What an uploaded component is (kinds, imports, exports) and why a deploy of it would be
    /// refused; nothing is kept. Within `module_bytes_max`, as a deploy.
    pub fn inspect(&self, bytes: &[u8]) -> Result<weir_runtime::Inspection, WireError> {
        self.check_size(bytes)?;
        self.inner.runtime.inspect(bytes).map_err(|e| WireError::new(ErrorCode::InvalidModule, e.to_string()))
    }

    /// Checks and compiles an uploaded component, and keeps its bytes by hash.
    pub fn accept(&self, bytes: &[u8], kind: PluginKind) -> Result<Module, WireError> {
        self.check_size(bytes)?;
        let module = self
            .inner
            .runtime
            .load(bytes, kind)
            .map_err(|e| WireError::new(ErrorCode::InvalidModule, e.to_string()))?;
        self.inner
            .store
            .put_blob(module.sha256(), bytes)
            .map_err(|e| WireError::new(ErrorCode::Storage, format!("storing the module: {e}")))?;
        self.inner.compiled.insert(module.sha256().to_owned(), module.clone());
        Ok(module)
    }

    /// The compiled module of a deployed version: from memory, or from its stored bytes (and
    /// the artifact cache) after a restart.
    pub fn module(&self, version: &DeploymentVersion) -> Result<Module, WireError> {
        if let Some(module) = self.inner.compiled.get(&version.sha256) {
            return Ok(module.clone());
        }
        let bytes = self
            .inner
            .store
            .blob(&version.sha256)
            .map_err(|e| WireError::new(ErrorCode::Storage, format!("reading module {}: {e}", version.sha256)))?
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::Storage,
                    format!("module bytes {} are missing from the store", version.sha256),
                )
            })?;
        let module = self
            .inner
            .runtime
            .load(&bytes, version.spec.kind)
            .map_err(|e| WireError::new(ErrorCode::InvalidModule, e.to_string()))?;
        self.inner.compiled.insert(version.sha256.clone(), module.clone());
        Ok(module)
    }

    pub fn metrics(&self, name: &str) -> Arc<Metrics> {
        self.inner.metrics.entry(name.to_owned()).or_default().clone()
    }

    pub fn forget(&self, name: &str) {
        self.inner.metrics.remove(name);
        self.inner.pools.retain(|(n, _), _| n != name);
    }

    /// Drops a component no deployment uses any more: its stored bytes, its compiled form in
    /// memory and its compiled artifacts in the cache. What a refused deploy or a removed
    /// deployment leaves behind goes this way.
    pub fn drop_unused(&self, sha256: &str) -> Result<(), WireError> {
        let used =
            self.inner.controller.state().modules.values().any(|d| d.versions.iter().any(|v| v.sha256 == sha256));
        if used {
            return Ok(());
        }
        self.inner
            .store
            .remove_blob(sha256)
            .map_err(|e| WireError::new(ErrorCode::Storage, format!("removing an unused module: {e}")))?;
        self.inner.compiled.remove(sha256);
        if let Ok(entries) = std::fs::read_dir(&self.inner.config.cache_dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&format!("{sha256}-")) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        tracing::info!(sha256, "unused module component removed");
        Ok(())
    }

    /// Serializes deploys and removals (see `changes`).
    pub async fn lock_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.changes.lock().await
    }

    /// Whether the component's bytes are stored.
    pub fn has_blob(&self, sha256: &str) -> bool {
        self.blob(sha256).is_some()
    }

    /// The component's stored bytes.
    pub fn blob(&self, sha256: &str) -> Option<Vec<u8>> {
        self.inner.store.blob(sha256).ok().flatten()
    }

    /// Runs a component that is not deployed, once, over `records` (all of one partition of
    /// `topic`), as a `kind` with `params`, under the broker's default deadline and memory cap:
    /// the console's "try it". Nothing is stored and no compiled artifact kept.
    pub fn try_component(
        &self,
        bytes: &[u8],
        kind: PluginKind,
        params: BTreeMap<String, String>,
        records: &[weir_sdk::batch::ConsumedRecord],
        partition_count: u32,
    ) -> Result<Tried, WireError> {
        self.check_size(bytes)?;
        if kind.is_connector() {
            return Err(WireError::new(
                ErrorCode::InvalidModule,
                format!(
                    "a {} is tried by creating it as a connector; try runs transforms, partitioners and validators",
                    kind.as_str()
                ),
            ));
        }
        let runtime = &self.inner.runtime;
        let module =
            runtime.load_transient(bytes, kind).map_err(|e| WireError::new(ErrorCode::InvalidModule, e.to_string()))?;
        let mut instance = runtime.instance(
            &module,
            InstanceConfig {
                limits: self.inner.config.limits,
                params: Arc::new(params),
                label: "try".into(),
                counters: Arc::default(),
                logs: Arc::default(),
                schemas: Some(self.inner.schemas.clone()),
                connector: None,
            },
        );
        let (topic, partition) = records.first().map_or(("", 0), |r| (r.topic.as_str(), r.partition));
        let batch = input_batch(topic, partition, records).map_err(|e| batch_too_large("the tried module", &e))?;
        let failed = |e: CallError| WireError::new(ErrorCode::ModuleFailed, format!("the module failed: {e}"));
        Ok(match kind {
            PluginKind::Transform => {
                let output = instance.transform(&batch).map_err(failed)?;
                let timestamps = records.iter().map(|r| r.record.timestamp);
                Tried::Transform(
                    output
                        .outcomes()
                        .zip(timestamps)
                        .map(|(outcome, ts)| {
                            outcome
                                .map(|outs| {
                                    outs.map(|o| (o.topic().map(str::to_owned), output_record(&o, ts))).collect()
                                })
                                .map_err(str::to_owned)
                        })
                        .collect(),
                )
            }
            PluginKind::Partitioner => Tried::Partitioner(instance.partition(&batch, partition_count).map_err(failed)?),
            PluginKind::Validator => Tried::Validator(instance.validate(&batch).map_err(failed)?),
            PluginKind::Source | PluginKind::Sink => unreachable!("refused above"),
        })
    }

    /// A fresh instance of the deployment's active version.
    pub fn instance(&self, deployment: &Deployment, label: String) -> Result<Instance, WireError> {
        self.deployed_instance(deployment, label, None)
    }

    /// An instance of the deployment's active version, with its limits, parameters, metrics
    /// and the registry, and what a connector is granted.
    fn deployed_instance(
        &self,
        deployment: &Deployment,
        label: String,
        connector: Option<ConnectorHost>,
    ) -> Result<Instance, WireError> {
        let version = deployment.active();
        let module = self.module(version)?;
        let metrics = self.metrics(&deployment.name);
        let config = InstanceConfig {
            limits: version.spec.limits,
            params: Arc::new(version.spec.params.clone()),
            label: label.into(),
            counters: metrics.counters.clone(),
            logs: metrics.logs.clone(),
            schemas: Some(self.inner.schemas.clone()),
            connector,
        };
        Ok(self.inner.runtime.instance(&module, config))
    }

    /// Whether `dir` may be granted to a connector: it is (after following links) inside one
    /// of the broker's `connector_dir_roots`. The error names the setting.
    pub fn check_dir_grant(&self, dir: &str) -> Result<PathBuf, WireError> {
        let refused = |why: String| WireError::new(ErrorCode::InvalidModule, why);
        let roots = &self.inner.config.connector_dir_roots;
        if roots.is_empty() {
            return Err(refused(format!(
                "capabilities.dir {dir:?}: this broker grants connectors no directory (start weir serve with \
                 --connector-dir-root, or set connector_dir_roots)"
            )));
        }
        let shown_roots = || roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
        // Spelled outside every root: refused without touching the file system, so a client
        // learns nothing of what exists elsewhere.
        if !roots.iter().any(|root| std::path::Path::new(dir).starts_with(root)) {
            return Err(refused(format!(
                "capabilities.dir {dir:?} is not inside the broker's connector_dir_roots ({})",
                shown_roots()
            )));
        }
        let real = std::fs::canonicalize(dir)
            .map_err(|e| refused(format!("capabilities.dir {dir:?} cannot be opened: {e}")))?;
        let inside = roots.iter().any(|root| std::fs::canonicalize(root).is_ok_and(|root| real.starts_with(root)));
        if !inside || !real.is_dir() {
            return Err(refused(format!(
                "capabilities.dir {dir:?} ({}) is not a folder inside the broker's connector_dir_roots ({})",
                real.display(),
                shown_roots()
            )));
        }
        Ok(real)
    }

    /// A fresh instance of a connector's active version, with what its config grants: its
    /// secrets, its key-value state, the hosts it may send HTTP requests to, and its directory
    /// if it has one (checked again against
    /// the broker's `connector_dir_roots`, which may have changed since it was created).
    pub fn connector_instance(&self, deployment: &Deployment, label: String) -> Result<Instance, WireError> {
        let mut spec = deployment.active().spec.connector.clone().unwrap_or_default();
        if let Some(dir) = &spec.dir {
            spec.dir = Some(self.check_dir_grant(dir)?.to_string_lossy().into_owned());
        }
        let http_allow = spec
            .http_allow
            .iter()
            .map(|entry| HttpTarget::parse(entry))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| WireError::new(ErrorCode::InvalidModule, why))?;
        let connector = ConnectorHost {
            secrets: Arc::new(spec.secrets),
            state: Arc::new(StoredState { store: self.inner.store.clone(), name: deployment.name.clone() }),
            dir: spec.dir.map(|dir| DirGrant { host_path: dir.into(), writable: spec.dir_writable }),
            http_allow: http_allow.into(),
        };
        self.deployed_instance(deployment, label, Some(connector))
    }

    /// A source task's stored position: the next offset of its partition when it was stored,
    /// and the module's position bytes.
    pub fn position(&self, name: &str, task: u32) -> Result<Option<(i64, Vec<u8>)>, WireError> {
        let stored = self
            .inner
            .store
            .connector_value(name, ConnectorValue::Position, &task.to_string())
            .map_err(|e| storage("reading a source position", e))?;
        let Some(stored) = stored else { return Ok(None) };
        let Some((offset, position)) = stored.split_first_chunk::<8>() else {
            return Err(WireError::new(
                ErrorCode::Storage,
                format!("a stored position of {name} is {} bytes", stored.len()),
            ));
        };
        Ok(Some((i64::from_be_bytes(*offset), position.to_vec())))
    }

    pub fn set_position(&self, name: &str, task: u32, next_offset: i64, position: &[u8]) -> Result<(), WireError> {
        self.metrics(name)
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task.to_string(), shown_position(position));
        let mut value = next_offset.to_be_bytes().to_vec();
        value.extend_from_slice(position);
        self.inner
            .store
            .set_connector_value(name, ConnectorValue::Position, &task.to_string(), &value)
            .map_err(|e| storage("storing a source position", e))
    }

    /// Runs `f` on a pooled instance of the deployment's active version (validators and
    /// partitioners, called on the produce path), recording the call in its metrics.
    pub fn call_pooled<R>(
        &self,
        deployment: &Deployment,
        records: usize,
        f: impl FnOnce(&mut Instance) -> Result<R, CallError>,
    ) -> Result<R, WireError> {
        let key = (deployment.name.clone(), deployment.active_version);
        let pool = self.inner.pools.entry(key).or_default().clone();
        let taken = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut instance = match taken {
            Some(instance) => instance,
            None => self.instance(deployment, format!("{}@{}", deployment.name, deployment.active_version))?,
        };
        let metrics = self.metrics(&deployment.name);
        let started = std::time::Instant::now();
        let outcome = f(&mut instance);
        metrics.record_call(started.elapsed(), records, outcome.as_ref().err(), instance.memory_high_water_bytes());
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_INSTANCES_MAX {
            pool.push(instance);
        }
        outcome.map_err(|e| {
            WireError::new(
                ErrorCode::ModuleFailed,
                format!("{} module {:?} v{} {e}", deployment.kind.as_str(), deployment.name, deployment.active_version),
            )
        })
    }

    /// A transform's next input offset through a partition, if it has stored one.
    pub fn progress(&self, name: &str, topic: &str, partition: u32) -> Result<Option<i64>, WireError> {
        self.inner.store.progress(name, topic, partition).map_err(|e| storage("reading transform progress", e))
    }

    /// Stores a transform's next input offset. Progress through a topic that no longer exists
    /// is not stored (a task may finish a batch after its input topic was deleted).
    pub fn set_progress(&self, name: &str, topic: &str, partition: u32, next_offset: i64) -> Result<(), WireError> {
        if !self.inner.controller.state().topics.contains_key(topic) {
            return Ok(());
        }
        self.metrics(name)
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{topic}/{partition}"), next_offset);
        self.inner
            .store
            .set_progress(name, topic, partition, next_offset)
            .map_err(|e| storage("storing transform progress", e))
    }

    /// Drops a removed deployment's progress, so a new deployment of that name starts afresh.
    pub fn clear_progress(&self, name: &str) -> Result<(), WireError> {
        self.inner.store.clear_deployment(name).map_err(|e| storage("clearing transform progress", e))
    }

    /// Drops every deployment's progress through a deleted topic.
    pub fn clear_topic_progress(&self, topic: &str) -> Result<(), WireError> {
        self.inner.store.clear_topic(topic).map_err(|e| storage("clearing transform progress", e))?;
        let prefix = format!("{topic}/");
        for metrics in self.inner.metrics.iter() {
            metrics.progress.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| !k.starts_with(&prefix));
        }
        Ok(())
    }

    /// Whether any deployment has stored progress through `topic`.
    pub fn has_topic_progress(&self, topic: &str) -> Result<bool, WireError> {
        self.inner.store.has_topic(topic).map_err(|e| storage("reading transform progress", e))
    }
}

/// A position as `describe` shows it: UTF-8 text, or hex, cut at 200 characters.
fn shown_position(position: &[u8]) -> String {
    match std::str::from_utf8(position) {
        Ok(text) => weir_runtime::cut_text(text.to_owned(), 200),
        Err(_) => weir_runtime::cut_text(position.iter().take(101).map(|b| format!("{b:02x}")).collect(), 200),
    }
}

/// A connector's key-value state in the broker's store, within its limits.
struct StoredState {
    store: ModuleStore,
    name: String,
}

impl StoredState {
    const KEY_BYTES_MAX: usize = 256;
    const VALUE_BYTES_MAX: usize = 64 << 10;
    const KEYS_MAX: usize = 1000;
}

impl ConnectorState for StoredState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.connector_value(&self.name, ConnectorValue::State, key).ok().flatten()
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if key.len() > Self::KEY_BYTES_MAX {
            return Err(format!("state key of {} bytes; the limit is {}", key.len(), Self::KEY_BYTES_MAX));
        }
        if value.len() > Self::VALUE_BYTES_MAX {
            return Err(format!("state value of {} bytes; the limit is {}", value.len(), Self::VALUE_BYTES_MAX));
        }
        let exists = self.get(key).is_some();
        if !exists {
            let count = self.store.connector_values(&self.name, ConnectorValue::State).map_err(|e| e.to_string())?;
            if count >= Self::KEYS_MAX {
                return Err(format!("the state holds {count} keys, its limit"));
            }
        }
        self.store.set_connector_value(&self.name, ConnectorValue::State, key, value).map_err(|e| e.to_string())
    }

    fn delete(&self, key: &str) {
        let _ = self.store.remove_connector_value(&self.name, ConnectorValue::State, key);
    }
}

fn storage(what: &str, e: weir_storage::StorageError) -> WireError {
    WireError::new(ErrorCode::Storage, format!("{what}: {e}"))
}

/// An output of a tried transform: the topic it names, if any, and the record.
pub type TriedOutput = (Option<String>, weir_sdk::batch::Record);

/// What a component tried on records did ([`Plugins::try_component`]), by kind: per input
/// record, a transform's outputs (each with the topic it names, if any) or its error; a
/// partitioner's partition; a validator's refusal, if any.
#[derive(Debug)]
pub enum Tried {
    Transform(Vec<Result<Vec<TriedOutput>, String>>),
    Partitioner(Vec<u32>),
    Validator(Vec<Option<String>>),
}

/// One deployment's counters since the broker started.
pub struct Metrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub records_rejected: AtomicU64,
    pub records_dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub batches_failed: AtomicU64,
    pub failures_consecutive: AtomicU32,
    call_time_us_total: AtomicU64,
    memory_high_water_bytes: AtomicU64,
    latency_us: Mutex<hdrhistogram::Histogram<u64>>,
    last_error: Mutex<Option<String>>,
    progress: Mutex<BTreeMap<String, i64>>,
    /// Sources: each task's position, as shown.
    positions: Mutex<BTreeMap<String, String>>,
    pub counters: Arc<Counters>,
    pub logs: Arc<RecentLogs>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            records_rejected: AtomicU64::new(0),
            records_dead_lettered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batches_failed: AtomicU64::new(0),
            failures_consecutive: AtomicU32::new(0),
            call_time_us_total: AtomicU64::new(0),
            memory_high_water_bytes: AtomicU64::new(0),
            latency_us: Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")),
            last_error: Mutex::new(None),
            progress: Mutex::default(),
            positions: Mutex::default(),
            counters: Arc::default(),
            logs: Arc::default(),
        }
    }
}

impl Metrics {
    /// Counts one call; returns the consecutive failures after it.
    pub fn record_call(
        &self,
        elapsed: Duration,
        records: usize,
        error: Option<&CallError>,
        memory_high_water_bytes: u64,
    ) -> u32 {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records_in.fetch_add(records as u64, Ordering::Relaxed);
        self.call_time_us_total.fetch_add(us, Ordering::Relaxed);
        self.memory_high_water_bytes.fetch_max(memory_high_water_bytes, Ordering::Relaxed);
        let _ = self.latency_us.lock().unwrap_or_else(|e| e.into_inner()).record(us.clamp(1, 600_000_000));
        match error {
            None => {
                self.failures_consecutive.store(0, Ordering::Relaxed);
                0
            }
            Some(e) => {
                self.batches_failed.fetch_add(1, Ordering::Relaxed);
                self.set_last_error(e.to_string());
                self.failures_consecutive.fetch_add(1, Ordering::Relaxed) + 1
            }
        }
    }

    /// Keeps the newest error, cut at [`weir_runtime::REASON_BYTES_MAX`]: a module's
    /// reasons are its own strings, of any length.
    pub fn set_last_error(&self, error: String) {
        let error = weir_runtime::cut_text(error, weir_runtime::REASON_BYTES_MAX);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub fn snapshot(&self) -> ModuleMetrics {
        let latency = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        let quantile = |q| if latency.is_empty() { 0 } else { latency.value_at_quantile(q) };
        ModuleMetrics {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            records_rejected: self.records_rejected.load(Ordering::Relaxed),
            records_dead_lettered: self.records_dead_lettered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            batches_failed: self.batches_failed.load(Ordering::Relaxed),
            failures_consecutive: self.failures_consecutive.load(Ordering::Relaxed),
            call_latency_us_p50: quantile(0.5),
            call_latency_us_p99: quantile(0.99),
            call_time_us_total: self.call_time_us_total.load(Ordering::Relaxed),
            memory_high_water_bytes: self.memory_high_water_bytes.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            counters: self.counters.snapshot(),
            recent_logs: self.logs.snapshot(),
            progress: self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            positions: self.positions.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            lag: BTreeMap::new(),
        }
    }
}

/// Decoded records of one partition as a plugin batch: their bytes copied into its one buffer.
pub fn input_batch(
    topic: &str,
    partition: u32,
    records: &[weir_sdk::batch::ConsumedRecord],
) -> Result<InputBatch, BatchTooLarge> {
    batch_of(topic, partition, records.iter().map(|r| (r.offset, &r.record)))
}

/// Records of a produce request, not stored yet, as a plugin batch: each one's offset is its
/// index in the request.
pub fn request_input_batch(
    topic: &str,
    partition: u32,
    records: &[weir_sdk::batch::Record],
) -> Result<InputBatch, BatchTooLarge> {
    batch_of(topic, partition, (0i64..).zip(records))
}

fn batch_of<'r>(
    topic: &str,
    partition: u32,
    records: impl Iterator<Item = (i64, &'r weir_sdk::batch::Record)> + Clone,
) -> Result<InputBatch, BatchTooLarge> {
    let bytes: usize = records.clone().map(|(_, r)| r.payload_len()).sum();
    let capacity = usize::try_from(BATCH_BYTES_MAX).unwrap_or(usize::MAX).min(bytes);
    let mut batch = InputBatch::with_capacity(topic, partition, records.size_hint().0, capacity);
    for (offset, r) in records {
        let headers = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
        batch.push(offset, r.timestamp, r.key.as_deref(), r.value.as_deref(), headers)?;
    }
    Ok(batch)
}

/// A transform's output as a record to write; its bytes stay in the module's answer buffer.
pub fn output_record(output: &OutputView<'_>, input_timestamp: i64) -> weir_sdk::batch::Record {
    weir_sdk::batch::Record {
        key: output.key(),
        value: output.value(),
        headers: output.headers().map(|(k, v)| (k.to_owned(), v)).collect(),
        timestamp: output.timestamp().unwrap_or(input_timestamp),
    }
}

/// A batch too large for modules (`who`), as the client sees it.
pub fn batch_too_large(who: &str, e: &BatchTooLarge) -> WireError {
    WireError::new(ErrorCode::ModuleFailed, format!("{who} cannot take the records: {e}"))
}
