//! POSTs each batch to an HTTP endpoint (wasi:http), as NDJSON or one JSON array.
//!
//! The connector must be granted the endpoint's `host:port` in `http_allow`.
//!
//! Parameters:
//! - `url` (required): `http://host:port/path` or `https://...`.
//! - `format`: `ndjson` (one JSON object per line, the default) or `json` (one array).
//! - `value`: how a record's value is written: `text` (UTF-8 text, the default), `json` (the
//!   value parsed as JSON; a value that is not JSON is rejected), or `base64`.
//! - `success_status`: the statuses that mean delivered, as codes and ranges
//!   (`200-299`, the default; e.g. `200,202,204`).
//!
//! Each object holds topic, partition, offset, timestamp, key (text), value and headers
//! (text). The request carries `weir-offsets: <topic>/<partition>/<first>-<last>`, so an
//! endpoint can drop a batch it already has. The secret `authorization`, if the connector has
//! it, is sent as the Authorization header.
//!
//! Outcomes: a success status delivers the batch. A 4xx other than 408 and 429 means the
//! endpoint will never take these records: each goes to the dead-letter topic with the status
//! and the start of the answer. Anything else (5xx, 408, 429, a refused or failed connection)
//! fails the batch: the broker keeps it, backs off and sends it again, losing nothing.

use weir_plugin::{sink, Error, Record};

#[sink]
fn http_sink(records: Vec<Record>) -> Result<Vec<Result<(), Error>>, Error> {
    let config = Config::from_params(weir_plugin::param)?;
    let (body, mut verdicts) = render(&records, &config);
    if verdicts.iter().all(Result::is_err) {
        return Ok(verdicts);
    }
    let mut request = weir_plugin::http::Request::post(&config.url, config.format.content_type(), &body);
    if let (Some(first), Some(last)) = (records.first(), records.last()) {
        request = request
            .header("weir-offsets", format!("{}/{}/{}-{}", first.topic, first.partition, first.offset, last.offset));
    }
    if let Some(authorization) = weir_plugin::secret("authorization") {
        request = request.header("authorization", authorization);
    }
    let response = request.send()?;
    match outcome(response.status, &config.success) {
        Outcome::Delivered => {
            let sent = verdicts.iter().filter(|v| v.is_ok()).count() as u64;
            weir_plugin::counter_add("records_posted", sent);
            weir_plugin::counter_add("requests", 1);
        }
        Outcome::Rejected => {
            let answer = String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).into_owned();
            let why = format!("{} answered {}: {answer}", config.url, response.status);
            for verdict in verdicts.iter_mut().filter(|v| v.is_ok()) {
                *verdict = Err(Error::new(&why));
            }
        }
        Outcome::Retry => {
            return Err(Error::new(format!("{} answered {}; the batch is sent again", config.url, response.status)))
        }
    }
    Ok(verdicts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Json => "application/json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueAs {
    Text,
    Json,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub url: String,
    pub format: Format,
    pub value: ValueAs,
    /// Inclusive ranges.
    pub success: Vec<(u16, u16)>,
}

impl Config {
    pub fn from_params(param: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let url = param("url").ok_or_else(|| Error::new("parameter `url` is missing: the endpoint to POST to"))?;
        weir_plugin::http::parse_url(&url)?;
        let format = match param("format").as_deref() {
            None | Some("ndjson") => Format::Ndjson,
            Some("json") => Format::Json,
            Some(other) => return Err(Error::new(format!("parameter `format` is {other:?}: use ndjson or json"))),
        };
        let value = match param("value").as_deref() {
            None | Some("text") => ValueAs::Text,
            Some("json") => ValueAs::Json,
            Some("base64") => ValueAs::Base64,
            Some(other) => return Err(Error::new(format!("parameter `value` is {other:?}: use text, json or base64"))),
        };
        let success = parse_statuses(param("success_status").as_deref().unwrap_or("200-299"))?;
        Ok(Self { url, format, value, success })
    }
}

/// `200-299,304` as inclusive ranges.
pub fn parse_statuses(text: &str) -> Result<Vec<(u16, u16)>, Error> {
    let bad =
        || Error::new(format!("parameter `success_status` is {text:?}: write codes and ranges, e.g. 200-299,304"));
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let (low, high) =
                (low.trim().parse::<u16>().map_err(|_| bad())?, high.trim().parse::<u16>().map_err(|_| bad())?);
            if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
                return Err(bad());
            }
            Ok((low, high))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The endpoint refuses these records for good.
    Rejected,
    /// Send the batch again later.
    Retry,
}

pub fn outcome(status: u16, success: &[(u16, u16)]) -> Outcome {
    if success.iter().any(|(low, high)| (*low..=*high).contains(&status)) {
        Outcome::Delivered
    } else if (400..500).contains(&status) && status != 408 && status != 429 {
        Outcome::Rejected
    } else {
        Outcome::Retry
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The request body for the records that can be written, and one verdict per record.
pub fn render(records: &[Record], config: &Config) -> (Vec<u8>, Vec<Result<(), Error>>) {
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let mut objects = Vec::with_capacity(records.len());
    let mut verdicts = Vec::with_capacity(records.len());
    for r in records {
        let value = match (config.value, &r.value) {
            (_, None) => serde_json::Value::Null,
            (ValueAs::Text, v) => text(v).into(),
            (ValueAs::Base64, Some(v)) => base64(v).into(),
            (ValueAs::Json, Some(v)) => match serde_json::from_slice(v) {
                Ok(json) => json,
                Err(e) => {
                    verdicts.push(Err(Error::new(format!("the value at offset {} is not JSON: {e}", r.offset))));
                    continue;
                }
            },
        };
        let headers: serde_json::Map<String, serde_json::Value> =
            r.headers.iter().map(|h| (h.key.clone(), text(&h.value).into())).collect();
        objects.push(serde_json::json!({
            "topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
            "key": text(&r.key), "value": value, "headers": headers,
        }));
        verdicts.push(Ok(()));
    }
    let body = match config.format {
        Format::Json => serde_json::Value::Array(objects).to_string().into_bytes(),
        Format::Ndjson => {
            let mut body = Vec::new();
            for object in objects {
                body.extend_from_slice(object.to_string().as_bytes());
                body.push(b'\n');
            }
            body
        }
    };
    (body, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, value: &str) -> Record {
        Record {
            topic: "t".into(),
            partition: 2,
            offset,
            timestamp: 9,
            key: Some(b"k".to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: vec![weir_plugin::Header { key: "h".into(), value: Some(b"v".to_vec()) }],
        }
    }

    fn config(params: &[(&str, &str)]) -> Result<Config, Error> {
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_params(|name| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn params_are_read_or_named_when_wrong() {
        let c = config(&[("url", "http://127.0.0.1:9/in")]).unwrap();
        assert_eq!((c.format, c.value, c.success.clone()), (Format::Ndjson, ValueAs::Text, vec![(200, 299)]));
        for (params, named) in [
            (vec![], "`url` is missing"),
            (vec![("url", "ftp://x/")], "must start with http://"),
            (vec![("url", "http://h/"), ("format", "xml")], "`format`"),
            (vec![("url", "http://h/"), ("value", "hex")], "`value`"),
            (vec![("url", "http://h/"), ("success_status", "2xx")], "`success_status`"),
            (vec![("url", "http://h/"), ("success_status", "300-200")], "`success_status`"),
        ] {
            let err = config(&params).unwrap_err();
            assert!(err.message().contains(named), "{params:?}: {}", err.message());
        }
        assert_eq!(parse_statuses("200, 202-204").unwrap(), vec![(200, 200), (202, 204)]);
    }

    #[test]
    fn statuses_decide_delivered_rejected_or_again() {
        let success = parse_statuses("200-299").unwrap();
        for (status, expected) in [
            (200, Outcome::Delivered),
            (204, Outcome::Delivered),
            (400, Outcome::Rejected),
            (422, Outcome::Rejected),
            (408, Outcome::Retry),
            (429, Outcome::Retry),
            (500, Outcome::Retry),
            (503, Outcome::Retry),
            (301, Outcome::Retry),
        ] {
            assert_eq!(outcome(status, &success), expected, "{status}");
        }
        assert_eq!(outcome(409, &parse_statuses("200-299,409").unwrap()), Outcome::Delivered);
    }

    #[test]
    fn batches_render_as_ndjson_or_an_array_and_bad_json_values_are_rejected() {
        let records = [record(1, r#"{"a":1}"#), record(2, "not json"), record(3, "[2]")];
        let (body, verdicts) = render(&records, &config(&[("url", "http://h/"), ("value", "json")]).unwrap());
        let lines: Vec<serde_json::Value> =
            String::from_utf8(body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["value"]["a"], 1);
        assert_eq!((lines[1]["offset"].as_i64(), lines[1]["partition"].as_i64()), (Some(3), Some(2)));
        assert_eq!(lines[0]["headers"]["h"], "v");
        assert!(verdicts[0].is_ok() && verdicts[2].is_ok());
        assert!(verdicts[1].as_ref().unwrap_err().message().contains("offset 2 is not JSON"));

        let config = config(&[("url", "http://h/"), ("format", "json"), ("value", "base64")]).unwrap();
        let (body, _) = render(&[record(5, "hello")], &config);
        let array: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(array[0]["value"], "aGVsbG8=");
        assert_eq!(array[0]["key"], "k");
        assert_eq!([base64(b""), base64(b"f"), base64(b"fo"), base64(b"foo")], ["", "Zg==", "Zm8=", "Zm9v"]);
    }
}
