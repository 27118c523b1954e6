//! Masks personal data in JSON records.
//!
//! Parameters: `paths`, comma-separated JSON pointers (`/email,/card/number`); `pattern`, a
//! regex whose matches are replaced (default: the whole string); `replacement` (default
//! `***`). Strings at the paths are masked; other values and other fields are kept as they are.

use std::sync::OnceLock;

use regex::Regex;
use weir_plugin::{transform, Error, Output, Record};

struct Settings {
    paths: String,
    regex: Regex,
    replacement: String,
}

/// The parameters, read and the pattern compiled on the first record: a deployment's
/// parameters are fixed for the life of its instances (a new version gets new ones).
fn settings() -> Result<&'static Settings, Error> {
    static SETTINGS: OnceLock<Result<Settings, Error>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            let paths = weir_plugin::param("paths").ok_or_else(|| Error::new("parameter `paths` is not set"))?;
            let pattern = weir_plugin::param("pattern").unwrap_or_else(|| "^.*$".into());
            let replacement = weir_plugin::param("replacement").unwrap_or_else(|| "***".into());
            let regex = Regex::new(&pattern).map_err(|e| Error::new(format!("parameter `pattern`: {e}")))?;
            weir_plugin::log::info(&format!("masking {paths} where it matches {pattern:?}, with {replacement:?}"));
            Ok(Settings { paths, regex, replacement })
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[transform]
fn pii_mask(record: Record) -> Result<Vec<Output>, Error> {
    let settings = settings()?;
    let masked =
        mask(record.value.as_deref().unwrap_or_default(), &settings.paths, &settings.regex, &settings.replacement)?;
    Ok(vec![Output::from_record(&record).with_value(masked)])
}

pub fn mask(document: &[u8], paths: &str, regex: &Regex, replacement: &str) -> Result<Vec<u8>, Error> {
    let mut json: serde_json::Value = serde_json::from_slice(document)?;
    for path in paths.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(serde_json::Value::String(s)) = json.pointer_mut(path) {
            *s = regex.replace_all(s, replacement).into_owned();
        }
    }
    Ok(serde_json::to_vec(&json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(document: &str, paths: &str, pattern: &str, expected: &str) {
        let got = mask(document.as_bytes(), paths, &Regex::new(pattern).unwrap(), "***").unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    #[test]
    fn masks_strings_at_the_paths_only() {
        check(r#"{"email":"a@b.c","n":1}"#, "/email", "^.*$", r#"{"email":"***","n":1}"#);
        check(
            r#"{"card":{"number":"4111 1111 1111 1234"}}"#,
            "/card/number",
            r"\d{4} ",
            r#"{"card":{"number":"*********1234"}}"#,
        );
        check(r#"{"email":7}"#, "/email", "^.*$", r#"{"email":7}"#);
        check(r#"{"name":"x"}"#, "/email, /phone", "^.*$", r#"{"name":"x"}"#);
    }
}
