//! `mercato config`: the configuration this process would run with, passwords masked.

use server::{Config, Result};

pub fn run(config: &Config) -> Result<()> {
    print!("{}", config.describe());
    Ok(())
}
