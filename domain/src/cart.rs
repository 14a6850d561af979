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
    /// In minor units, as every money field a person or a script reads (`*_minor`); the old
    /// name is read from snapshots written before.
    #[serde(rename = "unit_price_minor", alias = "unit_price")]
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
            && order_id == *retried
        {
            return Ok(None); // the same checkout again
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

#[cfg(test)]
mod tests {
    use cqrs_es::test::{AggregateTestExecutor, TestFramework};

    use super::*;

    const MUG_PRICE: Money = Money::from_minor(850);

    fn product(number: u128) -> Uuid {
        Uuid::from_u128(0x0b0d_0000 + number)
    }

    fn order(number: u128) -> Uuid {
        Uuid::from_u128(0x0a0d_0000 + number)
    }

    fn alice() -> CustomerId {
        CustomerId::parse("alice").expect("a valid customer id")
    }

    fn add(product_id: Uuid, quantity: i64) -> CartCommand {
        CartCommand::AddItem {
            product_id,
            quantity,
            unit_price: MUG_PRICE,
        }
    }

    fn added(product_id: Uuid, quantity: u32, line_quantity: u32) -> CartEvent {
        CartEvent::CartItemAdded(CartItemAdded {
            product_id,
            quantity,
            line_quantity,
            unit_price: MUG_PRICE,
        })
    }

    fn removed(product_id: Uuid) -> CartEvent {
        CartEvent::CartItemRemoved(CartItemRemoved { product_id })
    }

    fn check_out(order_id: Uuid) -> CartCommand {
        CartCommand::CheckOut {
            order_id,
            customer_id: alice(),
        }
    }

    fn checked_out(order_id: Uuid) -> CartEvent {
        CartEvent::CartCheckedOut(CartCheckedOut {
            order_id,
            customer_id: alice(),
        })
    }

    fn given(events: Vec<CartEvent>) -> AggregateTestExecutor<Cart> {
        TestFramework::<Cart>::with(()).given(events)
    }

    /// A cart with one line per product, `n_lines` of them, one unit each.
    fn cart_with_lines(n_lines: usize) -> Vec<CartEvent> {
        (0..n_lines as u128)
            .map(|line_idx| added(product(line_idx), 1, 1))
            .collect()
    }

    #[track_caller]
    fn assert_invalid(result: Result<Vec<CartEvent>, CartError>, expected_field: &str) {
        match result {
            Err(CartError::Invalid(FieldError { field, .. })) => assert_eq!(field, expected_field),
            other => panic!("expected an invalid {expected_field}, got {other:?}"),
        }
    }

    // AddItem

    #[test]
    fn a_cart_s_lines_become_the_order_s_lines_at_their_prices() {
        use crate::order::OrderLine;
        let mut cart = Cart::default();
        for event in [
            added(product(2), 1, 1),
            added(product(1), 2, 2),
            added(product(2), 3, 4),
            removed(product(3)),
        ] {
            cart.apply(event);
        }
        let lines: Vec<(Uuid, u32, Money)> = OrderLine::of_cart(&cart)
            .iter()
            .map(|line| (line.product_id, line.quantity, line.unit_price))
            .collect();
        assert_eq!(
            lines,
            [(product(1), 2, MUG_PRICE), (product(2), 4, MUG_PRICE)]
        );
    }

    #[test]
    fn adding_an_item_creates_a_line_with_its_quantity_and_unit_price() {
        given(vec![])
            .when(add(product(1), 2))
            .then_expect_events(vec![added(product(1), 2, 2)]);
    }

    #[test]
    fn adding_a_product_already_in_the_cart_adds_to_its_line() {
        given(vec![added(product(1), 2, 2)])
            .when(add(product(1), 3))
            .then_expect_events(vec![added(product(1), 3, 5)]);
    }

    #[test]
    fn adding_999_units_at_once_is_allowed() {
        given(vec![])
            .when(add(product(1), 999))
            .then_expect_events(vec![added(product(1), 999, 999)]);
    }

    #[test]
    fn adding_a_quantity_outside_1_to_999_fails_naming_the_quantity_field() {
        for quantity in [0, -1, 1_000, i64::MAX, i64::MIN] {
            assert_invalid(
                given(vec![])
                    .when(add(product(1), quantity))
                    .inspect_result(),
                "quantity",
            );
        }
    }

    #[test]
    fn adding_with_a_unit_price_of_zero_or_less_fails_naming_the_unit_price_field() {
        for minor in [0, -1] {
            let command = CartCommand::AddItem {
                product_id: product(1),
                quantity: 1,
                unit_price: Money::from_minor(minor),
            };
            assert_invalid(given(vec![]).when(command).inspect_result(), "unit_price");
        }
    }

    #[test]
    fn a_line_may_grow_to_exactly_999_units() {
        given(vec![added(product(1), 500, 500)])
            .when(add(product(1), 499))
            .then_expect_events(vec![added(product(1), 499, 999)]);
    }

    #[test]
    fn growing_a_line_past_999_units_fails_with_line_too_large() {
        given(vec![added(product(1), 500, 500)])
            .when(add(product(1), 500))
            .then_expect_error(CartError::LineTooLarge {
                line_quantity: 500,
                added: 500,
            });
    }

    #[test]
    fn the_100th_distinct_line_is_accepted() {
        given(cart_with_lines(LINES_MAX - 1))
            .when(add(product(1_000), 1))
            .then_expect_events(vec![added(product(1_000), 1, 1)]);
    }

    #[test]
    fn a_101st_distinct_line_fails_with_too_many_lines() {
        given(cart_with_lines(LINES_MAX))
            .when(add(product(1_000), 1))
            .then_expect_error(CartError::TooManyLines);
    }

    #[test]
    fn a_full_cart_still_accepts_more_units_on_an_existing_line() {
        given(cart_with_lines(LINES_MAX))
            .when(add(product(0), 1))
            .then_expect_events(vec![added(product(0), 1, 2)]);
    }

    // RemoveItem

    #[test]
    fn removing_a_line_emits_cart_item_removed() {
        given(vec![added(product(1), 2, 2)])
            .when(CartCommand::RemoveItem {
                product_id: product(1),
            })
            .then_expect_events(vec![removed(product(1))]);
    }

    #[test]
    fn removing_a_product_not_in_the_cart_fails_with_no_such_line() {
        let never_added = CartCommand::RemoveItem {
            product_id: product(2),
        };
        given(vec![added(product(1), 2, 2)])
            .when(never_added)
            .then_expect_error(CartError::NoSuchLine {
                product_id: product(2),
            });
        let already_removed = CartCommand::RemoveItem {
            product_id: product(1),
        };
        given(vec![added(product(1), 2, 2), removed(product(1))])
            .when(already_removed)
            .then_expect_error(CartError::NoSuchLine {
                product_id: product(1),
            });
    }

    // CheckOut

    #[test]
    fn checking_out_emits_cart_checked_out_with_the_order_and_the_customer() {
        given(vec![added(product(1), 2, 2)])
            .when(check_out(order(1)))
            .then_expect_events(vec![checked_out(order(1))]);
    }

    #[test]
    fn checking_out_an_empty_cart_fails_with_empty() {
        given(vec![])
            .when(check_out(order(1)))
            .then_expect_error(CartError::Empty);
        given(vec![added(product(1), 2, 2), removed(product(1))])
            .when(check_out(order(1)))
            .then_expect_error(CartError::Empty);
    }

    #[test]
    fn a_checked_out_cart_refuses_every_change_with_checked_out() {
        let history = vec![added(product(1), 2, 2), checked_out(order(1))];
        let changes = [
            add(product(1), 1),
            add(product(2), 1),
            CartCommand::RemoveItem {
                product_id: product(1),
            },
        ];
        for command in changes {
            given(history.clone())
                .when(command)
                .then_expect_error(CartError::CheckedOut);
        }
    }

    #[test]
    fn the_same_checkout_again_emits_nothing() {
        given(vec![added(product(1), 2, 2), checked_out(order(1))])
            .when(check_out(order(1)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_checkout_with_another_order_id_fails_with_checked_out() {
        given(vec![added(product(1), 2, 2), checked_out(order(1))])
            .when(check_out(order(2)))
            .then_expect_error(CartError::CheckedOut);
    }

    // Snapshots

    #[test]
    fn a_cart_snapshot_round_trips_through_json() {
        let history = vec![
            added(product(1), 2, 2),
            added(product(2), 1, 1),
            added(product(1), 3, 5),
            removed(product(2)),
            added(product(3), 4, 4),
            checked_out(order(1)),
        ];
        let mut cart = Cart::default();
        for event in history {
            cart.apply(event);
        }
        assert_eq!(cart.lines.len(), 2);
        assert_eq!(cart.lines[&product(1)].quantity, 5);
        let json = serde_json::to_string(&cart).expect("a cart serializes");
        let restored: Cart = serde_json::from_str(&json).expect("a snapshot deserializes");
        assert_eq!(restored, cart);
    }
}
