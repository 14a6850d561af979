//! Contract tests of the `schemas` crate: every event round-trips through JSON and Avro, the
//! `ProductUpdated` schema stays readable with the seed schema, and the golden files of every
//! event at every version still decode.

mod avro;
mod golden;
mod json;
mod samples;
