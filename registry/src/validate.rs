//! Broker-side validation of records against registered schemas.
//!
//! A record must carry Confluent's wire format: magic byte 0, a 4-byte big-endian schema id,
//! then the Avro binary datum. The id must be registered for the record's subject and the datum
//! must decode with that schema, consuming every byte. Parsed schemas are cached per id, so a
//! batch costs one parse per schema, not per record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::Schema as AvroSchema;

use crate::schema::SchemaType;
use crate::state::RegistryState;

/// How a record's subject is named (Confluent's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectNameStrategy {
    TopicName,
    RecordName,
    TopicRecordName,
}

/// Bounds what decoding one Avro record may allocate: no string, bytes or array of a record
/// longer than `bytes` (elements, for arrays). apache-avro otherwise reserves what a record's
/// length field claims, so ten bytes claiming 2^29 array items asked for tens of GB. Set once
/// per process, before the first decode; later calls keep the first value, which is returned.
pub fn limit_decoded_allocation(bytes: usize) -> usize {
    apache_avro::util::max_allocation_bytes(bytes)
}

#[derive(Default)]
pub struct Validator {
    schemas: Mutex<HashMap<u32, Arc<AvroSchema>>>,
    json_schemas: Mutex<HashMap<u32, Arc<jsonschema::Validator>>>,
}

/// A registered schema, compiled, that records are checked with.
#[derive(Clone)]
pub enum Compiled {
    Avro(Arc<AvroSchema>),
    Json(Arc<jsonschema::Validator>),
}

fn part_name(is_key: bool) -> &'static str {
    if is_key {
        "key"
    } else {
        "value"
    }
}

/// The schema id a key or value carries in Confluent's wire format.
pub fn schema_id(is_key: bool, bytes: Option<&[u8]>) -> Result<u32, String> {
    let part = part_name(is_key);
    let bytes = bytes.ok_or_else(|| format!("{part} is null but the topic requires schema-validated {part}s"))?;
    if bytes.len() < 5 || bytes[0] != 0 {
        return Err(format!(
            "{part} does not start with the schema registry wire format (magic byte 0 and a 4-byte schema id)"
        ));
    }
    Ok(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]))
}

impl Validator {
    /// Checks one record's key or value; the error says what is wrong, for the caller to
    /// prefix with the record's position.
    pub fn check(
        &self,
        state: &RegistryState,
        topic: &str,
        is_key: bool,
        strategy: SubjectNameStrategy,
        bytes: Option<&[u8]>,
    ) -> Result<(), String> {
        let id = schema_id(is_key, bytes)?;
        let schema = self.schema_for(state, topic, is_key, strategy, id)?;
        check_datum(&schema, is_key, id, bytes)
    }

    /// The schema `id`, once it is known to be registered for the subject a key or value of
    /// `topic` has under `strategy`. The only step that reads the registry's state: a caller
    /// holding a lock on it looks up each distinct id of a request, lets go, then checks the
    /// records with [`check_datum`]. A schema is resolved and compiled once per process.
    pub fn schema_for(
        &self,
        state: &RegistryState,
        topic: &str,
        is_key: bool,
        strategy: SubjectNameStrategy,
        id: u32,
    ) -> Result<Compiled, String> {
        let part = part_name(is_key);
        let stored =
            state.schemas.get(&id).ok_or_else(|| format!("{part} names schema id {id}, which is not registered"))?;
        let (compiled, subject) = if stored.schema_type == SchemaType::Json {
            let subject = match strategy {
                SubjectNameStrategy::TopicName => format!("{topic}-{part}"),
                _ => return Err("record-name subject strategies need a named (Avro) schema".into()),
            };
            (Compiled::Json(self.json_schema(id, &stored.schema)?), subject)
        } else {
            let schema = self.schema(id, || {
                state
                    .resolve(stored.schema_type, &stored.schema, &stored.references)
                    .map_err(|e| format!("registered schema {id} does not resolve: {e}"))
            })?;
            let subject = match strategy {
                SubjectNameStrategy::TopicName => format!("{topic}-{part}"),
                SubjectNameStrategy::RecordName => full_name(&schema)?,
                SubjectNameStrategy::TopicRecordName => format!("{topic}-{}", full_name(&schema)?),
            };
            (Compiled::Avro(schema), subject)
        };
        if !state.live_versions(&subject).iter().any(|v| v.id == id) {
            return Err(format!("{part} names schema id {id}, which is not registered for subject {subject}"));
        }
        Ok(compiled)
    }

    /// The parsed schema of `id`, parsed from `text()` the first time.
    fn schema(&self, id: u32, text: impl FnOnce() -> Result<String, String>) -> Result<Arc<AvroSchema>, String> {
        if let Some(schema) = self.schemas.lock().expect("schema cache lock").get(&id) {
            return Ok(schema.clone());
        }
        let schema = Arc::new(
            AvroSchema::parse_str(&text()?).map_err(|e| format!("registered schema {id} does not parse: {e}"))?,
        );
        self.schemas.lock().expect("schema cache lock").insert(id, schema.clone());
        Ok(schema)
    }

    fn json_schema(&self, id: u32, text: &str) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(v) = self.json_schemas.lock().expect("schema cache lock").get(&id) {
            return Ok(v.clone());
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("registered schema {id} is not JSON: {e}"))?;
        let validator = Arc::new(
            jsonschema::validator_for(&value).map_err(|e| format!("registered schema {id} does not compile: {e}"))?,
        );
        self.json_schemas.lock().expect("schema cache lock").insert(id, validator.clone());
        Ok(validator)
    }
}

/// Checks a key or value (wire format included) against the schema its id names.
pub fn check_datum(schema: &Compiled, is_key: bool, id: u32, bytes: Option<&[u8]>) -> Result<(), String> {
    let part = part_name(is_key);
    let datum = bytes.and_then(|b| b.get(5..)).ok_or_else(|| format!("{part} is shorter than its schema id"))?;
    match schema {
        Compiled::Json(validator) => {
            let document: serde_json::Value = serde_json::from_slice(datum)
                .map_err(|e| format!("{part} is not JSON after its schema id {id}: {e}"))?;
            if !validator.is_valid(&document) {
                return Err(format!("{part} does not match JSON schema id {id}"));
            }
        }
        Compiled::Avro(schema) => {
            let mut datum = datum;
            let value = apache_avro::from_avro_datum(schema, &mut datum, None)
                .map_err(|e| format!("{part} does not decode with schema id {id}: {e}"))?;
            // apache-avro 0.21 reads a string cut short as null instead of failing; checking the
            // value against the schema catches that and any other partial read.
            if !value.validate(schema) {
                return Err(format!(
                    "{part} does not decode with schema id {id}: the datum is truncated or does not match the schema"
                ));
            }
            if !datum.is_empty() {
                return Err(format!("{part} has {} bytes left over after decoding with schema id {id}", datum.len()));
            }
        }
    }
    Ok(())
}

fn full_name(schema: &AvroSchema) -> Result<String, String> {
    schema
        .name()
        .map(|n| n.fullname(None))
        .ok_or_else(|| "RecordNameStrategy needs a named schema (record, enum or fixed)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RegistryCommand;

    const U: &str = r#"{"type":"record","name":"U","namespace":"t","fields":[{"name":"a","type":"string"}]}"#;

    fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(datum);
        v
    }

    fn check_case(state: &RegistryState, bytes: Option<&[u8]>, expected: Result<(), &str>) {
        let got = Validator::default().check(state, "orders", false, SubjectNameStrategy::TopicName, bytes);
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{e:?} should mention {needle:?}"),
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn wire_format_id_subject_and_payload_are_checked() {
        let mut state = RegistryState::default();
        state
            .apply(RegistryCommand::Register {
                references: Vec::new(),
                subject: "orders-value".into(),
                schema_type: SchemaType::Avro,
                schema: U.into(),
            })
            .unwrap();
        let other = r#"{"type":"record","name":"V","fields":[{"name":"b","type":"int"}]}"#;
        state
            .apply(RegistryCommand::Register {
                references: Vec::new(),
                subject: "payments-value".into(),
                schema_type: SchemaType::Avro,
                schema: other.into(),
            })
            .unwrap();
        check_case(&state, Some(&framed(1, &[4, b'h', b'i'])), Ok(()));
        check_case(&state, None, Err("null"));
        check_case(&state, Some(b"{\"a\":\"hi\"}"), Err("magic byte 0"));
        check_case(&state, Some(&framed(9, &[4, b'h', b'i'])), Err("id 9, which is not registered"));
        check_case(&state, Some(&framed(2, &[4])), Err("not registered for subject orders-value"));
        check_case(&state, Some(&framed(1, &[40, b'h'])), Err("does not decode"));
        check_case(&state, Some(&framed(1, &[4, b'h', b'i', 7])), Err("left over"));
    }

    #[test]
    fn json_schema_records_are_checked() {
        let mut state = RegistryState::default();
        let schema = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
        state
            .apply(RegistryCommand::Register {
                references: Vec::new(),
                subject: "orders-value".into(),
                schema_type: SchemaType::Json,
                schema: schema.into(),
            })
            .unwrap();
        check_case(&state, Some(&framed(1, br#"{"id": 7}"#)), Ok(()));
        check_case(&state, Some(&framed(1, br#"{"id": "seven"}"#)), Err("does not match JSON schema id 1"));
        check_case(&state, Some(&framed(1, b"{oops")), Err("is not JSON"));
    }
}
