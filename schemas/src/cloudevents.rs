//! An event as a CloudEvents 1.0 structured-mode JSON object (`mercato events --format
//! cloudevents`).
//!
//! `source` is `/mercato/{part}` (the part of mercato that wrote it), `type` is
//! `mercato.{stream_type}.{EventType}`, `subject` is `TYPE/ID`; mercato's envelope fields are
//! string-valued extension attributes: `position`, `streamtype`, `streamid`, `streamversion`,
//! `schemaversion`, `correlationid`, `causationid`, `actor` and, when a saga caused the event,
//! `sagaid`. Like the feeds ([`crate::envelope::feed_json`]), `data` is the payload at the current
//! version of its type and `schemaversion` that version, so that what an upcaster drops (a v1
//! payment token) never leaves in an export.

use chrono::SecondsFormat;
use serde_json::{Map, Value, json};

use crate::RecordedEvent;

/// The event as a CloudEvents 1.0 structured-mode JSON object.
pub fn cloud_event(event: &RecordedEvent) -> Value {
    let current = crate::upcast::to_current_version(event);
    let event: &RecordedEvent = match &current {
        Ok(current) => current,
        Err(_) => event,
    };
    let mut object = Map::new();
    object.insert("specversion".into(), json!("1.0"));
    object.insert("id".into(), json!(event.event_id.to_string()));
    object.insert(
        "source".into(),
        json!(format!("/mercato/{}", uri_segment(&event.metadata.source))),
    );
    object.insert(
        "type".into(),
        json!(format!(
            "mercato.{}.{}",
            event.stream_type, event.event_type
        )),
    );
    object.insert(
        "subject".into(),
        json!(format!("{}/{}", event.stream_type, event.stream_id)),
    );
    object.insert(
        "time".into(),
        json!(
            event
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true)
        ),
    );
    object.insert("datacontenttype".into(), json!("application/json"));
    object.insert(
        "data".into(),
        serde_json::from_str(event.payload.get()).unwrap_or(Value::Null),
    );
    let metadata = &event.metadata;
    let mut extensions = vec![
        ("position", event.position.to_string()),
        ("streamtype", event.stream_type.clone()),
        ("streamid", event.stream_id.clone()),
        ("streamversion", event.stream_version.to_string()),
        ("schemaversion", event.schema_version.to_string()),
        ("correlationid", metadata.correlation_id.clone()),
        ("causationid", metadata.causation_id.clone()),
        ("actor", metadata.actor.clone()),
    ];
    if let Some(saga_id) = &metadata.saga_id {
        extensions.push(("sagaid", saga_id.clone()));
    }
    for (name, value) in extensions {
        object.insert(name.into(), Value::String(value));
    }
    Value::Object(object)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn uri_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_cloud_event_with_mercatos_fields_as_string_extensions() {
        let mut event = crate::envelope::sample_event();
        event.metadata.saga_id = None;
        event.metadata.source = "command api".to_owned();
        let cloud = cloud_event(&event);
        assert_eq!(cloud["specversion"], "1.0");
        assert_eq!(cloud["source"], "/mercato/command%20api");
        assert_eq!(cloud["type"], "mercato.order.OrderConfirmed");
        assert_eq!(cloud["subject"], "order/o-1");
        assert_eq!(cloud["time"], "2026-11-22T10:00:00.000000Z");
        assert_eq!(cloud["data"]["order_id"], "o-1");
        assert_eq!(cloud["position"], "42");
        assert!(cloud.get("sagaid").is_none());
    }
}
