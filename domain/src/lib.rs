//! mercato's domain: the aggregates Product, Cart, Order, Payment and User, their commands and
//! events, and the rules of personal data before it is sealed.
//!
//! Aggregates implement [`cqrs_es::Aggregate`]: `handle` decides which events a command causes,
//! `apply` folds an event into the state. Nothing here does I/O; anything a decision needs from
//! elsewhere (a product's current price, say) arrives inside the command.

pub mod cart;
pub mod ids;
pub mod money;
pub mod order;
pub mod payment;
pub mod personal;
pub mod product;
pub mod text;
pub mod user;
pub mod views;

pub use cart::{Cart, CartCommand, CartError, CartEvent, CartOwner, CartWriter};
pub use ids::{CartId, CustomerId, FieldError};
pub use money::{Money, MoneyError};
pub use order::{
    CancelReason, FulfilmentStatus, Order, OrderCommand, OrderError, OrderEvent, OrderStatus,
    PaymentMethod,
};
pub use payment::{Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus};
pub use personal::{Address, Sealed};
pub use product::{Product, ProductCommand, ProductError, ProductEvent};
pub use user::{AccountKind, Role, User, UserCommand, UserError, UserEvent, UserStatus};
pub use views::{ProductViewEvent, VIEWS_STREAM_TYPE};

/// Every event type with its stream type and current schema version. The wire format of each
/// version lives in the `schemas` crate; this table is what the Rust types here produce.
pub const EVENT_TYPES: &[(&str, &str, u32)] = &[
    ("product", "ProductCreated", 1),
    ("product", "ProductDetailsChanged", 1),
    ("product", "StockAdjusted", 1),
    ("product", "StockReserved", 1),
    ("product", "StockReleased", 1),
    ("product", "StockCommitted", 1),
    ("product", "ProductUpdated", 2),
    ("cart", "CartOpened", 1),
    ("cart", "CartItemAdded", 1),
    ("cart", "CartItemRemoved", 1),
    ("cart", "CartCheckedOut", 1),
    ("order", "OrderCreated", 3),
    ("order", "OrderConfirmed", 1),
    ("order", "OrderCancelled", 2),
    ("order", "ShipmentCreated", 1),
    ("order", "ShipmentDelivered", 1),
    ("order", "ReturnReceived", 1),
    ("payment", "PaymentRequested", 2),
    ("payment", "PaymentSucceeded", 1),
    ("payment", "PaymentFailed", 1),
    ("payment", "PaymentTimedOut", 1),
    ("payment", "PaymentRefunded", 1),
    ("payment", "RefundRequested", 1),
    ("payment", "RefundFailed", 1),
    (VIEWS_STREAM_TYPE, "ProductViewed", 1),
    ("user", "UserRegistered", 1),
    ("user", "UserEmailVerified", 1),
    ("user", "UserLoggedIn", 1),
    ("user", "UserProfileChanged", 2),
    ("user", "UserPasswordChanged", 1),
    ("user", "UserPasswordReset", 1),
    ("user", "UserDeactivated", 1),
    ("user", "UserErased", 1),
    ("user", "UserPasswordResetRequested", 1),
];

/// The stream types whose events fold into an aggregate (whose state at a moment can be
/// rebuilt); the others (`product_views`) only record.
pub const AGGREGATE_STREAM_TYPES: &[&str] = &["product", "cart", "order", "payment", "user"];

/// Every stream type events are written to, in the order of [`EVENT_TYPES`].
pub fn stream_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = Vec::new();
    for (stream_type, _, _) in EVENT_TYPES {
        if !types.contains(stream_type) {
            types.push(stream_type);
        }
    }
    types
}

/// The schema version the current Rust type of `event_type` is written as (0 if unknown).
pub fn current_schema_version(event_type: &str) -> u32 {
    EVENT_TYPES
        .iter()
        .find(|(_, name, _)| *name == event_type)
        .map_or(0, |(_, _, version)| *version)
}
