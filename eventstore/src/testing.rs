//! Test support (cargo feature `testing`): a fresh store per test on each adapter, and a fresh
//! PostgreSQL database per test for any crate whose tests need one.
//!
//! PostgreSQL comes from `DATABASE_URL`, as in the product. When it is unset or unreachable a
//! test that asks for it prints a loud `SKIPPED` line (not captured by the test harness) and
//! gets `None`; with `MERCATO_REQUIRE_SERVICES=1` (as CI sets it) it panics instead.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tempfile::TempDir;
use uuid::Uuid;

use crate::postgres::PgEventStore;
use crate::sqlite::SqliteEventStore;
use crate::store::EventStore;

/// The variable that names the PostgreSQL server tests use.
pub const DATABASE_URL_VARIABLE: &str = "DATABASE_URL";
/// The variable that turns a missing service into a test failure.
pub const REQUIRE_SERVICES_VARIABLE: &str = "MERCATO_REQUIRE_SERVICES";

/// Whether a missing service must fail the test rather than skip it.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_VARIABLE)
        .is_ok_and(|value| matches!(value.trim(), "1" | "true" | "yes"))
}

/// Skips (printing a line the harness does not capture) or, when services are required, panics.
pub fn skip_or_fail(test_name: &str, reason: &str) {
    if services_required() {
        panic!("{test_name}: {reason}, and {REQUIRE_SERVICES_VARIABLE}=1 forbids skipping");
    }
    skip(
        test_name,
        &format!("{reason} (set {REQUIRE_SERVICES_VARIABLE}=1 to fail instead)"),
    );
}

/// Skips a test whose service is optional everywhere (an OpenSearch cluster, which no CI machine
/// runs), even with `MERCATO_REQUIRE_SERVICES=1`: printed and listed like [`skip_or_fail`]'s.
pub fn skip(test_name: &str, reason: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "\n*** SKIPPED {test_name}: {reason} ***");
    // The test harness hides a passing test's output; scripts/test lists this file at the end.
    let log = std::env::var_os(SKIP_LOG_VARIABLE).and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    if let Some(mut log) = log {
        let _ = writeln!(log, "{test_name}: {reason}");
    }
}

/// Where [`skip_or_fail`] also records each skipped test, one line each (set by scripts/test).
pub const SKIP_LOG_VARIABLE: &str = "MERCATO_SKIP_LOG";

/// The URL of database `database_name` on the server of `server_url` (same user, host, options).
pub fn database_url(server_url: &str, database_name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |index| authority_start + index);
    let mut url = format!("{}/{database_name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A PostgreSQL database created for one test, dropped (with its connections) when this value
/// is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    server_url: String,
}

impl TestDatabase {
    /// Creates `mercato_test_<uuid>` on the server of `DATABASE_URL`. `None` when the test must
    /// be skipped (see the module documentation).
    pub async fn create(test_name: &str) -> Option<Self> {
        let server_url = match std::env::var(DATABASE_URL_VARIABLE) {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                skip_or_fail(test_name, "DATABASE_URL is not set");
                return None;
            }
        };
        let connected =
            tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&server_url)).await;
        let mut connection = match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                skip_or_fail(
                    test_name,
                    &format!("PostgreSQL at DATABASE_URL is unreachable: {error}"),
                );
                return None;
            }
            Err(_elapsed) => {
                skip_or_fail(
                    test_name,
                    "PostgreSQL at DATABASE_URL did not answer in 10 s",
                );
                return None;
            }
        };
        let name = format!("mercato_test_{}", Uuid::new_v4().simple());
        let mut attempt = 0;
        loop {
            attempt += 1;
            match sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut connection)
                .await
            {
                Ok(_) => break,
                // Concurrent CREATE DATABASE calls copy the same template and may collide.
                Err(error) if attempt < 20 && error.to_string().contains("other users") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("{test_name}: cannot create database {name}: {error}"),
            }
        }
        let _ = connection.close().await;
        Some(Self {
            url: database_url(&server_url, &name),
            name,
            server_url,
        })
    }

    /// The URL of the test's own database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with its
        // own small runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async move {
                let mut connection = PgConnection::connect(&server_url)
                    .await
                    .map_err(|error| error.to_string())?;
                sqlx::query(&statement)
                    .execute(&mut connection)
                    .await
                    .map_err(|error| error.to_string())?;
                let _ = connection.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "warning: test database {} was not dropped: {error}",
                self.name
            );
        }
    }
}

/// The variable that names the Redis server tests use.
pub const REDIS_URL_VARIABLE: &str = "REDIS_URL";

/// `REDIS_URL` when it is set and something answers on its host and port; otherwise the test is
/// skipped (or fails, when services are required) and `None` comes back.
pub async fn redis_url(test_name: &str) -> Option<String> {
    let url = match std::env::var(REDIS_URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            skip_or_fail(test_name, "REDIS_URL is not set");
            return None;
        }
    };
    let authority = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:6379")
    };
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&host_port),
    )
    .await;
    match connected {
        Ok(Ok(_)) => Some(url),
        _ => {
            skip_or_fail(
                test_name,
                &format!("Redis at REDIS_URL ({host_port}) is unreachable"),
            );
            None
        }
    }
}

/// The `sqlite://` URL of a store file inside `directory`.
pub fn sqlite_url(directory: &Path) -> String {
    format!("sqlite://{}", directory.join("mercato.db").display())
}

/// What keeps a test store's data alive; dropping it removes the data.
#[derive(Debug)]
enum StoreData {
    Sqlite(TempDir),
    Postgres(TestDatabase),
}

/// A store of its own for one test.
#[derive(Debug)]
pub struct TestStore {
    pub store: Arc<dyn EventStore>,
    /// The URL the store was opened with (to open it again, as after a restart).
    pub url: String,
    data: StoreData,
}

impl TestStore {
    /// The temporary directory of an SQLite store (room for other test files, too).
    pub fn data_directory(&self) -> Option<&Path> {
        match &self.data {
            StoreData::Sqlite(directory) => Some(directory.path()),
            StoreData::Postgres(_) => None,
        }
    }

    /// The database of a PostgreSQL store.
    pub fn database(&self) -> Option<&TestDatabase> {
        match &self.data {
            StoreData::Sqlite(_) => None,
            StoreData::Postgres(database) => Some(database),
        }
    }
}

/// A fresh SQLite store in a temporary directory.
pub async fn sqlite_store() -> TestStore {
    let directory = match TempDir::new() {
        Ok(directory) => directory,
        Err(error) => panic!("cannot create a temporary directory: {error}"),
    };
    let url = sqlite_url(directory.path());
    let store = match SqliteEventStore::open(&url).await {
        Ok(store) => store,
        Err(error) => panic!("cannot open the sqlite store at {url}: {error}"),
    };
    TestStore {
        store: Arc::new(store),
        url,
        data: StoreData::Sqlite(directory),
    }
}

/// A fresh PostgreSQL store in its own database, or `None` when the test must be skipped.
pub async fn postgres_store(test_name: &str) -> Option<TestStore> {
    let (store, database) = postgres_event_store(test_name).await?;
    Some(TestStore {
        store: Arc::new(store),
        url: database.url().to_owned(),
        data: StoreData::Postgres(database),
    })
}

/// The PostgreSQL adapter itself (for PostgreSQL-only tests) in its own database. Keep the
/// database value alive for as long as the store is used.
pub async fn postgres_event_store(test_name: &str) -> Option<(PgEventStore, TestDatabase)> {
    let database = TestDatabase::create(test_name).await?;
    let store = match PgEventStore::connect(database.url()).await {
        Ok(store) => store,
        Err(error) => panic!("cannot open the postgres store of {test_name}: {error}"),
    };
    Some((store, database))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_database_url_keeps_the_server_and_options_and_swaps_the_database() {
        assert_eq!(
            database_url(
                "postgres://postgres@127.0.0.1:5432/postgres",
                "mercato_test_1"
            ),
            "postgres://postgres@127.0.0.1:5432/mercato_test_1"
        );
        assert_eq!(
            database_url("postgres://u:p@host/db?sslmode=disable", "t"),
            "postgres://u:p@host/t?sslmode=disable"
        );
        assert_eq!(database_url("postgres://host", "t"), "postgres://host/t");
    }
}
