//! Picks the partition by a JSON field's value, e.g. one partition per region.
//!
//! Parameters: `path`, a JSON pointer (`/region`); `partitions`, `value=partition` pairs
//! (`eu=0,us=1,apac=2`); `default`, the partition for other values (without it, they are
//! spread by a hash of the value). Partitions past the topic's count are the broker's to reject.

use weir_plugin::{partitioner, Error, Record};

#[partitioner]
fn by_field(record: &Record, partition_count: u32) -> Result<u32, Error> {
    let path = weir_plugin::param("path").ok_or_else(|| Error::new("parameter `path` is not set"))?;
    let map = weir_plugin::param("partitions").unwrap_or_default();
    let default = weir_plugin::param("default");
    pick(record.value.as_deref().unwrap_or_default(), &path, &map, default.as_deref(), partition_count)
}

pub fn pick(document: &[u8], path: &str, map: &str, default: Option<&str>, partition_count: u32) -> Result<u32, Error> {
    let json: serde_json::Value = serde_json::from_slice(document)?;
    let value = match json.pointer(path) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    for pair in map.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, partition) = pair
            .split_once('=')
            .ok_or_else(|| Error::new(format!("parameter `partitions`: {pair:?} is not value=partition")))?;
        if key.trim() == value {
            return partition.trim().parse().map_err(|e| Error::new(format!("parameter `partitions`: {pair:?}: {e}")));
        }
    }
    match default {
        Some(d) => d.trim().parse().map_err(|e| Error::new(format!("parameter `default`: {e}"))),
        None => Ok(value.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % partition_count),
    }
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn maps_values_to_partitions() {
        let map = "eu=0,us=1,apac=2";
        assert_eq!(pick(br#"{"region":"eu"}"#, "/region", map, None, 3).unwrap(), 0);
        assert_eq!(pick(br#"{"region":"apac"}"#, "/region", map, None, 3).unwrap(), 2);
        assert_eq!(pick(br#"{"region":"mars"}"#, "/region", map, Some("1"), 3).unwrap(), 1);
        assert!(pick(br#"{"region":"mars"}"#, "/region", map, None, 3).unwrap() < 3);
        assert!(pick(br#"{"region":"eu"}"#, "/region", "eu=zero", None, 3).is_err());
    }
}
