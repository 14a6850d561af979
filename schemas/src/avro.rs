//! Avro: one schema per event type at its current version (`schemas/avro/<EventType>.avsc`,
//! compiled into the binary), and the mapping between an event's JSON payload and its Avro datum.
//!
//! A datum is a record of `event_id` and `occurred_at` (strings, from the envelope) followed by
//! the payload's fields: money as `*_minor` longs, UUIDs as strings, optional fields as
//! `["null", T]` unions, closed sets of names (`reason`, `kind`, `roles`) as enums, and personal
//! values as the strings of their sealed text. A JSON object told apart by a tag (`CartOpened`'s
//! `owner`, `{"kind":"customer","customer_id":...}` or `{"kind":"guest"}`) is a union of records,
//! one per kind, whose `kind` is an enum of that one symbol: exactly one branch fits a payload, and
//! the datum reads back as the same object. The mapping is driven by the schema, and it is strict:
//! a payload field the schema lacks, or a field of the wrong type, is an error, so a payload and its
//! `.avsc` cannot drift apart unnoticed.
//!
//! `ProductUpdated` keeps the name, namespace and fields of the seed schema
//! (`schemas/avro/seed/ProductUpdated.avsc`), so a reader of the seed schema reads our datums. Two
//! of its fields are derived here rather than carried by the JSON payload: `price` (a double in
//! major units, `price_minor / 100`) and `updated_at` (equal to `occurred_at`). They are dropped
//! again on the way back to JSON, where `price_minor` stays the exact value.

use std::collections::BTreeMap;
use std::sync::LazyLock;

pub use apache_avro;
use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use apache_avro::types::Value;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value as Json};
use uuid::Uuid;

use crate::codec::CodecError;
use crate::envelope::RecordedEvent;

/// The `.avsc` text of every event type at its current version, compiled into the binary.
pub const SCHEMA_SOURCES: &[(&str, &str)] = &[
    (
        "ProductCreated",
        include_str!("../avro/ProductCreated.avsc"),
    ),
    (
        "ProductDetailsChanged",
        include_str!("../avro/ProductDetailsChanged.avsc"),
    ),
    ("StockAdjusted", include_str!("../avro/StockAdjusted.avsc")),
    ("StockReserved", include_str!("../avro/StockReserved.avsc")),
    ("StockReleased", include_str!("../avro/StockReleased.avsc")),
    (
        "StockCommitted",
        include_str!("../avro/StockCommitted.avsc"),
    ),
    (
        "ProductUpdated",
        include_str!("../avro/ProductUpdated.avsc"),
    ),
    ("CartItemAdded", include_str!("../avro/CartItemAdded.avsc")),
    ("CartOpened", include_str!("../avro/CartOpened.avsc")),
    (
        "CartItemRemoved",
        include_str!("../avro/CartItemRemoved.avsc"),
    ),
    (
        "CartCheckedOut",
        include_str!("../avro/CartCheckedOut.avsc"),
    ),
    ("OrderCreated", include_str!("../avro/OrderCreated.avsc")),
    (
        "OrderConfirmed",
        include_str!("../avro/OrderConfirmed.avsc"),
    ),
    (
        "OrderCancelled",
        include_str!("../avro/OrderCancelled.avsc"),
    ),
    (
        "PaymentRequested",
        include_str!("../avro/PaymentRequested.avsc"),
    ),
    (
        "PaymentSucceeded",
        include_str!("../avro/PaymentSucceeded.avsc"),
    ),
    ("PaymentFailed", include_str!("../avro/PaymentFailed.avsc")),
    (
        "PaymentTimedOut",
        include_str!("../avro/PaymentTimedOut.avsc"),
    ),
    (
        "PaymentRefunded",
        include_str!("../avro/PaymentRefunded.avsc"),
    ),
    (
        "RefundRequested",
        include_str!("../avro/RefundRequested.avsc"),
    ),
    ("RefundFailed", include_str!("../avro/RefundFailed.avsc")),
    (
        "ShipmentCreated",
        include_str!("../avro/ShipmentCreated.avsc"),
    ),
    (
        "ShipmentDelivered",
        include_str!("../avro/ShipmentDelivered.avsc"),
    ),
    (
        "ReturnReceived",
        include_str!("../avro/ReturnReceived.avsc"),
    ),
    ("ProductViewed", include_str!("../avro/ProductViewed.avsc")),
    (
        "UserRegistered",
        include_str!("../avro/UserRegistered.avsc"),
    ),
    (
        "UserEmailVerified",
        include_str!("../avro/UserEmailVerified.avsc"),
    ),
    ("UserLoggedIn", include_str!("../avro/UserLoggedIn.avsc")),
    (
        "UserProfileChanged",
        include_str!("../avro/UserProfileChanged.avsc"),
    ),
    (
        "UserPasswordChanged",
        include_str!("../avro/UserPasswordChanged.avsc"),
    ),
    (
        "UserPasswordReset",
        include_str!("../avro/UserPasswordReset.avsc"),
    ),
    (
        "UserDeactivated",
        include_str!("../avro/UserDeactivated.avsc"),
    ),
    ("UserErased", include_str!("../avro/UserErased.avsc")),
    (
        "UserPasswordResetRequested",
        include_str!("../avro/UserPasswordResetRequested.avsc"),
    ),
];

/// The custom attribute of every `.avsc` that names the schema version it describes; it must
/// equal the current version of `domain::EVENT_TYPES`.
pub const SCHEMA_VERSION_ATTRIBUTE: &str = "schema_version";

/// The record fields every datum starts with, taken from the envelope.
const ENVELOPE_FIELDS: [&str; 2] = ["event_id", "occurred_at"];

/// Fields of a schema that the JSON payload does not carry: computed on the way to Avro, dropped
/// on the way back.
const DERIVED_FIELDS: &[(&str, &[&str])] = &[("ProductUpdated", &["price", "updated_at"])];

static SCHEMAS: LazyLock<BTreeMap<&'static str, Result<Schema, String>>> = LazyLock::new(|| {
    SCHEMA_SOURCES
        .iter()
        .map(|(event_type, source)| {
            let schema = Schema::parse_str(source).map_err(|error| error.to_string());
            (*event_type, schema)
        })
        .collect()
});

/// Why an event could not be turned into an Avro datum or back.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// No `.avsc` is compiled in for this event type.
    #[error("event type {0} has no Avro schema")]
    UnknownEventType(String),
    /// The compiled-in `.avsc` does not parse (a build defect; the tests catch it).
    #[error("the Avro schema of {event_type} is invalid: {message}")]
    InvalidSchema {
        /// The event's type name.
        event_type: String,
        /// What the parser found wrong.
        message: String,
    },
    /// The payload or datum does not fit the schema.
    #[error("event {event_type} does not fit its Avro schema: {field}: {message}")]
    Shape {
        /// The event's type name.
        event_type: String,
        /// The field at fault, as a path such as `lines[0].quantity`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// apache-avro refused to write or read the bytes.
    #[error("event {event_type}: Avro encoding failed: {source}")]
    Avro {
        /// The event's type name.
        event_type: String,
        /// apache-avro's error.
        #[source]
        source: apache_avro::Error,
    },
    /// An older payload could not be upcast to the version the schema describes.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// An event as an Avro datum carries it: the envelope fields the datum repeats and the JSON
/// payload.
#[derive(Clone, Debug)]
pub struct AvroEvent {
    /// The event's type name; selects the schema.
    pub event_type: String,
    /// The version of `payload`. [`to_value`] upcasts an older payload to the current version
    /// first; [`from_value`] always gives the current version.
    pub schema_version: u32,
    /// The envelope's event id.
    pub event_id: Uuid,
    /// The envelope's time of the event.
    pub occurred_at: DateTime<Utc>,
    /// The event's JSON payload.
    pub payload: Box<RawValue>,
}

impl From<&RecordedEvent> for AvroEvent {
    fn from(event: &RecordedEvent) -> AvroEvent {
        AvroEvent {
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            event_id: event.event_id,
            occurred_at: event.occurred_at,
            payload: event.payload.clone(),
        }
    }
}

/// The Avro schema of `event_type` at its current version.
pub fn schema(event_type: &str) -> Result<&'static Schema, AvroError> {
    match SCHEMAS.get(event_type) {
        Some(Ok(schema)) => Ok(schema),
        Some(Err(message)) => Err(AvroError::InvalidSchema {
            event_type: event_type.to_owned(),
            message: message.clone(),
        }),
        None => Err(AvroError::UnknownEventType(event_type.to_owned())),
    }
}

/// Turns an event into its Avro datum (upcasting an older payload to the current version first).
pub fn to_value(event: &AvroEvent) -> Result<Value, AvroError> {
    let event_type = event.event_type.as_str();
    let schema = schema(event_type)?;
    let Schema::Record(record) = schema else {
        return Err(shape(event_type, "", "the schema is not a record"));
    };
    let current = domain::current_schema_version(event_type);
    let upcast;
    let payload = if event.schema_version == current {
        event.payload.as_ref()
    } else {
        upcast = crate::upcast::upcast(event_type, event.schema_version, &event.payload)?;
        upcast.as_ref()
    };
    let mut fields: Map<String, Json> = serde_json::from_str(payload.get()).map_err(|error| {
        shape(
            event_type,
            "",
            format!("the payload is not a JSON object: {error}"),
        )
    })?;
    let occurred_at = event
        .occurred_at
        .to_rfc3339_opts(SecondsFormat::AutoSi, true);
    for name in ENVELOPE_FIELDS.iter().chain(derived_fields(event_type)) {
        if fields.contains_key(*name) {
            return Err(shape(
                event_type,
                name,
                "the payload must not carry a field the datum fills in itself",
            ));
        }
    }
    fields.insert(
        "event_id".to_owned(),
        Json::from(event.event_id.to_string()),
    );
    fields.insert("occurred_at".to_owned(), Json::from(occurred_at.clone()));
    if event_type == "ProductUpdated" {
        let price_minor = fields
            .get("price_minor")
            .and_then(Json::as_i64)
            .ok_or_else(|| shape(event_type, "price_minor", "must be an integer"))?;
        // Money stays integer minor units; this double exists only for readers of the seed schema.
        let price = Number::from_f64(price_minor as f64 / 100.0)
            .ok_or_else(|| shape(event_type, "price", "is not a finite number"))?;
        fields.insert("price".to_owned(), Json::Number(price));
        fields.insert("updated_at".to_owned(), Json::from(occurred_at));
    }
    record_to_avro(record, &fields, "")
        .map_err(|(field, message)| shape(event_type, &field, message))
}

/// Turns an Avro datum of `event_type`, current version, back into the event.
pub fn from_value(event_type: &str, value: Value) -> Result<AvroEvent, AvroError> {
    let schema = schema(event_type)?;
    if !value.validate(schema) {
        return Err(shape(
            event_type,
            "",
            "the datum does not match the current schema",
        ));
    }
    let Json::Object(mut fields) =
        avro_to_json(value).map_err(|(field, message)| shape(event_type, &field, message))?
    else {
        return Err(shape(event_type, "", "the datum is not a record"));
    };
    let event_id = fields
        .remove("event_id")
        .and_then(|id| id.as_str().and_then(|id| Uuid::parse_str(id).ok()))
        .ok_or_else(|| shape(event_type, "event_id", "must be a UUID"))?;
    let occurred_at = fields
        .remove("occurred_at")
        .and_then(|at| {
            at.as_str()
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        })
        .ok_or_else(|| shape(event_type, "occurred_at", "must be an RFC 3339 time"))?
        .with_timezone(&Utc);
    for name in derived_fields(event_type) {
        fields.remove(*name);
    }
    let payload = serde_json::value::to_raw_value(&fields).map_err(|source| {
        AvroError::Codec(CodecError::Encode {
            event_type: event_type.to_owned(),
            source,
        })
    })?;
    Ok(AvroEvent {
        event_type: event_type.to_owned(),
        schema_version: domain::current_schema_version(event_type),
        event_id,
        occurred_at,
        payload,
    })
}

/// Encodes an event as Avro binary (a bare datum: no container header, no schema id).
pub fn to_datum(event: &AvroEvent) -> Result<Vec<u8>, AvroError> {
    let schema = schema(&event.event_type)?;
    let value = to_value(event)?;
    apache_avro::to_avro_datum(schema, value).map_err(|source| AvroError::Avro {
        event_type: event.event_type.clone(),
        source,
    })
}

/// Encodes a stored event as Avro binary, upcast to the current version.
pub fn recorded_to_datum(event: &RecordedEvent) -> Result<Vec<u8>, AvroError> {
    to_datum(&AvroEvent::from(event))
}

/// Decodes Avro binary written with the current schema of `event_type` back into the event.
pub fn from_datum(event_type: &str, mut bytes: &[u8]) -> Result<AvroEvent, AvroError> {
    let schema = schema(event_type)?;
    let value = apache_avro::from_avro_datum(schema, &mut bytes, None).map_err(|source| {
        AvroError::Avro {
            event_type: event_type.to_owned(),
            source,
        }
    })?;
    if !bytes.is_empty() {
        return Err(shape(
            event_type,
            "",
            format!("{} bytes left after the datum", bytes.len()),
        ));
    }
    from_value(event_type, value)
}

fn derived_fields(event_type: &str) -> &'static [&'static str] {
    DERIVED_FIELDS
        .iter()
        .find(|(name, _)| *name == event_type)
        .map_or(&[], |(_, fields)| fields)
}

fn shape(event_type: &str, field: &str, message: impl Into<String>) -> AvroError {
    AvroError::Shape {
        event_type: event_type.to_owned(),
        field: if field.is_empty() {
            "(record)".to_owned()
        } else {
            field.to_owned()
        },
        message: message.into(),
    }
}

/// A conversion failure: the field path and what is wrong.
type Failure = (String, String);

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn record_to_avro(
    record: &RecordSchema,
    fields: &Map<String, Json>,
    path: &str,
) -> Result<Value, Failure> {
    if let Some(unknown) = fields.keys().find(|k| !record.lookup.contains_key(*k)) {
        return Err((
            join(path, unknown),
            format!("is not a field of the Avro record {}", record.name),
        ));
    }
    record
        .fields
        .iter()
        .map(|field| {
            let field_path = join(path, &field.name);
            // An absent field is read as null, which only an optional field accepts.
            let json = fields.get(&field.name).unwrap_or(&Json::Null);
            json_to_avro(&field.schema, json, &field_path).map(|value| (field.name.clone(), value))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Record)
}

fn json_to_avro(schema: &Schema, json: &Json, path: &str) -> Result<Value, Failure> {
    let wrong = |expected: &str| Err((path.to_owned(), format!("expected {expected}, got {json}")));
    match schema {
        Schema::Null => match json {
            Json::Null => Ok(Value::Null),
            _ => wrong("null"),
        },
        Schema::Boolean => json
            .as_bool()
            .map_or_else(|| wrong("a boolean"), |b| Ok(Value::Boolean(b))),
        Schema::Int => json
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map_or_else(|| wrong("a 32-bit integer"), |n| Ok(Value::Int(n))),
        Schema::Long => json
            .as_i64()
            .map_or_else(|| wrong("a 64-bit integer"), |n| Ok(Value::Long(n))),
        Schema::Double => json
            .as_f64()
            .map_or_else(|| wrong("a number"), |n| Ok(Value::Double(n))),
        Schema::String => json
            .as_str()
            .map_or_else(|| wrong("a string"), |s| Ok(Value::String(s.to_owned()))),
        Schema::Enum(enumeration) => {
            let symbol = json.as_str().unwrap_or_default();
            match enumeration.symbols.iter().position(|s| s == symbol) {
                Some(index) => Ok(Value::Enum(index as u32, symbol.to_owned())),
                None => wrong(&format!("one of {:?}", enumeration.symbols)),
            }
        }
        Schema::Array(array) => {
            let Some(items) = json.as_array() else {
                return wrong("an array");
            };
            items
                .iter()
                .enumerate()
                .map(|(i, item)| json_to_avro(&array.items, item, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Schema::Record(record) => match json.as_object() {
            Some(fields) => record_to_avro(record, fields, path),
            None => wrong("an object"),
        },
        Schema::Union(union) => {
            let variants = union.variants();
            let null_index = variants.iter().position(|v| matches!(v, Schema::Null));
            if json.is_null() {
                return match null_index {
                    Some(index) => Ok(Value::Union(index as u32, Box::new(Value::Null))),
                    None => wrong("a value (the field is required)"),
                };
            }
            let mut failures = Vec::new();
            for (index, variant) in variants.iter().enumerate() {
                if matches!(variant, Schema::Null) {
                    continue;
                }
                match json_to_avro(variant, json, path) {
                    Ok(value) => return Ok(Value::Union(index as u32, Box::new(value))),
                    Err(failure) => failures.push((variant, failure)),
                }
            }
            match failures.len() {
                0 => Err((path.to_owned(), "empty union".to_owned())),
                // `["null", T]`: the value is T's, and T's failure says why it is not.
                1 => Err(failures.remove(0).1),
                _ => {
                    let reasons: Vec<String> = failures
                        .iter()
                        .map(|(variant, (field, message))| {
                            format!("{}: {field} {message}", branch_name(variant))
                        })
                        .collect();
                    Err((
                        path.to_owned(),
                        format!("fits no branch of the union ({})", reasons.join("; ")),
                    ))
                }
            }
        }
        other => Err((
            path.to_owned(),
            format!("the Avro type {other:?} is not used by mercato's schemas"),
        )),
    }
}

/// A union branch as an error message names it: a record by its name, anything else by its type.
fn branch_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(record) => record.name.name.clone(),
        Schema::Enum(enumeration) => enumeration.name.name.clone(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

fn avro_to_json(value: Value) -> Result<Json, Failure> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Int(n) => Json::from(n),
        Value::Long(n) => Json::from(n),
        Value::Double(n) => Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| (String::new(), format!("{n} is not a finite number")))?,
        Value::String(s) | Value::Enum(_, s) => Json::String(s),
        Value::Uuid(uuid) => Json::String(uuid.to_string()),
        Value::Union(_, inner) => avro_to_json(*inner)?,
        Value::Array(items) => Json::Array(
            items
                .into_iter()
                .map(avro_to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Record(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(name, value)| {
                    avro_to_json(value)
                        .map(|json| (name.clone(), json))
                        .map_err(|(path, message)| (join(&name, &path), message))
                })
                .collect::<Result<Map<_, _>, _>>()?,
        ),
        other => {
            return Err((
                String::new(),
                format!("the Avro value {other:?} is not used by mercato's schemas"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product_updated(payload: &str, schema_version: u32) -> AvroEvent {
        AvroEvent {
            event_type: "ProductUpdated".to_owned(),
            schema_version,
            event_id: Uuid::from_u128(0x0195_9a3c_1f00_7000_8000_0000_0000_0001),
            occurred_at: DateTime::parse_from_rfc3339("2025-03-14T09:26:53.589Z")
                .unwrap()
                .with_timezone(&Utc),
            payload: RawValue::from_string(payload.to_owned()).unwrap(),
        }
    }

    const V2: &str = r#"{"product_id":"6f1c1d2e-8a8b-4f57-9d0a-3c1b2a4d5e6f","name":"Espresso grinder","description":"Conical burrs","price_minor":24999,"stock_qty":12,"category":"kitchen","version":2}"#;

    #[test]
    fn every_schema_parses_and_names_its_event_type_and_version() {
        assert_eq!(SCHEMA_SOURCES.len(), domain::EVENT_TYPES.len());
        for (_, event_type, version) in domain::EVENT_TYPES {
            let Schema::Record(record) = schema(event_type).unwrap() else {
                panic!("{event_type}: not a record");
            };
            assert_eq!(record.name.name, *event_type);
            assert_eq!(
                record.attributes.get(SCHEMA_VERSION_ATTRIBUTE),
                Some(&Json::from(*version)),
                "{event_type}.avsc must describe v{version}"
            );
            let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names[..2], ENVELOPE_FIELDS, "{event_type}");
        }
    }

    #[test]
    fn product_updated_carries_the_seed_fields() {
        let value = to_value(&product_updated(V2, 2)).unwrap();
        let Value::Record(fields) = value else {
            panic!("not a record")
        };
        let fields: BTreeMap<_, _> = fields.into_iter().collect();
        assert_eq!(fields["price"], Value::Double(249.99));
        assert_eq!(fields["price_minor"], Value::Long(24999));
        assert_eq!(fields["stock_qty"], Value::Int(12));
        assert_eq!(
            fields["updated_at"],
            Value::String("2025-03-14T09:26:53.589Z".to_owned())
        );
        assert_eq!(fields["updated_at"], fields["occurred_at"]);
    }

    #[test]
    fn an_older_payload_is_upcast_before_encoding() {
        let v1 = r#"{"product_id":"6f1c1d2e-8a8b-4f57-9d0a-3c1b2a4d5e6f","name":"Espresso grinder","description":"Conical burrs","price":249.99,"stock_qty":12,"version":2}"#;
        let bytes = to_datum(&product_updated(v1, 1)).unwrap();
        let back = from_datum("ProductUpdated", &bytes).unwrap();
        assert_eq!(back.schema_version, 2);
        let payload: Json = serde_json::from_str(back.payload.get()).unwrap();
        assert_eq!(payload["category"], Json::Null);
        assert_eq!(payload["price_minor"], 24999);
    }

    #[test]
    fn a_payload_that_drifts_from_its_schema_is_refused() {
        let extra = V2.replace(r#""version":2"#, r#""version":2,"colour":"red""#);
        let error = to_value(&product_updated(&extra, 2)).unwrap_err();
        assert!(
            matches!(&error, AvroError::Shape { field, .. } if field == "colour"),
            "{error}"
        );
        let missing = V2.replace(r#","version":2"#, "");
        let error = to_value(&product_updated(&missing, 2)).unwrap_err();
        assert!(
            matches!(&error, AvroError::Shape { field, .. } if field == "version"),
            "{error}"
        );
        let wrong_type = V2.replace(r#""stock_qty":12"#, r#""stock_qty":"12""#);
        let error = to_value(&product_updated(&wrong_type, 2)).unwrap_err();
        assert!(
            matches!(&error, AvroError::Shape { field, .. } if field == "stock_qty"),
            "{error}"
        );
        let clash = V2.replace(r#""version":2"#, r#""version":2,"price":249.99"#);
        assert!(to_value(&product_updated(&clash, 2)).is_err());
    }

    fn event(event_type: &str, payload: &str) -> AvroEvent {
        AvroEvent {
            event_type: event_type.to_owned(),
            schema_version: domain::current_schema_version(event_type),
            ..product_updated(payload, 2)
        }
    }

    fn shape_field(error: &AvroError) -> &str {
        match error {
            AvroError::Shape { field, .. } => field,
            other => panic!("not a shape error: {other}"),
        }
    }

    #[test]
    fn a_cart_owner_fits_one_branch_of_its_union_and_reads_back_as_the_same_object() {
        for owner in [
            r#"{"kind":"customer","customer_id":"alice-42"}"#,
            r#"{"kind":"guest"}"#,
        ] {
            let payload = format!(r#"{{"owner":{owner}}}"#);
            let bytes = to_datum(&event("CartOpened", &payload)).unwrap();
            let back = from_datum("CartOpened", &bytes).unwrap();
            let read: Json = serde_json::from_str(back.payload.get()).unwrap();
            assert_eq!(read, serde_json::from_str::<Json>(&payload).unwrap());
        }
        for (owner, reason) in [
            (
                r#"{"kind":"guest","customer_id":"alice-42"}"#,
                "GuestCartOwner: owner.customer_id is not a field",
            ),
            (
                r#"{"kind":"customer"}"#,
                "CustomerCartOwner: owner.customer_id expected a string",
            ),
            (r#"{"kind":"staff"}"#, "fits no branch of the union"),
            (r#""guest""#, "expected an object"),
            ("null", "the field is required"),
        ] {
            let payload = format!(r#"{{"owner":{owner}}}"#);
            let error = to_value(&event("CartOpened", &payload)).unwrap_err();
            assert_eq!(shape_field(&error), "owner", "{owner}: {error}");
            assert!(error.to_string().contains(reason), "{owner}: {error}");
        }
    }

    #[test]
    fn roles_and_the_account_kind_are_enums_of_the_names_the_domain_writes() {
        let registered = r#"{"user_id":"5b0e2c4a-7d1f-4e93-8a6b-2f4c6e8a0d13","kind":"staff","roles":["catalog","support","admin","auditor"],"email":"pd1.ZW1haWw","name":"pd1.bmFtZQ","email_verified":true}"#;
        let bytes = to_datum(&event("UserRegistered", registered)).unwrap();
        let back = from_datum("UserRegistered", &bytes).unwrap();
        assert_eq!(
            serde_json::from_str::<Json>(back.payload.get()).unwrap(),
            serde_json::from_str::<Json>(registered).unwrap()
        );
        for (from, to, field) in [
            (r#""admin","auditor""#, r#""admin","root""#, "roles[3]"),
            (r#""kind":"staff""#, r#""kind":"robot""#, "kind"),
            (
                r#""email_verified":true"#,
                r#""email_verified":"yes""#,
                "email_verified",
            ),
        ] {
            let broken = registered.replace(from, to);
            let error = to_value(&event("UserRegistered", &broken)).unwrap_err();
            assert_eq!(shape_field(&error), field, "{error}");
        }
    }

    #[test]
    fn unknown_types_and_trailing_bytes_are_refused() {
        let mut event = product_updated(V2, 2);
        event.event_type = "ProductRenamed".to_owned();
        assert!(matches!(
            to_datum(&event),
            Err(AvroError::UnknownEventType(_))
        ));
        let mut bytes = to_datum(&product_updated(V2, 2)).unwrap();
        bytes.push(0);
        assert!(from_datum("ProductUpdated", &bytes).is_err());
    }
}
