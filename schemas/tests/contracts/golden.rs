//! Golden files: `schemas/golden/<EventType>.v<N>.json` holds one stored example of every event at
//! every version, as `RecordedEvent` serialises it. They are written once and never regenerated:
//! a change that breaks an old event, or renames a field of a current one, fails here. Every one
//! of them, at whatever version, must also leave the store (upcast, in the feeds, as a CloudEvent,
//! on Avro) at the current version and without a payment token.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use schemas::RecordedEvent;
use schemas::avro::{self, AvroEvent};
use schemas::cloudevents::cloud_event;
use schemas::envelope::feed_json;
use schemas::upcast::to_current_version;
use serde_json::Value;

use crate::samples::AnyEvent;

/// A golden file, with the type and version its name gives.
#[derive(Debug)]
struct Golden {
    path: PathBuf,
    event_type: String,
    schema_version: u32,
    text: String,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn goldens() -> Vec<Golden> {
    let mut goldens: Vec<Golden> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let file_name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let (event_type, version) = file_name
                .strip_suffix(".json")
                .and_then(|stem| stem.rsplit_once(".v"))
                .unwrap_or_else(|| panic!("{file_name}: expected <EventType>.v<N>.json"));
            let schema_version = version
                .parse()
                .unwrap_or_else(|_| panic!("{file_name}: expected <EventType>.v<N>.json"));
            Golden {
                text: std::fs::read_to_string(&path).unwrap(),
                path,
                event_type: event_type.to_owned(),
                schema_version,
            }
        })
        .collect();
    goldens.sort_by(|a, b| a.path.cmp(&b.path));
    goldens
}

fn stream_type_of(event_type: &str) -> Option<&'static str> {
    domain::EVENT_TYPES
        .iter()
        .find(|(_, name, _)| *name == event_type)
        .map(|(stream_type, _, _)| *stream_type)
}

fn parse(golden: &Golden) -> RecordedEvent {
    let event: RecordedEvent = serde_json::from_str(&golden.text)
        .unwrap_or_else(|error| panic!("{}: {error}", golden.path.display()));
    assert_eq!(
        event.event_type,
        golden.event_type,
        "{}",
        golden.path.display()
    );
    assert_eq!(
        event.schema_version,
        golden.schema_version,
        "{}",
        golden.path.display()
    );
    event
}

fn decode(event: &RecordedEvent) -> AnyEvent {
    AnyEvent::decode(
        &event.stream_type,
        &event.event_type,
        event.schema_version,
        &event.payload,
    )
    .unwrap_or_else(|error| panic!("{} v{}: {error}", event.event_type, event.schema_version))
}

#[test]
fn every_golden_file_names_a_known_type_and_version() {
    let goldens = goldens();
    assert!(!goldens.is_empty());
    for golden in &goldens {
        let current = domain::current_schema_version(&golden.event_type);
        assert!(
            current > 0,
            "{}: {} is not an event type",
            golden.path.display(),
            golden.event_type
        );
        assert!(
            (1..=current).contains(&golden.schema_version),
            "{}: versions of {} run from 1 to {current}",
            golden.path.display(),
            golden.event_type
        );
    }
}

#[test]
fn every_event_type_has_a_golden_file_at_every_version() {
    let goldens = goldens();
    for (_, event_type, current) in domain::EVENT_TYPES {
        for version in 1..=*current {
            assert!(
                goldens
                    .iter()
                    .any(|g| g.event_type == *event_type && g.schema_version == version),
                "missing golden/{event_type}.v{version}.json"
            );
        }
    }
}

#[test]
fn every_golden_file_decodes_to_the_current_domain_type() {
    for golden in goldens() {
        let event = parse(&golden);
        assert_eq!(
            Some(event.stream_type.as_str()),
            stream_type_of(&event.event_type),
            "{}",
            golden.path.display()
        );
        let decoded = decode(&event);
        assert_eq!(decoded.stream_type(), event.stream_type);
        // Whatever version it was stored at, it now encodes as the current one.
        let encoded = decoded.encode().unwrap();
        assert_eq!(encoded.event_type, event.event_type);
        assert_eq!(
            encoded.schema_version,
            domain::current_schema_version(&event.event_type)
        );
    }
}

#[test]
fn current_golden_files_re_encode_to_the_stored_payload_and_envelope() {
    for golden in goldens() {
        if golden.schema_version != domain::current_schema_version(&golden.event_type) {
            continue;
        }
        let event = parse(&golden);
        let stored_payload: Value = serde_json::from_str(event.payload.get()).unwrap();
        let encoded = decode(&event).encode().unwrap();
        let re_encoded: Value = serde_json::from_str(encoded.payload.get()).unwrap();
        assert_eq!(
            re_encoded,
            stored_payload,
            "{}: the payload's shape changed; add a schema version, an upcaster and a new golden file",
            golden.path.display()
        );
        let stored: Value = serde_json::from_str(&golden.text).unwrap();
        let envelope = serde_json::to_value(&event).unwrap();
        assert_eq!(
            envelope,
            stored,
            "{}: the envelope's shape changed",
            golden.path.display()
        );
    }
}

#[test]
fn current_golden_files_round_trip_through_avro() {
    for golden in goldens() {
        if golden.schema_version != domain::current_schema_version(&golden.event_type) {
            continue;
        }
        let event = parse(&golden);
        let bytes = avro::recorded_to_datum(&event).unwrap();
        let back: AvroEvent = avro::from_datum(&event.event_type, &bytes).unwrap();
        assert_eq!(back.event_id, event.event_id);
        assert_eq!(back.occurred_at, event.occurred_at);
        let payload: Value = serde_json::from_str(back.payload.get()).unwrap();
        let stored: Value = serde_json::from_str(event.payload.get()).unwrap();
        assert_eq!(payload, stored, "{}", golden.path.display());
    }
}

#[test]
fn product_updated_v1_reads_as_v2_with_exact_minor_units_and_no_category() {
    let goldens = goldens();
    let v1 = goldens
        .iter()
        .find(|g| g.event_type == "ProductUpdated" && g.schema_version == 1)
        .unwrap();
    let event = parse(v1);
    let stored: Value = serde_json::from_str(event.payload.get()).unwrap();
    assert!(stored.get("category").is_none(), "v1 has no category");
    assert_eq!(
        stored["price"],
        serde_json::json!(249.99),
        "v1 priced in major units"
    );
    let AnyEvent::Product(domain::ProductEvent::ProductUpdated(updated)) = decode(&event) else {
        panic!("ProductUpdated v1 decoded as another event");
    };
    assert_eq!(updated.category, None);
    assert_eq!(updated.price, domain::Money::from_minor(24_999));
    assert_eq!(updated.version, 2);
    // A stored v1 event is published on Avro at the current version.
    let back =
        avro::from_datum("ProductUpdated", &avro::recorded_to_datum(&event).unwrap()).unwrap();
    assert_eq!(back.schema_version, 2);
    let payload: Value = serde_json::from_str(back.payload.get()).unwrap();
    assert_eq!(payload["category"], Value::Null);
}

#[test]
fn every_golden_file_at_every_version_is_published_on_avro_at_the_current_version() {
    for golden in goldens() {
        let event = parse(&golden);
        let bytes = avro::recorded_to_datum(&event)
            .unwrap_or_else(|error| panic!("{}: {error}", golden.path.display()));
        let back = avro::from_datum(&event.event_type, &bytes).unwrap();
        assert_eq!(
            back.schema_version,
            domain::current_schema_version(&event.event_type)
        );
        let from_avro = AnyEvent::decode(
            &event.stream_type,
            &back.event_type,
            back.schema_version,
            &back.payload,
        )
        .unwrap();
        assert_eq!(from_avro, decode(&event), "{}", golden.path.display());
    }
}

#[test]
fn the_feeds_and_cloud_events_show_every_golden_file_at_the_current_version() {
    for golden in goldens() {
        let event = parse(&golden);
        let current = domain::current_schema_version(&event.event_type);
        let read: Value =
            serde_json::from_str(decode(&event).encode().unwrap().payload.get()).unwrap();
        let feed = feed_json(&event);
        assert_eq!(feed["schema_version"], current, "{}", golden.path.display());
        assert_eq!(feed["payload"], read, "{}", golden.path.display());
        assert_eq!(feed["position"], event.position);
        let cloud = cloud_event(&event);
        assert_eq!(cloud["schemaversion"], current.to_string());
        assert_eq!(cloud["data"], read, "{}", golden.path.display());
        assert_eq!(
            cloud["type"],
            format!("mercato.{}.{}", event.stream_type, event.event_type)
        );
    }
}

/// The field that held a payment token in the events stored before tokens left the log.
const SECRET_FIELD: &str = "payment_token";

/// Every value of a field named `name`, at any depth of `value`.
fn values_of(value: &Value, name: &str, found: &mut Vec<Value>) {
    match value {
        Value::Object(fields) => {
            for (key, inner) in fields {
                if key == name {
                    found.push(inner.clone());
                }
                values_of(inner, name, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| values_of(item, name, found)),
        _ => {}
    }
}

/// Every way a stored event leaves the store: the upcast event, the payload decoded into the
/// domain type and encoded again, the feeds' JSON, the CloudEvent, and the Avro datum read back.
fn what_readers_get(event: &RecordedEvent) -> Vec<(&'static str, Value)> {
    let upcast = to_current_version(event).unwrap();
    let datum = avro::recorded_to_datum(event).unwrap();
    let from_avro = avro::from_datum(&event.event_type, &datum).unwrap();
    vec![
        ("upcast", serde_json::to_value(&upcast).unwrap()),
        (
            "re-encoded",
            serde_json::from_str(decode(event).encode().unwrap().payload.get()).unwrap(),
        ),
        ("feed", feed_json(event)),
        ("cloud event", cloud_event(event)),
        (
            "avro",
            serde_json::from_str(from_avro.payload.get()).unwrap(),
        ),
    ]
}

#[test]
fn no_payment_token_is_in_a_current_golden_file_or_in_what_a_reader_gets_from_any() {
    let goldens = goldens();
    // The tokens the old golden files hold: none of them may come out again, in any form.
    let mut stored_tokens = Vec::new();
    for golden in &goldens {
        let stored: Value = serde_json::from_str(&golden.text).unwrap();
        let mut found = Vec::new();
        values_of(&stored, SECRET_FIELD, &mut found);
        assert!(
            found.is_empty()
                || golden.schema_version < domain::current_schema_version(&golden.event_type),
            "{}: an event at its current version carries a {SECRET_FIELD}",
            golden.path.display()
        );
        stored_tokens.extend(
            found
                .into_iter()
                .filter_map(|token| token.as_str().map(str::to_owned)),
        );
    }
    let stored_tokens: BTreeSet<String> = stored_tokens.into_iter().collect();
    assert!(
        !stored_tokens.is_empty(),
        "the v1 golden files hold tokens: this test reads them to look for them in what readers get"
    );
    for golden in &goldens {
        let event = parse(golden);
        for (how, value) in what_readers_get(&event) {
            let mut found = Vec::new();
            values_of(&value, SECRET_FIELD, &mut found);
            assert!(
                found.is_empty(),
                "{} ({how}): a {SECRET_FIELD} field is shown",
                golden.path.display()
            );
            let text = value.to_string();
            for token in &stored_tokens {
                assert!(
                    !text.contains(token.as_str()),
                    "{} ({how}): a stored payment token is shown",
                    golden.path.display()
                );
            }
        }
    }
}
