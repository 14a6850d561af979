//! Loading a catalogue of products through the normal command path (`mercato seed`).
//!
//! Each product's id (and its events' ids) derive from its name, so seeding twice adds nothing
//! the second time.

use domain::{Product, ProductCommand, ProductError};
use eventstore::aggregate::{CommandError, CommandOptions, execute};
use eventstore::{EventMetadata, EventStore};
use http_common::problem::parse_json;
use uuid::Uuid;

use crate::input::CreateProduct;

/// The namespace of seeded product ids.
const SEED_NAMESPACE: Uuid = Uuid::from_u128(0x6d65_7263_6174_6f00_7365_6564_0000_0001);

/// What a seeding did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    /// Products created now.
    pub added: usize,
    /// Products the store held already (seeded before).
    pub present: usize,
}

/// Why a catalogue was not (fully) loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The text is not a JSON array of products: the catalogue must be fixed.
    #[error(
        "the catalogue is not a JSON array of products ({{name, description, price, stock_qty, category?}}): {0}"
    )]
    NotACatalogue(String),
    /// The domain refused a product of the catalogue: the catalogue must be fixed.
    #[error("product {number} ({name:?}) of the catalogue was refused: {source}")]
    Refused {
        number: usize,
        name: String,
        #[source]
        source: Box<CommandError<ProductError>>,
    },
    /// The store failed while loading a product.
    #[error("product {number} ({name:?}) of the catalogue could not be stored: {source}")]
    Store {
        number: usize,
        name: String,
        #[source]
        source: Box<CommandError<ProductError>>,
    },
}

impl SeedError {
    /// Whether the catalogue itself is at fault (rather than the store).
    pub fn is_bad_catalogue(&self) -> bool {
        !matches!(self, SeedError::Store { .. })
    }
}

/// The products of `catalogue` (JSON text: an array of `POST /products` bodies).
pub fn parse_catalogue(catalogue: &str) -> Result<Vec<CreateProduct>, SeedError> {
    parse_json(catalogue.as_bytes()).map_err(|problem| SeedError::NotACatalogue(problem.detail))
}

/// Creates every product of `products` that the store does not hold yet.
pub async fn seed_catalogue(
    store: &dyn EventStore,
    products: Vec<CreateProduct>,
) -> Result<Seeded, SeedError> {
    let metadata = EventMetadata {
        correlation_id: Uuid::new_v4().to_string(),
        causation_id: String::new(),
        saga_id: None,
        actor: "seed".to_owned(),
        source: "seed".to_owned(),
        traceparent: None,
        tracestate: None,
    };
    let mut seeded = Seeded::default();
    for (product_index, product) in products.into_iter().enumerate() {
        let product_id = Uuid::new_v5(&SEED_NAMESPACE, product.name.as_bytes());
        let command = ProductCommand::CreateProduct {
            product_id,
            name: product.name.clone(),
            description: product.description,
            price: product.price.0,
            stock_qty: product.stock_qty,
            category: product.category,
        };
        let executed = execute::<Product>(
            store,
            &product_id.to_string(),
            command,
            &(),
            &metadata,
            &CommandOptions::caused_by(product_id),
        )
        .await
        .map_err(|source| {
            let (number, name) = (product_index + 1, product.name.clone());
            let source = Box::new(source);
            if matches!(*source, CommandError::Domain(_)) {
                SeedError::Refused {
                    number,
                    name,
                    source,
                }
            } else {
                SeedError::Store {
                    number,
                    name,
                    source,
                }
            }
        })?;
        if executed.duplicate {
            seeded.present += 1;
        } else {
            seeded.added += 1;
        }
    }
    Ok(seeded)
}
