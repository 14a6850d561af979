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

/// Who a cart belongs to: its first writer, a customer or a guest (who proves it with the cart
/// token the shop gave in the answer to that first write).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CartOwner {
    Customer { customer_id: CustomerId },
    Guest,
}

impl CartOwner {
    pub fn customer(customer_id: CustomerId) -> CartOwner {
        CartOwner::Customer { customer_id }
    }

    /// The owner as one text, as read models keep it: `customer:<id>` or `guest`.
    pub fn key(&self) -> String {
        match self {
            CartOwner::Customer { customer_id } => format!("customer:{customer_id}"),
            CartOwner::Guest => "guest".to_owned(),
        }
    }
}

/// Who gives a cart command: a customer, or a guest, who holds the cart's token or (on a cart's
/// first write) not yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CartWriter {
    Customer(CustomerId),
    Guest { with_token: bool },
}

impl CartWriter {
    /// The owner a cart this writer opens gets.
    pub fn owner(&self) -> CartOwner {
        match self {
            CartWriter::Customer(customer_id) => CartOwner::customer(customer_id.clone()),
            CartWriter::Guest { .. } => CartOwner::Guest,
        }
    }

    /// Whether this writer may write a cart of `owner`: the same customer, or a guest holding
    /// the cart's token.
    pub fn may_write(&self, owner: &CartOwner) -> bool {
        match (self, owner) {
            (CartWriter::Customer(writer), CartOwner::Customer { customer_id }) => {
                writer == customer_id
            }
            (CartWriter::Guest { with_token }, CartOwner::Guest) => *with_token,
            _ => false,
        }
    }
}

/// A cart was given its owner: by the first write to it, or by the first write since carts
/// have owners to a cart that had none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartOpened {
    pub owner: CartOwner,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartEvent {
    CartOpened(CartOpened),
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
        by: CartWriter,
    },
    RemoveItem {
        product_id: Uuid,
        by: CartWriter,
    },
    CheckOut {
        order_id: Uuid,
        customer_id: CustomerId,
        by: CartWriter,
    },
}

impl CartCommand {
    /// Who gives the command.
    pub fn by(&self) -> &CartWriter {
        match self {
            CartCommand::AddItem { by, .. }
            | CartCommand::RemoveItem { by, .. }
            | CartCommand::CheckOut { by, .. } => by,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The cart belongs to someone else: answered as if it did not exist.
    #[error("no cart has this id")]
    NotOwner,
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
    /// Its first writer; `None` for a new cart, or one written before carts had owners.
    #[serde(default)]
    pub owner: Option<CartOwner>,
    pub lines: BTreeMap<Uuid, CartLine>,
    /// The order the cart became, once checked out.
    pub checked_out_as: Option<Uuid>,
}

impl Cart {
    /// The events `command` causes: a cart without an owner is first opened by whoever gives
    /// it; a cart of someone else (or of a guest, to a writer without its token) refuses
    /// everything as if it did not exist.
    fn decide_owned(&self, command: CartCommand) -> Result<Vec<CartEvent>, CartError> {
        let opened = match &self.owner {
            Some(owner) if !command.by().may_write(owner) => return Err(CartError::NotOwner),
            Some(_) => None,
            None => Some(CartEvent::CartOpened(CartOpened {
                owner: command.by().owner(),
            })),
        };
        let Some(event) = self.decide(command)? else {
            return Ok(Vec::new());
        };
        Ok(opened.into_iter().chain(std::iter::once(event)).collect())
    }

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
                by: _,
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
            CartCommand::RemoveItem { product_id, by: _ } => {
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
                by: _,
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
        for event in self.decide_owned(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CartEvent::CartOpened(opened) => self.owner = Some(opened.owner),
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
            CartEvent::CartOpened(_) => "CartOpened",
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

    fn alice_owner() -> CartOwner {
        CartOwner::customer(alice())
    }

    fn alice_writer() -> CartWriter {
        CartWriter::Customer(alice())
    }

    fn opened(owner: CartOwner) -> CartEvent {
        CartEvent::CartOpened(CartOpened { owner })
    }

    fn add(product_id: Uuid, quantity: i64) -> CartCommand {
        CartCommand::AddItem {
            product_id,
            quantity,
            unit_price: MUG_PRICE,
            by: alice_writer(),
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
            by: alice_writer(),
        }
    }

    fn remove(product_id: Uuid) -> CartCommand {
        CartCommand::RemoveItem {
            product_id,
            by: alice_writer(),
        }
    }

    fn checked_out(order_id: Uuid) -> CartEvent {
        CartEvent::CartCheckedOut(CartCheckedOut {
            order_id,
            customer_id: alice(),
        })
    }

    /// A cart of Alice's with `events` after its opening.
    fn given(events: Vec<CartEvent>) -> AggregateTestExecutor<Cart> {
        let history = std::iter::once(opened(alice_owner()))
            .chain(events)
            .collect();
        TestFramework::<Cart>::with(()).given(history)
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
                by: alice_writer(),
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
            .when(remove(product(1)))
            .then_expect_events(vec![removed(product(1))]);
    }

    #[test]
    fn removing_a_product_not_in_the_cart_fails_with_no_such_line() {
        let never_added = remove(product(2));
        given(vec![added(product(1), 2, 2)])
            .when(never_added)
            .then_expect_error(CartError::NoSuchLine {
                product_id: product(2),
            });
        let already_removed = remove(product(1));
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
        let changes = [add(product(1), 1), add(product(2), 1), remove(product(1))];
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

    // Ownership

    #[test]
    fn the_first_write_to_a_new_cart_opens_it_for_its_writer() {
        TestFramework::<Cart>::with(())
            .given_no_previous_events()
            .when(add(product(1), 2))
            .then_expect_events(vec![opened(alice_owner()), added(product(1), 2, 2)]);
        TestFramework::<Cart>::with(())
            .given_no_previous_events()
            .when(CartCommand::AddItem {
                product_id: product(1),
                quantity: 1,
                unit_price: MUG_PRICE,
                by: CartWriter::Guest { with_token: false },
            })
            .then_expect_events(vec![opened(CartOwner::Guest), added(product(1), 1, 1)]);
    }

    #[test]
    fn a_guest_cart_is_written_only_with_its_token() {
        let guest_cart = vec![opened(CartOwner::Guest), added(product(1), 1, 1)];
        let add_as_guest = |with_token| CartCommand::AddItem {
            product_id: product(1),
            quantity: 1,
            unit_price: MUG_PRICE,
            by: CartWriter::Guest { with_token },
        };
        TestFramework::<Cart>::with(())
            .given(guest_cart.clone())
            .when(add_as_guest(false))
            .then_expect_error(CartError::NotOwner);
        TestFramework::<Cart>::with(())
            .given(guest_cart.clone())
            .when(add_as_guest(true))
            .then_expect_events(vec![added(product(1), 1, 2)]);
        TestFramework::<Cart>::with(())
            .given(guest_cart)
            .when(add(product(1), 1))
            .then_expect_error(CartError::NotOwner);
    }

    #[test]
    fn a_cart_of_someone_else_refuses_every_command_as_if_it_did_not_exist() {
        let bob = CartWriter::Customer(CustomerId::parse("bob").expect("id"));
        let commands = [
            CartCommand::AddItem {
                product_id: product(1),
                quantity: 1,
                unit_price: MUG_PRICE,
                by: bob.clone(),
            },
            CartCommand::RemoveItem {
                product_id: product(1),
                by: bob.clone(),
            },
            CartCommand::CheckOut {
                order_id: order(1),
                customer_id: alice(),
                by: CartWriter::Guest { with_token: true },
            },
        ];
        for command in commands {
            given(vec![added(product(1), 2, 2)])
                .when(command)
                .then_expect_error(CartError::NotOwner);
        }
        assert!(alice_writer().may_write(&alice_owner()));
        assert!(!bob.may_write(&alice_owner()));
    }

    #[test]
    fn a_cart_written_before_carts_had_owners_goes_to_its_next_writer() {
        TestFramework::<Cart>::with(())
            .given(vec![added(product(1), 2, 2)])
            .when(remove(product(1)))
            .then_expect_events(vec![opened(alice_owner()), removed(product(1))]);
        TestFramework::<Cart>::with(())
            .given(vec![added(product(1), 2, 2)])
            .when(remove(product(9)))
            .then_expect_error(CartError::NoSuchLine {
                product_id: product(9),
            });
    }

    // Snapshots

    #[test]
    fn a_cart_snapshot_round_trips_through_json() {
        let history = vec![
            opened(alice_owner()),
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
        let before_owners: Cart =
            serde_json::from_str(r#"{"lines":{},"checked_out_as":null}"#).expect("old snapshot");
        assert_eq!(before_owners.owner, None);
    }
}
