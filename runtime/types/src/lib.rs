//! The plugin types shared by the Wasm host (`weir-runtime`) and the metadata that records
//! deployments (`weir-meta`): what kind a plugin is and the limits of its calls. A crate of
//! its own so that the metadata knows these without depending on wasmtime.

/// What a plugin does, i.e. which world of the WIT package it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Transform,
    Partitioner,
    Validator,
}

impl PluginKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "transform" => Ok(Self::Transform),
            "partitioner" => Ok(Self::Partitioner),
            "validator" => Ok(Self::Validator),
            other => Err(format!("unknown module kind {other:?}: use transform, partitioner or validator")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transform => "transform",
            Self::Partitioner => "partitioner",
            Self::Validator => "validator",
        }
    }

    /// The interface a component of this kind must export.
    pub fn export_name(self) -> &'static str {
        match self {
            Self::Transform => "weir:plugin/transformer@0.1.0",
            Self::Partitioner => "weir:plugin/partition-chooser@0.1.0",
            Self::Validator => "weir:plugin/record-validator@0.1.0",
        }
    }
}

/// Per-call limits of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Longest one call (one batch) may run before it is interrupted.
    pub deadline_ms: u64,
    /// Most linear memory an instance may hold.
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline_ms: 100, memory_bytes: 64 << 20 }
    }
}

impl Limits {
    pub const DEADLINE_MS_MAX: u64 = 60_000;
    pub const MEMORY_BYTES_MAX: u64 = 4 << 30;

    pub fn validate(&self) -> Result<(), String> {
        if self.deadline_ms == 0 || self.deadline_ms > Self::DEADLINE_MS_MAX {
            return Err(format!("deadline.ms = {} is out of range: 1 to {}", self.deadline_ms, Self::DEADLINE_MS_MAX));
        }
        if self.memory_bytes < (1 << 20) || self.memory_bytes > Self::MEMORY_BYTES_MAX {
            return Err(format!(
                "memory.bytes = {} is out of range: 1 MiB to {} bytes",
                self.memory_bytes,
                Self::MEMORY_BYTES_MAX
            ));
        }
        Ok(())
    }
}
