//! The secret store: what identity keeps outside the event log because an event must never hold
//! it, and what must survive every rebuild because no event could bring it back. Credentials
//! (password hashes), the keys that seal personal data (one per person), hashes of refresh,
//! one-time and API-key secrets, the signing keys of access tokens, the login throttle's counts,
//! the payment-token vault, the shop's own keys for the cart and order tokens, and the answers
//! kept for `Idempotency-Key` retries (which may hold a guest's tokens).
//!
//! It lives in the event store's database on PostgreSQL, and on SQLite in a file of its own
//! beside the store's (`mercato.db` gives `mercato-identity.db`), created with mode 0600, with
//! `secure_delete` on, so that a destroyed key is overwritten on disk, not only unlinked from a
//! page. The SQL is the subset both databases share, as the read models' is.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Once;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

use crate::error::IdentityError;

/// The statements that create the secret store's tables, in order; each is idempotent. Times are
/// milliseconds since the epoch.
const SCHEMA: &[&str] = &[
    // Keys of the shop itself (cart and order tokens, email lookups), made on first start.
    "CREATE TABLE IF NOT EXISTS identity_settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL)",
    // One row per account that can log in with a password.
    "CREATE TABLE IF NOT EXISTS credentials (
        user_id TEXT PRIMARY KEY,
        email_lookup TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        kind TEXT NOT NULL,
        roles TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL)",
    // The key that seals a person's data; erasing the person deletes the row.
    "CREATE TABLE IF NOT EXISTS person_keys (
        subject TEXT PRIMARY KEY,
        key_material TEXT NOT NULL,
        created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        family_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT,
        revoked_at BIGINT)",
    "CREATE INDEX IF NOT EXISTS refresh_tokens_by_family ON refresh_tokens (family_id)",
    "CREATE INDEX IF NOT EXISTS refresh_tokens_by_user ON refresh_tokens (user_id)",
    // Email verification and password reset tokens.
    "CREATE TABLE IF NOT EXISTS one_time_tokens (
        token_hash TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        user_id TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT)",
    "CREATE INDEX IF NOT EXISTS one_time_tokens_by_user ON one_time_tokens (user_id)",
    "CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        roles TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT)",
    "CREATE TABLE IF NOT EXISTS login_failures (
        subject TEXT PRIMARY KEY,
        failures BIGINT NOT NULL,
        last_failed_at BIGINT NOT NULL,
        blocked_until BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS payment_secrets (
        reference TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS signing_keys (
        kid TEXT PRIMARY KEY,
        algorithm TEXT NOT NULL,
        private_key TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT)",
];

/// Which database the secret store is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretBackend {
    Postgres,
    Sqlite,
}

/// The secret store.
#[derive(Clone, Debug)]
pub struct SecretStore {
    pool: AnyPool,
    backend: SecretBackend,
}

/// The secret store's URL for an event store URL: the same database on PostgreSQL; on SQLite a
/// file beside the store's, `mercato.db` giving `mercato-identity.db`.
pub fn identity_db_url(store_url: &str) -> String {
    eventstore::beside_store(store_url, "identity")
}

static DRIVERS: Once = Once::new();

/// Milliseconds since the epoch, the unit of every time column here.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates the SQLite file `path` readable and writable by its owner only, or narrows an
/// existing one to that.
fn owner_only_file(path: &Path) -> Result<(), IdentityError> {
    let failed = |error: std::io::Error| {
        IdentityError::Storage(format!(
            "cannot prepare the secret store {}: {error}",
            path.display()
        ))
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        options.open(path).map_err(failed)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    #[cfg(not(unix))]
    options.open(path).map_err(failed)?;
    Ok(())
}

impl SecretStore {
    /// Opens the secret store at `url` (see [`identity_db_url`]), creating it and its tables if
    /// needed.
    pub async fn open(url: &str) -> Result<SecretStore, IdentityError> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            SecretBackend::Sqlite
        } else {
            SecretBackend::Postgres
        };
        let mut connect_url = url.to_owned();
        if backend == SecretBackend::Sqlite {
            if let Some(path) = url.strip_prefix("sqlite://") {
                owner_only_file(&PathBuf::from(path.split('?').next().unwrap_or(path)))?;
            }
            if !connect_url.contains("mode=") {
                connect_url.push_str(if connect_url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let options = AnyConnectOptions::from_str(&connect_url)?;
        let pool = AnyPoolOptions::new()
            // Few: credentials, keys and the vault are read once per login or order, and API keys
            // and access tokens are remembered by the authenticator.
            .max_connections(4)
            .test_before_acquire(false)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == SecretBackend::Sqlite {
                        // Secrets cannot be rebuilt from the log: every commit is durable, and a
                        // deleted key is overwritten, not left in a free page.
                        connection.execute("PRAGMA synchronous = FULL").await?;
                        connection.execute("PRAGMA busy_timeout = 10000").await?;
                        connection.execute("PRAGMA secure_delete = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == SecretBackend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        for statement in SCHEMA.iter().chain(crate::idempotency::SCHEMA) {
            pool.execute(*statement).await?;
        }
        Ok(SecretStore { pool, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> SecretBackend {
        self.backend
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), IdentityError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Writes what SQLite's write-ahead log holds back into the database file and empties the
    /// log, so that a destroyed key's old page is gone from the log too (PostgreSQL: nothing).
    pub async fn flush_deleted(&self) -> Result<(), IdentityError> {
        if self.backend == SecretBackend::Sqlite {
            self.pool.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
        }
        Ok(())
    }

    /// The setting `name`, made by `make` and stored on first use. Two processes starting at
    /// once agree on one value: the first insert wins and both read it back.
    pub async fn setting_or_insert(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, IdentityError> {
        sqlx::query(
            "INSERT INTO identity_settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(make())
        .execute(&self.pool)
        .await?;
        let value: String =
            sqlx::query_scalar("SELECT value FROM identity_settings WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
        Ok(value)
    }
}

/// The roles of a row, stored as a comma-separated list.
pub(crate) fn roles_text(roles: &std::collections::BTreeSet<domain::Role>) -> String {
    roles
        .iter()
        .map(|role| role.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The roles a stored list names (unknown names, from a newer build, are left out).
pub(crate) fn roles_of(text: &str) -> std::collections::BTreeSet<domain::Role> {
    text.split(',').filter_map(domain::Role::parse).collect()
}

/// One column of a row, with the row's error mapped.
pub(crate) fn column<'r, T>(row: &'r sqlx::any::AnyRow, index: usize) -> Result<T, IdentityError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    Ok(row.try_get(index)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secrets_of_an_sqlite_store_live_in_a_file_beside_it() {
        assert_eq!(
            identity_db_url("sqlite://./data/mercato.db"),
            "sqlite://./data/mercato-identity.db"
        );
        assert_eq!(
            identity_db_url("sqlite:///tmp/x/store?mode=rwc"),
            "sqlite:///tmp/x/store-identity?mode=rwc"
        );
        assert_eq!(identity_db_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_embedded_secret_store_is_a_file_only_its_owner_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("data").join("mercato-identity.db");
        SecretStore::open(&format!("sqlite://{}", path.display()))
            .await
            .expect("open");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
