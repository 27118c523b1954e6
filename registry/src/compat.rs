//! Compatibility levels and checks, following Avro's schema resolution rules (defaults, type
//! promotion, unions, enums, aliases) as `apache-avro` implements them.

use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};

use crate::schema::ParsedSchema;
use crate::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    pub fn is_transitive(self) -> bool {
        matches!(self, Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }
}

impl std::str::FromStr for Compatibility {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        Ok(match s {
            "NONE" => Self::None,
            "BACKWARD" => Self::Backward,
            "BACKWARD_TRANSITIVE" => Self::BackwardTransitive,
            "FORWARD" => Self::Forward,
            "FORWARD_TRANSITIVE" => Self::ForwardTransitive,
            "FULL" => Self::Full,
            "FULL_TRANSITIVE" => Self::FullTransitive,
            other => {
                return Err(RegistryError::InvalidCompatibility(format!(
                    "Invalid compatibility level {other:?}: expected NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE"
                )))
            }
        })
    }
}

/// Problems that make `candidate` incompatible with `previous` under `level`; empty when
/// compatible. BACKWARD: the new schema reads data written with the old one. FORWARD: the old
/// schema reads data written with the new one. FULL: both.
pub fn check_compatibility(level: Compatibility, candidate: &ParsedSchema, previous: &ParsedSchema) -> Vec<String> {
    let (Some(new), Some(old)) = (&candidate.avro, &previous.avro) else {
        return vec!["schemas of different types cannot be compared".into()];
    };
    let backward = || {
        SchemaCompatibility::can_read(old, new)
            .err()
            .map(|e| format!("new schema cannot read data written with an older one: {e}"))
    };
    let forward = || {
        SchemaCompatibility::can_read(new, old)
            .err()
            .map(|e| format!("an older schema cannot read data written with the new one: {e}"))
    };
    match level {
        Compatibility::None => Vec::new(),
        Compatibility::Backward | Compatibility::BackwardTransitive => backward().into_iter().collect(),
        Compatibility::Forward | Compatibility::ForwardTransitive => forward().into_iter().collect(),
        Compatibility::Full | Compatibility::FullTransitive => backward().into_iter().chain(forward()).collect(),
    }
}
