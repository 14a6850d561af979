//! Opening what the configuration names: the event store (the one place it is opened), the
//! read-model database, Redis, the cache and the search index.

use std::sync::Arc;
use std::time::Duration;

use eventstore::EventStore;
use projections::cache::{Cache, MemoryCache, RedisCache};
use projections::catalogue::{ReadModelStores, SearchStore};
use projections::readdb::{ReadDb, read_db_url};
use projections::redis_models::RedisModels;
use projections::search::TantivySearch;
use projections::search::opensearch::{self, OpenSearchIndex};

use identity::{Identity, IdentitySettings, OidcSettings};

use crate::config::{Config, Secret};
use crate::error::{Error, Result, projection_failure, store_failure};

/// How much the in-process cache holds at most: a bound on memory, not on entries.
const MEMORY_CACHE_BYTES: usize = 16 << 20;

/// Everything a running platform holds: the event store, where the read models live, and
/// identity (accounts, keys, the secret store beside the event store, the mailer).
#[derive(Clone, Debug)]
pub struct Platform {
    pub store: Arc<dyn EventStore>,
    pub read_models: ReadModelStores,
    pub identity: Identity,
}

/// Who opens the platform, which decides how the read models are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A process that runs the projections: it writes the read models, creates the search
    /// index when it is missing, and keeps an in-process cache (without Redis) that its
    /// projections invalidate.
    Writer,
    /// A process that only reads them (a query-api alone, or an operator's command).
    Reader,
}

impl Platform {
    /// Opens the platform of a store that must exist already (what every command but `serve`,
    /// `migrate`, `seed` and `generate` opens): where there is none, an error naming the path
    /// or URL, and nothing is created.
    pub async fn open_existing(config: &Config, access: Access) -> Result<Platform> {
        require_store(config).await?;
        Platform::open(config, access).await
    }

    /// Opens the store, the read models, the cache and the search index `config` names,
    /// creating what is missing.
    pub async fn open(config: &Config, access: Access) -> Result<Platform> {
        std::fs::create_dir_all(&config.data_dir).map_err(|error| {
            Error::runtime(
                format!(
                    "cannot create the data directory {}",
                    config.data_dir.display()
                ),
                error,
            )
        })?;
        let store = open_store(config).await?;
        let db = open_read_db(config).await?;
        // One Redis connection (multiplexed) serves the cache and the Redis read models.
        let redis = match &config.redis_url {
            Some(url) => Some(connect_redis(config, url).await?),
            None => None,
        };
        let prefix = redis_prefix(config.database_url.expose());
        let cache: Option<Arc<dyn Cache>> = match (&redis, access) {
            (Some(connection), _) => Some(Arc::new(RedisCache::new(connection.clone(), &prefix))),
            // In process, the cache is only right if this process's projections invalidate it.
            (None, Access::Writer) => Some(Arc::new(MemoryCache::new(MEMORY_CACHE_BYTES))),
            (None, Access::Reader) => None,
        };
        let search = open_search(config, access, cache.clone()).await?;
        let identity = open_identity(config, store.clone()).await?;
        Ok(Platform {
            identity,
            store,
            read_models: ReadModelStores {
                db,
                db_url: read_db_url(config.database_url.expose()),
                redis: redis.map(|connection| RedisModels::new(connection, &prefix)),
                search,
                cache,
            },
        })
    }
}

/// The mailer `config` names: SMTP with `SMTP_URL`, else `.eml` files under `{data-dir}/mail`.
pub fn open_mailer(config: &Config) -> Result<Arc<dyn mail::Mailer>> {
    mail::open(&mail::MailSettings {
        smtp_url: config.smtp_url.as_ref().map(|url| url.expose().to_owned()),
        from: config.mail_from.clone(),
        send_timeout: config.mail_send_timeout.duration(),
        outbox_dir: config.data_dir.join("mail"),
    })
    .map_err(|error| Error::Usage(format!("outgoing mail cannot be set up: {error}")))
}

/// The parts of notifications and webhooks `config` names: the mailer, the SMS adapter (Twilio
/// with TWILIO_ACCOUNT_SID, else `.json` files under `{data-dir}/sms`), the templates (with
/// MERCATO_TEMPLATES_DIR's files, each checked now), and where webhooks may connect.
pub async fn open_notify(config: &Config, platform: &Platform) -> Result<NotifyParts> {
    let sms: Arc<dyn notify::sms::SmsSender> = match &config.twilio_account_sid {
        Some(account_sid) => {
            let (Some(token), Some(from)) = (&config.twilio_auth_token, &config.twilio_from) else {
                return Err(Error::Usage(
                    "TWILIO_ACCOUNT_SID is set without TWILIO_AUTH_TOKEN and TWILIO_FROM: set both, or unset the SID".to_owned(),
                ));
            };
            Arc::new(
                notify::sms::TwilioSms::new(notify::sms::TwilioSettings {
                    account_sid: account_sid.clone(),
                    auth_token: token.expose().to_owned(),
                    from: from.clone(),
                    api_base: config.twilio_api_base.clone(),
                    timeout: Duration::from_secs(10),
                })
                .map_err(|error| {
                    Error::Usage(format!("text messages cannot be set up: {error}"))
                })?,
            )
        }
        None => Arc::new(
            notify::sms::FileSms::open(&config.data_dir.join("sms")).map_err(|error| {
                Error::Usage(format!("text messages cannot be set up: {error}"))
            })?,
        ),
    };
    let templates = notify::Templates::load(config.templates_dir.as_deref())
        .map_err(|error| Error::Usage(format!("MERCATO_TEMPLATES_DIR: {error}")))?;
    let allowlist =
        notify::guard::Allowlist::parse(config.webhook_allowlist.as_deref().unwrap_or(""))
            .map_err(Error::Usage)?;
    let endpoints = notify::webhooks::Endpoints::new(platform.identity.secrets.pool().clone());
    endpoints
        .ensure_schema()
        .await
        .map_err(|error| Error::runtime("cannot create the webhook tables", error))?;
    Ok(NotifyParts {
        recipients: notify::Recipients {
            db: platform.read_models.db.clone(),
            identity: platform.identity.clone(),
            mailer: open_mailer(config)?,
            sms,
            templates: Arc::new(templates),
        },
        guard: notify::guard::DestinationGuard::new(allowlist),
        endpoints,
    })
}

/// What [`open_notify`] opens.
#[derive(Clone, Debug)]
pub struct NotifyParts {
    pub recipients: notify::Recipients,
    pub guard: notify::guard::DestinationGuard,
    pub endpoints: notify::webhooks::Endpoints,
}

/// Identity over `store`: the secret store beside it, the signing keys, the OIDC issuer (read
/// when a token first needs it).
pub async fn open_identity(config: &Config, store: Arc<dyn EventStore>) -> Result<Identity> {
    let oidc = match (&config.oidc_issuer_url, &config.oidc_audience) {
        (Some(issuer), Some(audience)) => Some(OidcSettings {
            issuer: issuer.clone(),
            audience: audience.clone(),
        }),
        (Some(_), None) => {
            return Err(Error::Usage(
                "OIDC_ISSUER_URL is set without OIDC_AUDIENCE: set the audience the issuer's tokens are for".to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(Error::Usage(
                "OIDC_AUDIENCE is set without OIDC_ISSUER_URL: set the issuer, or unset the audience".to_owned(),
            ));
        }
        (None, None) => None,
    };
    let settings = IdentitySettings {
        store_url: config.database_url.expose().to_owned(),
        signing_key_pem: config
            .signing_key
            .as_ref()
            .map(|key| key.expose().to_owned()),
        oidc,
        public_url: config.public_url.clone(),
    };
    Identity::open(&settings, store)
        .await
        .map_err(|error| match error {
            identity::IdentityError::Config(message) => Error::Usage(message),
            other => Error::runtime(
                format!(
                    "cannot open the secret store beside {} (check DATABASE_URL and that the database is running)",
                    config.database_url.redacted()
                ),
                other,
            ),
        })
}

fn secret_store_failure(config: &Config) -> impl FnOnce(identity::IdentityError) -> Error + '_ {
    move |error| {
        Error::runtime(
            format!(
                "cannot open the secret store beside {} (check DATABASE_URL and that the database is running)",
                config.database_url.redacted()
            ),
            error,
        )
    }
}

/// The API keys of the deployment `config` names (creating its secret store if needed).
pub async fn open_api_keys(config: &Config) -> Result<identity::ApiKeys> {
    let secrets =
        identity::SecretStore::open(&identity::identity_db_url(config.database_url.expose()))
            .await
            .map_err(secret_store_failure(config))?;
    Ok(identity::ApiKeys::new(secrets))
}

/// The signing keys of the deployment `config` names (a first one made if there is none).
pub async fn open_signing_keys(config: &Config) -> Result<identity::SigningKeys> {
    let secrets =
        identity::SecretStore::open(&identity::identity_db_url(config.database_url.expose()))
            .await
            .map_err(secret_store_failure(config))?;
    identity::SigningKeys::open(secrets, config.signing_key.as_ref().map(Secret::expose))
        .await
        .map_err(|error| match error {
            identity::IdentityError::Config(message) => Error::Usage(message),
            other => secret_store_failure(config)(other),
        })
}

/// Creates a staff account on the store `config` names (creating the store if needed):
/// `mercato users add`. Answers its user id.
pub async fn add_staff_account(
    config: &Config,
    email: &str,
    name: &str,
    roles: &std::collections::BTreeSet<domain::Role>,
    password: &str,
) -> Result<uuid::Uuid> {
    let store = open_store(config).await?;
    let identity = open_identity(config, store).await?;
    let metadata = eventstore::EventMetadata {
        correlation_id: uuid::Uuid::new_v4().to_string(),
        causation_id: String::new(),
        saga_id: None,
        actor: "operator".to_owned(),
        source: "mercato users add".to_owned(),
        traceparent: None,
        tracestate: None,
    };
    identity
        .accounts
        .register(
            email,
            password,
            name,
            domain::AccountKind::Staff,
            roles,
            &metadata,
        )
        .await
        .map(|written| written.user_id)
        .map_err(|error| match error {
            identity::AccountError::Invalid(field) => {
                Error::Usage(format!("{}: {}", field.field, field.message))
            }
            identity::AccountError::EmailTaken => {
                Error::Usage(format!("an account with the email {email} exists already"))
            }
            other => Error::runtime("cannot create the account", other),
        })
}

/// How long connecting to Redis may take before the process gives up naming it.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One multiplexed connection to the Redis `url` names, or an error naming it within
/// [`REDIS_CONNECT_TIMEOUT`] (the client's own retries would otherwise wait for minutes).
async fn connect_redis(config: &Config, url: &Secret) -> Result<redis::aio::ConnectionManager> {
    let (client, tls) = redis_client(config, url)?;
    let hint = if tls {
        "check REDIS_URL, that Redis is running, and that its certificate is for the URL's host and comes from REDIS_CA_CERT's authority (or a public one without REDIS_CA_CERT)"
    } else {
        "check REDIS_URL and that Redis is running"
    };
    let failed = |error: &dyn std::fmt::Display| {
        Error::Failed(format!(
            "cannot connect to Redis at {} ({hint}): {error}",
            url.redacted()
        ))
    };
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_CONNECT_TIMEOUT)
        .set_number_of_retries(1);
    match tokio::time::timeout(
        REDIS_CONNECT_TIMEOUT,
        redis::aio::ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(failed(&error)),
        Err(_) => Err(failed(&format_args!(
            "no answer within {} s",
            REDIS_CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// The Redis client of `url`, and whether it speaks TLS (`rediss://`): with the authorities
/// of `REDIS_CA_CERT` instead of the public ones, and the client certificate of
/// `REDIS_CLIENT_CERT` and `REDIS_CLIENT_KEY`, when they are set.
fn redis_client(config: &Config, url: &Secret) -> Result<(redis::Client, bool)> {
    let not_a_url = |error: redis::RedisError| {
        Error::Usage(format!(
            "REDIS_URL {} is not a Redis URL: {error}",
            url.redacted()
        ))
    };
    let client = redis::Client::open(url.expose()).map_err(not_a_url)?;
    let tls = matches!(
        client.get_connection_info().addr,
        redis::ConnectionAddr::TcpTls { .. }
    );
    let root_cert = match &config.redis_ca_cert {
        Some(path) => {
            let pem = read_pem("REDIS_CA_CERT", path)?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::Usage(format!(
                    "REDIS_CA_CERT {} holds no PEM certificate (-----BEGIN CERTIFICATE-----): name the file of the authority Redis's certificate comes from",
                    path.display()
                )));
            }
            Some(pem)
        }
        None => None,
    };
    let client_tls = match (&config.redis_client_cert, &config.redis_client_key) {
        (Some(certificate), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read_pem("REDIS_CLIENT_CERT", certificate)?,
            client_key: read_pem("REDIS_CLIENT_KEY", key)?,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::Usage(
                "REDIS_CLIENT_CERT is set without REDIS_CLIENT_KEY: set the file of the certificate's private key too".to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(Error::Usage(
                "REDIS_CLIENT_KEY is set without REDIS_CLIENT_CERT: set the file of the client certificate too, or unset the key".to_owned(),
            ));
        }
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok((client, tls));
    }
    if !tls {
        let which = if root_cert.is_some() {
            "REDIS_CA_CERT"
        } else {
            "REDIS_CLIENT_CERT"
        };
        return Err(Error::Usage(format!(
            "{which} is set, but REDIS_URL {} is not a rediss:// URL: use rediss:// for TLS, or unset {which}",
            url.redacted()
        )));
    }
    let certificates = redis::TlsCertificates {
        client_tls,
        root_cert,
    };
    let client = redis::Client::build_with_tls(url.expose(), certificates).map_err(|error| {
        Error::Usage(format!(
            "the TLS files for Redis (REDIS_CA_CERT, REDIS_CLIENT_CERT, REDIS_CLIENT_KEY) are not usable: {error}"
        ))
    })?;
    Ok((client, tls))
}

/// The bytes of the PEM file `path` that setting `setting` names.
fn read_pem(setting: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        Error::Usage(format!(
            "{setting} {} cannot be read: {error}; check the path",
            path.display()
        ))
    })
}

/// The search index: OpenSearch with `OPENSEARCH_URL`, else the Tantivy index under the data
/// directory.
async fn open_search(
    config: &Config,
    access: Access,
    cache: Option<Arc<dyn Cache>>,
) -> Result<SearchStore> {
    if let Some(url) = &config.opensearch_url {
        let index =
            OpenSearchIndex::new(url.expose(), opensearch::DEFAULT_ALIAS).map_err(|error| {
                Error::Usage(format!(
                    "OPENSEARCH_URL {} is not usable: {error}",
                    url.redacted()
                ))
            })?;
        if access == Access::Writer {
            index.ensure_index().await.map_err(projection_failure(format!(
                "cannot create the search index on {} (check OPENSEARCH_URL and that the cluster is up)",
                url.redacted()
            )))?;
        }
        return Ok(SearchStore::OpenSearch(index));
    }
    let root = config.data_dir.join("search");
    let index = match access {
        Access::Writer => TantivySearch::open(&root, cache),
        // The projector process (same data directory) writes the index; this one reads it.
        Access::Reader => TantivySearch::open_read_only(&root, cache),
    }
    .map_err(projection_failure("cannot open the search index"))?;
    Ok(SearchStore::Tantivy {
        root,
        index: Arc::new(index),
    })
}

/// The prefix of this deployment's Redis keys: derived from the event store's URL, so every
/// process of one deployment shares it and two deployments (or test runs) on one Redis do not.
fn redis_prefix(database_url: &str) -> String {
    let hash = schemas::stable_hash(database_url);
    format!("mercato:{hash:016x}:")
}

/// Fails naming the path or URL when `config` names no event store (nothing is created): an
/// auditor's or operator's command pointed at a wrong directory must not report on an empty
/// store it just made.
pub async fn require_store(config: &Config) -> Result<()> {
    let url = &config.database_url;
    let found = eventstore::exists(url.expose())
        .await
        .map_err(store_failure(format!(
            "cannot open the event store at {} (check DATABASE_URL and that the database is running)",
            url.redacted()
        )))?;
    if found {
        return Ok(());
    }
    let hint = if url.expose().starts_with("sqlite:") {
        "check --data-dir (or DATABASE_URL); `mercato serve`, `seed` or `migrate` create one"
    } else {
        "check DATABASE_URL; `mercato migrate` creates one"
    };
    Err(Error::Failed(format!(
        "there is no event store at {} ({hint})",
        url.redacted()
    )))
}

/// Opens the event store `config` names, which must exist already (see [`require_store`]).
pub async fn open_existing_store(config: &Config) -> Result<Arc<dyn EventStore>> {
    require_store(config).await?;
    open_store(config).await
}

/// Opens the event store `config` names, creating it if needed: the one place a process opens
/// it.
pub async fn open_store(config: &Config) -> Result<Arc<dyn EventStore>> {
    eventstore::open_with_pool(config.database_url.expose(), config.db_pool.connections())
        .await
        .map_err(store_failure(format!(
            "cannot open the event store at {} (check DATABASE_URL and that the database is running)",
            config.database_url.redacted()
        )))
}

/// Opens the read-model database beside the event store `config` names, with every read
/// model's and the saga's tables.
pub async fn open_read_db(config: &Config) -> Result<ReadDb> {
    let pool = (config.db_pool.connections() / 2).max(2);
    let db = ReadDb::open_with_pool(&read_db_url(config.database_url.expose()), pool)
        .await
        .map_err(projection_failure(format!(
            "cannot open the read-model database of {} (check DATABASE_URL and that the database is running)",
            config.database_url.redacted()
        )))?;
    // The query API shows a parked saga's reason, so its tables exist whichever roles run.
    sagas::state::ensure_schema(&db)
        .await
        .map_err(|error| Error::runtime("cannot create the saga tables", error))?;
    Ok(db)
}

/// Applies the event store's migrations and creates the read-model tables; answers where (the
/// URL, passwords masked).
pub async fn migrate(config: &Config) -> Result<String> {
    let target = config.database_url.redacted();
    eventstore::migrate(config.database_url.expose())
        .await
        .map_err(store_failure(format!(
            "cannot apply migrations to {target} (check DATABASE_URL and that the database is running)"
        )))?;
    open_read_db(config).await.map_err(|error| {
        error.context(format!("cannot create the read-model tables for {target}"))
    })?;
    Ok(target)
}
