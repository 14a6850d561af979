//! The Product aggregate: catalogue details, stock, and per-order stock reservations.
//!
//! Every event that changes the product is followed, in the same command, by a `ProductUpdated`
//! that carries the whole product, so that a consumer can index it without other lookups.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::FieldError;
use crate::money::Money;
use crate::text::{TextRule, nfc};

pub const NAME_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 5_000;
pub const CATEGORY_MAX_CHARS: usize = 100;
/// The largest stock a product may hold, units reserved for open orders included; it keeps every
/// stock figure inside a 32-bit integer.
pub const STOCK_MAX: u32 = 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub product_id: Uuid,
    pub name: String,
    pub description: String,
    #[serde(rename = "price_minor")]
    pub price: Money,
    pub stock_qty: u32,
    pub category: Option<String>,
}

/// The catalogue details after a change (all of them, not only the changed ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDetailsChanged {
    pub name: String,
    pub description: String,
    #[serde(rename = "price_minor")]
    pub price: Money,
    pub category: Option<String>,
}

/// Stock counted again or restocked: `delta` was applied, `stock_qty` is the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockAdjusted {
    pub delta: i64,
    pub stock_qty: u32,
}

/// `quantity` units are held for `order_id` and can no longer be sold to anyone else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: Uuid,
    pub quantity: u32,
}

/// The reservation for `order_id` was given back (the order was cancelled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: Uuid,
    pub quantity: u32,
}

/// The reservation for `order_id` became a sale (the order was confirmed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    pub order_id: Uuid,
    pub quantity: u32,
}

/// The whole product after a create or change. `version` is the product stream's version of
/// this very event, so consumers can order and deduplicate documents by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpdated {
    pub product_id: Uuid,
    pub name: String,
    pub description: String,
    #[serde(rename = "price_minor")]
    pub price: Money,
    pub stock_qty: u32,
    pub category: Option<String>,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductEvent {
    ProductCreated(ProductCreated),
    ProductDetailsChanged(ProductDetailsChanged),
    StockAdjusted(StockAdjusted),
    StockReserved(StockReserved),
    StockReleased(StockReleased),
    StockCommitted(StockCommitted),
    ProductUpdated(ProductUpdated),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProductCommand {
    CreateProduct {
        product_id: Uuid,
        name: String,
        description: String,
        price: Money,
        stock_qty: i64,
        category: Option<String>,
    },
    /// Changes the given fields; `category: Some(None)` clears the category.
    UpdateProduct {
        name: Option<String>,
        description: Option<String>,
        price: Option<Money>,
        category: Option<Option<String>>,
    },
    AdjustStock {
        delta: i64,
    },
    ReserveStock {
        order_id: Uuid,
        quantity: u32,
    },
    ReleaseStock {
        order_id: Uuid,
    },
    CommitStock {
        order_id: Uuid,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product does not exist")]
    NotFound,
    #[error("product already exists")]
    AlreadyExists,
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("not enough stock of {name:?}: {requested} requested, {available} available")]
    InsufficientStock {
        /// The product's name, for a person reading why.
        name: String,
        requested: u32,
        available: u32,
    },
    #[error("stock cannot go below zero: {stock_qty} in stock, delta {delta}")]
    NegativeStock { stock_qty: u32, delta: i64 },
    #[error(
        "stock cannot exceed {STOCK_MAX} units, counting those reserved for open orders: {stock_qty} in stock, delta {delta}"
    )]
    StockTooLarge { stock_qty: u32, delta: i64 },
    /// Nothing is held for the order: it never reserved, or its reservation was released or
    /// committed already. A repeat of the saga's own commit is told apart by its event ids
    /// (`eventstore::aggregate::execute` answers it from the stored events).
    #[error("order {order_id} has no open reservation to commit")]
    NoReservation { order_id: Uuid },
}

/// A product as its events leave it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub product_id: Option<Uuid>,
    pub name: String,
    pub description: String,
    /// In minor units, as every money field a person or a script reads (`*_minor`); the old
    /// name is read from snapshots written before.
    #[serde(rename = "price_minor", alias = "price")]
    pub price: Money,
    pub stock_qty: u32,
    pub category: Option<String>,
    /// Open reservations: order id to reserved quantity. A reservation leaves the product when
    /// it is released or committed, so the state (and its snapshot) holds the orders that are
    /// open now, never the product's order history. Snapshots written while closed
    /// reservations were kept (`closed_reservations`) load as they are; that field is ignored.
    pub reservations: BTreeMap<Uuid, u32>,
    /// How many events the product stream holds.
    pub version: u64,
}

/// A product's name: 1 to [`NAME_MAX_CHARS`] visible characters on one line.
pub const NAME_RULE: TextRule = TextRule {
    field: "name",
    max: NAME_MAX_CHARS,
    multiline: false,
};

/// A product's description: up to [`DESCRIPTION_MAX_CHARS`] characters, lines allowed.
pub const DESCRIPTION_RULE: TextRule = TextRule {
    field: "description",
    max: DESCRIPTION_MAX_CHARS,
    multiline: true,
};

/// A product's category, when it has one: 1 to [`CATEGORY_MAX_CHARS`] visible characters.
pub const CATEGORY_RULE: TextRule = TextRule {
    field: "category",
    max: CATEGORY_MAX_CHARS,
    multiline: false,
};

pub fn validate_name(name: &str) -> Result<(), FieldError> {
    NAME_RULE.check_required(name)
}

pub fn validate_description(description: &str) -> Result<(), FieldError> {
    DESCRIPTION_RULE.check_optional(description)
}

pub fn validate_price(price: Money) -> Result<(), FieldError> {
    if !price.is_positive() {
        return Err(FieldError::new("price", "must be greater than 0"));
    }
    if price > Money::MAX {
        return Err(FieldError::new(
            "price",
            format!("must be at most {}", Money::MAX),
        ));
    }
    Ok(())
}

pub fn validate_category(category: Option<&str>) -> Result<(), FieldError> {
    category.map_or(Ok(()), |category| CATEGORY_RULE.check_required(category))
}

pub fn validate_stock(stock_qty: i64) -> Result<u32, FieldError> {
    if stock_qty < 0 {
        return Err(FieldError::new("stock_qty", "must be 0 or more"));
    }
    if stock_qty > i64::from(STOCK_MAX) {
        return Err(FieldError::new(
            "stock_qty",
            format!("must be at most {STOCK_MAX}"),
        ));
    }
    Ok(stock_qty as u32)
}

impl Product {
    fn exists(&self) -> bool {
        self.product_id.is_some()
    }

    /// The units held by open reservations.
    fn reserved_units(&self) -> i64 {
        self.reservations.values().fold(0_i64, |sum, &quantity| {
            sum.saturating_add(i64::from(quantity))
        })
    }

    /// The `ProductUpdated` that follows `changes` once they are applied to `self`.
    fn updated_after(&self, changes: &[ProductEvent]) -> ProductEvent {
        let mut after = self.clone();
        for change in changes {
            after.apply(change.clone());
        }
        ProductEvent::ProductUpdated(ProductUpdated {
            product_id: after.product_id.unwrap_or_default(),
            name: after.name,
            description: after.description,
            price: after.price,
            stock_qty: after.stock_qty,
            category: after.category,
            version: after.version + 1,
        })
    }

    /// Writes `change` and the `ProductUpdated` that shows its result.
    async fn emit_with_update(&mut self, change: ProductEvent, sink: &EventSink<Self>) {
        let updated = self.updated_after(std::slice::from_ref(&change));
        sink.write(change, self).await;
        sink.write(updated, self).await;
    }

    fn decide_create(
        &self,
        product_id: Uuid,
        name: String,
        description: String,
        price: Money,
        stock_qty: i64,
        category: Option<String>,
    ) -> Result<ProductEvent, ProductError> {
        if self.exists() {
            return Err(ProductError::AlreadyExists);
        }
        let (name, description, category) = (nfc(name), nfc(description), category.map(nfc));
        validate_name(&name)?;
        validate_description(&description)?;
        validate_price(price)?;
        let stock_qty = validate_stock(stock_qty)?;
        validate_category(category.as_deref())?;
        Ok(ProductEvent::ProductCreated(ProductCreated {
            product_id,
            name,
            description,
            price,
            stock_qty,
            category,
        }))
    }

    fn decide_update(
        &self,
        name: Option<String>,
        description: Option<String>,
        price: Option<Money>,
        category: Option<Option<String>>,
    ) -> Result<Option<ProductEvent>, ProductError> {
        let (name, description) = (name.map(nfc), description.map(nfc));
        let category = category.map(|category| category.map(nfc));
        if let Some(name) = &name {
            validate_name(name)?;
        }
        if let Some(description) = &description {
            validate_description(description)?;
        }
        if let Some(price) = price {
            validate_price(price)?;
        }
        if let Some(category) = &category {
            validate_category(category.as_deref())?;
        }
        let changed = ProductDetailsChanged {
            name: name.unwrap_or_else(|| self.name.clone()),
            description: description.unwrap_or_else(|| self.description.clone()),
            price: price.unwrap_or(self.price),
            category: category.unwrap_or_else(|| self.category.clone()),
        };
        let unchanged = changed.name == self.name
            && changed.description == self.description
            && changed.price == self.price
            && changed.category == self.category;
        Ok((!unchanged).then_some(ProductEvent::ProductDetailsChanged(changed)))
    }

    fn decide_adjust(&self, delta: i64) -> Result<Option<ProductEvent>, ProductError> {
        if delta == 0 {
            return Ok(None);
        }
        let stock_qty = i64::from(self.stock_qty).saturating_add(delta);
        if stock_qty < 0 {
            return Err(ProductError::NegativeStock {
                stock_qty: self.stock_qty,
                delta,
            });
        }
        // Units reserved for open orders come back to stock when an order is cancelled, so the
        // ceiling counts them too: a release can then never lift stock above STOCK_MAX.
        if stock_qty.saturating_add(self.reserved_units()) > i64::from(STOCK_MAX) {
            return Err(ProductError::StockTooLarge {
                stock_qty: self.stock_qty,
                delta,
            });
        }
        Ok(Some(ProductEvent::StockAdjusted(StockAdjusted {
            delta,
            stock_qty: stock_qty as u32,
        })))
    }

    fn decide_reserve(
        &self,
        order_id: Uuid,
        quantity: u32,
    ) -> Result<Option<ProductEvent>, ProductError> {
        if quantity == 0 {
            return Err(FieldError::new("quantity", "must be at least 1").into());
        }
        // A reservation already closed is not remembered: a late repeat of the saga's reserve
        // decides a reservation again, with the event ids of the first one, which the store
        // recognises as stored (nothing is appended); the saga then finds the order's
        // reservation closed and reads the order again.
        if self.reservations.contains_key(&order_id) {
            return Ok(None); // already reserved for this order: a retried step
        }
        if quantity > self.stock_qty {
            return Err(ProductError::InsufficientStock {
                name: self.name.clone(),
                requested: quantity,
                available: self.stock_qty,
            });
        }
        Ok(Some(ProductEvent::StockReserved(StockReserved {
            order_id,
            quantity,
        })))
    }

    fn decide_release(&self, order_id: Uuid) -> Option<ProductEvent> {
        self.reservations
            .get(&order_id)
            .map(|&quantity| ProductEvent::StockReleased(StockReleased { order_id, quantity }))
    }

    fn decide_commit(&self, order_id: Uuid) -> Result<Option<ProductEvent>, ProductError> {
        match self.reservations.get(&order_id) {
            Some(&quantity) => Ok(Some(ProductEvent::StockCommitted(StockCommitted {
                order_id,
                quantity,
            }))),
            // Never reserved, released, or committed already: nothing to sell. A released
            // reservation is therefore never committed; a repeated commit of the saga is
            // recognised by its event ids before this refusal reaches the saga.
            None => Err(ProductError::NoReservation { order_id }),
        }
    }
}

impl Aggregate for Product {
    const TYPE: &'static str = "product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if !self.exists() && !matches!(command, ProductCommand::CreateProduct { .. }) {
            return Err(ProductError::NotFound);
        }
        let change = match command {
            ProductCommand::CreateProduct {
                product_id,
                name,
                description,
                price,
                stock_qty,
                category,
            } => Some(self.decide_create(
                product_id,
                name,
                description,
                price,
                stock_qty,
                category,
            )?),
            ProductCommand::UpdateProduct {
                name,
                description,
                price,
                category,
            } => self.decide_update(name, description, price, category)?,
            ProductCommand::AdjustStock { delta } => self.decide_adjust(delta)?,
            ProductCommand::ReserveStock { order_id, quantity } => {
                self.decide_reserve(order_id, quantity)?
            }
            ProductCommand::ReleaseStock { order_id } => self.decide_release(order_id),
            ProductCommand::CommitStock { order_id } => self.decide_commit(order_id)?,
        };
        if let Some(change) = change {
            self.emit_with_update(change, sink).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        match event {
            ProductEvent::ProductCreated(created) => {
                self.product_id = Some(created.product_id);
                self.name = created.name;
                self.description = created.description;
                self.price = created.price;
                self.stock_qty = created.stock_qty;
                self.category = created.category;
            }
            ProductEvent::ProductDetailsChanged(changed) => {
                self.name = changed.name;
                self.description = changed.description;
                self.price = changed.price;
                self.category = changed.category;
            }
            ProductEvent::StockAdjusted(adjusted) => self.stock_qty = adjusted.stock_qty,
            ProductEvent::StockReserved(reserved) => {
                self.stock_qty = self.stock_qty.saturating_sub(reserved.quantity);
                self.reservations
                    .insert(reserved.order_id, reserved.quantity);
            }
            ProductEvent::StockReleased(released) => {
                if self.reservations.remove(&released.order_id).is_some() {
                    self.stock_qty = self.stock_qty.saturating_add(released.quantity);
                }
            }
            ProductEvent::StockCommitted(committed) => {
                self.reservations.remove(&committed.order_id);
            }
            // The full picture: it repeats what the change before it did, so it only confirms.
            ProductEvent::ProductUpdated(updated) => {
                self.product_id = Some(updated.product_id);
                self.name = updated.name;
                self.description = updated.description;
                self.price = updated.price;
                self.stock_qty = updated.stock_qty;
                self.category = updated.category;
            }
        }
    }
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            ProductEvent::ProductCreated(_) => "ProductCreated",
            ProductEvent::ProductDetailsChanged(_) => "ProductDetailsChanged",
            ProductEvent::StockAdjusted(_) => "StockAdjusted",
            ProductEvent::StockReserved(_) => "StockReserved",
            ProductEvent::StockReleased(_) => "StockReleased",
            ProductEvent::StockCommitted(_) => "StockCommitted",
            ProductEvent::ProductUpdated(_) => "ProductUpdated",
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

    const KETTLE_PRICE: Money = Money::from_minor(2_499);

    fn kettle_id() -> Uuid {
        Uuid::from_u128(0x6b65_7474_6c65)
    }

    fn order(number: u128) -> Uuid {
        Uuid::from_u128(0x0a0d_0000 + number)
    }

    /// The fields of a `CreateProduct`, so that a test can change one and keep the others valid.
    #[derive(Clone, Debug)]
    struct NewProduct {
        name: String,
        description: String,
        price: Money,
        stock_qty: i64,
        category: Option<String>,
    }

    fn kettle() -> NewProduct {
        NewProduct {
            name: "Kettle".to_owned(),
            description: "Boils a litre of water".to_owned(),
            price: KETTLE_PRICE,
            stock_qty: 10,
            category: Some("kitchen".to_owned()),
        }
    }

    impl NewProduct {
        fn command(self) -> ProductCommand {
            ProductCommand::CreateProduct {
                product_id: kettle_id(),
                name: self.name,
                description: self.description,
                price: self.price,
                stock_qty: self.stock_qty,
                category: self.category,
            }
        }
    }

    fn created(stock_qty: u32) -> ProductEvent {
        let kettle = kettle();
        ProductEvent::ProductCreated(ProductCreated {
            product_id: kettle_id(),
            name: kettle.name,
            description: kettle.description,
            price: kettle.price,
            stock_qty,
            category: kettle.category,
        })
    }

    /// The `ProductUpdated` of an unchanged kettle holding `stock_qty` units.
    fn full_kettle(stock_qty: u32, version: u64) -> ProductEvent {
        let kettle = kettle();
        ProductEvent::ProductUpdated(ProductUpdated {
            product_id: kettle_id(),
            name: kettle.name,
            description: kettle.description,
            price: kettle.price,
            stock_qty,
            category: kettle.category,
            version,
        })
    }

    /// The stream of a kettle created with `stock_qty` units, then `changes` (each paired with the
    /// stock it leaves), every event followed by its `ProductUpdated` as the aggregate writes them.
    fn kettle_history(stock_qty: u32, changes: Vec<(ProductEvent, u32)>) -> Vec<ProductEvent> {
        let mut events = vec![created(stock_qty), full_kettle(stock_qty, 2)];
        for (change, stock_after) in changes {
            events.push(change);
            let version = events.len() as u64 + 1;
            events.push(full_kettle(stock_after, version));
        }
        events
    }

    fn adjusted(delta: i64, stock_qty: u32) -> ProductEvent {
        ProductEvent::StockAdjusted(StockAdjusted { delta, stock_qty })
    }

    fn reserved(order_id: Uuid, quantity: u32) -> ProductEvent {
        ProductEvent::StockReserved(StockReserved { order_id, quantity })
    }

    fn released(order_id: Uuid, quantity: u32) -> ProductEvent {
        ProductEvent::StockReleased(StockReleased { order_id, quantity })
    }

    fn committed(order_id: Uuid, quantity: u32) -> ProductEvent {
        ProductEvent::StockCommitted(StockCommitted { order_id, quantity })
    }

    fn given(events: Vec<ProductEvent>) -> AggregateTestExecutor<Product> {
        TestFramework::<Product>::with(()).given(events)
    }

    fn given_no_product() -> AggregateTestExecutor<Product> {
        TestFramework::<Product>::with(()).given_no_previous_events()
    }

    fn update(
        name: Option<&str>,
        description: Option<&str>,
        price: Option<Money>,
        category: Option<Option<&str>>,
    ) -> ProductCommand {
        ProductCommand::UpdateProduct {
            name: name.map(str::to_owned),
            description: description.map(str::to_owned),
            price,
            category: category.map(|category| category.map(str::to_owned)),
        }
    }

    #[track_caller]
    fn assert_invalid(result: Result<Vec<ProductEvent>, ProductError>, expected_field: &str) {
        match result {
            Err(ProductError::Invalid(FieldError { field, .. })) => {
                assert_eq!(field, expected_field)
            }
            other => panic!("expected an invalid {expected_field}, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_creates(new_product: NewProduct) {
        let result = given_no_product()
            .when(new_product.clone().command())
            .inspect_result();
        assert!(
            matches!(
                result.as_deref(),
                Ok([
                    ProductEvent::ProductCreated(_),
                    ProductEvent::ProductUpdated(_)
                ])
            ),
            "{new_product:?} was refused: {result:?}"
        );
    }

    #[track_caller]
    fn assert_create_refused(new_product: NewProduct, expected_field: &str) {
        assert_invalid(
            given_no_product()
                .when(new_product.command())
                .inspect_result(),
            expected_field,
        );
    }

    // CreateProduct

    #[test]
    fn creating_a_product_emits_product_created_then_the_full_product_at_version_2() {
        given_no_product()
            .when(kettle().command())
            .then_expect_events(vec![created(10), full_kettle(10, 2)]);
    }

    #[test]
    fn creating_a_product_without_a_category_is_allowed() {
        let uncategorised = NewProduct {
            category: None,
            ..kettle()
        };
        given_no_product()
            .when(uncategorised.command())
            .then_expect_events(vec![
                ProductEvent::ProductCreated(ProductCreated {
                    product_id: kettle_id(),
                    name: "Kettle".to_owned(),
                    description: "Boils a litre of water".to_owned(),
                    price: KETTLE_PRICE,
                    stock_qty: 10,
                    category: None,
                }),
                ProductEvent::ProductUpdated(ProductUpdated {
                    product_id: kettle_id(),
                    name: "Kettle".to_owned(),
                    description: "Boils a litre of water".to_owned(),
                    price: KETTLE_PRICE,
                    stock_qty: 10,
                    category: None,
                    version: 2,
                }),
            ]);
    }

    #[test]
    fn creating_a_product_twice_fails_with_already_exists() {
        given(kettle_history(10, vec![]))
            .when(kettle().command())
            .then_expect_error(ProductError::AlreadyExists);
    }

    #[test]
    fn a_name_of_1_to_200_characters_is_accepted() {
        assert_creates(NewProduct {
            name: "K".to_owned(),
            ..kettle()
        });
        assert_creates(NewProduct {
            name: "é".repeat(NAME_MAX_CHARS),
            ..kettle()
        });
    }

    #[test]
    fn an_empty_or_blank_name_is_refused_naming_the_name_field() {
        for name in ["", " ", " \t\n "] {
            assert_create_refused(
                NewProduct {
                    name: name.to_owned(),
                    ..kettle()
                },
                "name",
            );
        }
    }

    #[test]
    fn a_name_longer_than_200_characters_is_refused_naming_the_name_field() {
        assert_create_refused(
            NewProduct {
                name: "K".repeat(NAME_MAX_CHARS + 1),
                ..kettle()
            },
            "name",
        );
    }

    #[test]
    fn a_description_of_up_to_5000_characters_is_accepted() {
        assert_creates(NewProduct {
            description: String::new(),
            ..kettle()
        });
        assert_creates(NewProduct {
            description: "ü".repeat(DESCRIPTION_MAX_CHARS),
            ..kettle()
        });
    }

    #[test]
    fn a_description_longer_than_5000_characters_is_refused_naming_the_description_field() {
        assert_create_refused(
            NewProduct {
                description: "d".repeat(DESCRIPTION_MAX_CHARS + 1),
                ..kettle()
            },
            "description",
        );
    }

    #[test]
    fn a_price_from_one_cent_to_the_maximum_is_accepted() {
        for price in [Money::from_minor(1), Money::MAX] {
            assert_creates(NewProduct { price, ..kettle() });
        }
    }

    #[test]
    fn a_price_of_zero_or_less_or_above_the_maximum_is_refused_naming_the_price_field() {
        for minor in [0, -1, Money::MAX.minor() + 1] {
            assert_create_refused(
                NewProduct {
                    price: Money::from_minor(minor),
                    ..kettle()
                },
                "price",
            );
        }
    }

    #[test]
    fn a_stock_from_0_to_one_billion_is_accepted() {
        for stock_qty in [0, i64::from(STOCK_MAX)] {
            assert_creates(NewProduct {
                stock_qty,
                ..kettle()
            });
        }
    }

    #[test]
    fn a_negative_stock_or_one_above_one_billion_is_refused_naming_the_stock_qty_field() {
        for stock_qty in [-1, i64::from(STOCK_MAX) + 1, i64::MAX] {
            assert_create_refused(
                NewProduct {
                    stock_qty,
                    ..kettle()
                },
                "stock_qty",
            );
        }
    }

    #[test]
    fn a_category_of_1_to_100_characters_is_accepted() {
        for category in ["k".to_owned(), "ß".repeat(CATEGORY_MAX_CHARS)] {
            assert_creates(NewProduct {
                category: Some(category),
                ..kettle()
            });
        }
    }

    #[test]
    fn an_empty_blank_or_too_long_category_is_refused_naming_the_category_field() {
        for category in [
            "".to_owned(),
            "   ".to_owned(),
            "c".repeat(CATEGORY_MAX_CHARS + 1),
        ] {
            assert_create_refused(
                NewProduct {
                    category: Some(category),
                    ..kettle()
                },
                "category",
            );
        }
    }

    #[test]
    fn every_command_but_create_on_a_missing_product_fails_with_not_found() {
        let commands = [
            update(Some("Teapot"), None, None, None),
            ProductCommand::AdjustStock { delta: 5 },
            ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: 1,
            },
            ProductCommand::ReleaseStock { order_id: order(1) },
            ProductCommand::CommitStock { order_id: order(1) },
        ];
        for command in commands {
            given_no_product()
                .when(command)
                .then_expect_error(ProductError::NotFound);
        }
    }

    // ProductUpdated and the stream version

    #[test]
    fn the_aggregate_counts_every_event_it_applies_in_its_version() {
        let history = kettle_history(10, vec![(adjusted(5, 15), 15), (reserved(order(1), 2), 13)]);
        let mut product = Product::default();
        for event in history.clone() {
            product.apply(event);
        }
        assert_eq!(product.version, history.len() as u64);
        assert_eq!(product.version, 6);
    }

    #[test]
    fn product_updated_carries_the_stream_version_of_its_own_event() {
        let history = kettle_history(10, vec![(adjusted(5, 15), 15), (reserved(order(1), 2), 13)]);
        given(history)
            .when(ProductCommand::AdjustStock { delta: -3 })
            .then_expect_events(vec![adjusted(-3, 10), full_kettle(10, 8)]);
    }

    // UpdateProduct

    #[test]
    fn updating_the_name_emits_the_new_details_then_the_full_product() {
        given(kettle_history(10, vec![]))
            .when(update(Some("Electric kettle"), None, None, None))
            .then_expect_events(vec![
                ProductEvent::ProductDetailsChanged(ProductDetailsChanged {
                    name: "Electric kettle".to_owned(),
                    description: "Boils a litre of water".to_owned(),
                    price: KETTLE_PRICE,
                    category: Some("kitchen".to_owned()),
                }),
                ProductEvent::ProductUpdated(ProductUpdated {
                    product_id: kettle_id(),
                    name: "Electric kettle".to_owned(),
                    description: "Boils a litre of water".to_owned(),
                    price: KETTLE_PRICE,
                    stock_qty: 10,
                    category: Some("kitchen".to_owned()),
                    version: 4,
                }),
            ]);
    }

    #[test]
    fn updating_description_price_and_category_together_changes_all_three() {
        given(kettle_history(7, vec![]))
            .when(update(
                None,
                Some("Boils two litres"),
                Some(Money::from_minor(3_000)),
                Some(Some("appliances")),
            ))
            .then_expect_events(vec![
                ProductEvent::ProductDetailsChanged(ProductDetailsChanged {
                    name: "Kettle".to_owned(),
                    description: "Boils two litres".to_owned(),
                    price: Money::from_minor(3_000),
                    category: Some("appliances".to_owned()),
                }),
                ProductEvent::ProductUpdated(ProductUpdated {
                    product_id: kettle_id(),
                    name: "Kettle".to_owned(),
                    description: "Boils two litres".to_owned(),
                    price: Money::from_minor(3_000),
                    stock_qty: 7,
                    category: Some("appliances".to_owned()),
                    version: 4,
                }),
            ]);
    }

    #[test]
    fn updating_the_category_to_none_clears_it() {
        given(kettle_history(10, vec![]))
            .when(update(None, None, None, Some(None)))
            .then_expect_events(vec![
                ProductEvent::ProductDetailsChanged(ProductDetailsChanged {
                    name: "Kettle".to_owned(),
                    description: "Boils a litre of water".to_owned(),
                    price: KETTLE_PRICE,
                    category: None,
                }),
                ProductEvent::ProductUpdated(ProductUpdated {
                    product_id: kettle_id(),
                    name: "Kettle".to_owned(),
                    description: "Boils a litre of water".to_owned(),
                    price: KETTLE_PRICE,
                    stock_qty: 10,
                    category: None,
                    version: 4,
                }),
            ]);
    }

    #[test]
    fn an_update_that_changes_nothing_emits_nothing() {
        let same_values = update(
            Some("Kettle"),
            Some("Boils a litre of water"),
            Some(KETTLE_PRICE),
            Some(Some("kitchen")),
        );
        for command in [same_values, update(None, None, None, None)] {
            given(kettle_history(10, vec![]))
                .when(command)
                .then_expect_events(vec![]);
        }
    }

    #[test]
    fn an_update_with_an_invalid_field_is_refused_naming_that_field() {
        let too_long_description = "d".repeat(DESCRIPTION_MAX_CHARS + 1);
        let too_long_name = "n".repeat(NAME_MAX_CHARS + 1);
        let cases = [
            (update(Some(" "), None, None, None), "name"),
            (update(Some(&too_long_name), None, None, None), "name"),
            (
                update(None, Some(&too_long_description), None, None),
                "description",
            ),
            (update(None, None, Some(Money::ZERO), None), "price"),
            (
                update(
                    None,
                    None,
                    Some(Money::from_minor(Money::MAX.minor() + 1)),
                    None,
                ),
                "price",
            ),
            (update(None, None, None, Some(Some(""))), "category"),
        ];
        for (command, field) in cases {
            assert_invalid(
                given(kettle_history(10, vec![]))
                    .when(command)
                    .inspect_result(),
                field,
            );
        }
    }

    // AdjustStock

    #[test]
    fn adjusting_stock_by_zero_emits_nothing() {
        given(kettle_history(10, vec![]))
            .when(ProductCommand::AdjustStock { delta: 0 })
            .then_expect_events(vec![]);
    }

    #[test]
    fn adjusting_stock_emits_the_delta_and_the_resulting_stock() {
        given(kettle_history(10, vec![]))
            .when(ProductCommand::AdjustStock { delta: 5 })
            .then_expect_events(vec![adjusted(5, 15), full_kettle(15, 4)]);
        given(kettle_history(10, vec![]))
            .when(ProductCommand::AdjustStock { delta: -10 })
            .then_expect_events(vec![adjusted(-10, 0), full_kettle(0, 4)]);
    }

    #[test]
    fn adjusting_stock_below_zero_fails_with_negative_stock() {
        given(kettle_history(10, vec![]))
            .when(ProductCommand::AdjustStock { delta: -11 })
            .then_expect_error(ProductError::NegativeStock {
                stock_qty: 10,
                delta: -11,
            });
        given(kettle_history(10, vec![]))
            .when(ProductCommand::AdjustStock { delta: i64::MIN })
            .then_expect_error(ProductError::NegativeStock {
                stock_qty: 10,
                delta: i64::MIN,
            });
    }

    #[test]
    fn adjusting_stock_up_to_one_billion_succeeds() {
        let delta = i64::from(STOCK_MAX) - 10;
        given(kettle_history(10, vec![]))
            .when(ProductCommand::AdjustStock { delta })
            .then_expect_events(vec![adjusted(delta, STOCK_MAX), full_kettle(STOCK_MAX, 4)]);
    }

    #[test]
    fn adjusting_stock_above_one_billion_fails_with_stock_too_large() {
        for delta in [i64::from(STOCK_MAX) - 9, i64::MAX] {
            given(kettle_history(10, vec![]))
                .when(ProductCommand::AdjustStock { delta })
                .then_expect_error(ProductError::StockTooLarge {
                    stock_qty: 10,
                    delta,
                });
        }
    }

    #[test]
    fn units_reserved_for_open_orders_count_towards_the_stock_ceiling() {
        // 5 available and 5 held for order 1: the held units come back to stock if the order
        // is cancelled, so they must fit under the ceiling too.
        let history = kettle_history(10, vec![(reserved(order(1), 5), 5)]);
        given(history.clone())
            .when(ProductCommand::AdjustStock {
                delta: i64::from(STOCK_MAX) - 10,
            })
            .then_expect_events(vec![
                adjusted(i64::from(STOCK_MAX) - 10, STOCK_MAX - 5),
                full_kettle(STOCK_MAX - 5, 6),
            ]);
        given(history)
            .when(ProductCommand::AdjustStock {
                delta: i64::from(STOCK_MAX) - 9,
            })
            .then_expect_error(ProductError::StockTooLarge {
                stock_qty: 5,
                delta: i64::from(STOCK_MAX) - 9,
            });
    }

    // ReserveStock

    #[test]
    fn reserving_stock_lowers_the_stock_by_the_quantity() {
        given(kettle_history(10, vec![]))
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: 3,
            })
            .then_expect_events(vec![reserved(order(1), 3), full_kettle(7, 4)]);
    }

    #[test]
    fn reserving_all_of_the_available_stock_succeeds() {
        given(kettle_history(10, vec![]))
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: 10,
            })
            .then_expect_events(vec![reserved(order(1), 10), full_kettle(0, 4)]);
    }

    #[test]
    fn reserving_a_quantity_of_zero_fails_naming_the_quantity_field() {
        assert_invalid(
            given(kettle_history(10, vec![]))
                .when(ProductCommand::ReserveStock {
                    order_id: order(1),
                    quantity: 0,
                })
                .inspect_result(),
            "quantity",
        );
    }

    #[test]
    fn reserving_more_than_available_fails_with_the_available_quantity() {
        let history = kettle_history(10, vec![(reserved(order(1), 4), 6)]);
        given(history)
            .when(ProductCommand::ReserveStock {
                order_id: order(2),
                quantity: 7,
            })
            .then_expect_error(ProductError::InsufficientStock {
                name: "Kettle".to_owned(),
                requested: 7,
                available: 6,
            });
    }

    #[test]
    fn reserving_again_for_an_order_with_an_open_reservation_emits_nothing() {
        let history = kettle_history(10, vec![(reserved(order(1), 3), 7)]);
        given(history)
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: 3,
            })
            .then_expect_events(vec![]);
    }

    // A closed reservation is not remembered: a late reserve decides the reservation again. The
    // saga's reserve carries the event ids of its first run, so the store appends nothing (the
    // saga's tests and the store's show it); the product itself stays independent of its
    // order history.

    #[test]
    fn a_reserve_after_the_release_decides_the_reservation_again() {
        let history = kettle_history(
            10,
            vec![(reserved(order(1), 3), 7), (released(order(1), 3), 10)],
        );
        given(history)
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: 3,
            })
            .then_expect_events(vec![reserved(order(1), 3), full_kettle(7, 8)]);
    }

    #[test]
    fn a_reserve_after_the_commit_decides_the_reservation_again() {
        let history = kettle_history(
            10,
            vec![(reserved(order(1), 3), 7), (committed(order(1), 3), 7)],
        );
        given(history)
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: 3,
            })
            .then_expect_events(vec![reserved(order(1), 3), full_kettle(4, 8)]);
    }

    // ReleaseStock

    #[test]
    fn releasing_a_reservation_returns_its_quantity_to_stock() {
        let history = kettle_history(
            10,
            vec![(reserved(order(1), 3), 7), (reserved(order(2), 2), 5)],
        );
        given(history)
            .when(ProductCommand::ReleaseStock { order_id: order(1) })
            .then_expect_events(vec![released(order(1), 3), full_kettle(8, 8)]);
    }

    #[test]
    fn releasing_a_reservation_twice_emits_nothing() {
        let history = kettle_history(
            10,
            vec![(reserved(order(1), 3), 7), (released(order(1), 3), 10)],
        );
        given(history)
            .when(ProductCommand::ReleaseStock { order_id: order(1) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn releasing_what_was_never_reserved_emits_nothing() {
        let history = kettle_history(10, vec![(reserved(order(1), 3), 7)]);
        given(history)
            .when(ProductCommand::ReleaseStock { order_id: order(2) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn releasing_after_a_commit_emits_nothing_and_returns_nothing_to_stock() {
        let history = kettle_history(
            10,
            vec![(reserved(order(1), 3), 7), (committed(order(1), 3), 7)],
        );
        given(history.clone())
            .when(ProductCommand::ReleaseStock { order_id: order(1) })
            .then_expect_events(vec![]);
        // The sale still holds: the next change shows 7 in stock, not 10.
        given(history)
            .when(ProductCommand::AdjustStock { delta: 1 })
            .then_expect_events(vec![adjusted(1, 8), full_kettle(8, 8)]);
    }

    // CommitStock

    #[test]
    fn committing_a_reservation_closes_it_as_a_sale_without_changing_stock() {
        let history = kettle_history(10, vec![(reserved(order(1), 3), 7)]);
        given(history)
            .when(ProductCommand::CommitStock { order_id: order(1) })
            .then_expect_events(vec![committed(order(1), 3), full_kettle(7, 6)]);
    }

    #[test]
    fn committing_a_reservation_twice_is_refused_and_changes_nothing() {
        // The saga's repeated commit carries the ids of the first: the command path answers it
        // from the stored events instead of this refusal.
        let history = kettle_history(
            10,
            vec![(reserved(order(1), 3), 7), (committed(order(1), 3), 7)],
        );
        given(history)
            .when(ProductCommand::CommitStock { order_id: order(1) })
            .then_expect_error(ProductError::NoReservation { order_id: order(1) });
    }

    #[test]
    fn committing_a_released_reservation_fails_and_keeps_the_units_on_sale() {
        let history = kettle_history(
            10,
            vec![(reserved(order(1), 3), 7), (released(order(1), 3), 10)],
        );
        given(history.clone())
            .when(ProductCommand::CommitStock { order_id: order(1) })
            .then_expect_error(ProductError::NoReservation { order_id: order(1) });
        // The released units are still on sale: the next change shows 10 in stock.
        given(history)
            .when(ProductCommand::AdjustStock { delta: 1 })
            .then_expect_events(vec![adjusted(1, 11), full_kettle(11, 8)]);
    }

    #[test]
    fn committing_for_an_order_that_never_reserved_fails_with_no_reservation() {
        let history = kettle_history(10, vec![(reserved(order(1), 3), 7)]);
        given(history)
            .when(ProductCommand::CommitStock { order_id: order(2) })
            .then_expect_error(ProductError::NoReservation { order_id: order(2) });
    }

    // Snapshots

    #[test]
    fn a_product_snapshot_round_trips_through_json() {
        let history = kettle_history(
            10,
            vec![
                (reserved(order(1), 3), 7),
                (reserved(order(2), 2), 5),
                (committed(order(1), 3), 5),
                (reserved(order(3), 1), 4),
                (released(order(3), 1), 5),
            ],
        );
        let mut product = Product::default();
        for event in history {
            product.apply(event);
        }
        assert_eq!(product.reservations.len(), 1);
        let json = serde_json::to_string(&product).expect("a product serializes");
        let restored: Product = serde_json::from_str(&json).expect("a snapshot deserializes");
        assert_eq!(restored, product);
    }

    #[test]
    fn a_snapshot_written_with_closed_reservations_still_loads() {
        // The shape snapshots had while the product remembered every closed reservation (and
        // before prices were named `price_minor`).
        let json = format!(
            r#"{{"product_id":"{kettle}","name":"Kettle","description":"Boils a litre of water",
                "price":2499,"stock_qty":5,"category":"kitchen",
                "reservations":{{"{open}":2}},
                "closed_reservations":{{"{sold}":"committed","{given_back}":"released"}},
                "version":12}}"#,
            kettle = kettle_id(),
            open = order(2),
            sold = order(1),
            given_back = order(3),
        );
        let product: Product = serde_json::from_str(&json).expect("an old snapshot loads");
        assert_eq!(product.product_id, Some(kettle_id()));
        assert_eq!(product.price, KETTLE_PRICE);
        assert_eq!(product.stock_qty, 5);
        assert_eq!(product.reservations, BTreeMap::from([(order(2), 2)]));
        assert_eq!(product.version, 12);
        // It decides as before: the open reservation commits, and the next snapshot no longer
        // holds the closed ones.
        let mut product = product;
        assert_eq!(
            run(
                &mut product,
                ProductCommand::CommitStock { order_id: order(2) }
            ),
            vec![committed(order(2), 2), full_kettle(5, 14)]
        );
        let snapshot = serde_json::to_string(&product).expect("a product serializes");
        assert!(!snapshot.contains("closed_reservations"), "{snapshot}");
        assert!(!snapshot.contains(&order(1).to_string()), "{snapshot}");
    }

    /// Runs a decision to its end: a product never waits while deciding.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("a product waited on something while deciding"),
        }
    }

    /// Runs `command` on `product` as the command path does; answers what it emitted.
    fn run(product: &mut Product, command: ProductCommand) -> Vec<ProductEvent> {
        let sink = EventSink::<Product>::default();
        block_on(product.handle(command, &(), &sink)).expect("the command goes through");
        block_on(sink.collect())
    }

    /// The snapshot of a product after `n_orders` orders, each reserved then committed or
    /// released (every third released), as the saga leaves them.
    fn snapshot_after(n_orders: u128) -> Vec<u8> {
        let mut product = Product::default();
        let _ = run(&mut product, kettle().command());
        let _ = run(
            &mut product,
            ProductCommand::AdjustStock { delta: 1_000_000 },
        );
        for number in 0..n_orders {
            let order_id = Uuid::from_u128(0x5eed_0000_0000 + number);
            let _ = run(
                &mut product,
                ProductCommand::ReserveStock {
                    order_id,
                    quantity: 2,
                },
            );
            let close = if number % 3 == 0 {
                ProductCommand::ReleaseStock { order_id }
            } else {
                ProductCommand::CommitStock { order_id }
            };
            let _ = run(&mut product, close);
        }
        assert!(product.reservations.is_empty());
        serde_json::to_vec(&product).expect("a product serializes")
    }

    #[test]
    fn the_snapshot_stays_the_same_size_however_many_orders_the_product_had() {
        let after_100 = snapshot_after(100);
        let after_10_000 = snapshot_after(10_000);
        // Only the figures (stock, version) grow by a digit or two.
        assert!(
            after_10_000.len() <= after_100.len() + 8,
            "a snapshot after 100 orders is {} bytes, after 10,000 orders {} bytes",
            after_100.len(),
            after_10_000.len()
        );
        assert!(after_10_000.len() < 512, "{} bytes", after_10_000.len());
    }
}
