//! `mercato seed`: loads a catalogue of products through the normal command path.
//!
//! Each product's id (and its events' ids) derive from its name, so seeding twice adds nothing
//! the second time.

use std::path::Path;

use command_api::input::CreateProduct;
use command_api::problem::parse_json;
use domain::{Product, ProductCommand};
use eventstore::EventMetadata;
use eventstore::aggregate::{CommandOptions, execute};
use uuid::Uuid;

use crate::Failure;
use crate::config::Config;

/// The shipped sample catalogue.
const CATALOGUE: &str = include_str!("../catalogue/products.json");

/// The namespace of seeded product ids.
const SEED_NAMESPACE: Uuid = Uuid::from_u128(0x6d65_7263_6174_6f00_7365_6564_0000_0001);

pub async fn seed(config: &Config, file: Option<&Path>) -> Result<(), Failure> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|error| {
            Failure::Usage(format!(
                "cannot read the catalogue {}: {error}; check --file",
                path.display()
            ))
        })?,
        None => CATALOGUE.to_owned(),
    };
    let products: Vec<CreateProduct> = parse_json(text.as_bytes()).map_err(|problem| {
        Failure::Usage(format!(
            "the catalogue is not a JSON array of products ({{name, description, price, stock_qty, category?}}): {}",
            problem.detail
        ))
    })?;
    let store = eventstore::open(config.database_url.expose())
        .await
        .map_err(|error| {
            Failure::from(error).context(format!(
                "cannot open the event store at {}",
                config.database_url.redacted()
            ))
        })?;
    let metadata = EventMetadata {
        correlation_id: Uuid::new_v4().to_string(),
        causation_id: String::new(),
        saga_id: None,
        actor: "seed".to_owned(),
        source: "seed".to_owned(),
    };
    let (mut n_added, mut n_present) = (0, 0);
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
            store.as_ref(),
            &product_id.to_string(),
            command,
            &(),
            &metadata,
            &CommandOptions::caused_by(product_id),
        )
        .await
        .map_err(|error| {
            Failure::Usage(format!(
                "product {} ({:?}) of the catalogue was refused: {error}",
                product_index + 1,
                product.name
            ))
        })?;
        if executed.duplicate {
            n_present += 1;
        } else {
            n_added += 1;
        }
    }
    println!(
        "seeded {n_added} products ({n_present} were there already) into {}",
        config.database_url.redacted()
    );
    Ok(())
}
