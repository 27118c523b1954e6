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
use crate::state::{RegistryState, StoredSchema};

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
            crate::schema::parse_avro(&text()?).map_err(|e| format!("registered schema {id} does not parse: {e}"))?,
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

/// Decodes keys and values in Confluent's wire format with the schemas their ids name, as
/// JSON, for people to read (the console's message browser), parsing each schema once. Avro
/// is decoded within the process-wide allocation limit ([`limit_decoded_allocation`]); JSON
/// Schema payloads are parsed as JSON. A schema must be registered, under any subject.
pub struct DatumDecoder<'a> {
    state: &'a RegistryState,
    avro: HashMap<u32, Result<AvroSchema, String>>,
}

impl<'a> DatumDecoder<'a> {
    pub fn new(state: &'a RegistryState) -> Self {
        Self { state, avro: HashMap::new() }
    }

    /// `None` when `bytes` are not in the wire format or name no registered schema; else the
    /// id they name and the datum after it decoded, or why it does not decode.
    pub fn decode(&mut self, bytes: &[u8]) -> Option<(u32, Result<serde_json::Value, String>)> {
        let id = schema_id(false, Some(bytes)).ok()?;
        let stored = self.state.schemas.get(&id)?;
        Some((id, self.decode_with(id, stored, &bytes[5..])))
    }

    fn decode_with(&mut self, id: u32, stored: &StoredSchema, datum: &[u8]) -> Result<serde_json::Value, String> {
        let state = self.state;
        let value = match stored.schema_type {
            SchemaType::Json => {
                serde_json::from_slice(datum).map_err(|e| format!("not JSON after its schema id {id}: {e}"))?
            }
            SchemaType::Avro => {
                let schema = self.avro.entry(id).or_insert_with(|| {
                    let text = state
                        .resolve(stored.schema_type, &stored.schema, &stored.references)
                        .map_err(|e| format!("registered schema {id} does not resolve: {e}"))?;
                    crate::schema::parse_avro(&text).map_err(|e| format!("registered schema {id} does not parse: {e}"))
                });
                let schema = schema.as_ref().map_err(Clone::clone)?;
                let mut rest = datum;
                let value = apache_avro::from_avro_datum(schema, &mut rest, None)
                    .map_err(|e| format!("does not decode with schema id {id}: {e}"))?;
                if !value.validate(schema) || !rest.is_empty() {
                    return Err(format!("does not decode with schema id {id}: truncated, or bytes left over"));
                }
                serde_json::Value::try_from(value).map_err(|e| format!("schema id {id}: {e}"))?
            }
        };
        Ok(value)
    }
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

    /// A seeded stand-in for a fuzzer, run with the tests (`WEIR_FUZZ_SEED` replays one):
    /// mutated schema texts never panic the parser or a registration, and mutated records never
    /// panic validation, nor make it allocate past the decode limit (set as the broker sets it).
    #[test]
    fn mutated_schemas_and_records_never_panic_the_registry() {
        use rand::{Rng, SeedableRng};
        limit_decoded_allocation(1 << 20);
        let seed: u64 = std::env::var("WEIR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xa5a0);
        eprintln!("registry property test seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let schemas = [
            U,
            r#"{"type":"record","name":"R","namespace":"n","fields":[{"name":"u","type":["null","string","long"]},{"name":"a","type":{"type":"array","items":"int"}},{"name":"m","type":{"type":"map","values":"double"}},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},{"name":"f","type":{"type":"fixed","name":"F","size":4}},{"name":"b","type":"bytes"},{"name":"nested","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"float"}]}}]}"#,
            r#"{"type":"array","items":"null"}"#,
            r#"{"type":"map","values":{"type":"array","items":"string"}}"#,
        ];
        let mut state = RegistryState::default();
        state
            .apply(RegistryCommand::SetCompatibility { subject: None, level: crate::compat::Compatibility::None })
            .unwrap();
        for (i, schema) in schemas.iter().enumerate() {
            state
                .apply(RegistryCommand::Register {
                    references: Vec::new(),
                    subject: "orders-value".into(),
                    schema_type: SchemaType::Avro,
                    schema: (*schema).into(),
                })
                .unwrap_or_else(|e| panic!("seed schema {i}: {e}"));
        }
        // Valid datums of each schema, to mutate.
        let datums: [&[u8]; 4] = [
            &[4, b'h', b'i'],
            &[2, 2, b'x', 2, 14, 0, 2, 2, b'k', 0, 0, 0, 0, 0, 0, 240, 63, 0, 2, 1, 2, 3, 4, 2, 9, 0, 0, 128, 63],
            &[6, 0],
            &[2, 2, b'k', 2, 2, b'v', 0, 0],
        ];
        // apache-avro 0.21 panicked on these; they are refused naming the bad name.
        for bad in [
            r#"{"type":"record","name":"a-b","fields":[]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"enum","name":"E","aliases":["x y"],"symbols":["A"]}}]}"#,
        ] {
            let e = crate::schema::ParsedSchema::parse(SchemaType::Avro, bad).unwrap_err().to_string();
            assert!(e.contains("is not a valid Avro name"), "{e}");
        }
        let with_default = r#"{"type":"record","name":"R","fields":[{"name":"p","type":{"type":"record","name":"P","fields":[{"name":"name","type":"string"}]},"default":{"name":"not a name"}}]}"#;
        assert!(crate::schema::ParsedSchema::parse(SchemaType::Avro, with_default).is_ok(), "defaults are data");
        let validator = Validator::default();
        for (id, datum) in datums.iter().enumerate() {
            let id = u32::try_from(id).unwrap() + 1;
            let ok = validator.check(&state, "orders", false, SubjectNameStrategy::TopicName, Some(&framed(id, datum)));
            assert_eq!(ok, Ok(()), "seed datum of schema {id}");
        }
        for _ in 0..20_000 {
            let pick = rng.gen_range(0..datums.len());
            let mut datum = datums[pick].to_vec();
            for _ in 0..rng.gen_range(1..4) {
                if datum.is_empty() || rng.gen_bool(0.2) {
                    datum.push(rng.gen());
                } else {
                    let at = rng.gen_range(0..datum.len());
                    datum[at] = rng.gen();
                }
            }
            let id = u32::try_from(pick).unwrap() + 1;
            let _ = validator.check(&state, "orders", false, SubjectNameStrategy::TopicName, Some(&framed(id, &datum)));
            // Schema texts: bytes changed, cut short or repeated, as a hostile registration sends.
            let mut text = schemas[rng.gen_range(0..schemas.len())].as_bytes().to_vec();
            let at = rng.gen_range(0..text.len());
            match rng.gen_range(0..3) {
                0 => text[at] = rng.gen(),
                1 => text.truncate(at),
                _ => {
                    let piece = text[at..].to_vec();
                    text.extend_from_slice(&piece);
                }
            }
            let text = String::from_utf8_lossy(&text).into_owned();
            let _ = crate::schema::ParsedSchema::parse(SchemaType::Avro, &text);
            let _ = crate::schema::ParsedSchema::parse(SchemaType::Json, &text);
            let _ = state.plan(RegistryCommand::Register {
                references: Vec::new(),
                subject: "fuzz".into(),
                schema_type: SchemaType::Avro,
                schema: text,
            });
        }
    }
}
