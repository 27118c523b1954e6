//! Keeps the JSON records whose field equals a value, drops the others.
//!
//! Parameters: `path`, a JSON pointer such as `/level`; `equals`, the wanted value: a JSON
//! string's text, or a number, boolean or null as JSON writes it. A record that is not JSON
//! is an error (it goes to the dead-letter topic); one without the field is dropped.

use std::sync::OnceLock;

use weir_plugin::{transform, Emitter, Error, RecordRef};

/// `path` and `equals`, read on the first record: a deployment's parameters are fixed for the
/// life of its instances (a new version gets new ones).
fn settings() -> Result<&'static (String, String), Error> {
    static SETTINGS: OnceLock<Result<(String, String), Error>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            let path = weir_plugin::param("path").ok_or_else(|| Error::new("parameter `path` is not set"))?;
            let wanted = weir_plugin::param("equals").ok_or_else(|| Error::new("parameter `equals` is not set"))?;
            Ok((path, wanted))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Borrowed: a kept record is forwarded as it came, by reference to the input batch, so the
/// module copies none of its bytes.
#[transform(borrowed)]
fn json_filter(record: RecordRef<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
    let (path, wanted) = settings()?;
    if matches(record.value().unwrap_or_default(), path, wanted)? {
        weir_plugin::counter_add("kept", 1);
        out.forward(&record);
    } else {
        weir_plugin::counter_add("dropped", 1);
    }
    Ok(())
}

/// Whether the JSON document's value at `path` equals `wanted`.
pub fn matches(document: &[u8], path: &str, wanted: &str) -> Result<bool, Error> {
    let json: serde_json::Value = serde_json::from_slice(document)?;
    Ok(match json.pointer(path) {
        None => false,
        Some(serde_json::Value::String(s)) => s == wanted,
        // Numbers, booleans and null compare as JSON writes them.
        Some(other) => serde_json::to_string(other)? == wanted,
    })
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn check(document: &str, path: &str, wanted: &str, expected: Result<bool, ()>) {
        assert_eq!(matches(document.as_bytes(), path, wanted).map_err(|_| ()), expected, "{document} {path} {wanted}");
    }

    #[test]
    fn keeps_only_equal_values() {
        check(r#"{"level":"error"}"#, "/level", "error", Ok(true));
        check(r#"{"level":"info"}"#, "/level", "error", Ok(false));
        check(r#"{"a":{"b":7}}"#, "/a/b", "7", Ok(true));
        check(r#"{"ok":true}"#, "/ok", "true", Ok(true));
        check(r#"{"other":1}"#, "/level", "error", Ok(false));
        check("not json", "/level", "error", Err(()));
    }
}
