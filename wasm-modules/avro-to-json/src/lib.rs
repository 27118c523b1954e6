//! Decodes Avro records in the Confluent wire format (magic byte 0, 4-byte big-endian schema
//! id, Avro binary) with the schema the broker's registry holds for the id, fetched through
//! the `schema-registry` host import, and writes them as JSON. The output carries the header
//! `weir.schema.id`. A record that is not in the wire format, names an unknown id or does not
//! decode is an error (it goes to the dead-letter topic).

use std::cell::RefCell;
use std::collections::HashMap;

use apache_avro::Schema;
use weir_plugin::{transform, Error, Output, Record};

thread_local! {
    /// Parsed schemas by id: an instance lives across batches, so each id is looked up once.
    static SCHEMAS: RefCell<HashMap<u32, Schema>> = RefCell::new(HashMap::new());
}

#[transform]
fn avro_to_json(record: Record) -> Result<Vec<Output>, Error> {
    let (id, datum) = split_wire_format(record.value.as_deref().unwrap_or_default())?;
    let schema = SCHEMAS.with(|cache| -> Result<Schema, Error> {
        if let Some(schema) = cache.borrow().get(&id) {
            return Ok(schema.clone());
        }
        let found = weir_plugin::schema(id)?;
        if found.schema_type != "AVRO" {
            return Err(Error::new(format!("schema {id} is {}, not AVRO", found.schema_type)));
        }
        let parsed = Schema::parse_str(&found.schema)?;
        cache.borrow_mut().insert(id, parsed.clone());
        Ok(parsed)
    })?;
    let json = decode(&schema, datum)?;
    Ok(vec![Output::from_record(&record).with_value(json).with_header("weir.schema.id", id.to_string())])
}

/// The schema id and the Avro datum of a Confluent-framed value.
pub fn split_wire_format(value: &[u8]) -> Result<(u32, &[u8]), Error> {
    match value {
        [0, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => Err(Error::new("value is not in the Confluent wire format (magic byte 0 and a 4-byte schema id)")),
    }
}

/// The Avro datum as JSON text.
pub fn decode(schema: &Schema, mut datum: &[u8]) -> Result<Vec<u8>, Error> {
    let value = apache_avro::from_avro_datum(schema, &mut datum, None)?;
    if !datum.is_empty() {
        return Err(Error::new(format!("{} bytes left after the Avro datum", datum.len())));
    }
    let json = serde_json::Value::try_from(value)?;
    Ok(serde_json::to_vec(&json)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    #[test]
    fn decodes_framed_avro_to_json() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"U","fields":[{"name":"name","type":"string"},{"name":"visits","type":"int"}]}"#,
        )
        .unwrap();
        let datum = apache_avro::to_avro_datum(
            &schema,
            Value::Record(vec![("name".into(), Value::String("ann".into())), ("visits".into(), Value::Int(3))]),
        )
        .unwrap();
        let mut framed = vec![0, 0, 0, 0, 7];
        framed.extend_from_slice(&datum);
        let (id, body) = split_wire_format(&framed).unwrap();
        assert_eq!(id, 7);
        assert_eq!(String::from_utf8(decode(&schema, body).unwrap()).unwrap(), r#"{"name":"ann","visits":3}"#);
        assert!(split_wire_format(b"{}").is_err());
        assert!(decode(&schema, &datum[..2]).is_err());
    }
}
