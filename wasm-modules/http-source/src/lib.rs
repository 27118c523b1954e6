//! Polls a JSON endpoint over HTTP (wasi:http) and follows its cursor.
//!
//! The connector must be granted the endpoint's `host:port` in `http_allow`.
//!
//! Each poll GETs `url` with `<cursor_param>=<position>` (none at first) and
//! `<limit_param>=<max records>`, and expects an object holding an array of records under
//! `records_field` and the cursor of the next page under `cursor_field`. Each element becomes
//! one record (its JSON as the value; the text of `key_field`, if set and present, as the
//! key) and the cursor becomes the position, stored with the records. A page without a cursor
//! and without records means nothing new: the same cursor is asked again after the poll
//! interval.
//!
//! Parameters: `url` (required), `cursor_param` (default `cursor`), `limit_param` (default
//! `limit`), `records_field` (default `records`), `cursor_field` (default `next_cursor`),
//! `key_field` (none by default). The secret `authorization`, if set, is sent as the
//! Authorization header.
//!
//! An answer other than 200, a body that is not such an object, records without a cursor, or
//! more records than asked for fail the poll, with the reason in the connector's status.

use weir_plugin::{source, Error, Output, Polled};

#[source]
fn http_source(position: Option<Vec<u8>>, max_records: u32) -> Result<Polled, Error> {
    let config = Config::from_params(weir_plugin::param)?;
    let cursor = position.map(|p| String::from_utf8_lossy(&p).into_owned());
    let url = config.page_url(cursor.as_deref(), max_records);
    let mut request = weir_plugin::http::Request::get(&url);
    if let Some(authorization) = weir_plugin::secret("authorization") {
        request = request.header("authorization", authorization);
    }
    let response = request.send()?;
    if response.status != 200 {
        let answer = String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).into_owned();
        return Err(Error::new(format!("GET {url} answered {}: {answer}", response.status)));
    }
    let polled = read_page(&response.body, &config, cursor.as_deref(), max_records)?;
    weir_plugin::counter_add("records_polled", polled.records.len() as u64);
    Ok(polled)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub url: String,
    pub cursor_param: String,
    pub limit_param: String,
    pub records_field: String,
    pub cursor_field: String,
    pub key_field: Option<String>,
}

impl Config {
    pub fn from_params(param: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let url = param("url").ok_or_else(|| Error::new("parameter `url` is missing: the endpoint to poll"))?;
        weir_plugin::http::parse_url(&url)?;
        let or = |name: &str, default: &str| param(name).unwrap_or_else(|| default.to_owned());
        Ok(Self {
            cursor_param: or("cursor_param", "cursor"),
            limit_param: or("limit_param", "limit"),
            records_field: or("records_field", "records"),
            cursor_field: or("cursor_field", "next_cursor"),
            key_field: param("key_field"),
            url,
        })
    }

    /// The URL of the page after `cursor`.
    pub fn page_url(&self, cursor: Option<&str>, limit: u32) -> String {
        let mut url = self.url.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(cursor) = cursor {
            url.push_str(&format!("{sep}{}={}", encode(&self.cursor_param), encode(cursor)));
            sep = '&';
        }
        url.push_str(&format!("{sep}{}={limit}", encode(&self.limit_param)));
        url
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A page's records and the position after them.
pub fn read_page(body: &[u8], config: &Config, cursor: Option<&str>, max_records: u32) -> Result<Polled, Error> {
    let page: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Error::new(format!("the answer is not JSON: {e}")))?;
    let records = match page.get(&config.records_field) {
        Some(serde_json::Value::Array(records)) => records.as_slice(),
        None | Some(serde_json::Value::Null) => &[],
        Some(_) => return Err(Error::new(format!("the answer's `{}` is not an array", config.records_field))),
    };
    if records.len() > max_records as usize {
        return Err(Error::new(format!(
            "the answer holds {} records; the poll asked for at most {max_records} (`{}`)",
            records.len(),
            config.limit_param
        )));
    }
    let next = match page.get(&config.cursor_field) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(Error::new(format!("the answer's `{}` is not a string or number", config.cursor_field))),
    };
    let position = match (next, cursor) {
        (Some(next), _) => next.into_bytes(),
        (None, _) if !records.is_empty() => {
            return Err(Error::new(format!(
                "the answer holds records but no `{}`: without it the same records would be read again",
                config.cursor_field
            )))
        }
        (None, Some(cursor)) => cursor.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    let records = records
        .iter()
        .map(|element| {
            let mut output = Output::new(element.to_string());
            let key = config.key_field.as_ref().and_then(|field| element.get(field));
            match key {
                Some(serde_json::Value::String(s)) => output = output.with_key(s.as_bytes()),
                Some(other) if !other.is_null() => output = output.with_key(other.to_string()),
                _ => {}
            }
            output
        })
        .collect();
    Ok(Polled { records, position })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_params(|name| match name {
            "url" => Some("http://127.0.0.1:9/events?since=x".into()),
            "key_field" => Some("id".into()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn pages_are_asked_for_after_the_cursor() {
        let c = config();
        assert_eq!(c.page_url(None, 10), "http://127.0.0.1:9/events?since=x&limit=10");
        assert_eq!(c.page_url(Some("a b/c"), 5), "http://127.0.0.1:9/events?since=x&cursor=a%20b%2Fc&limit=5");
        let plain = Config { url: "http://h/e".into(), ..c };
        assert_eq!(plain.page_url(Some("7"), 1), "http://h/e?cursor=7&limit=1");
        assert!(Config::from_params(|_| None).unwrap_err().message().contains("`url` is missing"));
    }

    #[test]
    fn a_page_becomes_records_and_the_next_position() {
        let c = config();
        let page = br#"{"records":[{"id":"a","n":1},{"id":2,"n":2},{"n":3}],"next_cursor":"c3"}"#;
        let polled = read_page(page, &c, Some("c0"), 10).unwrap();
        assert_eq!(polled.position, b"c3");
        assert_eq!(polled.records.len(), 3);
        assert_eq!(polled.records[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(polled.records[1].key.as_deref(), Some(&b"2"[..]));
        assert_eq!(polled.records[2].key, None);
        assert_eq!(polled.records[2].value.as_deref(), Some(&br#"{"n":3}"#[..]));
        // Numbers are cursors too; nothing new keeps the cursor.
        assert_eq!(read_page(br#"{"records":[],"next_cursor":9}"#, &c, None, 10).unwrap().position, b"9");
        assert_eq!(read_page(br#"{"records":[]}"#, &c, Some("c3"), 10).unwrap().position, b"c3");
        for (page, why) in [
            (&b"nope"[..], "not JSON"),
            (br#"{"records":{}}"#, "`records` is not an array"),
            (br#"{"records":[1],"next_cursor":true}"#, "not a string or number"),
            (br#"{"records":[1]}"#, "no `next_cursor`"),
            (br#"{"records":[1,2],"next_cursor":"x"}"#, "at most 1 (`limit`)"),
        ] {
            let err = read_page(page, &c, None, 1).unwrap_err();
            assert!(err.message().contains(why), "{}: {}", String::from_utf8_lossy(page), err.message());
        }
    }
}
