//! Contract tests of the `schemas` crate: every event round-trips through JSON and Avro, the
//! `ProductUpdated` schema stays readable with the seed schema, the golden files of every event
//! at every version still decode, and no payment token a v1 event stored comes out again.

mod avro;
mod golden;
mod json;
mod samples;
