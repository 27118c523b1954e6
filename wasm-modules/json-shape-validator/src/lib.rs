//! Accepts JSON objects that have the required fields with the right types.
//!
//! Parameters: `required`, comma-separated field names (`id,amount`); `types`, `field=type`
//! pairs with type one of string, number, integer, boolean, object, array, null
//! (`id=integer,amount=number`). The rejection reason names the field.

use weir_plugin::{validator, Error, Record};

#[validator]
fn json_shape(record: &Record) -> Result<(), Error> {
    let required = weir_plugin::param("required").unwrap_or_default();
    let types = weir_plugin::param("types").unwrap_or_default();
    check(record.value.as_deref().unwrap_or_default(), &required, &types)
}

pub fn check(document: &[u8], required: &str, types: &str) -> Result<(), Error> {
    let json: serde_json::Value =
        serde_json::from_slice(document).map_err(|e| Error::new(format!("value is not JSON: {e}")))?;
    let object = json.as_object().ok_or_else(|| Error::new("value is not a JSON object"))?;
    for field in required.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !object.contains_key(field) {
            return Err(Error::new(format!("required field {field:?} is missing")));
        }
    }
    for pair in types.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, wanted) =
            pair.split_once('=').ok_or_else(|| Error::new(format!("parameter `types`: {pair:?} is not field=type")))?;
        let Some(value) = object.get(field.trim()) else { continue };
        let ok = match wanted.trim() {
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "null" => value.is_null(),
            other => return Err(Error::new(format!("parameter `types`: unknown type {other:?}"))),
        };
        if !ok {
            return Err(Error::new(format!("field {:?} must be {}, got {value}", field.trim(), wanted.trim())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    fn verdict(document: &str) -> Result<(), String> {
        check(document.as_bytes(), "id,amount", "id=integer,amount=number").map_err(|e| e.message().to_owned())
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(verdict(r#"{"id":1,"amount":2.5}"#), Ok(()));
        assert_eq!(verdict(r#"{"id":1}"#), Err(r#"required field "amount" is missing"#.into()));
        assert_eq!(verdict(r#"{"id":"x","amount":1}"#), Err(r#"field "id" must be integer, got "x""#.into()));
        assert_eq!(verdict("[1]"), Err("value is not a JSON object".into()));
        assert!(verdict("{").unwrap_err().starts_with("value is not JSON"));
    }
}
