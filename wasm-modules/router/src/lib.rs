//! Routes JSON records to topics by a field's value.
//!
//! Parameters: `path`, a JSON pointer (`/region`); `routes`, `value=topic` pairs separated by
//! commas (`eu=orders-eu,us=orders-us`); `default`, the topic for other values (without it,
//! they go to the deployment's output topic).

use weir_plugin::{transform, Error, Output, Record};

#[transform]
fn route(record: Record) -> Result<Vec<Output>, Error> {
    let path = weir_plugin::param("path").ok_or_else(|| Error::new("parameter `path` is not set"))?;
    let routes = weir_plugin::param("routes").ok_or_else(|| Error::new("parameter `routes` is not set"))?;
    let default = weir_plugin::param("default");
    let out = Output::from_record(&record);
    Ok(vec![match topic_for(record.value.as_deref().unwrap_or_default(), &path, &routes)?.or(default) {
        Some(topic) => out.to_topic(topic),
        None => out,
    }])
}

/// The topic `routes` names for the document's value at `path`, if any.
pub fn topic_for(document: &[u8], path: &str, routes: &str) -> Result<Option<String>, Error> {
    let json: serde_json::Value = serde_json::from_slice(document)?;
    let value = match json.pointer(path) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => return Ok(None),
    };
    for route in routes.split(',') {
        let (key, topic) = route
            .split_once('=')
            .ok_or_else(|| Error::new(format!("parameter `routes`: {route:?} is not value=topic")))?;
        if key.trim() == value {
            return Ok(Some(topic.trim().to_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::topic_for;

    #[test]
    fn picks_the_topic_of_the_value() {
        let routes = "eu=orders-eu,us=orders-us";
        assert_eq!(topic_for(br#"{"region":"eu"}"#, "/region", routes).unwrap().as_deref(), Some("orders-eu"));
        assert_eq!(topic_for(br#"{"region":"us"}"#, "/region", routes).unwrap().as_deref(), Some("orders-us"));
        assert_eq!(topic_for(br#"{"region":"apac"}"#, "/region", routes).unwrap(), None);
        assert_eq!(topic_for(br#"{}"#, "/region", routes).unwrap(), None);
        assert!(topic_for(br#"{"region":"eu"}"#, "/region", "broken").is_err());
        assert!(topic_for(b"nope", "/region", routes).is_err());
    }
}
