//! How a call into a plugin fails, as the broker sees it.

/// Why a call failed. The instance is discarded; the next call starts a fresh one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("interrupted at its deadline of {deadline_ms} ms")]
    Timeout { deadline_ms: u64 },
    #[error("stopped at its memory cap of {memory_bytes} bytes (asked to grow to {desired_bytes})")]
    MemoryCap { memory_bytes: u64, desired_bytes: u64 },
    #[error("trapped: {0}")]
    Trap(String),
    /// The module answered, but not what the contract allows.
    #[error("{0}")]
    Contract(String),
    /// The batch could not be handed to the module (it does not fit the contract's buffer).
    #[error("{0}")]
    Input(String),
}
