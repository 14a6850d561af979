//! TLS to Redis and PostgreSQL: `rediss://` against a Redis of the test's own that speaks only
//! TLS, with certificates the test makes, and `sslmode` against the PostgreSQL of
//! `DATABASE_URL` when it has `ssl = on`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventstore::testing::{TestDatabase, skip, skip_or_fail};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Setup, TestApp, TestData, cache_header};
use server::{Access, Platform};
use tempfile::TempDir;

/// An authority and what it issued, as PEM files: a server certificate for `127.0.0.1` and
/// `localhost` and a client certificate; and another authority that issued neither.
struct Certificates {
    dir: TempDir,
}

impl Certificates {
    fn new() -> Certificates {
        let dir = TempDir::new().expect("temporary directory");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write a PEM file");
        };
        let authority = |name: &str| {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let certificate = params.self_signed(&key).expect("a self-signed authority");
            (certificate, key)
        };
        let (authority_certificate, authority_key) = authority("mercato test authority");
        write("ca.pem", authority_certificate.pem());
        write("other-ca.pem", authority("another authority").0.pem());
        for (name, purpose) in [
            ("server", ExtendedKeyUsagePurpose::ServerAuth),
            ("client", ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let key = KeyPair::generate().expect("a key");
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![purpose];
            let certificate = params
                .signed_by(&key, &authority_certificate, &authority_key)
                .expect("a certificate");
            write(&format!("{name}.pem"), certificate.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Certificates { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A `redis-server` of the test's own on a free port of 127.0.0.1, speaking TLS only (with the
/// certificate of [`Certificates`]); killed when dropped.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl TlsRedis {
    /// Started, asking clients for a certificate or not; `None` when the test must be skipped
    /// (no `redis-server`; with `MERCATO_REQUIRE_SERVICES=1` that fails instead).
    fn start(
        test_name: &str,
        certificates: &Certificates,
        client_certificates: bool,
    ) -> Option<TlsRedis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            skip_or_fail(test_name, "redis-server is not installed");
            return None;
        }
        let dir = TempDir::new().expect("temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &certificates.arg("server.pem")])
            .args(["--tls-key-file", &certificates.arg("server.key")])
            .args(["--tls-ca-cert-file", &certificates.arg("ca.pem")])
            .args([
                "--tls-auth-clients",
                if client_certificates { "yes" } else { "no" },
            ])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut redis = TlsRedis {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = redis.child.try_wait().expect("redis-server's state");
            if exited.is_some() || started.elapsed() > Duration::from_secs(10) {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("redis-server with TLS did not start ({exited:?}); its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(redis)
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number of keys in the TLS Redis, asked with a client of the test's own.
async fn key_count(redis: &TlsRedis, certificates: &Certificates) -> i64 {
    let read = |name: &str| std::fs::read(certificates.path(name)).expect("a PEM file");
    let client = redis::Client::build_with_tls(
        redis.url(),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read("client.pem"),
                client_key: read("client.key"),
            }),
            root_cert: Some(read("ca.pem")),
        },
    )
    .expect("a TLS client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect over TLS");
    redis::cmd("DBSIZE")
        .query_async(&mut connection)
        .await
        .expect("DBSIZE")
}

/// The cache and the Redis read models (carts, popularity) of a running server, on a Redis
/// reached only over TLS whose certificate comes from a private authority and which asks for a
/// client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_and_the_redis_read_models_work_over_tls_with_a_private_authority() {
    let test_name = "redis_over_tls";
    let Some(data) = TestData::new(Setup::Embedded, test_name).await else {
        return;
    };
    let certificates = Certificates::new();
    let Some(redis) = TlsRedis::start(test_name, &certificates, true) else {
        return;
    };
    let url = redis.url();
    let (ca, client_certificate, client_key) = (
        certificates.arg("ca.pem"),
        certificates.arg("client.pem"),
        certificates.arg("client.key"),
    );
    let server = TestApp::start_with(
        &data,
        "all",
        &[
            "--redis-url",
            &url,
            "--redis-ca-cert",
            &ca,
            "--redis-client-cert",
            &client_certificate,
            "--redis-client-key",
            &client_key,
        ],
    )
    .await;
    let (product_id, position) = server
        .create_product("Lamp", "A desk lamp", 20.0, 5, "home")
        .await;
    let first = server
        .get_at(&format!("/products/{product_id}"), position)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(cache_header(&first), "miss");
    let second = server.get(&format!("/products/{product_id}")).await;
    assert_eq!(cache_header(&second), "hit");
    let guest = server.anonymous();
    let added = guest
        .post(
            "/carts/tls-cart/items",
            json!({ "product_id": product_id, "quantity": 2 }),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    let position = server::testing::event_position(&added);
    let cart = guest.get_at("/carts/tls-cart", position).await;
    assert_eq!(cart.status(), StatusCode::OK);
    let cart: Value = cart.json().await.expect("json");
    assert_eq!(cart["lines"][0]["quantity"], 2, "{cart}");
    assert!(
        key_count(&redis, &certificates).await > 0,
        "nothing was written to the TLS Redis"
    );
    server.stop().await;
}

/// A Redis whose certificate does not come from an authority mercato trusts is refused, naming
/// Redis and what to check; with the right authority the same Redis opens. TLS files that
/// cannot be used are bad usage before anything is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_from_an_untrusted_authority_is_refused_naming_redis() {
    let test_name = "redis_untrusted_certificate";
    let Some(data) = TestData::new(Setup::Embedded, test_name).await else {
        return;
    };
    let certificates = Certificates::new();
    let Some(redis) = TlsRedis::start(test_name, &certificates, false) else {
        return;
    };
    let url = redis.url();
    let other_ca = certificates.arg("other-ca.pem");
    let ca = certificates.arg("ca.pem");
    for args in [
        vec!["--redis-url", url.as_str()],
        vec![
            "--redis-url",
            url.as_str(),
            "--redis-ca-cert",
            other_ca.as_str(),
        ],
    ] {
        let config = data.config("all", &args);
        let error = Platform::open(&config, Access::Reader)
            .await
            .expect_err("opened a Redis whose certificate is not trusted");
        assert!(!error.is_usage(), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("cannot connect to Redis at {url}"))
                && message.contains("REDIS_CA_CERT")
                && message.contains("certificate"),
            "{args:?}: {message}"
        );
    }
    let config = data.config("all", &["--redis-url", &url, "--redis-ca-cert", &ca]);
    Platform::open(&config, Access::Reader)
        .await
        .unwrap_or_else(|error| panic!("the trusted authority: {error}"));

    let plain_url = format!("redis://127.0.0.1:{}/0", redis.port);
    let missing = certificates.arg("missing.pem");
    let not_pem = certificates.arg("server.key");
    let client_certificate = certificates.arg("client.pem");
    for (args, expected) in [
        (
            vec!["--redis-url", &plain_url, "--redis-ca-cert", &ca],
            "REDIS_CA_CERT is set, but REDIS_URL redis://127.0.0.1",
        ),
        (
            vec!["--redis-url", &url, "--redis-ca-cert", &missing],
            "missing.pem cannot be read",
        ),
        (
            vec!["--redis-url", &url, "--redis-ca-cert", &not_pem],
            "holds no PEM certificate",
        ),
        (
            vec![
                "--redis-url",
                &url,
                "--redis-client-cert",
                &client_certificate,
            ],
            "REDIS_CLIENT_CERT is set without REDIS_CLIENT_KEY",
        ),
    ] {
        let config = data.config("all", &args);
        let error = Platform::open(&config, Access::Reader)
            .await
            .expect_err("unusable TLS files were accepted");
        assert!(error.is_usage(), "{args:?}: {error}");
        assert!(error.to_string().contains(expected), "{args:?}: {error}");
    }
}

/// `error` and each of its causes, as the command line prints them.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        message.push_str(": ");
        message.push_str(&error.to_string());
        cause = error.source();
    }
    message
}

/// `url` with `parameters` added to its query.
fn with_parameters(url: &str, parameters: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameters}")
}

/// Whether the connection that runs the query is encrypted.
const CONNECTION_ENCRYPTED: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// A database of the test's own and what its server says of `ssl`; `None` when the test must
/// be skipped (no PostgreSQL, or one with `ssl = off`, which a test does not change).
async fn database_with_ssl(test_name: &str) -> Option<TestDatabase> {
    let database = TestDatabase::create(test_name).await?;
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(database.url())
        .await
        .expect("connect");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut connection)
        .await
        .expect("SHOW ssl");
    if ssl != "on" {
        skip(
            test_name,
            "the PostgreSQL server of DATABASE_URL has ssl = off (set ssl = on with a certificate to run this test)",
        );
        return None;
    }
    Some(database)
}

/// `sslmode=require` in `DATABASE_URL` encrypts the connections of every pool the platform
/// opens: the event store's, the read models' and the secret store's; `sslmode=disable` none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_the_connections_of_every_pool() {
    let test_name = "postgres_sslmode_require";
    let Some(database) = database_with_ssl(test_name).await else {
        return;
    };
    let data = TestData::new(Setup::Embedded, test_name)
        .await
        .expect("embedded data");
    for (sslmode, encrypted) in [("require", true), ("disable", false)] {
        let url = with_parameters(database.url(), &format!("sslmode={sslmode}"));
        let config = data.config("all", &["--database-url", &url]);
        let platform = Platform::open(&config, Access::Writer)
            .await
            .unwrap_or_else(|error| panic!("sslmode={sslmode}: {error}"));
        let read_models: bool = sqlx::query_scalar(CONNECTION_ENCRYPTED)
            .fetch_one(platform.read_models.db.pool())
            .await
            .expect("the read models' connection");
        let store = eventstore::postgres::PgEventStore::connect(&url)
            .await
            .expect("the event store");
        let events: bool = sqlx::query_scalar(CONNECTION_ENCRYPTED)
            .fetch_one(store.pool())
            .await
            .expect("the event store's connection");
        let secrets = identity::SecretStore::open(&identity::identity_db_url(&url))
            .await
            .expect("the secret store");
        let secret_store: bool = sqlx::query_scalar(CONNECTION_ENCRYPTED)
            .fetch_one(secrets.pool())
            .await
            .expect("the secret store's connection");
        assert_eq!(
            (events, read_models, secret_store),
            (encrypted, encrypted, encrypted),
            "sslmode={sslmode}: (event store, read models, secret store)"
        );
    }
}

/// `sslmode=verify-full` and `verify-ca` with a root certificate the server's certificate does
/// not come from are refused, with an error that names the URL, DATABASE_URL and the
/// certificate; a root file that is missing too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_with_another_root_certificate_are_refused_with_a_clear_error() {
    let test_name = "postgres_sslmode_verify";
    let Some(database) = database_with_ssl(test_name).await else {
        return;
    };
    let data = TestData::new(Setup::Embedded, test_name)
        .await
        .expect("embedded data");
    let certificates = Certificates::new();
    let other_root = certificates.arg("other-ca.pem");
    let missing_root = certificates.arg("missing.pem");
    for (parameters, expected) in [
        (
            format!("sslmode=verify-full&sslrootcert={other_root}"),
            "certificate",
        ),
        (
            format!("sslmode=verify-ca&sslrootcert={other_root}"),
            "certificate",
        ),
        (
            format!("sslmode=verify-ca&sslrootcert={missing_root}"),
            "no such file",
        ),
    ] {
        let url = with_parameters(database.url(), &parameters);
        let config = data.config("all", &["--database-url", &url]);
        let error = Platform::open(&config, Access::Writer)
            .await
            .expect_err("a server certificate from another authority was accepted");
        let message = with_causes(&error);
        assert!(
            message.contains("DATABASE_URL")
                && message.contains(&parameters)
                && message.to_lowercase().contains(expected),
            "{parameters}: {message}"
        );
    }
}

/// The server's own certificate file, when this process can read it (a local server's
/// self-signed certificate, such as Debian's snakeoil one for `localhost`), trusted as the
/// root: `verify-full` to `localhost` accepts it and encrypts, and to `127.0.0.1`, a name the
/// certificate does not hold, refuses it.
///
/// `verify-ca` checks the host name too here, as `verify-full` does: sqlx 0.8's verifier that
/// should skip it does not recognise the name error of rustls 0.23.24 and later
/// (transact-rs/sqlx#3793), so a refusal is stricter than libpq's, never looser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_servers_own_certificate_as_the_root_checks_the_host_name() {
    let test_name = "postgres_sslmode_verify_full";
    let Some(database) = database_with_ssl(test_name).await else {
        return;
    };
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(database.url())
        .await
        .expect("connect");
    let certificate_file: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut connection)
        .await
        .expect("SHOW ssl_cert_file");
    let names_localhost = std::fs::read_to_string(Path::new(&certificate_file))
        .is_ok_and(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
        && Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-ext",
                "subjectAltName",
                "-in",
                &certificate_file,
            ])
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("DNS:localhost"));
    if !names_localhost || !database.url().contains("@127.0.0.1:") {
        skip(
            test_name,
            &format!(
                "the server's certificate {certificate_file} cannot be read here or is not for localhost, or DATABASE_URL's host is not 127.0.0.1"
            ),
        );
        return;
    }
    let parameters = format!("sslmode=verify-full&sslrootcert={certificate_file}");
    let url = with_parameters(
        &database.url().replacen("@127.0.0.1:", "@localhost:", 1),
        &parameters,
    );
    let store = eventstore::postgres::PgEventStore::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let encrypted: bool = sqlx::query_scalar(CONNECTION_ENCRYPTED)
        .fetch_one(store.pool())
        .await
        .expect("the event store's connection");
    assert!(encrypted);
    let url = with_parameters(database.url(), &parameters);
    let error = eventstore::postgres::PgEventStore::connect(&url)
        .await
        .expect_err("a certificate for localhost was accepted for 127.0.0.1");
    let message = with_causes(&error);
    assert!(
        message.contains("not valid for name \"127.0.0.1\""),
        "{message}"
    );
}
