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
    if let (Some(new), Some(old)) = (&candidate.json, &previous.json) {
        let backward = || json::accepts_all(new, old, "#");
        let forward = || json::accepts_all(old, new, "#");
        return match level {
            Compatibility::None => Vec::new(),
            Compatibility::Backward | Compatibility::BackwardTransitive => backward(),
            Compatibility::Forward | Compatibility::ForwardTransitive => forward(),
            Compatibility::Full | Compatibility::FullTransitive => backward().into_iter().chain(forward()).collect(),
        };
    }
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

/// JSON Schema compatibility: whether every document one schema accepts, another accepts too.
/// Covers what schema evolution changes in practice: `type` (with integer widening to number),
/// `properties` (recursively), `required`, `additionalProperties`, `enum`, `items`, and the
/// numeric and length bounds. Keywords outside this set are compared for equality, so an
/// unrecognised change is reported rather than passed.
mod json {
    use serde_json::Value;

    const HANDLED: &[&str] = &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "items",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "title",
        "description",
        "$schema",
        "$id",
        "default",
        "examples",
        "$comment",
    ];

    fn types(schema: &Value) -> Option<Vec<String>> {
        match schema.get("type")? {
            Value::String(t) => Some(vec![t.clone()]),
            Value::Array(ts) => Some(ts.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()),
            _ => None,
        }
    }

    /// Problems that make `reader` reject a document `writer` accepts; empty when none.
    pub fn accepts_all(reader: &Value, writer: &Value, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if reader == writer || reader == &Value::Bool(true) || reader.as_object().is_some_and(|o| o.is_empty()) {
            return problems;
        }
        let (Some(r), Some(w)) = (reader.as_object(), writer.as_object()) else {
            return vec![format!("{path}: schema changed from {writer} to {reader}")];
        };
        if let Some(reader_types) = types(reader) {
            let writer_types = types(writer).unwrap_or_else(|| vec!["any".into()]);
            for t in &writer_types {
                let widened = t == "integer" && reader_types.iter().any(|r| r == "number");
                if !reader_types.contains(t) && !widened {
                    problems.push(format!("{path}: type {t} is no longer accepted (now {reader_types:?})"));
                }
            }
        }
        if let Some(Value::Array(reader_enum)) = r.get("enum") {
            match w.get("enum") {
                Some(Value::Array(writer_enum)) => {
                    for v in writer_enum.iter().filter(|v| !reader_enum.contains(v)) {
                        problems.push(format!("{path}: enum value {v} is no longer accepted"));
                    }
                }
                _ => problems.push(format!("{path}: values are now restricted to an enum")),
            }
        }
        let empty = serde_json::Map::new();
        let reader_props = r.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let writer_props = w.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let required = |o: &serde_json::Map<String, Value>| -> Vec<String> {
            o.get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let writer_required = required(w);
        for name in required(r) {
            if !writer_required.contains(&name) {
                problems.push(format!("{path}: property {name} is now required"));
            }
        }
        let reader_closed = r.get("additionalProperties") == Some(&Value::Bool(false));
        for (name, writer_prop) in writer_props {
            match reader_props.get(name) {
                Some(reader_prop) => {
                    problems.extend(accepts_all(reader_prop, writer_prop, &format!("{path}/properties/{name}")))
                }
                None if reader_closed => {
                    problems.push(format!("{path}: property {name} was removed from a closed content model"))
                }
                None => {}
            }
        }
        if reader_closed && w.get("additionalProperties") != Some(&Value::Bool(false)) {
            problems.push(format!("{path}: additional properties are no longer allowed"));
        }
        if let (Some(ri), Some(wi)) = (r.get("items"), w.get("items")) {
            problems.extend(accepts_all(ri, wi, &format!("{path}/items")));
        }
        for (key, tighter) in [
            ("minimum", true),
            ("exclusiveMinimum", true),
            ("minLength", true),
            ("minItems", true),
            ("maximum", false),
            ("exclusiveMaximum", false),
            ("maxLength", false),
            ("maxItems", false),
        ] {
            let Some(rv) = r.get(key).and_then(Value::as_f64) else { continue };
            let narrowed = match w.get(key).and_then(Value::as_f64) {
                Some(wv) => {
                    if tighter {
                        rv > wv
                    } else {
                        rv < wv
                    }
                }
                None => true,
            };
            if narrowed {
                problems.push(format!("{path}: {key} narrowed to {rv}"));
            }
        }
        for (key, value) in r {
            if !HANDLED.contains(&key.as_str()) && w.get(key) != Some(value) {
                problems.push(format!("{path}: keyword {key} changed"));
            }
        }
        problems
    }
}
