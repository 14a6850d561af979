//! Product views: recorded as their own stream type, apart from the product's stream, so that a
//! burst of views never contends with writes to the product.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::CustomerId;

/// The stream type that holds `ProductViewed` events.
pub const VIEWS_STREAM_TYPE: &str = "product_views";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductViewed {
    pub product_id: Uuid,
    pub customer_id: Option<CustomerId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductViewEvent {
    ProductViewed(ProductViewed),
}

impl DomainEvent for ProductViewEvent {
    fn event_type(&self) -> String {
        "ProductViewed".to_owned()
    }

    fn event_version(&self) -> String {
        crate::current_schema_version("ProductViewed").to_string()
    }
}
