//! `mercato signing-keys list|rotate`: the keys that sign access tokens. A rotation makes a new
//! key that signs from then on; the old ones keep verifying (and stay in the JWKS) until the
//! tokens they signed have expired.

use server::{Config, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The stored keys: their ids, when they were made and retired
    List,
    /// Make a new signing key and retire the others (they verify until their tokens expire)
    Rotate,
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

pub async fn run(config: Config, command: &Command) -> Result<()> {
    let keys = server::platform::open_signing_keys(&config).await?;
    let failed = |error: identity::IdentityError| {
        Error::runtime(
            format!(
                "cannot read or write the signing keys beside {} (check DATABASE_URL)",
                config.database_url.redacted()
            ),
            error,
        )
    };
    match command {
        Command::List => {
            println!("kid\tcreated_at\tretired_at");
            for (kid, created_at, retired_at) in keys.list().await.map_err(failed)? {
                println!(
                    "{kid}\t{}\t{}",
                    time(created_at),
                    retired_at.map(time).unwrap_or_else(|| "-".to_owned())
                );
            }
        }
        Command::Rotate => {
            let kid = keys.rotate().await.map_err(failed)?;
            eprintln!("key {kid} signs from now on; the others verify until their tokens expire");
            println!("{kid}");
        }
    }
    Ok(())
}
