//! How opening or running the platform fails: bad usage (a setting or an argument to change,
//! exit 2) or a failure at run time (exit 1). The kind is part of the type, so the command line
//! never guesses it from a message.

use std::error::Error as StdError;

/// A failure of the platform, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting or an argument the operator must change: the message says which and how.
    #[error("{0}")]
    Usage(String),
    /// Something failed while running: what was being done, and why (the source).
    #[error("{what}")]
    Runtime {
        what: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Something failed while running, and the message says all there is to say.
    #[error("{0}")]
    Failed(String),
}

/// The result of the platform's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure at run time while doing `what`.
    pub fn runtime(what: impl Into<String>, source: impl StdError + Send + Sync + 'static) -> Self {
        Error::Runtime {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// Whether this is bad usage (exit 2) rather than a failure at run time (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }

    /// Adds what was being done to a runtime failure; usage errors already say what to fix.
    pub fn context(self, what: impl Into<String>) -> Self {
        match self {
            Error::Usage(message) => Error::Usage(message),
            other => Error::Runtime {
                what: what.into(),
                source: Box::new(other),
            },
        }
    }
}

/// A store error while doing `what`: an unusable URL is bad usage, anything else a runtime
/// failure.
pub fn store_failure(what: impl Into<String>) -> impl FnOnce(eventstore::StoreError) -> Error {
    move |error| match error {
        eventstore::StoreError::UnsupportedUrl { .. } | eventstore::StoreError::InvalidUrl(_) => {
            Error::Usage(error.to_string())
        }
        other => Error::runtime(what, other),
    }
}

/// A read-model error while doing `what`.
pub fn projection_failure(
    what: impl Into<String>,
) -> impl FnOnce(projections::ProjectionError) -> Error {
    move |error| Error::runtime(what, error)
}
