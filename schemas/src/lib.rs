//! mercato's event contracts. Only this crate knows how an event looks on the wire: the envelope
//! ([`envelope`]), the JSON payload of every event type and version ([`codec`]), the Avro schemas
//! under `schemas/avro/` ([`avro`]), the upcasters that read old versions as the current one
//! ([`upcast`]), the Kafka topic and header names ([`topics`]), and an event as a CloudEvent
//! ([`cloudevents`]). Golden files of every event at
//! every version live under `schemas/golden/` and are checked by this crate's tests.

#![warn(missing_docs)]

pub mod avro;
pub mod cloudevents;
pub mod codec;
pub mod envelope;
pub mod topics;
pub mod upcast;

pub use codec::{CodecError, EncodedEvent, decode, encode};
pub use envelope::{EventMetadata, NewEvent, RecordedEvent, split_trace_context};

/// FNV-1a of `text`: the same in every process and build, unlike the standard library's hasher.
/// It picks a stream's Kafka partition ([`topics::partition_for`]) and names a deployment's
/// Redis keys.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
