//! Upcasters: each turns one stored version of an event type into the next one, so that old
//! events are read as the current Rust type.

use serde_json::value::RawValue;

use crate::codec::CodecError;

/// Brings `payload` of `event_type` at `from_version` up to the current version.
pub fn upcast(
    event_type: &str,
    from_version: u32,
    payload: &RawValue,
) -> Result<Box<RawValue>, CodecError> {
    Err(CodecError::Upcast {
        event_type: event_type.to_owned(),
        from_version,
        message: "no upcaster is registered for this version".to_owned(),
    })
}
