//! The Cart aggregate: lines of products a customer intends to buy, until checkout.
//!
//! Unit prices are resolved by the command side from the Product aggregate and passed in the
//! command; the cart records the price it was given.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{CustomerId, FieldError};
use crate::money::Money;

pub const LINE_QUANTITY_MAX: u32 = 999;
pub const LINES_MAX: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItemAdded {
    pub product_id: Uuid,
    /// The quantity added by this event.
    pub quantity: u32,
    /// The line's quantity after it.
    pub line_quantity: u32,
    #[serde(rename = "unit_price_minor")]
    pub unit_price: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItemRemoved {
    pub product_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartCheckedOut {
    pub order_id: Uuid,
    pub customer_id: CustomerId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartEvent {
    CartItemAdded(CartItemAdded),
    CartItemRemoved(CartItemRemoved),
    CartCheckedOut(CartCheckedOut),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CartCommand {
    /// Adds `quantity` to the product's line (creating the line if needed).
    AddItem {
        product_id: Uuid,
        quantity: i64,
        unit_price: Money,
    },
    RemoveItem {
        product_id: Uuid,
    },
    CheckOut {
        order_id: Uuid,
        customer_id: CustomerId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the cart was checked out and accepts no more changes")]
    CheckedOut,
    #[error("the cart has no line for product {product_id}")]
    NoSuchLine { product_id: Uuid },
    #[error("a cart holds at most {LINES_MAX} lines")]
    TooManyLines,
    #[error(
        "a line holds at most {LINE_QUANTITY_MAX} units: {line_quantity} already in the cart, {added} added"
    )]
    LineTooLarge { line_quantity: u32, added: u32 },
    #[error("an empty cart cannot be checked out")]
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub quantity: u32,
    pub unit_price: Money,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub lines: BTreeMap<Uuid, CartLine>,
    /// The order the cart became, once checked out.
    pub checked_out_as: Option<Uuid>,
}

impl Cart {
    fn decide(&self, command: CartCommand) -> Result<Option<CartEvent>, CartError> {
        if let (
            Some(order_id),
            CartCommand::CheckOut {
                order_id: retried, ..
            },
        ) = (self.checked_out_as, &command)
        {
            if order_id == *retried {
                return Ok(None); // the same checkout again
            }
        }
        if self.checked_out_as.is_some() {
            return Err(CartError::CheckedOut);
        }
        match command {
            CartCommand::AddItem {
                product_id,
                quantity,
                unit_price,
            } => {
                if !(1..=i64::from(LINE_QUANTITY_MAX)).contains(&quantity) {
                    return Err(FieldError::new(
                        "quantity",
                        format!("must be between 1 and {LINE_QUANTITY_MAX}"),
                    )
                    .into());
                }
                let quantity = quantity as u32;
                if !unit_price.is_positive() {
                    return Err(FieldError::new("unit_price", "must be greater than 0").into());
                }
                let line_quantity = match self.lines.get(&product_id) {
                    Some(line) => line.quantity,
                    None if self.lines.len() >= LINES_MAX => return Err(CartError::TooManyLines),
                    None => 0,
                };
                if line_quantity + quantity > LINE_QUANTITY_MAX {
                    return Err(CartError::LineTooLarge {
                        line_quantity,
                        added: quantity,
                    });
                }
                Ok(Some(CartEvent::CartItemAdded(CartItemAdded {
                    product_id,
                    quantity,
                    line_quantity: line_quantity + quantity,
                    unit_price,
                })))
            }
            CartCommand::RemoveItem { product_id } => {
                if !self.lines.contains_key(&product_id) {
                    return Err(CartError::NoSuchLine { product_id });
                }
                Ok(Some(CartEvent::CartItemRemoved(CartItemRemoved {
                    product_id,
                })))
            }
            CartCommand::CheckOut {
                order_id,
                customer_id,
            } => {
                if self.lines.is_empty() {
                    return Err(CartError::Empty);
                }
                Ok(Some(CartEvent::CartCheckedOut(CartCheckedOut {
                    order_id,
                    customer_id,
                })))
            }
        }
    }
}

impl Aggregate for Cart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CartEvent::CartItemAdded(added) => {
                self.lines.insert(
                    added.product_id,
                    CartLine {
                        quantity: added.line_quantity,
                        unit_price: added.unit_price,
                    },
                );
            }
            CartEvent::CartItemRemoved(removed) => {
                self.lines.remove(&removed.product_id);
            }
            CartEvent::CartCheckedOut(checked_out) => {
                self.checked_out_as = Some(checked_out.order_id)
            }
        }
    }
}

impl DomainEvent for CartEvent {
    fn event_type(&self) -> String {
        match self {
            CartEvent::CartItemAdded(_) => "CartItemAdded",
            CartEvent::CartItemRemoved(_) => "CartItemRemoved",
            CartEvent::CartCheckedOut(_) => "CartCheckedOut",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::current_schema_version(&self.event_type()).to_string()
    }
}
