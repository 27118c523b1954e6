//! Appends records to a file in the connector's granted directory (granted read-write), one
//! line per record.
//!
//! Parameters: `path`, the file inside the granted directory (default `output.log`);
//! `format`, `value` (each record's value as it is, the default) or `json` (one JSON object
//! per record: topic, partition, offset, timestamp, key and value as UTF-8 where they are,
//! headers).
//!
//! A batch is written with one write and flushed before it is acknowledged. A file that
//! cannot be opened or written (its folder missing, the disk full) fails the whole batch: the
//! broker retries it with backoff and commits nothing past it. A record whose value holds a
//! line end (in `value` format) is rejected: it goes to the dead-letter topic.

use std::io::Write;

use weir_plugin::{sink, Error, Record};

const DIR: &str = "/data";

#[sink]
fn file_sink(records: Vec<Record>) -> Result<Vec<Result<(), Error>>, Error> {
    let path = format!("{DIR}/{}", weir_plugin::param("path").unwrap_or_else(|| "output.log".into()));
    let format = Format::parse(weir_plugin::param("format").as_deref())?;
    let (text, verdicts) = render(&records, format);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::new(format!("opening {path}: {e}")))?;
    file.write_all(&text).and_then(|()| file.flush()).map_err(|e| Error::new(format!("writing {path}: {e}")))?;
    weir_plugin::counter_add("lines", verdicts.iter().filter(|v| v.is_ok()).count() as u64);
    Ok(verdicts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Value,
    Json,
}

impl Format {
    pub fn parse(param: Option<&str>) -> Result<Self, Error> {
        match param {
            None | Some("value") => Ok(Self::Value),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(Error::new(format!("parameter `format` is {other:?}: use value or json"))),
        }
    }
}

/// The bytes to append for `records`, and one verdict per record.
pub fn render(records: &[Record], format: Format) -> (Vec<u8>, Vec<Result<(), Error>>) {
    let mut text = Vec::new();
    let mut verdicts = Vec::with_capacity(records.len());
    for r in records {
        match format {
            Format::Value => {
                let value = r.value.as_deref().unwrap_or_default();
                if value.contains(&b'\n') {
                    verdicts.push(Err(Error::new(format!(
                        "the value at offset {} holds a line end; a line per record cannot hold it",
                        r.offset
                    ))));
                    continue;
                }
                text.extend_from_slice(value);
            }
            Format::Json => {
                let utf8 = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
                let headers: serde_json::Map<String, serde_json::Value> =
                    r.headers.iter().map(|h| (h.key.clone(), utf8(&h.value).into())).collect();
                let line = serde_json::json!({
                    "topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
                    "key": utf8(&r.key), "value": utf8(&r.value), "headers": headers,
                });
                text.extend_from_slice(line.to_string().as_bytes());
            }
        }
        text.push(b'\n');
        verdicts.push(Ok(()));
    }
    (text, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, value: &str) -> Record {
        Record {
            topic: "t".into(),
            partition: 1,
            offset,
            timestamp: 5,
            key: Some(b"k".to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: vec![weir_plugin::Header { key: "h".into(), value: Some(b"v".to_vec()) }],
        }
    }

    #[test]
    fn values_become_lines_and_a_value_holding_a_line_end_is_rejected() {
        let (text, verdicts) = render(&[record(1, "a"), record(2, "b\nc"), record(3, "d")], Format::Value);
        assert_eq!(String::from_utf8(text).unwrap(), "a\nd\n");
        assert!(verdicts[0].is_ok() && verdicts[2].is_ok());
        assert!(verdicts[1].as_ref().unwrap_err().message().contains("offset 2 holds a line end"));
    }

    #[test]
    fn json_lines_carry_the_record() {
        let (text, verdicts) = render(&[record(7, "x\ny")], Format::Json);
        let line: serde_json::Value = serde_json::from_slice(text.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(line["offset"], 7);
        assert_eq!(line["value"], "x\ny");
        assert_eq!(line["headers"]["h"], "v");
        assert!(verdicts[0].is_ok());
        assert!(Format::parse(Some("xml")).unwrap_err().message().contains("`format`"));
    }
}
