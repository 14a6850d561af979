//! Upcasters: each turns one stored version of an event type into the next one, so that old
//! events are read as the current Rust type.
//!
//! A step is registered in [`UPCASTERS`] under `(event_type, from_version)` and turns a payload of
//! version N into version N+1. [`upcast`] chains the steps from the stored version up to the
//! current one of `domain::EVENT_TYPES`; [`crate::decode`] calls it for every older payload. A gap
//! in the chain is a [`CodecError::UnknownVersion`], a version newer than the current one a
//! [`CodecError::FromTheFuture`].
//!
//! Changing an event's shape therefore means: bump its version in `domain::EVENT_TYPES`, add a
//! step here, update its `.avsc`, and add a golden file for the new version (keep the old one).

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::codec::CodecError;

/// A payload as an upcaster step sees it: the event's JSON object.
pub type Payload = Map<String, Value>;

/// One step of an upcaster chain: reads a payload of `event_type` at `from_version` and returns
/// it at `from_version + 1`, or says what is wrong with it.
#[derive(Clone, Copy, Debug)]
pub struct Upcaster {
    /// The event type the step applies to.
    pub event_type: &'static str,
    /// The version the step reads; it writes `from_version + 1`.
    pub from_version: u32,
    /// The transformation itself.
    pub step: fn(Payload) -> Result<Payload, String>,
}

/// Every upcaster step of this build, keyed by `(event_type, from_version)`.
pub const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "ProductUpdated",
    from_version: 1,
    step: product_updated_v1_to_v2,
}];

/// `ProductUpdated` v1 followed the catalogue's first schema: `price` was a decimal number in major
/// units and there was no `category`. v2 keeps money as exact integer minor units (`price_minor`)
/// and adds the optional `category`. The price is converted from the number's decimal text, never
/// through floating-point arithmetic; a v1 product had no category, so it reads as `null`.
fn product_updated_v1_to_v2(mut payload: Payload) -> Result<Payload, String> {
    let price = match payload.remove("price") {
        Some(Value::Number(price)) => price,
        Some(other) => return Err(format!("price must be a number, found {other}")),
        None => return Err("price is missing".to_owned()),
    };
    let price_minor = domain::Money::parse_decimal(&price.to_string())
        .map_err(|error| format!("price {price}: {error}"))?;
    payload.insert("price_minor".to_owned(), Value::from(price_minor.minor()));
    payload.entry("category").or_insert(Value::Null);
    Ok(payload)
}

/// Brings `payload` of `event_type` at `from_version` up to the current version of
/// `domain::EVENT_TYPES`, through the steps of [`UPCASTERS`].
pub fn upcast(
    event_type: &str,
    from_version: u32,
    payload: &RawValue,
) -> Result<Box<RawValue>, CodecError> {
    let current = domain::current_schema_version(event_type);
    if current == 0 {
        return Err(CodecError::UnknownEventType(event_type.to_owned()));
    }
    upcast_with(UPCASTERS, event_type, from_version, current, payload)
}

/// Brings `payload` of `event_type` from `from_version` to `to_version` with the steps of
/// `registry`. A payload already at `to_version` comes back unchanged.
pub fn upcast_with(
    registry: &[Upcaster],
    event_type: &str,
    from_version: u32,
    to_version: u32,
    payload: &RawValue,
) -> Result<Box<RawValue>, CodecError> {
    if from_version > to_version {
        return Err(CodecError::FromTheFuture {
            event_type: event_type.to_owned(),
            schema_version: from_version,
            current: to_version,
        });
    }
    // Find the whole chain before touching the payload, so that a gap is reported as such.
    let steps = (from_version..to_version)
        .map(|version| {
            registry
                .iter()
                .find(|u| u.event_type == event_type && u.from_version == version)
                .ok_or_else(|| CodecError::UnknownVersion {
                    event_type: event_type.to_owned(),
                    schema_version: from_version,
                    missing_step: version,
                    current: to_version,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if steps.is_empty() {
        return Ok(payload.to_owned());
    }
    let mut value: Payload =
        serde_json::from_str(payload.get()).map_err(|source| CodecError::Payload {
            event_type: event_type.to_owned(),
            schema_version: from_version,
            source,
        })?;
    for upcaster in steps {
        value = (upcaster.step)(value).map_err(|message| CodecError::Upcast {
            event_type: event_type.to_owned(),
            from_version: upcaster.from_version,
            message,
        })?;
    }
    serde_json::value::to_raw_value(&value).map_err(|source| CodecError::Encode {
        event_type: event_type.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn json(payload: &RawValue) -> Value {
        serde_json::from_str(payload.get()).unwrap()
    }

    fn rename_title_to_name(mut payload: Payload) -> Result<Payload, String> {
        let title = payload.remove("title").ok_or("v1 must have a title")?;
        payload.insert("name".to_owned(), title);
        Ok(payload)
    }

    fn add_currency(mut payload: Payload) -> Result<Payload, String> {
        payload.insert("currency".to_owned(), Value::from("EUR"));
        Ok(payload)
    }

    const CHAIN: &[Upcaster] = &[
        // Registered out of order on purpose: the chain is found by key, not by position.
        Upcaster {
            event_type: "PriceListed",
            from_version: 2,
            step: add_currency,
        },
        Upcaster {
            event_type: "PriceListed",
            from_version: 1,
            step: rename_title_to_name,
        },
        Upcaster {
            event_type: "OtherEvent",
            from_version: 1,
            step: add_currency,
        },
    ];

    #[test]
    fn steps_chain_from_the_stored_version_to_the_target() {
        let v1 = raw(r#"{"title":"Espresso grinder","price_minor":24900}"#);
        let v3 = upcast_with(CHAIN, "PriceListed", 1, 3, &v1).unwrap();
        assert_eq!(
            json(&v3),
            serde_json::json!({"name": "Espresso grinder", "price_minor": 24900, "currency": "EUR"})
        );
        let v2 = raw(r#"{"name":"Espresso grinder","price_minor":24900}"#);
        let from_v2 = upcast_with(CHAIN, "PriceListed", 2, 3, &v2).unwrap();
        assert_eq!(json(&from_v2), json(&v3));
    }

    #[test]
    fn a_payload_at_the_target_version_is_unchanged() {
        let v3 = raw(r#"{"name":"x","price_minor":1,"currency":"EUR"}"#);
        let same = upcast_with(CHAIN, "PriceListed", 3, 3, &v3).unwrap();
        assert_eq!(same.get(), v3.get());
    }

    #[test]
    fn a_failing_step_names_its_version() {
        let v1 = raw(r#"{"name":"no title here"}"#);
        let error = upcast_with(CHAIN, "PriceListed", 1, 3, &v1).unwrap_err();
        assert!(
            matches!(&error, CodecError::Upcast { from_version: 1, message, .. } if message.contains("title")),
            "{error:?}"
        );
    }

    #[test]
    fn an_unknown_older_version_is_a_clear_error() {
        let v0 = raw(r#"{"title":"x"}"#);
        let error = upcast_with(CHAIN, "PriceListed", 0, 3, &v0).unwrap_err();
        assert!(
            matches!(
                error,
                CodecError::UnknownVersion {
                    schema_version: 0,
                    missing_step: 0,
                    current: 3,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "event PriceListed has schema version 0, which this build cannot read: no upcaster from v0 to v1 is registered (current version is 3)"
        );
        // The real registry: no event was ever stored at version 0.
        let error = upcast("ProductCreated", 0, &raw("{}")).unwrap_err();
        assert!(
            matches!(error, CodecError::UnknownVersion { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_gap_in_the_chain_is_reported_at_the_missing_step() {
        let error = upcast_with(CHAIN, "OtherEvent", 1, 3, &raw("{}")).unwrap_err();
        assert!(
            matches!(
                error,
                CodecError::UnknownVersion {
                    missing_step: 2,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_version_from_the_future_is_refused() {
        let error = upcast_with(CHAIN, "PriceListed", 4, 3, &raw("{}")).unwrap_err();
        assert!(
            matches!(
                error,
                CodecError::FromTheFuture {
                    schema_version: 4,
                    current: 3,
                    ..
                }
            ),
            "{error:?}"
        );
        let error = crate::decode::<domain::ProductEvent>(
            "ProductUpdated",
            3,
            &raw(r#"{"product_id":"x"}"#),
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                CodecError::FromTheFuture {
                    schema_version: 3,
                    current: 2,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn an_unknown_event_type_is_refused() {
        let error = upcast("ProductRenamed", 1, &raw("{}")).unwrap_err();
        assert!(
            matches!(error, CodecError::UnknownEventType(_)),
            "{error:?}"
        );
    }

    #[test]
    fn product_updated_v1_reads_as_v2_with_exact_minor_units_and_no_category() {
        let v1 = raw(
            r#"{"product_id":"6f1c1d2e-8a8b-4f57-9d0a-3c1b2a4d5e6f","name":"Espresso grinder","description":"Conical burrs","price":249.99,"stock_qty":12,"version":2}"#,
        );
        let v2 = upcast("ProductUpdated", 1, &v1).unwrap();
        let value = json(&v2);
        assert_eq!(value["category"], Value::Null);
        assert_eq!(value["price_minor"], 24999);
        assert!(value.get("price").is_none(), "the major-unit price is gone");
        let event: domain::ProductEvent = crate::decode("ProductUpdated", 1, &v1).unwrap();
        let domain::ProductEvent::ProductUpdated(updated) = event else {
            panic!("decoded as {event:?}");
        };
        assert_eq!(updated.category, None);
        assert_eq!(updated.version, 2);
    }

    #[test]
    fn a_v1_price_that_is_not_whole_cents_fails_the_upcast_with_the_reason() {
        for (price, reason) in [
            ("249.999", "at most two decimals"),
            ("\"249\"", "must be a number"),
        ] {
            let v1 = raw(&format!(
                r#"{{"product_id":"6f1c1d2e-8a8b-4f57-9d0a-3c1b2a4d5e6f","name":"n","description":"","price":{price},"stock_qty":1,"version":2}}"#
            ));
            let error = upcast("ProductUpdated", 1, &v1).unwrap_err().to_string();
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn the_registry_is_consistent_with_the_event_types() {
        for (i, upcaster) in UPCASTERS.iter().enumerate() {
            let current = domain::current_schema_version(upcaster.event_type);
            assert!(current > 0, "{} is not an event type", upcaster.event_type);
            assert!(
                upcaster.from_version >= 1 && upcaster.from_version < current,
                "{} v{} is not older than the current v{current}",
                upcaster.event_type,
                upcaster.from_version
            );
            assert!(
                !UPCASTERS[..i]
                    .iter()
                    .any(|other| other.event_type == upcaster.event_type
                        && other.from_version == upcaster.from_version),
                "two upcasters for {} v{}",
                upcaster.event_type,
                upcaster.from_version
            );
        }
        // Every event type reads all its versions from 1 up.
        for (_, event_type, current) in domain::EVENT_TYPES {
            for version in 1..*current {
                assert!(
                    UPCASTERS
                        .iter()
                        .any(|u| u.event_type == *event_type && u.from_version == version),
                    "{event_type} has no upcaster from v{version}"
                );
            }
        }
    }
}
