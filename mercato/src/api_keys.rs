//! `mercato api-keys create|list|revoke`: keys for services (integrations, and the roles of a
//! scaled-out deployment). A key is shown once, when it is made; the store keeps its hash.

use server::{Config, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a key; prints it (once: it cannot be shown again)
    Create {
        /// Its roles, comma-separated: staff (catalog and support), catalog, support, admin,
        /// auditor
        #[arg(long, value_name = "ROLES")]
        role: String,
        /// What it is for, shown by `list`
        #[arg(long, value_name = "NAME", default_value = "")]
        name: String,
    },
    /// Every key: its id, roles, name, when it was made and revoked (never its secret)
    List,
    /// Revoke a key: it stops working within seconds in every process
    Revoke {
        #[arg(value_name = "KEY_ID")]
        key_id: String,
    },
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

pub async fn run(config: Config, command: &Command) -> Result<()> {
    let keys = server::platform::open_api_keys(&config).await?;
    let failed = |error: identity::IdentityError| {
        Error::runtime(
            format!(
                "cannot read or write the API keys beside {} (check DATABASE_URL)",
                config.database_url.redacted()
            ),
            error,
        )
    };
    match command {
        Command::Create { role, name } => {
            let roles = domain::user::parse_roles(role).map_err(Error::Usage)?;
            let (key_id, key) = keys.create(name, &roles).await.map_err(failed)?;
            eprintln!("made API key {key_id}; keep it now, it cannot be shown again");
            println!("{key}");
        }
        Command::List => {
            println!("key_id\troles\tname\tcreated_at\trevoked_at");
            for key in keys.list().await.map_err(failed)? {
                let roles: Vec<&str> = key.roles.iter().map(|role| role.as_str()).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.key_id,
                    roles.join(","),
                    key.name,
                    time(key.created_at),
                    key.revoked_at.map(time).unwrap_or_else(|| "-".to_owned())
                );
            }
        }
        Command::Revoke { key_id } => {
            if keys.revoke(key_id).await.map_err(failed)? {
                eprintln!("revoked API key {key_id}");
            } else {
                return Err(Error::Failed(format!(
                    "there is no API key {key_id} that is not revoked already (see `mercato api-keys list`)"
                )));
            }
        }
    }
    Ok(())
}
