//! `mercato migrate`: applies the event store's migrations and creates the read-model tables.

use server::{Config, Result};

pub async fn run(config: Config) -> Result<()> {
    let target = server::migrate(&config).await?;
    eprintln!("migrations applied to {target}");
    Ok(())
}
