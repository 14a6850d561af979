//! Identifiers chosen by clients (`cart_id`, `customer_id`) and the validation error every
//! aggregate uses to name the field a caller must fix.

use serde::{Deserialize, Serialize};

/// A rule about one input field was broken: `field` names it, `message` says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// Checks a client-chosen id: 1 to 64 characters of `A-Za-z0-9_-`.
pub fn validate_client_id(field: &'static str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.len() > 64 {
        return Err(FieldError::new(field, "must be 1 to 64 characters long"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(FieldError::new(
            field,
            "may contain only A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    Ok(())
}

/// A cart id chosen by the client.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CartId(String);

/// A customer id chosen by the client.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(String);

macro_rules! client_id {
    ($type:ident, $field:literal) => {
        impl $type {
            pub fn parse(id: &str) -> Result<$type, FieldError> {
                validate_client_id($field, id)?;
                Ok($type(id.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}

client_id!(CartId, "cart_id");
client_id!(CustomerId, "customer_id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_accept_the_documented_alphabet_only() {
        assert!(CartId::parse("cart-1_A").is_ok());
        assert!(CartId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(CartId::parse("").unwrap_err().field, "cart_id");
        assert!(CartId::parse(&"x".repeat(65)).is_err());
        assert!(CustomerId::parse("bob smith").is_err());
        assert!(CustomerId::parse("bøb").is_err());
        assert!(CustomerId::parse("../etc").is_err());
    }
}
