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

/// Parses an Avro schema without letting apache-avro panic: apache-avro 0.21 unwraps its
/// check of a named type's name and aliases, so names are checked here first (the error names
/// the bad one), and any other panic of the parser becomes an error.
pub fn parse_avro(text: &str) -> Result<AvroSchema, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    check_avro_names(&value)?;
    match std::panic::catch_unwind(|| AvroSchema::parse_str(text)) {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(_) => Err("the Avro schema parser failed on it".into()),
    }
}

/// Avro's rule for a name: dot-separated parts, each `[A-Za-z_][A-Za-z0-9_]*`.
fn valid_avro_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Every name, namespace and alias of a named type or a field follows Avro's rule.
fn check_avro_names(value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter().try_for_each(check_avro_names),
        // A schema object (it has a type) or a field; a default value is data, not schema.
        Value::Object(object) if object.contains_key("type") => {
            let names = object.get("name").into_iter().chain(
                object
                    .get("aliases")
                    .into_iter()
                    .flat_map(|a| a.as_array().map(|a| a.iter().collect::<Vec<_>>()).unwrap_or_else(|| vec![a])),
            );
            for name in names {
                match name.as_str() {
                    Some(n) if valid_avro_name(n) => {}
                    _ => {
                        return Err(format!("{name} is not a valid Avro name ([A-Za-z_][A-Za-z0-9_]*, dot-separated)"))
                    }
                }
            }
            if let Some(namespace) = object.get("namespace") {
                match namespace.as_str() {
                    Some("") => {}
                    Some(ns) if valid_avro_name(ns) => {}
                    _ => return Err(format!("{namespace} is not a valid Avro namespace")),
                }
            }
            object.iter().filter(|(key, _)| *key != "default").try_for_each(|(_, v)| check_avro_names(v))
        }
        Value::Object(object) => object.values().try_for_each(check_avro_names),
        _ => Ok(()),
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
                let avro = parse_avro(text)
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
/// schemas' texts, every one the references bring in transitively, each named type once. The
/// types written out may add up to `bytes_max` bytes of schema text.
pub fn inline_avro_references(text: &str, definitions: &[&str], bytes_max: usize) -> Result<String, RegistryError> {
    let invalid = |why: String| RegistryError::InvalidSchema(format!("Invalid schema: {why}"));
    let mut by_name = std::collections::HashMap::new();
    for definition in definitions {
        let value: serde_json::Value = serde_json::from_str(definition).map_err(|e| invalid(e.to_string()))?;
        let name = full_name_of(&value, "").ok_or_else(|| invalid("a referenced schema is not a named type".into()))?;
        match by_name.entry(name) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((value, definition.len()));
            }
            std::collections::hash_map::Entry::Occupied(slot) if slot.get().0 != value => {
                return Err(invalid(format!("two referenced schemas define {} differently", slot.key())));
            }
            std::collections::hash_map::Entry::Occupied(_) => {}
        }
    }
    let mut schema: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut defined = std::collections::HashSet::new();
    let mut budget = bytes_max.saturating_sub(text.len());
    inline(&mut schema, "", &by_name, &mut defined, &mut budget)
        .map_err(|()| invalid(format!("with its references written out it exceeds {bytes_max} bytes")))?;
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

/// Writes out referenced types where first used; `Err` once the written-out text would pass
/// `budget` bytes.
fn inline(
    value: &mut serde_json::Value,
    namespace: &str,
    definitions: &std::collections::HashMap<String, (serde_json::Value, usize)>,
    defined: &mut std::collections::HashSet<String>,
    budget: &mut usize,
) -> Result<(), ()> {
    use serde_json::Value;
    match value {
        Value::String(s) if !AVRO_PRIMITIVES.contains(&s.as_str()) => {
            let name = s.clone();
            let full =
                if name.contains('.') || namespace.is_empty() { name.clone() } else { format!("{namespace}.{name}") };
            for candidate in [full, name.clone()] {
                if defined.contains(&candidate) {
                    return Ok(());
                }
                if let Some((definition, len)) = definitions.get(&candidate) {
                    *budget = budget.checked_sub(*len).ok_or(())?;
                    *value = definition.clone();
                    return inline(value, namespace, definitions, defined, budget);
                }
            }
        }
        Value::Array(union) => {
            for branch in union {
                inline(branch, namespace, definitions, defined, budget)?;
            }
        }
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
                                inline(t, &inner_namespace, definitions, defined, budget)?;
                            }
                        }
                    }
                }
                "array" => {
                    if let Some(items) = object.get_mut("items") {
                        inline(items, namespace, definitions, defined, budget)?;
                    }
                }
                "map" => {
                    if let Some(values) = object.get_mut("values") {
                        inline(values, namespace, definitions, defined, budget)?;
                    }
                }
                "enum" | "fixed" => {}
                _ => {
                    if let Some(t) = object.get_mut("type") {
                        inline(t, namespace, definitions, defined, budget)?;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}
