//! Synthetic records for demos and benchmarks.
//!
//! Parameters: `count`, how many records in all (default 0: without end); `rate`, at most
//! this many records per second (default 0: as fast as polled); `value_bytes`, the size of
//! each value (default 100, at least the JSON around the payload); `keys`, how many distinct
//! keys (`k-0` ...; default 0: no key).
//!
//! A value is JSON: `{"id":N,"payload":"xxx..."}`, padded to `value_bytes`. The position is
//! `<next id>:<ms when the first record was made>`, so a restarted generator goes on with
//! the next id and keeps to its rate.

use weir_plugin::{source, Error, Output, Polled};

#[source]
fn generator(position: Option<Vec<u8>>, max_records: u32) -> Result<Polled, Error> {
    let settings = Settings::from_params()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let at = match position {
        Some(bytes) => At::parse(&bytes)?,
        None => At { next: 0, started_ms: now },
    };
    Ok(generate(&settings, at, max_records, now))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub count: u64,
    pub rate: u64,
    pub value_bytes: usize,
    pub keys: u64,
}

impl Settings {
    fn from_params() -> Result<Self, Error> {
        let number = |name: &str, default: u64| -> Result<u64, Error> {
            weir_plugin::param(name)
                .map_or(Ok(default), |v| v.parse().map_err(|e| Error::new(format!("parameter `{name}` = {v:?}: {e}"))))
        };
        let value_bytes = number("value_bytes", 100)?;
        if value_bytes > 1 << 20 {
            return Err(Error::new(format!("parameter `value_bytes` = {value_bytes}: at most 1048576")));
        }
        Ok(Self {
            count: number("count", 0)?,
            rate: number("rate", 0)?,
            value_bytes: value_bytes as usize,
            keys: number("keys", 0)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub next: u64,
    pub started_ms: u64,
}

impl At {
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::new("the stored position is not UTF-8"))?;
        let (next, started) =
            text.split_once(':').ok_or_else(|| Error::new(format!("position {text:?} is not next:started")))?;
        let parse = |s: &str| s.parse::<u64>().map_err(|e| Error::new(format!("position {text:?}: {e}")));
        Ok(Self { next: parse(next)?, started_ms: parse(started)? })
    }

    pub fn encode(&self) -> Vec<u8> {
        format!("{}:{}", self.next, self.started_ms).into_bytes()
    }
}

/// The records due at `now_ms`, at most `max_records`.
pub fn generate(settings: &Settings, at: At, max_records: u32, now_ms: u64) -> Polled {
    let mut due = u64::from(max_records);
    if settings.count > 0 {
        due = due.min(settings.count.saturating_sub(at.next));
    }
    if settings.rate > 0 {
        let allowed = settings.rate.saturating_mul(now_ms.saturating_sub(at.started_ms)) / 1000 + 1;
        due = due.min(allowed.saturating_sub(at.next));
    }
    let records = (at.next..at.next + due)
        .map(|id| {
            let head = format!("{{\"id\":{id},\"payload\":\"");
            let pad = settings.value_bytes.saturating_sub(head.len() + 2);
            let mut value = head.into_bytes();
            value.resize(value.len() + pad, b'x');
            value.extend_from_slice(b"\"}");
            let record = Output::new(value);
            match settings.keys {
                0 => record,
                keys => record.with_key(format!("k-{}", id % keys)),
            }
        })
        .collect();
    Polled { records, position: At { next: at.next + due, ..at }.encode() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_their_size_keys_and_ids_and_keep_to_count_and_rate() {
        let settings = Settings { count: 5, rate: 0, value_bytes: 40, keys: 2 };
        let polled = generate(&settings, At { next: 0, started_ms: 0 }, 3, 0);
        assert_eq!(polled.records.len(), 3);
        let value = polled.records[2].value.clone().unwrap();
        assert_eq!(value.len(), 40);
        let json: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(json["id"], 2);
        assert_eq!(polled.records[1].key.as_deref(), Some(&b"k-1"[..]));
        let at = At::parse(&polled.position).unwrap();
        assert_eq!(generate(&settings, at, 10, 0).records.len(), 2, "count = 5 in all");

        let paced = Settings { count: 0, rate: 100, value_bytes: 10, keys: 0 };
        let at = At { next: 0, started_ms: 1_000 };
        assert_eq!(generate(&paced, at, 1000, 1_500).records.len(), 51, "100/s over 0.5 s, and the first at once");
        assert!(generate(&paced, at, 1000, 1_500).records[0].key.is_none());
        assert!(At::parse(b"7").is_err());
    }
}
