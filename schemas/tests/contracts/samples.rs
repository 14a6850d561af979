//! One realistic sample of every event variant (some twice, to cover both sides of an optional
//! field or of a tagged union), and [`AnyEvent`], which decodes any stream type's event into its
//! domain enum.

use std::collections::BTreeSet;

use domain::cart::{CartCheckedOut, CartItemAdded, CartItemRemoved, CartOpened};
use domain::order::{
    ItemCount, OrderCancelled, OrderConfirmed, OrderCreated, OrderLine, PaymentMethod,
    ReturnReceived, ShipmentCreated, ShipmentDelivered,
};
use domain::payment::{
    PaymentFailed, PaymentRefunded, PaymentRequested, PaymentSucceeded, PaymentTimedOut,
    RefundFailed, RefundRequested,
};
use domain::product::{
    ProductCreated, ProductDetailsChanged, ProductUpdated, StockAdjusted, StockCommitted,
    StockReleased, StockReserved,
};
use domain::user::{
    USER_STREAM_TYPE, UserDeactivated, UserEmailVerified, UserErased, UserLoggedIn,
    UserPasswordChanged, UserPasswordReset, UserPasswordResetRequested, UserProfileChanged,
    UserRegistered,
};
use domain::views::ProductViewed;
use domain::{
    AccountKind, CancelReason, CartEvent, CartId, CartOwner, CustomerId, Money, OrderEvent,
    PaymentEvent, ProductEvent, ProductViewEvent, Role, Sealed, UserEvent,
};
use schemas::{CodecError, EncodedEvent};
use serde_json::value::RawValue;
use uuid::Uuid;

pub const GRINDER: Uuid = Uuid::from_u128(0x6f1c1d2e_8a8b_4f57_9d0a_3c1b2a4d5e6f);
pub const KETTLE: Uuid = Uuid::from_u128(0x2b7e9c41_0d3a_4e8f_b615_7a90c2d4e813);
pub const ORDER: Uuid = Uuid::from_u128(0x0c5f8e2a_41b7_4d93_a2e6_18f4b7c9d350);
pub const ANN: Uuid = Uuid::from_u128(0x5b0e2c4a_7d1f_4e93_8a6b_2f4c6e8a0d13);
pub const DANA: Uuid = Uuid::from_u128(0x8c2f6a1d_3e7b_4f09_b5d2_1a9e4c7f0b66);

/// A domain event of any stream type.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyEvent {
    Product(ProductEvent),
    Cart(CartEvent),
    Order(OrderEvent),
    Payment(PaymentEvent),
    View(ProductViewEvent),
    User(UserEvent),
}

impl AnyEvent {
    pub fn stream_type(&self) -> &'static str {
        match self {
            AnyEvent::Product(_) => "product",
            AnyEvent::Cart(_) => "cart",
            AnyEvent::Order(_) => "order",
            AnyEvent::Payment(_) => "payment",
            AnyEvent::View(_) => domain::VIEWS_STREAM_TYPE,
            AnyEvent::User(_) => USER_STREAM_TYPE,
        }
    }

    pub fn encode(&self) -> Result<EncodedEvent, CodecError> {
        match self {
            AnyEvent::Product(event) => schemas::encode(event),
            AnyEvent::Cart(event) => schemas::encode(event),
            AnyEvent::Order(event) => schemas::encode(event),
            AnyEvent::Payment(event) => schemas::encode(event),
            AnyEvent::View(event) => schemas::encode(event),
            AnyEvent::User(event) => schemas::encode(event),
        }
    }

    /// Decodes a stored payload (upcasting it) into the domain enum of `stream_type`.
    pub fn decode(
        stream_type: &str,
        event_type: &str,
        schema_version: u32,
        payload: &RawValue,
    ) -> Result<AnyEvent, CodecError> {
        Ok(match stream_type {
            "product" => AnyEvent::Product(schemas::decode(event_type, schema_version, payload)?),
            "cart" => AnyEvent::Cart(schemas::decode(event_type, schema_version, payload)?),
            "order" => AnyEvent::Order(schemas::decode(event_type, schema_version, payload)?),
            "payment" => AnyEvent::Payment(schemas::decode(event_type, schema_version, payload)?),
            domain::VIEWS_STREAM_TYPE => {
                AnyEvent::View(schemas::decode(event_type, schema_version, payload)?)
            }
            USER_STREAM_TYPE => {
                AnyEvent::User(schemas::decode(event_type, schema_version, payload)?)
            }
            other => panic!("unknown stream type {other}"),
        })
    }
}

fn customer() -> CustomerId {
    CustomerId::parse("alice-42").unwrap()
}

/// A personal value as the key service seals it: opaque text, never the value in the clear.
fn sealed(text: &str) -> Sealed {
    Sealed::from_sealed_text(format!("pd1.{text}"))
}

/// Naming every variant here makes a new variant without a sample a compile error.
fn variant_has_a_sample(event: &AnyEvent) {
    match event {
        AnyEvent::Product(
            ProductEvent::ProductCreated(_)
            | ProductEvent::ProductDetailsChanged(_)
            | ProductEvent::StockAdjusted(_)
            | ProductEvent::StockReserved(_)
            | ProductEvent::StockReleased(_)
            | ProductEvent::StockCommitted(_)
            | ProductEvent::ProductUpdated(_),
        )
        | AnyEvent::Cart(
            CartEvent::CartOpened(_)
            | CartEvent::CartItemAdded(_)
            | CartEvent::CartItemRemoved(_)
            | CartEvent::CartCheckedOut(_),
        )
        | AnyEvent::Order(
            OrderEvent::OrderCreated(_)
            | OrderEvent::OrderConfirmed(_)
            | OrderEvent::OrderCancelled(_)
            | OrderEvent::ShipmentCreated(_)
            | OrderEvent::ShipmentDelivered(_)
            | OrderEvent::ReturnReceived(_),
        )
        | AnyEvent::Payment(
            PaymentEvent::PaymentRequested(_)
            | PaymentEvent::PaymentSucceeded(_)
            | PaymentEvent::PaymentFailed(_)
            | PaymentEvent::PaymentTimedOut(_)
            | PaymentEvent::PaymentRefunded(_)
            | PaymentEvent::RefundRequested(_)
            | PaymentEvent::RefundFailed(_),
        )
        | AnyEvent::View(ProductViewEvent::ProductViewed(_))
        | AnyEvent::User(
            UserEvent::UserRegistered(_)
            | UserEvent::UserEmailVerified(_)
            | UserEvent::UserLoggedIn(_)
            | UserEvent::UserProfileChanged(_)
            | UserEvent::UserPasswordChanged(_)
            | UserEvent::UserPasswordReset(_)
            | UserEvent::UserDeactivated(_)
            | UserEvent::UserErased(_)
            | UserEvent::UserPasswordResetRequested(_),
        ) => {}
    }
}

/// Every sample event.
pub fn all() -> Vec<AnyEvent> {
    let lines = vec![
        OrderLine {
            product_id: GRINDER,
            quantity: 1,
            unit_price: Money::from_minor(24_999),
        },
        OrderLine {
            product_id: KETTLE,
            quantity: 2,
            unit_price: Money::from_minor(5_450),
        },
    ];
    let samples = vec![
        AnyEvent::Product(ProductEvent::ProductCreated(ProductCreated {
            product_id: GRINDER,
            name: "Espresso grinder".to_owned(),
            description: "Conical steel burrs, 40 grind settings.".to_owned(),
            price: Money::from_minor(24_999),
            stock_qty: 12,
            category: Some("kitchen".to_owned()),
        })),
        AnyEvent::Product(ProductEvent::ProductCreated(ProductCreated {
            product_id: KETTLE,
            name: "Gooseneck kettle «Ø» 1 l".to_owned(),
            description: String::new(),
            price: Money::from_minor(5_450),
            stock_qty: 0,
            category: None,
        })),
        AnyEvent::Product(ProductEvent::ProductDetailsChanged(ProductDetailsChanged {
            name: "Espresso grinder".to_owned(),
            description: "Conical steel burrs, 40 grind settings.".to_owned(),
            price: Money::from_minor(22_900),
            category: Some("coffee".to_owned()),
        })),
        AnyEvent::Product(ProductEvent::StockAdjusted(StockAdjusted {
            delta: -3,
            stock_qty: 9,
        })),
        AnyEvent::Product(ProductEvent::StockReserved(StockReserved {
            order_id: ORDER,
            quantity: 1,
        })),
        AnyEvent::Product(ProductEvent::StockReleased(StockReleased {
            order_id: ORDER,
            quantity: 1,
        })),
        AnyEvent::Product(ProductEvent::StockCommitted(StockCommitted {
            order_id: ORDER,
            quantity: 1,
        })),
        AnyEvent::Product(ProductEvent::ProductUpdated(ProductUpdated {
            product_id: GRINDER,
            name: "Espresso grinder".to_owned(),
            description: "Conical steel burrs, 40 grind settings.".to_owned(),
            price: Money::from_minor(24_999),
            stock_qty: 12,
            category: Some("kitchen".to_owned()),
            version: 2,
        })),
        AnyEvent::Product(ProductEvent::ProductUpdated(ProductUpdated {
            product_id: KETTLE,
            name: "Gooseneck kettle «Ø» 1 l".to_owned(),
            description: String::new(),
            price: Money::from_minor(1),
            stock_qty: domain::product::STOCK_MAX,
            category: None,
            version: 7,
        })),
        AnyEvent::Cart(CartEvent::CartOpened(CartOpened {
            owner: CartOwner::customer(customer()),
        })),
        AnyEvent::Cart(CartEvent::CartOpened(CartOpened {
            owner: CartOwner::Guest,
        })),
        AnyEvent::Cart(CartEvent::CartItemAdded(CartItemAdded {
            product_id: KETTLE,
            quantity: 2,
            line_quantity: 3,
            unit_price: Money::from_minor(5_450),
        })),
        AnyEvent::Cart(CartEvent::CartItemRemoved(CartItemRemoved {
            product_id: KETTLE,
        })),
        AnyEvent::Cart(CartEvent::CartCheckedOut(CartCheckedOut {
            order_id: ORDER,
            customer_id: customer(),
        })),
        AnyEvent::Order(OrderEvent::OrderCreated(OrderCreated {
            order_id: ORDER,
            customer_id: customer(),
            lines: lines.clone(),
            total: Money::from_minor(35_899),
            payment_ref: Some(format!("vault:{ORDER}")),
            cart_id: Some(CartId::parse("cart-7f3a").unwrap()),
            shipping_address: Some(sealed("AAECAwQFBgcICQoLc2hpcHBpbmc")),
            billing_address: Some(sealed("DA0ODxAREhMUFRYXYmlsbGluZw")),
            payment_method: PaymentMethod::Card,
        })),
        AnyEvent::Order(OrderEvent::OrderCreated(OrderCreated {
            order_id: ORDER,
            customer_id: customer(),
            lines: lines[..1].to_vec(),
            total: Money::from_minor(24_999),
            payment_ref: None,
            cart_id: None,
            shipping_address: None,
            billing_address: None,
            payment_method: PaymentMethod::BankTransfer,
        })),
        AnyEvent::Order(OrderEvent::OrderConfirmed(OrderConfirmed {
            order_id: ORDER,
        })),
        AnyEvent::Order(OrderEvent::OrderCancelled(OrderCancelled {
            order_id: ORDER,
            reason: CancelReason::PaymentDeclined,
            detail: "card declined by the issuer".to_owned(),
        })),
        AnyEvent::Order(OrderEvent::OrderCancelled(OrderCancelled {
            order_id: ORDER,
            reason: CancelReason::OutOfStock,
            detail: "Espresso grinder: 1 requested, 0 available".to_owned(),
        })),
        AnyEvent::Order(OrderEvent::OrderCancelled(OrderCancelled {
            order_id: ORDER,
            reason: CancelReason::PaymentTimeout,
            detail: "the payment gateway did not answer within 10 s".to_owned(),
        })),
        AnyEvent::Order(OrderEvent::OrderCancelled(OrderCancelled {
            order_id: ORDER,
            reason: CancelReason::CustomerRequest,
            detail: "ordered the wrong size".to_owned(),
        })),
        AnyEvent::Order(OrderEvent::OrderCancelled(OrderCancelled {
            order_id: ORDER,
            reason: CancelReason::StaffRequest,
            detail: "cancelled by the shop".to_owned(),
        })),
        AnyEvent::Order(OrderEvent::ShipmentCreated(ShipmentCreated {
            order_id: ORDER,
            shipment_id: Uuid::from_u128(0x5111),
            lines: vec![ItemCount {
                product_id: GRINDER,
                quantity: 1,
            }],
            carrier: "Poste Italiane".to_owned(),
            tracking_number: "RR123456789IT".to_owned(),
        })),
        AnyEvent::Order(OrderEvent::ShipmentDelivered(ShipmentDelivered {
            order_id: ORDER,
            shipment_id: Uuid::from_u128(0x5111),
        })),
        AnyEvent::Order(OrderEvent::ReturnReceived(ReturnReceived {
            order_id: ORDER,
            return_id: Uuid::from_u128(0x7111),
            lines: vec![ItemCount {
                product_id: GRINDER,
                quantity: 1,
            }],
            restock: false,
        })),
        AnyEvent::Payment(PaymentEvent::PaymentRequested(PaymentRequested {
            order_id: ORDER,
            amount: Money::from_minor(35_899),
            payment_ref: format!("vault:{ORDER}"),
        })),
        AnyEvent::Payment(PaymentEvent::PaymentRequested(PaymentRequested {
            order_id: ORDER,
            amount: Money::from_minor(24_999),
            payment_ref: String::new(),
        })),
        AnyEvent::Payment(PaymentEvent::PaymentSucceeded(PaymentSucceeded {
            order_id: ORDER,
            amount: Money::from_minor(35_899),
            charge_id: "ch_3f9a1c".to_owned(),
        })),
        AnyEvent::Payment(PaymentEvent::PaymentFailed(PaymentFailed {
            order_id: ORDER,
            reason: "card_declined".to_owned(),
        })),
        AnyEvent::Payment(PaymentEvent::PaymentTimedOut(PaymentTimedOut {
            order_id: ORDER,
        })),
        AnyEvent::Payment(PaymentEvent::PaymentRefunded(PaymentRefunded {
            order_id: ORDER,
            amount: Money::from_minor(35_899),
            refund_id: "re_81b2d4".to_owned(),
        })),
        AnyEvent::Payment(PaymentEvent::RefundRequested(RefundRequested {
            order_id: ORDER,
            refund_id: "9a1b3c5d".to_owned(),
            amount: Money::from_minor(1_500),
            reason: Some("scratched on arrival".to_owned()),
        })),
        AnyEvent::Payment(PaymentEvent::RefundRequested(RefundRequested {
            order_id: ORDER,
            refund_id: "9a1b3c5e".to_owned(),
            amount: Money::from_minor(500),
            reason: None,
        })),
        AnyEvent::Payment(PaymentEvent::RefundFailed(RefundFailed {
            order_id: ORDER,
            refund_id: "9a1b3c5d".to_owned(),
            reason: "the charge was disputed".to_owned(),
        })),
        AnyEvent::View(ProductViewEvent::ProductViewed(ProductViewed {
            product_id: GRINDER,
            customer_id: Some(customer()),
        })),
        AnyEvent::View(ProductViewEvent::ProductViewed(ProductViewed {
            product_id: GRINDER,
            customer_id: None,
        })),
        AnyEvent::User(UserEvent::UserRegistered(UserRegistered {
            user_id: ANN,
            kind: AccountKind::Customer,
            roles: BTreeSet::new(),
            email: sealed("AAECAwQFBgcICQoLc2VhbGVkIGVtYWls"),
            name: sealed("DA0ODxAREhMUFRYXc2VhbGVkIG5hbWU"),
            email_verified: false,
        })),
        AnyEvent::User(UserEvent::UserRegistered(UserRegistered {
            user_id: DANA,
            kind: AccountKind::Staff,
            roles: Role::ALL.into_iter().collect(),
            email: sealed("GBkaGxwdHh8gISIjc2VhbGVkIGVtYWls"),
            name: sealed("JCUmJygpKissLS4vc2VhbGVkIG5hbWU"),
            email_verified: true,
        })),
        AnyEvent::User(UserEvent::UserEmailVerified(UserEmailVerified {
            user_id: ANN,
        })),
        AnyEvent::User(UserEvent::UserLoggedIn(UserLoggedIn {
            user_id: ANN,
            method: "password".to_owned(),
        })),
        AnyEvent::User(UserEvent::UserProfileChanged(UserProfileChanged {
            user_id: ANN,
            name: sealed("MDEyMzQ1Njc4OTo7c2VhbGVkIG5hbWU"),
            phone: Some(sealed("PD0-P0BBQkNERUZHc2VhbGVkIHBob25l")),
            addresses: Some(sealed("SElKS0xNTk9QUVJTc2VhbGVkIGFkZHJlc3Nlcw")),
            language: Some("de".to_owned()),
        })),
        AnyEvent::User(UserEvent::UserProfileChanged(UserProfileChanged {
            user_id: ANN,
            name: sealed("VFVWV1hZWltcXV5fc2VhbGVkIG5hbWU"),
            phone: None,
            addresses: None,
            language: None,
        })),
        AnyEvent::User(UserEvent::UserPasswordChanged(UserPasswordChanged {
            user_id: ANN,
        })),
        AnyEvent::User(UserEvent::UserPasswordReset(UserPasswordReset {
            user_id: ANN,
        })),
        AnyEvent::User(UserEvent::UserDeactivated(UserDeactivated { user_id: ANN })),
        AnyEvent::User(UserEvent::UserErased(UserErased { user_id: ANN })),
        AnyEvent::User(UserEvent::UserPasswordResetRequested(
            UserPasswordResetRequested { user_id: ANN },
        )),
    ];
    samples.iter().for_each(variant_has_a_sample);
    samples
}
