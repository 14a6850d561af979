//! What the read side's tests share.

pub mod events;
pub mod fake_opensearch;
pub mod history;
pub mod opensearch_script;
pub mod reference_sql_models;
