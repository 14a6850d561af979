//! The Product aggregate: catalogue details, stock, and per-order stock reservations.
//!
//! Every event that changes the product is followed, in the same command, by a `ProductUpdated`
//! that carries the whole product, so that a consumer can index it without other lookups.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::FieldError;
use crate::money::Money;

pub const NAME_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 5_000;
pub const CATEGORY_MAX_CHARS: usize = 100;
/// The largest stock a product may hold; it keeps every stock figure inside a 32-bit integer.
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
    #[error("not enough stock: {requested} requested, {available} available")]
    InsufficientStock { requested: u32, available: u32 },
    #[error("stock cannot go below zero: {stock_qty} in stock, delta {delta}")]
    NegativeStock { stock_qty: u32, delta: i64 },
    #[error("stock cannot exceed {STOCK_MAX}: {stock_qty} in stock, delta {delta}")]
    StockTooLarge { stock_qty: u32, delta: i64 },
    #[error("the reservation for order {order_id} was already released or committed")]
    ReservationClosed { order_id: Uuid },
    #[error("order {order_id} has no reservation to commit")]
    NoReservation { order_id: Uuid },
}

/// A product as its events leave it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub product_id: Option<Uuid>,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub stock_qty: u32,
    pub category: Option<String>,
    /// Open reservations: order id to reserved quantity.
    pub reservations: BTreeMap<Uuid, u32>,
    /// Orders whose reservation was released or committed; a late reserve for them is refused.
    pub closed_reservations: BTreeSet<Uuid>,
    /// How many events the product stream holds.
    pub version: u64,
}

pub fn validate_name(name: &str) -> Result<(), FieldError> {
    let n_chars = name.chars().count();
    if name.trim().is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if n_chars > NAME_MAX_CHARS {
        return Err(FieldError::new(
            "name",
            format!("must be at most {NAME_MAX_CHARS} characters, got {n_chars}"),
        ));
    }
    Ok(())
}

pub fn validate_description(description: &str) -> Result<(), FieldError> {
    let n_chars = description.chars().count();
    if n_chars > DESCRIPTION_MAX_CHARS {
        return Err(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX_CHARS} characters, got {n_chars}"),
        ));
    }
    Ok(())
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
    if let Some(category) = category {
        let n_chars = category.chars().count();
        if category.trim().is_empty() || n_chars > CATEGORY_MAX_CHARS {
            return Err(FieldError::new(
                "category",
                format!("must be 1 to {CATEGORY_MAX_CHARS} characters when given"),
            ));
        }
    }
    Ok(())
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
        if stock_qty > i64::from(STOCK_MAX) {
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
        if self.closed_reservations.contains(&order_id) {
            return Err(ProductError::ReservationClosed { order_id });
        }
        if self.reservations.contains_key(&order_id) {
            return Ok(None); // already reserved for this order: a retried step
        }
        if quantity > self.stock_qty {
            return Err(ProductError::InsufficientStock {
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
            None if self.closed_reservations.contains(&order_id) => Ok(None), // committed twice
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
                self.closed_reservations.insert(released.order_id);
            }
            ProductEvent::StockCommitted(committed) => {
                self.reservations.remove(&committed.order_id);
                self.closed_reservations.insert(committed.order_id);
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
