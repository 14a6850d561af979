//! Every event round-trips through its Avro schema, and the seed schema reads `ProductUpdated`.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use schemas::avro::{self, AvroEvent};
use serde_json::Value as Json;
use uuid::Uuid;

use crate::samples::{self, AnyEvent};

const SEED_PRODUCT_UPDATED: &str = include_str!("../../avro/seed/ProductUpdated.avsc");

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn avro_event(sample: &AnyEvent, n: u128) -> AvroEvent {
    let encoded = sample.encode().unwrap();
    AvroEvent {
        event_type: encoded.event_type,
        schema_version: encoded.schema_version,
        event_id: Uuid::from_u128(0x0195_9a3c_1f00_7000_8000_0000_0000_0000 + n),
        occurred_at: at("2025-03-14T09:26:53.589123456Z"),
        payload: encoded.payload,
    }
}

fn json(text: &str) -> Json {
    serde_json::from_str(text).unwrap()
}

#[test]
fn every_sample_round_trips_through_avro() {
    for (n, sample) in samples::all().iter().enumerate() {
        let event = avro_event(sample, n as u128);
        let bytes = avro::to_datum(&event).unwrap();
        let back = avro::from_datum(&event.event_type, &bytes).unwrap();
        assert_eq!(back.event_type, event.event_type);
        assert_eq!(back.schema_version, event.schema_version);
        assert_eq!(back.event_id, event.event_id);
        assert_eq!(back.occurred_at, event.occurred_at);
        assert_eq!(
            json(back.payload.get()),
            json(event.payload.get()),
            "{}",
            event.event_type
        );
        let decoded = AnyEvent::decode(
            sample.stream_type(),
            &back.event_type,
            back.schema_version,
            &back.payload,
        )
        .unwrap();
        assert_eq!(&decoded, sample);
    }
}

#[test]
fn every_event_type_has_an_avsc_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
    for (_, event_type, _) in domain::EVENT_TYPES {
        let path = dir.join(format!("{event_type}.avsc"));
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let compiled = avro::SCHEMA_SOURCES
            .iter()
            .find(|(name, _)| name == event_type)
            .map(|(_, source)| *source);
        assert_eq!(compiled, Some(on_disk.as_str()), "{event_type}");
        avro::schema(event_type).unwrap();
    }
}

fn product_updated_sample() -> AvroEvent {
    let sample = samples::all()
        .into_iter()
        .find(|sample| {
            matches!(
                sample,
                AnyEvent::Product(domain::ProductEvent::ProductUpdated(updated))
                    if updated.category.is_some()
            )
        })
        .unwrap();
    avro_event(&sample, 0)
}

#[test]
fn the_seed_schema_reads_our_product_updated() {
    let seed = Schema::parse_str(SEED_PRODUCT_UPDATED).unwrap();
    let ours = avro::schema("ProductUpdated").unwrap();
    SchemaCompatibility::can_read(ours, &seed).unwrap();

    let event = product_updated_sample();
    let bytes = avro::to_datum(&event).unwrap();
    let value = apache_avro::from_avro_datum(ours, &mut bytes.as_slice(), Some(&seed)).unwrap();
    let Value::Record(fields) = value else {
        panic!("not a record: {value:?}");
    };
    let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "event_id",
            "occurred_at",
            "product_id",
            "name",
            "description",
            "price",
            "stock_qty",
            "updated_at"
        ]
    );
    let fields: BTreeMap<String, Value> = fields.into_iter().collect();
    let string = |s: &str| Value::String(s.to_owned());
    assert_eq!(fields["event_id"], string(&event.event_id.to_string()));
    assert_eq!(
        fields["occurred_at"],
        string("2025-03-14T09:26:53.589123456Z")
    );
    assert_eq!(fields["updated_at"], fields["occurred_at"]);
    assert_eq!(fields["product_id"], string(&samples::GRINDER.to_string()));
    assert_eq!(fields["name"], string("Espresso grinder"));
    assert_eq!(fields["price"], Value::Double(249.99));
    assert_eq!(fields["stock_qty"], Value::Int(12));
}

#[test]
fn our_product_updated_carries_every_seed_field_with_the_seed_type() {
    let seed = Schema::parse_str(SEED_PRODUCT_UPDATED).unwrap();
    let ours = avro::schema("ProductUpdated").unwrap();
    let (Schema::Record(seed), Schema::Record(ours)) = (&seed, ours) else {
        panic!("both must be records");
    };
    assert_eq!(
        ours.name, seed.name,
        "same full name: events.catalog.ProductUpdated"
    );
    for field in &seed.fields {
        let ours = &ours.fields[ours.lookup[&field.name]];
        assert_eq!(ours.schema, field.schema, "{}", field.name);
    }
    // Our own additions are optional or derived from the product, never a rename of a seed field.
    for name in ["price_minor", "category", "version"] {
        assert!(ours.lookup.contains_key(name), "{name}");
    }
}
