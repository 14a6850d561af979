//! mercato's event contracts. Only this crate knows how an event looks on the wire: the envelope
//! ([`envelope`]), the JSON payload of every event type and version ([`codec`]), the Avro schemas
//! under `schemas/avro/`, and the upcasters that read old versions as the current one
//! ([`upcast`]).

pub mod codec;
pub mod envelope;
pub mod upcast;

pub use codec::{CodecError, EncodedEvent, decode, encode};
pub use envelope::{EventMetadata, NewEvent, RecordedEvent};
