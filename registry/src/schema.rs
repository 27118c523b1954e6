//! Parsing schemas and their canonical form.

use apache_avro::Schema as AvroSchema;
use serde::{Deserialize, Serialize};

use crate::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SchemaType {
    #[serde(rename = "AVRO")]
    Avro,
    #[serde(rename = "JSON")]
    Json,
}

impl SchemaType {
    /// The `schemaType` field as the REST API takes it; absent means Avro.
    pub fn from_api(value: Option<&str>) -> Result<Self, RegistryError> {
        match value.unwrap_or("AVRO") {
            "AVRO" => Ok(Self::Avro),
            "JSON" => Ok(Self::Json),
            other => Err(RegistryError::InvalidSchema(format!(
                "Unknown schema type {other:?}: this registry supports AVRO and JSON"
            ))),
        }
    }

    pub fn api_name(self) -> &'static str {
        match self {
            Self::Avro => "AVRO",
            Self::Json => "JSON",
        }
    }
}

/// A parsed schema and its canonical form.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    pub schema_type: SchemaType,
    pub canonical: String,
    pub avro: Option<AvroSchema>,
    pub json: Option<serde_json::Value>,
}

impl ParsedSchema {
    pub fn parse(schema_type: SchemaType, text: &str) -> Result<Self, RegistryError> {
        match schema_type {
            SchemaType::Avro => {
                let avro = AvroSchema::parse_str(text)
                    .map_err(|e| RegistryError::InvalidSchema(format!("Invalid schema {text}: {e}")))?;
                // Avro's Parsing Canonical Form drops defaults and aliases, which compatibility
                // depends on; the normalized full JSON keeps them while ignoring layout.
                let canonical = serde_json::to_string(&avro)
                    .map_err(|e| RegistryError::InvalidSchema(format!("Invalid schema {text}: {e}")))?;
                Ok(Self { schema_type, canonical, avro: Some(avro), json: None })
            }
            SchemaType::Json => {
                let invalid = |why: String| RegistryError::InvalidSchema(format!("Invalid schema {text}: {why}"));
                let value: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
                jsonschema::meta::validate(&value).map_err(|e| invalid(e.to_string()))?;
                jsonschema::validator_for(&value).map_err(|e| invalid(e.to_string()))?;
                // serde_json's map keeps keys sorted, so this form ignores key order and layout.
                let canonical = serde_json::to_string(&value).map_err(|e| invalid(e.to_string()))?;
                Ok(Self { schema_type, canonical, avro: None, json: Some(value) })
            }
        }
    }
}
