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

/// A reference from a schema to a named type registered under another subject, as in
/// Confluent's API: `name` is the type's full name as the referencing schema writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: u32,
}

const AVRO_PRIMITIVES: &[&str] = &["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// An Avro schema with each referenced named type written out where it is first used, so
/// that the result parses, resolves and decodes on its own. `definitions` are the referenced
/// schemas' texts (themselves already inlined).
pub fn inline_avro_references(text: &str, definitions: &[String]) -> Result<String, RegistryError> {
    let invalid = |why: String| RegistryError::InvalidSchema(format!("Invalid schema {text}: {why}"));
    let mut by_name = std::collections::HashMap::new();
    for definition in definitions {
        let value: serde_json::Value = serde_json::from_str(definition).map_err(|e| invalid(e.to_string()))?;
        let name = full_name_of(&value, "").ok_or_else(|| invalid("a referenced schema is not a named type".into()))?;
        by_name.insert(name, value);
    }
    let mut schema: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut defined = std::collections::HashSet::new();
    inline(&mut schema, "", &by_name, &mut defined);
    serde_json::to_string(&schema).map_err(|e| invalid(e.to_string()))
}

fn full_name_of(value: &serde_json::Value, enclosing: &str) -> Option<String> {
    let name = value.get("name")?.as_str()?;
    if name.contains('.') {
        return Some(name.to_owned());
    }
    let namespace = value.get("namespace").and_then(|n| n.as_str()).unwrap_or(enclosing);
    Some(if namespace.is_empty() { name.to_owned() } else { format!("{namespace}.{name}") })
}

fn inline(
    value: &mut serde_json::Value,
    namespace: &str,
    definitions: &std::collections::HashMap<String, serde_json::Value>,
    defined: &mut std::collections::HashSet<String>,
) {
    use serde_json::Value;
    match value {
        Value::String(s) if !AVRO_PRIMITIVES.contains(&s.as_str()) => {
            let name = s.clone();
            let full =
                if name.contains('.') || namespace.is_empty() { name.clone() } else { format!("{namespace}.{name}") };
            for candidate in [full, name.clone()] {
                if defined.contains(&candidate) {
                    return;
                }
                if let Some(definition) = definitions.get(&candidate) {
                    *value = definition.clone();
                    inline(value, namespace, definitions, defined);
                    return;
                }
            }
        }
        Value::Array(union) => union.iter_mut().for_each(|branch| inline(branch, namespace, definitions, defined)),
        Value::Object(object) => {
            let kind = object.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
            let mut inner_namespace = namespace.to_owned();
            if matches!(kind.as_str(), "record" | "error" | "enum" | "fixed") {
                if let Some(full) = full_name_of(&Value::Object(object.clone()), namespace) {
                    inner_namespace = full.rsplit_once('.').map(|(ns, _)| ns.to_owned()).unwrap_or_default();
                    defined.insert(full);
                }
            }
            match kind.as_str() {
                "record" | "error" => {
                    if let Some(Value::Array(fields)) = object.get_mut("fields") {
                        for field in fields {
                            if let Some(t) = field.get_mut("type") {
                                inline(t, &inner_namespace, definitions, defined);
                            }
                        }
                    }
                }
                "array" => {
                    if let Some(items) = object.get_mut("items") {
                        inline(items, namespace, definitions, defined);
                    }
                }
                "map" => {
                    if let Some(values) = object.get_mut("values") {
                        inline(values, namespace, definitions, defined);
                    }
                }
                "enum" | "fixed" => {}
                _ => {
                    if let Some(t) = object.get_mut("type") {
                        inline(t, namespace, definitions, defined);
                    }
                }
            }
        }
        _ => {}
    }
}
