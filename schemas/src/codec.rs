//! The JSON codec: a domain event to (type, schema version, payload) and back.
//!
//! Domain event enums are serde's externally tagged enums of one struct per variant, so an event
//! serialises as `{"ProductCreated":{...}}`. The stored payload is the inner object; the variant
//! name is the envelope's `event_type`. Decoding first upcasts an older stored version to the
//! current one (see [`crate::upcast`]).

use cqrs_es::DomainEvent;
use serde_json::value::RawValue;

/// An event as the store and the wire hold it, without its envelope.
#[derive(Clone, Debug)]
pub struct EncodedEvent {
    /// The event's type name, such as `ProductUpdated` (the envelope's `event_type`).
    pub event_type: String,
    /// The version of the payload's shape (the envelope's `schema_version`).
    pub schema_version: u32,
    /// The event's body as JSON text.
    pub payload: Box<RawValue>,
}

/// Why an event could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload is not valid JSON for the event type at that version.
    #[error("event {event_type} v{schema_version} cannot be decoded: {source}")]
    Payload {
        /// The event's type name.
        event_type: String,
        /// The stored version of the payload.
        schema_version: u32,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The stored version is newer than the current version of this build: a newer mercato
    /// wrote it. Upgrade this process rather than guessing at the shape.
    #[error(
        "event {event_type} has schema version {schema_version}, newer than this build knows ({current})"
    )]
    FromTheFuture {
        /// The event's type name.
        event_type: String,
        /// The stored version of the payload.
        schema_version: u32,
        /// The newest version this build reads.
        current: u32,
    },
    /// The stored version is older than the current one and no chain of upcasters leads from it
    /// to the current version.
    #[error(
        "event {event_type} has schema version {schema_version}, which this build cannot read: no upcaster from v{missing_step} to v{next} is registered (current version is {current})",
        next = .missing_step + 1
    )]
    UnknownVersion {
        /// The event's type name.
        event_type: String,
        /// The stored version of the payload.
        schema_version: u32,
        /// The first version of the chain that has no upcaster.
        missing_step: u32,
        /// The version the chain should end at.
        current: u32,
    },
    /// The event type is not in `domain::EVENT_TYPES`.
    #[error("unknown event type {0}")]
    UnknownEventType(String),
    /// The domain event could not be written as JSON.
    #[error("event {event_type} cannot be encoded: {source}")]
    Encode {
        /// The event's type name.
        event_type: String,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// An upcaster step rejected the payload.
    #[error("upcasting {event_type} from v{from_version} failed: {message}")]
    Upcast {
        /// The event's type name.
        event_type: String,
        /// The version the failing step reads.
        from_version: u32,
        /// What the step found wrong.
        message: String,
    },
}

/// Encodes a domain event as its type name, current schema version and JSON payload.
pub fn encode<E: DomainEvent>(event: &E) -> Result<EncodedEvent, CodecError> {
    let event_type = event.event_type();
    let schema_version = domain::current_schema_version(&event_type);
    if schema_version == 0 {
        return Err(CodecError::UnknownEventType(event_type));
    }
    let tagged = serde_json::to_string(event).map_err(|source| CodecError::Encode {
        event_type: event_type.clone(),
        source,
    })?;
    // `{"<event_type>":<payload>}`: take the payload out without parsing it again.
    let inner = tagged
        .strip_prefix("{\"")
        .and_then(|rest| rest.strip_prefix(event_type.as_str()))
        .and_then(|rest| rest.strip_prefix("\":"))
        .and_then(|rest| rest.strip_suffix('}'))
        .map(str::to_owned)
        .ok_or_else(|| CodecError::Encode {
            event_type: event_type.clone(),
            source: serde::de::Error::custom(
                "domain events must be externally tagged enums of structs",
            ),
        })?;
    let payload = RawValue::from_string(inner).map_err(|source| CodecError::Encode {
        event_type: event_type.clone(),
        source,
    })?;
    Ok(EncodedEvent {
        event_type,
        schema_version,
        payload,
    })
}

/// Decodes a stored payload of any known version into the current domain event.
pub fn decode<E: DomainEvent>(
    event_type: &str,
    schema_version: u32,
    payload: &RawValue,
) -> Result<E, CodecError> {
    let current = domain::current_schema_version(event_type);
    if current == 0 {
        return Err(CodecError::UnknownEventType(event_type.to_owned()));
    }
    if schema_version > current {
        return Err(CodecError::FromTheFuture {
            event_type: event_type.to_owned(),
            schema_version,
            current,
        });
    }
    let upcast;
    let payload_text = if schema_version < current {
        upcast = crate::upcast::upcast(event_type, schema_version, payload)?;
        upcast.get()
    } else {
        payload.get()
    };
    let tagged = format!("{{\"{event_type}\":{payload_text}}}");
    serde_json::from_str(&tagged).map_err(|source| CodecError::Payload {
        event_type: event_type.to_owned(),
        schema_version,
        source,
    })
}
