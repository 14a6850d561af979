//! Every event round-trips through the JSON codec.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::samples::{self, AnyEvent};
use schemas::CodecError;

#[test]
fn every_sample_round_trips_through_json() {
    for sample in samples::all() {
        let encoded = sample.encode().unwrap();
        let (stream_type, _, version) = domain::EVENT_TYPES
            .iter()
            .find(|(_, name, _)| *name == encoded.event_type)
            .unwrap_or_else(|| panic!("{} is not in EVENT_TYPES", encoded.event_type));
        assert_eq!(*stream_type, sample.stream_type(), "{sample:?}");
        assert_eq!(encoded.schema_version, *version, "{sample:?}");
        let payload: Value = serde_json::from_str(encoded.payload.get()).unwrap();
        assert!(
            payload.is_object() && payload.get(&encoded.event_type).is_none(),
            "the payload is the bare object: {payload}"
        );
        let decoded = AnyEvent::decode(
            stream_type,
            &encoded.event_type,
            encoded.schema_version,
            &encoded.payload,
        )
        .unwrap();
        assert_eq!(decoded, sample);
    }
}

#[test]
fn every_event_type_has_a_sample() {
    let encoded: Vec<String> = samples::all()
        .iter()
        .map(|sample| sample.encode().unwrap().event_type)
        .collect();
    for (_, event_type, _) in domain::EVENT_TYPES {
        assert!(
            encoded.iter().any(|name| name == event_type),
            "no sample of {event_type}"
        );
    }
}

#[test]
fn money_is_stored_as_integer_minor_units() {
    let created = samples::all()
        .into_iter()
        .find_map(|sample| match sample {
            AnyEvent::Order(order @ domain::OrderEvent::OrderCreated(_)) => Some(order),
            _ => None,
        })
        .unwrap();
    let encoded = schemas::encode(&created).unwrap();
    let payload: Value = serde_json::from_str(encoded.payload.get()).unwrap();
    assert_eq!(payload["total_minor"], 35_899);
    assert_eq!(payload["lines"][0]["unit_price_minor"], 24_999);
    assert!(payload.get("total").is_none());
}

#[test]
fn decoding_refuses_unknown_types_future_versions_and_bad_payloads() {
    let payload = RawValue::from_string(r#"{"order_id":"not a uuid"}"#.to_owned()).unwrap();
    let unknown = schemas::decode::<domain::OrderEvent>("OrderShipped", 1, &payload);
    assert!(matches!(unknown, Err(CodecError::UnknownEventType(_))));
    let future = schemas::decode::<domain::OrderEvent>("OrderConfirmed", 2, &payload);
    assert!(matches!(future, Err(CodecError::FromTheFuture { .. })));
    let bad = schemas::decode::<domain::OrderEvent>("OrderConfirmed", 1, &payload);
    assert!(
        matches!(&bad, Err(CodecError::Payload { event_type, schema_version: 1, .. }) if event_type == "OrderConfirmed"),
        "{bad:?}"
    );
    let older = schemas::decode::<domain::OrderEvent>("OrderConfirmed", 0, &payload);
    assert!(
        matches!(older, Err(CodecError::UnknownVersion { .. })),
        "{older:?}"
    );
}
