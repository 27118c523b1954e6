//! Module deployments: deploy, pause, resume, roll back, remove, describe; the failure count
//! that pauses a deployment.

use bytes::Bytes;
use weir_sdk::wire::*;
use weir_sdk::{ErrorCode, WireError};

use weir_runtime::{Limits, PluginKind};

use weir_meta::deployments::{self, Deployment, DeploymentSpec, DeploymentVersion, ModuleCommand};
use weir_meta::metadata::{Command, Event, Topic};

use super::{mismatched, Broker};

impl Broker {
    /// In a cluster: fetches, from the other brokers, the component of every deployment's
    /// active version this broker does not hold (a deployment made through another broker),
    /// checks that its bytes hash to the deployment's SHA-256, and compiles it here. A
    /// component no peer could give is asked for again after 5 s (`retry_at` keeps when).
    pub async fn sync_components(&self, retry_at: &mut std::collections::HashMap<String, tokio::time::Instant>) {
        let now = tokio::time::Instant::now();
        for deployment in self.deployments() {
            let version = deployment.active().clone();
            if self.plugins.has_blob(&version.sha256) || retry_at.get(&version.sha256).is_some_and(|at| *at > now) {
                continue;
            }
            let Some(bytes) = self.controller.fetch_blob(&version.sha256).await else {
                tracing::warn!(module = %deployment.name, sha256 = %version.sha256, "no broker could give this module's component yet");
                retry_at.insert(version.sha256.clone(), now + std::time::Duration::from_secs(5));
                continue;
            };
            let plugins = self.plugins.clone();
            let kind = version.spec.kind;
            let accepted = tokio::task::spawn_blocking(move || plugins.accept(&bytes, kind)).await;
            match accepted {
                Ok(Ok(module)) if module.sha256() == version.sha256 => {
                    tracing::info!(module = %deployment.name, sha256 = %version.sha256, "module component fetched from a peer");
                }
                Ok(Ok(module)) => {
                    tracing::warn!(module = %deployment.name, expected = %version.sha256, got = %module.sha256(), "a peer sent other bytes; dropped");
                    let _ = self.plugins.drop_unused(module.sha256());
                }
                Ok(Err(e)) => tracing::warn!(module = %deployment.name, error = %e, "a fetched component was refused"),
                Err(e) => tracing::warn!(module = %deployment.name, error = %e, "checking a fetched component failed"),
            }
        }
    }

    /// Active deployments of `kind` serving `topic`.
    pub(super) fn deployments_on(&self, topic: &Topic, kind: PluginKind) -> Vec<Deployment> {
        self.controller
            .state()
            .modules
            .values()
            .filter(|d| d.kind == kind && d.active().spec.topic.as_deref() == Some(topic.name.as_str()))
            .cloned()
            .collect()
    }

    /// Counts a failed call; pauses the deployment once it has failed `failures_max` times in a row.
    pub(crate) fn module_failed(&self, deployment: &Deployment, error: WireError) -> WireError {
        let failures =
            self.plugins.metrics(&deployment.name).failures_consecutive.load(std::sync::atomic::Ordering::Relaxed);
        let failures_max = deployment.active().spec.failures_max;
        if failures >= failures_max && deployment.paused.is_none() {
            let reason = format!("{failures} consecutive failures, the last: {}", error.message);
            tracing::warn!(module = %deployment.name, %reason, "pausing module deployment");
            let controller = self.controller.clone();
            let name = deployment.name.clone();
            tokio::spawn(async move {
                if let Err(e) = controller.propose(Command::Module(ModuleCommand::Pause { name, reason })).await {
                    tracing::error!(error = %e, "pausing a failing module deployment");
                }
            });
        }
        error
    }

    pub async fn deploy_module(
        &self,
        request: DeployModuleRequest,
        bytes: Bytes,
    ) -> Result<ModuleDescription, WireError> {
        let invalid = |m: String| WireError::new(ErrorCode::InvalidModule, m);
        let kind = PluginKind::parse(&request.kind).map_err(|e| invalid(e.to_string()))?;
        let granted_dir = request.connector.as_ref().and_then(|c| c.dir.clone());
        let http_allow = request.connector.as_ref().map(|c| c.http_allow.clone()).unwrap_or_default();
        deployments::validate_name(&request.name)?;
        let sha256: String =
            <sha2::Sha256 as sha2::Digest>::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let defaults = self.plugins.config();
        let dead_letter_topic = request.dead_letter_topic.unwrap_or_else(|| format!("{}.dlq", request.name));
        let spec = DeploymentSpec {
            kind,
            inputs: request.inputs,
            output: request.output,
            topic: request.topic,
            params: request.params,
            limits: Limits {
                deadline_ms: request.deadline_ms.unwrap_or(defaults.limits.deadline_ms),
                memory_bytes: request.memory_bytes.unwrap_or(defaults.limits.memory_bytes),
            },
            dead_letter_topic: dead_letter_topic.clone(),
            failures_max: request.failures_max.unwrap_or(defaults.failures_max),
            connector: request.connector.map(|c| {
                let d = deployments::ConnectorSpec::default();
                deployments::ConnectorSpec {
                    secrets: c.secrets,
                    dir: c.dir,
                    dir_writable: c.dir_writable,
                    tasks_max: c.tasks_max.unwrap_or(d.tasks_max),
                    poll_interval_ms: c.poll_interval_ms.unwrap_or(d.poll_interval_ms),
                    batch_records: c.batch_records.unwrap_or(d.batch_records),
                    http_allow: c.http_allow,
                    transforms: c.transforms,
                }
            }),
        };
        let version = DeploymentVersion {
            version: 0,
            sha256: sha256.clone(),
            size_bytes: bytes.len() as u64,
            deployed_at_ms: weir_sdk::now_ms(),
            spec,
        };
        let command = ModuleCommand::Deploy { name: request.name.clone(), version: Box::new(version) };
        // Check the deployment before creating its dead-letter topic, so that a refused deploy
        // leaves nothing behind.
        {
            let state = self.controller.state();
            let mut topics = state.topics.clone();
            topics
                .entry(dead_letter_topic.clone())
                .or_insert_with(|| Topic::new(0, dead_letter_topic.clone(), 1, TopicConfig::default(), 1).into());
            deployments::apply(&mut state.modules.clone(), &topics, command.clone())?;
        }
        // The directory grant within the broker's connector_dir_roots (after the spec's own
        // rules, which name a relative path or one climbing with "..").
        if let Some(dir) = &granted_dir {
            self.plugins.check_dir_grant(dir)?;
        }
        // Only a deployment that passed its checks stores and compiles its component; if the
        // deploy fails after that, a component no deployment uses is dropped again.
        let _changes = self.plugins.lock_changes().await;
        let plugins = self.plugins.clone();
        let upload = bytes.clone();
        let module = tokio::task::spawn_blocking(move || plugins.accept(&upload, kind))
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))??;
        // A connector that sends HTTP requests needs somewhere it may send them.
        if let (Some(import), true) = (module.http_import(), http_allow.is_empty()) {
            if let Err(cleanup) = self.plugins.drop_unused(&sha256) {
                tracing::warn!(error = %cleanup, "dropping the component of a refused deploy");
            }
            return Err(WireError::new(
                ErrorCode::InvalidModule,
                format!(
                    "the component imports {import} (outgoing HTTP), but the connector is granted no host: list \
                     the host:port entries it may reach in capabilities.http_allow (--http-allow)"
                ),
            ));
        }
        match self.finish_deploy(&request.name, &dead_letter_topic, command).await {
            Ok(deployment) => {
                tracing::info!(module = %deployment.name, version = deployment.active_version, kind = kind.as_str(), sha256 = %module.sha256(), "module deployed");
                Ok(self.describe_deployment(&deployment))
            }
            Err(e) => {
                if let Err(cleanup) = self.plugins.drop_unused(&sha256) {
                    tracing::warn!(error = %cleanup, "dropping the component of a failed deploy");
                }
                Err(e)
            }
        }
    }

    /// The second half of a deploy: its dead-letter topic, then the deployment itself.
    async fn finish_deploy(
        &self,
        name: &str,
        dead_letter_topic: &str,
        command: ModuleCommand,
    ) -> Result<Deployment, WireError> {
        if self.topic(dead_letter_topic).is_err() {
            let created = self.create_topic(dead_letter_topic, 1, TopicConfig::default()).await;
            match created {
                Ok(_) => tracing::info!(topic = %dead_letter_topic, module = %name, "dead-letter topic created"),
                Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.controller.propose(Command::Module(command)).await?;
        let Event::Module(deployment) = event else { return Err(mismatched("Deploy", &event)) };
        self.plugins.metrics(&deployment.name).failures_consecutive.store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(deployment)
    }

    pub async fn module_action(&self, name: &str, action: ModuleAction) -> Result<ModuleDescription, WireError> {
        let name = name.to_owned();
        let command = match action {
            ModuleAction::Pause => ModuleCommand::Pause { name: name.clone(), reason: "paused by an operator".into() },
            ModuleAction::Resume => ModuleCommand::Resume { name: name.clone() },
            ModuleAction::Rollback => ModuleCommand::Rollback { name: name.clone() },
            ModuleAction::Remove => ModuleCommand::Remove { name: name.clone() },
        };
        let _changes = self.plugins.lock_changes().await;
        let event = self.controller.propose(Command::Module(command)).await?;
        let Event::Module(deployment) = event else { return Err(mismatched("a module command", &event)) };
        let description = self.describe_deployment(&deployment);
        match action {
            ModuleAction::Remove => {
                self.plugins.forget(&name);
                self.plugins.clear_progress(&name)?;
                for version in &deployment.versions {
                    self.plugins.drop_unused(&version.sha256)?;
                }
            }
            ModuleAction::Resume | ModuleAction::Rollback => {
                self.plugins.metrics(&name).failures_consecutive.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            ModuleAction::Pause => {}
        }
        tracing::info!(module = %name, ?action, version = deployment.active_version, "module deployment changed");
        Ok(description)
    }

    pub fn list_modules(&self) -> ListModulesResponse {
        ListModulesResponse { modules: self.deployments().iter().map(|d| self.describe_deployment(d)).collect() }
    }

    pub fn describe_module(&self, name: &str) -> Result<ModuleDescription, WireError> {
        let state = self.controller.state();
        let deployment = state.modules.get(name).ok_or_else(|| deployments::unknown(name))?;
        Ok(self.describe_deployment(deployment))
    }

    pub(super) fn describe_deployment(&self, d: &Deployment) -> ModuleDescription {
        ModuleDescription {
            name: d.name.clone(),
            kind: d.kind.as_str().to_owned(),
            active_version: d.active_version,
            versions: d
                .versions
                .iter()
                .map(|v| ModuleVersionDescription {
                    version: v.version,
                    sha256: v.sha256.clone(),
                    size_bytes: v.size_bytes,
                    deployed_at_ms: v.deployed_at_ms,
                    inputs: v.spec.inputs.clone(),
                    output: v.spec.output.clone(),
                    topic: v.spec.topic.clone(),
                    params: v.spec.params.clone(),
                    deadline_ms: v.spec.limits.deadline_ms,
                    memory_bytes: v.spec.limits.memory_bytes,
                    dead_letter_topic: v.spec.dead_letter_topic.clone(),
                    failures_max: v.spec.failures_max,
                    connector: v.spec.connector.as_ref().map(|c| ConnectorDescription {
                        secret_names: c.secrets.keys().cloned().collect(),
                        dir: c.dir.clone(),
                        dir_writable: c.dir_writable,
                        tasks_max: c.tasks_max,
                        poll_interval_ms: c.poll_interval_ms,
                        batch_records: c.batch_records,
                        http_allow: c.http_allow.clone(),
                        transforms: c.transforms.clone(),
                    }),
                })
                .collect(),
            paused: d.paused.clone(),
            metrics: {
                let mut metrics = self.plugins.metrics(&d.name).snapshot();
                // How far behind each partition's high watermark the stored progress is.
                for (at, next) in &metrics.progress {
                    let Some((topic, partition)) = at.rsplit_once('/') else { continue };
                    let Ok(partition) = partition.parse::<u32>() else { continue };
                    if let Ok((_, high_watermark)) = self.offsets(topic, partition) {
                        metrics.lag.insert(at.clone(), (high_watermark - next).max(0));
                    }
                }
                metrics
            },
        }
    }
}
