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
use crate::envelope::RecordedEvent;

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
pub const UPCASTERS: &[Upcaster] = &[
    Upcaster {
        event_type: "ProductUpdated",
        from_version: 1,
        step: product_updated_v1_to_v2,
    },
    Upcaster {
        event_type: "OrderCreated",
        from_version: 1,
        step: order_created_v1_to_v2,
    },
    Upcaster {
        event_type: "PaymentRequested",
        from_version: 1,
        step: payment_requested_v1_to_v2,
    },
    Upcaster {
        event_type: "OrderCreated",
        from_version: 2,
        step: order_created_v2_to_v3,
    },
    Upcaster {
        event_type: "OrderCancelled",
        from_version: 1,
        step: order_cancelled_v1_to_v2,
    },
    Upcaster {
        event_type: "UserProfileChanged",
        from_version: 1,
        step: user_profile_changed_v1_to_v2,
    },
];

/// `UserProfileChanged` v2 adds the language of the person's messages; a v1 profile had none
/// (English).
fn user_profile_changed_v1_to_v2(mut payload: Payload) -> Result<Payload, String> {
    if payload.contains_key("language") {
        return Err("a v1 payload has no language".to_owned());
    }
    payload.insert("language".to_owned(), Value::Null);
    Ok(payload)
}

/// `OrderCreated` v3 keeps the order's addresses (sealed under the person's key) and its payment
/// method. A v2 order kept no address (its free-text shipping address was checked and dropped)
/// and was paid by card.
fn order_created_v2_to_v3(mut payload: Payload) -> Result<Payload, String> {
    for field in ["shipping_address", "billing_address", "payment_method"] {
        if payload.contains_key(field) {
            return Err(format!("a v2 payload has no {field}"));
        }
    }
    payload.insert("shipping_address".to_owned(), Value::Null);
    payload.insert("billing_address".to_owned(), Value::Null);
    payload.insert("payment_method".to_owned(), Value::from("card"));
    Ok(payload)
}

/// `OrderCancelled` v2 adds two reasons, `customer_request` and `staff_request`; every v1 payload
/// is a valid v2 payload as it is.
fn order_cancelled_v1_to_v2(payload: Payload) -> Result<Payload, String> {
    Ok(payload)
}

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

/// `OrderCreated` v1 carried the customer's `payment_token`, the gateway's token that charges the
/// card. A token is a secret: whoever reads it can charge the card, so it must never be in the
/// log, in Kafka or in any answer. v2 carries `payment_ref` instead, the vault's reference to where
/// the token is kept. A v1 event keeps its stored bytes (the stream's hash chain covers them), so
/// every reader gets it through this step, which drops the token; its token was never put in the
/// vault, so there is nothing to refer to and `payment_ref` reads as `null`.
fn order_created_v1_to_v2(payload: Payload) -> Result<Payload, String> {
    drop_payment_token(payload, Value::Null)
}

/// `PaymentRequested` v1 carried the `payment_token` too, for the gateway's charge; v2 carries
/// `payment_ref`, the vault's reference, for the same reason as `OrderCreated` v2. A v1 payment's
/// token was never put in the vault, so its `payment_ref` reads as the empty string (the field is
/// required in v2: every payment requested since has one).
fn payment_requested_v1_to_v2(payload: Payload) -> Result<Payload, String> {
    drop_payment_token(payload, Value::from(""))
}

/// Removes the v1 `payment_token` and adds `payment_ref` as `before_vault`. The v1 shape is
/// checked (a token that is a string, no `payment_ref` yet), and no message names a value of the
/// payload, so that a refused payload's token never reaches a log line or an answer.
fn drop_payment_token(mut payload: Payload, before_vault: Value) -> Result<Payload, String> {
    match payload.remove("payment_token") {
        Some(Value::String(_)) => {}
        Some(_) => return Err("payment_token must be a string".to_owned()),
        None => return Err("payment_token is missing".to_owned()),
    }
    if payload.contains_key("payment_ref") {
        return Err("a v1 payload has no payment_ref".to_owned());
    }
    payload.insert("payment_ref".to_owned(), before_vault);
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

/// A stored event as every reader sees it: its payload brought up to the current version of its
/// type through [`UPCASTERS`], and its `schema_version` that version; the rest of the envelope as
/// stored. An event at its current version comes back as it is. What leaves the process (a feed,
/// an export, a Kafka message) is this event, never the stored one, so that nothing an upcaster
/// drops (a v1 payment token) is shown again.
pub fn to_current_version(
    event: &RecordedEvent,
) -> Result<std::borrow::Cow<'_, RecordedEvent>, CodecError> {
    let current = domain::current_schema_version(&event.event_type);
    if current == 0 {
        return Err(CodecError::UnknownEventType(event.event_type.clone()));
    }
    if event.schema_version == current {
        return Ok(std::borrow::Cow::Borrowed(event));
    }
    let payload = upcast(&event.event_type, event.schema_version, &event.payload)?;
    Ok(std::borrow::Cow::Owned(RecordedEvent {
        schema_version: current,
        payload,
        ..event.clone()
    }))
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

    const ORDER_CREATED_V1: &str = include_str!("../golden/OrderCreated.v1.json");
    const PAYMENT_REQUESTED_V1: &str = include_str!("../golden/PaymentRequested.v1.json");

    fn stored(golden: &str) -> RecordedEvent {
        serde_json::from_str(golden).unwrap()
    }

    /// What a reader of `event` gets: its payload upcast, and that payload decoded into the domain
    /// type and encoded again.
    fn as_read<E: cqrs_es::DomainEvent>(event: &RecordedEvent) -> (Value, String) {
        let upcast_payload =
            upcast(&event.event_type, event.schema_version, &event.payload).unwrap();
        let decoded: E =
            crate::decode(&event.event_type, event.schema_version, &event.payload).unwrap();
        let re_encoded = crate::encode(&decoded).unwrap();
        (json(&upcast_payload), re_encoded.payload.get().to_owned())
    }

    #[test]
    fn order_created_v1_reads_as_current_without_its_payment_token() {
        let event = stored(ORDER_CREATED_V1);
        assert!(
            event.payload.get().contains("tok_"),
            "the v1 golden holds a token"
        );
        let (payload, re_encoded) = as_read::<domain::OrderEvent>(&event);
        assert!(payload.get("payment_token").is_none(), "{payload}");
        assert_eq!(payload["payment_ref"], Value::Null);
        assert!(!payload.to_string().contains("tok_"), "{payload}");
        assert!(!re_encoded.contains("tok_"), "{re_encoded}");
        assert!(!re_encoded.contains("payment_token"), "{re_encoded}");
        let current = to_current_version(&event).unwrap();
        assert_eq!(current.schema_version, 3);
        let whole = serde_json::to_string(&current).unwrap();
        assert!(!whole.contains("tok_"), "{whole}");
    }

    #[test]
    fn order_created_v2_reads_as_v3_without_addresses_paid_by_card() {
        let event = stored(include_str!("../golden/OrderCreated.v2.json"));
        let (payload, _) = as_read::<domain::OrderEvent>(&event);
        assert_eq!(payload["shipping_address"], Value::Null);
        assert_eq!(payload["billing_address"], Value::Null);
        assert_eq!(payload["payment_method"], "card");
        assert_eq!(
            payload["payment_ref"],
            "vault:4f8a2c6e-1d3b-4a5c-9e7f-0b2d4f6a8c31"
        );
        // A payload that already has a v3 field is not a v2 one.
        let mut v3 = serde_json::from_str::<Payload>(event.payload.get()).unwrap();
        v3.insert("payment_method".to_owned(), Value::from("card"));
        assert!(order_created_v2_to_v3(v3).is_err());
    }

    #[test]
    fn payment_requested_v1_reads_as_v2_with_an_empty_reference_and_no_token() {
        let event = stored(PAYMENT_REQUESTED_V1);
        assert!(
            event.payload.get().contains("tok_"),
            "the v1 golden holds a token"
        );
        let (payload, re_encoded) = as_read::<domain::PaymentEvent>(&event);
        assert!(payload.get("payment_token").is_none(), "{payload}");
        assert_eq!(payload["payment_ref"], "");
        assert!(!payload.to_string().contains("tok_"), "{payload}");
        assert!(!re_encoded.contains("tok_"), "{re_encoded}");
        let current = to_current_version(&event).unwrap();
        assert_eq!(current.schema_version, 2);
        let whole = serde_json::to_string(&current).unwrap();
        assert!(!whole.contains("tok_"), "{whole}");
    }

    #[test]
    fn a_v1_payload_that_is_refused_is_refused_without_naming_its_token() {
        let order = r#""order_id":"0c5f8e2a-41b7-4d93-a2e6-18f4b7c9d350","customer_id":"alice-42","lines":[],"total_minor":0,"cart_id":null"#;
        for (event_type, fields, reason) in [
            (
                "OrderCreated",
                format!(r#"{order},"payment_token":"tok_secret","payment_ref":"vault:x""#),
                "has no payment_ref",
            ),
            (
                "OrderCreated",
                format!(r#"{order},"payment_token":{{"id":"tok_secret"}}"#),
                "must be a string",
            ),
            ("OrderCreated", order.to_owned(), "payment_token is missing"),
            (
                "PaymentRequested",
                r#""order_id":"0c5f8e2a-41b7-4d93-a2e6-18f4b7c9d350","amount_minor":1,"payment_token":["tok_secret"]"#.to_owned(),
                "must be a string",
            ),
        ] {
            let v1 = raw(&format!("{{{fields}}}"));
            let error = upcast(event_type, 1, &v1).unwrap_err();
            assert!(
                matches!(&error, CodecError::Upcast { from_version: 1, message, .. } if message.contains(reason)),
                "{error:?}"
            );
            assert!(!error.to_string().contains("tok_"), "{error}");
            assert!(!format!("{error:?}").contains("tok_"), "{error:?}");
        }
    }

    #[test]
    fn an_event_at_its_current_version_is_read_as_stored() {
        let event = crate::envelope::sample_event();
        let current = to_current_version(&event).unwrap();
        assert_eq!(current.schema_version, event.schema_version);
        assert_eq!(current.payload.get(), event.payload.get());
        let mut unknown = event;
        unknown.event_type = "OrderShipped".to_owned();
        assert!(matches!(
            to_current_version(&unknown),
            Err(CodecError::UnknownEventType(_))
        ));
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
