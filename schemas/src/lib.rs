//! mercato's event contracts. Only this crate knows how an event looks on the wire: the envelope
//! ([`envelope`]), the JSON payload of every event type and version ([`codec`]), the Avro schemas
//! under `schemas/avro/` ([`avro`]), the upcasters that read old versions as the current one
//! ([`upcast`]), and the Kafka topic and header names ([`topics`]). Golden files of every event at
//! every version live under `schemas/golden/` and are checked by this crate's tests.

#![warn(missing_docs)]

pub mod avro;
pub mod codec;
pub mod envelope;
pub mod topics;
pub mod upcast;

pub use codec::{CodecError, EncodedEvent, decode, encode};
pub use envelope::{EventMetadata, NewEvent, RecordedEvent};
