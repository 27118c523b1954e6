//! Weir's schema registry: Avro schemas with Confluent Schema Registry semantics (subjects,
//! versions, global ids, compatibility levels) and its REST API.
//!
//! `state` and `compat` are pure; `api` serves HTTP over any [`api::Backend`], which the broker
//! implements by replicating [`state::RegistryCommand`]s through its controller.

#[cfg(feature = "api")]
pub mod api;
pub mod compat;
pub mod schema;
pub mod state;
pub mod validate;

/// Registry errors, each with Confluent's HTTP status and error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(u32),
    #[error("Schema {0} not found")]
    SchemaNotFound(u32),
    #[error("Schema not found")]
    SchemaNotInSubject,
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{0}' Version {1} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, u32),
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, u32),
    #[error("Schema being registered is incompatible with an earlier schema for subject: {}", .0.join("; "))]
    Incompatible(Vec<String>),
    #[error("{0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("{0}")]
    InvalidCompatibility(String),
    #[error("{0}")]
    InvalidMode(String),
    #[error("{0}")]
    OperationNotPermitted(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    ReferenceExists(String),
    #[error("{0}")]
    LimitReached(String),
    #[error("Error in the backend data store: {0}")]
    Store(String),
}

impl RegistryError {
    /// (HTTP status, Confluent error code).
    pub fn status_and_code(&self) -> (u16, u32) {
        match self {
            Self::SubjectNotFound(_) => (404, 40401),
            Self::VersionNotFound(_) => (404, 40402),
            Self::SchemaNotFound(_) | Self::SchemaNotInSubject => (404, 40403),
            Self::SubjectSoftDeleted(_) => (404, 40404),
            Self::SubjectNotSoftDeleted(_) => (404, 40405),
            Self::VersionSoftDeleted(..) => (404, 40406),
            Self::VersionNotSoftDeleted(..) => (404, 40407),
            Self::Incompatible(_) => (409, 409),
            Self::InvalidSchema(_) => (422, 42201),
            Self::InvalidVersion(_) => (422, 42202),
            Self::InvalidCompatibility(_) => (422, 42203),
            Self::InvalidMode(_) => (422, 42204),
            Self::OperationNotPermitted(_) => (422, 42205),
            Self::ReferenceExists(_) => (422, 42206),
            // Not a Confluent code: Confluent's registry has no such limits.
            Self::LimitReached(_) => (422, 42290),
            Self::BadRequest(_) => (400, 400),
            Self::Store(_) => (500, 50001),
        }
    }
}
