//! `mercato seed`: loads a catalogue of products through the normal command path (seeding twice
//! adds nothing the second time).

use std::path::PathBuf;

use command_api::seed::{SeedError, parse_catalogue, seed_catalogue};
use server::{Config, Error, Result};

/// The shipped sample catalogue.
const CATALOGUE: &str = include_str!("../catalogue/products.json");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON file of products [default: the shipped sample catalogue]
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

fn seed_failure(error: SeedError) -> Error {
    if error.is_bad_catalogue() {
        Error::Usage(error.to_string())
    } else {
        Error::runtime("cannot seed the catalogue", error)
    }
}

pub async fn run(config: Config, args: &Args) -> Result<()> {
    let text = match &args.file {
        Some(path) => std::fs::read_to_string(path).map_err(|error| {
            Error::Usage(format!(
                "cannot read the catalogue {}: {error}; check --file",
                path.display()
            ))
        })?,
        None => CATALOGUE.to_owned(),
    };
    let products = parse_catalogue(&text).map_err(seed_failure)?;
    let store = server::open_store(&config).await?;
    let seeded = seed_catalogue(store.as_ref(), products)
        .await
        .map_err(seed_failure)?;
    println!(
        "seeded {} products ({} were there already) into {}",
        seeded.added,
        seeded.present,
        config.database_url.redacted()
    );
    Ok(())
}
