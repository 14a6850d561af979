//! One typed configuration with one merge path: flag, then environment, then config file, then
//! default.
//!
//! Every setting is declared once, in the [`settings!`] table below: its type, its default, its
//! flag and variable. The table makes [`Settings`] (one layer, every value optional: the flags
//! and environment as clap reads them, or the file as TOML holds it), [`Config`] (what a process
//! runs with, defaults applied) and [`Config::describe`], so a setting cannot be known to one of
//! them and missing from another. A value is checked by its type, in the flag, the variable and
//! the file alike: an out-of-range number in the file is refused with the same message as on
//! the command line.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

/// A value that must never be printed: connection strings carry passwords.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value with any password masked, in the credentials or as a `password` parameter:
    /// `postgres://user:***@host/db`, `postgres://host/db?user=u&password=***`. Safe to print.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "***".to_owned();
        };
        // The last `@` ends the credentials: a password may hold `@`, `/` or `?` unencoded.
        let masked = match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => self.0.clone(),
            },
            None => self.0.clone(),
        };
        let Some((address, query)) = masked.split_once('?') else {
            return masked;
        };
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                    format!("{key}=***")
                }
                _ => parameter.to_owned(),
            })
            .collect();
        format!("{address}?{}", parameters.join("&"))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret(value.to_owned()))
    }
}

/// Which part of mercato a process runs (what each one starts: [`crate::roles`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    All,
    CommandApi,
    QueryApi,
    Projector,
    Saga,
    Relay,
    /// Notifications and outgoing webhooks.
    Notifier,
    /// The web console's pages alone, calling the API at MERCATO_API_URL over HTTP.
    Console,
}

/// Where the projector and saga roles take their events from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The event store's global log (read directly).
    #[default]
    Log,
    /// The Kafka topics the relay publishes to, in a consumer group per role.
    Kafka,
}

/// How the Kafka clients talk to the brokers (librdkafka's `security.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
pub enum KafkaProtocol {
    /// Neither TLS nor a login.
    #[default]
    #[value(name = "PLAINTEXT")]
    #[serde(rename = "PLAINTEXT", alias = "plaintext")]
    Plaintext,
    /// TLS (KAFKA_SSL_CA_LOCATION for a private authority, a client certificate if the
    /// brokers ask for one).
    #[value(name = "SSL")]
    #[serde(rename = "SSL", alias = "ssl")]
    Ssl,
    /// A SASL login without TLS.
    #[value(name = "SASL_PLAINTEXT")]
    #[serde(rename = "SASL_PLAINTEXT", alias = "sasl_plaintext")]
    SaslPlaintext,
    /// A SASL login over TLS.
    #[value(name = "SASL_SSL")]
    #[serde(rename = "SASL_SSL", alias = "sasl_ssl")]
    SaslSsl,
}

impl KafkaProtocol {
    /// Whether the clients log in with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }

    /// Whether the connections are TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }
}

/// How a SASL login proves the password (librdkafka's `sasl.mechanism`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration given in seconds: a finite, non-negative number of at most a day.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(try_from = "Number")]
pub struct Seconds(Duration);

impl Seconds {
    pub const fn from_secs(seconds: u64) -> Seconds {
        Seconds(Duration::from_secs(seconds))
    }

    pub fn duration(self) -> Duration {
        self.0
    }

    fn from_number(seconds: f64, text: &str) -> Result<Seconds, String> {
        if seconds.is_finite() && (0.0..=86_400.0).contains(&seconds) {
            Ok(Seconds(Duration::from_secs_f64(seconds)))
        } else {
            Err(format!(
                "{text:?} is not a number of seconds between 0 and 86400 (such as 30 or 0.5)"
            ))
        }
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let seconds = text.trim().parse::<f64>().unwrap_or(f64::NAN);
        Seconds::from_number(seconds, text)
    }
}

/// A number in a TOML file: an integer or a float.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Integer(i64),
    Float(f64),
}

impl Number {
    fn text(self) -> String {
        match self {
            Number::Integer(value) => value.to_string(),
            Number::Float(value) => value.to_string(),
        }
    }
}

impl TryFrom<Number> for Seconds {
    type Error = String;

    fn try_from(number: Number) -> Result<Self, Self::Error> {
        let seconds = match number {
            Number::Integer(value) => value as f64,
            Number::Float(value) => value,
        };
        Seconds::from_number(seconds, &number.text())
    }
}

/// How long a bank-transfer order waits for its payment: whole seconds, up to 90 days.
pub type BankTransferSeconds = Count<1, 7_776_000>;
/// Seconds a webhook endpoint may keep failing: a year at most.
pub type DisableSeconds = Count<1, 31_536_000>;
/// A scheduling niceness a process may lower itself to.
pub type Niceness = Count<0, 19>;

/// A whole number from `MIN` to `MAX` (partition counts, replication factors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Number")]
pub struct Count<const MIN: i32, const MAX: i32>(i32);

impl<const MIN: i32, const MAX: i32> Count<MIN, MAX> {
    /// `value`, which must lie in the range (a default of the table).
    pub const fn new(value: i32) -> Self {
        assert!(MIN <= value && value <= MAX);
        Count(value)
    }

    pub fn get(self) -> i32 {
        self.0
    }

    fn checked(value: Option<i64>, text: &str) -> Result<Self, String> {
        value
            .and_then(|value| i32::try_from(value).ok())
            .filter(|value| (MIN..=MAX).contains(value))
            .map(Count)
            .ok_or_else(|| format!("{text:?} is not a whole number from {MIN} to {MAX}"))
    }
}

impl<const MIN: i32, const MAX: i32> FromStr for Count<MIN, MAX> {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Count::checked(text.trim().parse().ok(), text)
    }
}

impl<const MIN: i32, const MAX: i32> TryFrom<Number> for Count<MIN, MAX> {
    type Error = String;

    fn try_from(number: Number) -> Result<Self, Self::Error> {
        let value = match number {
            Number::Integer(value) => Some(value),
            Number::Float(_) => None,
        };
        Count::checked(value, &number.text())
    }
}

/// A setting's value as `mercato config` prints it: a TOML value (`None` when not set), so that
/// the output is a config file that reads back.
pub trait Describe {
    fn describe(&self) -> Option<toml::Value>;
}

impl Describe for SocketAddr {
    fn describe(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl Describe for PathBuf {
    fn describe(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
}

impl Describe for String {
    fn describe(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl Describe for Secret {
    fn describe(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.redacted()))
    }
}

impl Describe for Seconds {
    fn describe(&self) -> Option<toml::Value> {
        let seconds = self.0.as_secs_f64();
        Some(if seconds.fract() == 0.0 {
            toml::Value::Integer(self.0.as_secs() as i64)
        } else {
            toml::Value::Float(seconds)
        })
    }
}

impl<const MIN: i32, const MAX: i32> Describe for Count<MIN, MAX> {
    fn describe(&self) -> Option<toml::Value> {
        Some(toml::Value::Integer(i64::from(self.0)))
    }
}

impl<T: Describe> Describe for Option<T> {
    fn describe(&self) -> Option<toml::Value> {
        self.as_ref().and_then(Describe::describe)
    }
}

macro_rules! describe_as_value_name {
    ($($kind:ty),*) => {$(
        impl Describe for $kind {
            fn describe(&self) -> Option<toml::Value> {
                let name = self
                    .to_possible_value()
                    .map_or_else(|| format!("{self:?}"), |value| value.get_name().to_owned());
                Some(toml::Value::String(name))
            }
        }
    )*};
}
describe_as_value_name!(Role, Source, LogFormat, KafkaProtocol, SaslMechanism);

/// The config type of a setting: its own type when it has a default, else optional.
macro_rules! config_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

/// A setting's value once resolved: the merged value, else the default (when it has one).
macro_rules! resolved {
    ($value:expr) => {
        $value
    };
    ($value:expr, $default:expr) => {
        $value.unwrap_or_else(|| $default)
    };
}

/// The table of settings. Each entry: its documentation (the flag's help), the clap attributes
/// of its flag and variable, its name (also the file's key), its type and its default. A
/// default may use the settings above it. Settings without a default are optional.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $name:ident : $ty:ty $(= $default:expr)?;
    )*) => {
        /// One layer of settings, every value optional: the flags and environment (as clap
        /// reads them), or a config file (TOML, the same names).
        #[derive(Clone, Debug, Default, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $name: Option<$ty>,
            )*
        }

        impl Settings {
            /// This layer over `below`: each value of this one, else the one below.
            pub fn over(self, below: Settings) -> Settings {
                Settings { $($name: self.$name.or(below.$name),)* }
            }
        }

        /// The configuration a process runs with.
        #[derive(Clone, Debug)]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                pub $name: config_type!($ty $(, $default)?),
            )*
        }

        impl Config {
            /// The settings of `merged` with the defaults applied.
            fn with_defaults(merged: Settings) -> Config {
                $(let $name = resolved!(merged.$name $(, $default)?);)*
                Config { $($name,)* }
            }

            /// The configuration as a TOML config file (`--config` reads it back): `key = value`
            /// lines, a setting without a value as a comment, passwords masked (and a comment
            /// saying so).
            pub fn describe(&self) -> String {
                let mut lines = String::from(CONFIG_HEADER);
                $(
                    match Describe::describe(&self.$name) {
                        Some(value) => {
                            lines.push_str(stringify!($name));
                            lines.push_str(" = ");
                            lines.push_str(&value.to_string());
                        }
                        None => {
                            lines.push_str("# ");
                            lines.push_str(stringify!($name));
                            lines.push_str(" is not set");
                        }
                    }
                    lines.push('\n');
                )*
                lines
            }
        }
    };
}

/// The first lines of `mercato config`'s output.
const CONFIG_HEADER: &str = "# mercato's configuration, as a config file: `mercato --config FILE` reads it back.\n# Passwords in URLs are masked as ***: put them back (or set them in the environment) before using it.\n";

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_PAYMENT_TIMEOUT: Seconds = Seconds::from_secs(30);

/// A rate (requests per second or per minute); 0 turns the limit off.
pub type Rate = Count<0, 1_000_000>;
/// The units one line may hold: at most the domain's own bound.
pub type LineQuantity = Count<1, 999>;
/// How many of something may be open at once (requests, connections).
pub type Capacity = Count<1, 1_000_000>;

/// The size of a database connection pool.
pub type PoolSize = Count<1, 1_000>;

impl PoolSize {
    pub fn connections(self) -> u32 {
        u32::try_from(self.get()).unwrap_or(1)
    }
}

/// The proxies whose `X-Forwarded-For` is believed: addresses and CIDR blocks, comma-separated
/// (`10.0.0.0/8, 192.168.1.7`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Proxies(Vec<ipnet::IpNet>);

impl Proxies {
    /// Whether `address` is one of them.
    pub fn contains(&self, address: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(address))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for Proxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<ipnet::IpNet>()
                    .or_else(|_| part.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!(
                            "{part:?} is not an IP address or CIDR block (such as 10.0.0.0/8 or 192.168.1.7)"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Proxies)
    }
}

impl TryFrom<String> for Proxies {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl Describe for Proxies {
    fn describe(&self) -> Option<toml::Value> {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        Some(toml::Value::String(list.join(", ")))
    }
}

/// Partitions of each topic the relay creates.
pub type Partitions = Count<1, 1000>;
/// Replication factor of each topic the relay creates.
pub type Replication = Count<1, 16>;

settings! {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(skip)]
    listen: SocketAddr = DEFAULT_LISTEN;
    /// Directory for embedded data (SQLite store, search index) [default: ./data]
    #[arg(long, global = true, env = "MERCATO_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf = PathBuf::from(DEFAULT_DATA_DIR);
    /// Which part to run, for scale-out [default: all]
    #[arg(skip)]
    role: Role = Role::All;
    /// Event store and SQL read models: postgres://... (TLS by ?sslmode=require, verify-ca or
    /// verify-full, with sslrootcert=PATH for a private authority) or sqlite://PATH
    /// [default: sqlite://{data-dir}/mercato.db]
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database_url: Secret = Secret(format!("sqlite://{}", data_dir.join("mercato.db").display()));
    /// PostgreSQL connections the event store's pool opens at most; the read models' pool opens
    /// half as many, the secret store's 4 and the store's listener 1, so a process opens at
    /// most about 1.5 times this many. Budget it against the server's max_connections when
    /// several processes share one database [default: 32]
    #[arg(long, global = true, env = "MERCATO_DB_POOL", value_name = "N")]
    db_pool: PoolSize = PoolSize::new(32);
    /// Redis for the query cache, carts and popularity: redis://..., or rediss://... for TLS
    /// [default: in-process]
    #[arg(long, global = true, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    redis_url: Secret;
    /// PEM file of the certificate authorities a rediss:// REDIS_URL's server certificate must
    /// come from [default: the public authorities (webpki roots)]
    #[arg(long, global = true, env = "REDIS_CA_CERT", value_name = "PATH")]
    redis_ca_cert: PathBuf;
    /// PEM file of the client certificate for a rediss:// Redis that asks for one (with
    /// REDIS_CLIENT_KEY) [default: none]
    #[arg(long, global = true, env = "REDIS_CLIENT_CERT", value_name = "PATH")]
    redis_client_cert: PathBuf;
    /// PEM file of the client certificate's private key [default: none]
    #[arg(long, global = true, env = "REDIS_CLIENT_KEY", value_name = "PATH")]
    redis_client_key: PathBuf;
    /// Kafka brokers (host:port,...) for the relay and Kafka-fed consumers [default: none]
    #[arg(long, global = true, env = "KAFKA_BOOTSTRAP", value_name = "HOSTS")]
    kafka_bootstrap: String;
    /// Where the projector and saga roles read events: the store's log, or Kafka (needs
    /// KAFKA_BOOTSTRAP and a running relay) [default: log]
    #[arg(long, global = true, env = "MERCATO_SOURCE", value_enum)]
    source: Source = Source::Log;
    /// Partitions of each event topic the relay creates [default: 3]
    #[arg(long, global = true, env = "MERCATO_KAFKA_PARTITIONS", value_name = "N")]
    kafka_partitions: Partitions = Partitions::new(3);
    /// Replication factor of the topics the relay creates [default: 1]
    #[arg(long, global = true, env = "MERCATO_KAFKA_REPLICATION", value_name = "N")]
    kafka_replication: Replication = Replication::new(1);
    /// Prepended to every Kafka topic and consumer group name, so that several deployments can
    /// share a cluster [default: none]
    #[arg(long, global = true, env = "MERCATO_KAFKA_PREFIX", value_name = "PREFIX")]
    kafka_prefix: String = String::new();
    /// How the Kafka clients talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    /// [default: PLAINTEXT]
    #[arg(long, global = true, env = "KAFKA_SECURITY_PROTOCOL", value_enum, ignore_case = true)]
    kafka_security_protocol: KafkaProtocol = KafkaProtocol::Plaintext;
    /// The SASL mechanism of SASL_PLAINTEXT and SASL_SSL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    /// [default: none]
    #[arg(long, global = true, env = "KAFKA_SASL_MECHANISM", value_enum, ignore_case = true)]
    kafka_sasl_mechanism: SaslMechanism;
    /// The SASL user name [default: none]
    #[arg(long, global = true, env = "KAFKA_SASL_USERNAME", value_name = "NAME")]
    kafka_sasl_username: String;
    /// The SASL password [default: none]
    #[arg(long, global = true, env = "KAFKA_SASL_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    kafka_sasl_password: Secret;
    /// PEM file of the certificate authorities the brokers' certificates must come from, with
    /// SSL and SASL_SSL [default: the system's]
    #[arg(long, global = true, env = "KAFKA_SSL_CA_LOCATION", value_name = "PATH")]
    kafka_ssl_ca_location: PathBuf;
    /// PEM file of the client certificate, for brokers that ask for one (with
    /// KAFKA_SSL_KEY_LOCATION) [default: none]
    #[arg(long, global = true, env = "KAFKA_SSL_CERTIFICATE_LOCATION", value_name = "PATH")]
    kafka_ssl_certificate_location: PathBuf;
    /// PEM file of the client certificate's private key [default: none]
    #[arg(long, global = true, env = "KAFKA_SSL_KEY_LOCATION", value_name = "PATH")]
    kafka_ssl_key_location: PathBuf;
    /// The password of an encrypted KAFKA_SSL_KEY_LOCATION [default: none]
    #[arg(long, global = true, env = "KAFKA_SSL_KEY_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    kafka_ssl_key_password: Secret;
    /// OpenSearch or Elasticsearch for product search (ELASTICSEARCH_URL is an alias) [default: embedded index]
    #[arg(long, global = true, env = "OPENSEARCH_URL", value_name = "URL", hide_env_values = true)]
    opensearch_url: Secret;
    /// The OTLP collector that traces are exported to (gRPC, or HTTP with /v1/traces added);
    /// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER apply as the
    /// OpenTelemetry specification says [default: no export]
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otel_endpoint: String;
    /// How traces reach OTEL_EXPORTER_OTLP_ENDPOINT: grpc or http/protobuf [default:
    /// http/protobuf]
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_name = "PROTOCOL")]
    otel_protocol: String;
    /// Log format
    #[arg(long, global = true, env = "MERCATO_LOG_FORMAT", value_enum)]
    log_format: LogFormat = LogFormat::Text;
    /// Seconds the payment gateway has to answer before the order is cancelled [default: 30]
    #[arg(long, global = true, env = "MERCATO_PAYMENT_TIMEOUT", value_name = "SECONDS")]
    payment_timeout: Seconds = DEFAULT_PAYMENT_TIMEOUT;
    /// Seconds the built-in test gateway takes per charge or refund [default: 0]
    #[arg(long, global = true, env = "MERCATO_TEST_GATEWAY_LATENCY", value_name = "SECONDS")]
    test_gateway_latency: Seconds = Seconds::from_secs(0);
    /// Seconds after the charge call the test gateway makes a `tok_lateSuccess` charge
    /// [default: the payment timeout plus 5]
    #[arg(long, global = true, env = "MERCATO_TEST_GATEWAY_LATE_AFTER", value_name = "SECONDS")]
    test_gateway_late_after: Seconds = Seconds(payment_timeout.duration() + Duration::from_secs(5));
    /// Seconds a bank-transfer order waits for staff to record its payment before it is
    /// cancelled and its stock released, 1 to 7776000 (90 days) [default: 604800, seven days]
    #[arg(long, global = true, env = "MERCATO_BANK_TRANSFER_TIMEOUT", value_name = "SECONDS")]
    bank_transfer_timeout: BankTransferSeconds = BankTransferSeconds::new(7 * 24 * 3600);
    /// Stripe's secret API key (sk_... or rk_...): card payments go to Stripe instead of the
    /// built-in test gateway [default: the test gateway]
    #[arg(long, global = true, env = "STRIPE_API_KEY", value_name = "KEY", hide_env_values = true)]
    stripe_api_key: Secret;
    /// The signing secret (whsec_...) of the Stripe webhook endpoint POST /webhooks/stripe;
    /// without it that route answers 404 [default: none]
    #[arg(long, global = true, env = "STRIPE_WEBHOOK_SECRET", value_name = "SECRET", hide_env_values = true)]
    stripe_webhook_secret: Secret;
    /// Stripe's API address; another one for tests [default: https://api.stripe.com]
    #[arg(long, global = true, env = "STRIPE_API_BASE", value_name = "URL")]
    stripe_api_base: String = sagas::stripe::DEFAULT_API_BASE.to_owned();
    /// The currency of the charges made through Stripe, an ISO 4217 code [default: usd]
    #[arg(long, global = true, env = "STRIPE_CURRENCY", value_name = "CODE")]
    stripe_currency: String = sagas::stripe::DEFAULT_CURRENCY.to_owned();
    /// Outgoing mail: smtp://[user:password@]host[:port], smtps://... for TLS
    /// [default: one .eml file per mail under {data-dir}/mail]
    #[arg(long, global = true, env = "SMTP_URL", value_name = "URL", hide_env_values = true)]
    smtp_url: Secret;
    /// The sender of outgoing mail [default: mercato@localhost]
    #[arg(long, global = true, env = "MERCATO_MAIL_FROM", value_name = "ADDRESS")]
    mail_from: String = "mercato@localhost".to_owned();
    /// Seconds one SMTP send may take, connection included [default: 30]
    #[arg(long, global = true, env = "MERCATO_MAIL_SEND_TIMEOUT", value_name = "SECONDS")]
    mail_send_timeout: Seconds = Seconds::from_secs(30);
    /// The shop's name in the messages it sends [default: mercato]
    #[arg(long, global = true, env = "MERCATO_SHOP_NAME", value_name = "NAME")]
    shop_name: String = "mercato".to_owned();
    /// A directory of message templates (LANG/NAME.subject.txt, .txt, .html, .sms.txt) that
    /// replace the built-in ones, checked at start [default: the built-in templates]
    #[arg(long, global = true, env = "MERCATO_TEMPLATES_DIR", value_name = "DIR")]
    templates_dir: PathBuf;
    /// Twilio's account SID (AC...): text messages go through Twilio [default: one .json file
    /// per message under {data-dir}/sms]
    #[arg(long, global = true, env = "TWILIO_ACCOUNT_SID", value_name = "SID")]
    twilio_account_sid: String;
    /// Twilio's auth token [default: none]
    #[arg(long, global = true, env = "TWILIO_AUTH_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    twilio_auth_token: Secret;
    /// The sender of text messages through Twilio: a number (+E.164) or a messaging service
    /// (MG...) [default: none]
    #[arg(long, global = true, env = "TWILIO_FROM", value_name = "NUMBER")]
    twilio_from: String;
    /// Twilio's API address; another one for tests [default: https://api.twilio.com]
    #[arg(long, global = true, env = "TWILIO_API_BASE", value_name = "URL")]
    twilio_api_base: String = "https://api.twilio.com".to_owned();
    /// Hosts and address blocks (CIDR) webhooks may be delivered to although they are
    /// loopback, private or link-local, comma-separated [default: none]
    #[arg(long, global = true, env = "MERCATO_WEBHOOK_ALLOWLIST", value_name = "HOSTS")]
    webhook_allowlist: String;
    /// Seconds one webhook delivery may take, connecting included [default: 10]
    #[arg(long, global = true, env = "MERCATO_WEBHOOK_TIMEOUT", value_name = "SECONDS")]
    webhook_timeout: Seconds = Seconds::from_secs(10);
    /// Seconds a webhook endpoint may keep failing before it is disabled and the admins are
    /// told, 1 to 31536000 [default: 259200, three days]
    #[arg(long, global = true, env = "MERCATO_WEBHOOK_DISABLE_AFTER", value_name = "SECONDS")]
    webhook_disable_after: DisableSeconds = DisableSeconds::new(3 * 24 * 3600);
    /// The scheduling niceness (0 to 19) a process of role `notifier` lowers itself to, so that
    /// on a shared host its messages wait for CPU, not the checkouts; 0 keeps it [default: 10]
    #[arg(long, global = true, env = "MERCATO_NOTIFIER_NICE", value_name = "NICENESS")]
    notifier_nice: Niceness = Niceness::new(10);
    /// The Ed25519 private key (PKCS#8 PEM) that signs access tokens; the keys in the secret
    /// store still verify [default: keys made and kept in the secret store]
    #[arg(long, global = true, env = "MERCATO_SIGNING_KEY", value_name = "PEM", hide_env_values = true)]
    signing_key: Secret;
    /// Also accept access tokens of this OpenID Connect issuer (needs OIDC_AUDIENCE)
    /// [default: mercato's own tokens only]
    #[arg(long, global = true, env = "OIDC_ISSUER_URL", value_name = "URL")]
    oidc_issuer_url: String;
    /// The audience an OIDC issuer's tokens must name [default: none]
    #[arg(long, global = true, env = "OIDC_AUDIENCE", value_name = "AUDIENCE")]
    oidc_audience: String;
    /// Where the shop's pages are, for the links in its emails [default: http://{listen}]
    #[arg(long, global = true, env = "MERCATO_PUBLIC_URL", value_name = "URL")]
    public_url: String = format!("http://{listen}");
    /// The HTTP API the pages of role `console` call: the address (http:// or https://, no
    /// path) of a process or proxy serving the command and query routes; the API must trust
    /// the console's address as a proxy (MERCATO_TRUSTED_PROXIES) to count each visitor
    /// apart [default: none; role console needs it]
    #[arg(long, global = true, env = "MERCATO_API_URL", value_name = "URL")]
    api_url: String;
    /// Requests per second each anonymous caller (by address), guest and customer may make, and
    /// twice as many in a burst; beyond, 429 with Retry-After; 0 turns it off [default: 100]
    #[arg(long, global = true, env = "MERCATO_RATE_LIMIT", value_name = "PER_SECOND")]
    rate_limit: Rate = Rate::new(100);
    /// The same for each staff account and API key [default: 1000]
    #[arg(long, global = true, env = "MERCATO_STAFF_RATE_LIMIT", value_name = "PER_SECOND")]
    staff_rate_limit: Rate = Rate::new(1000);
    /// Requests per minute one address may make to the account routes (registration, login,
    /// refresh, verification, password resets); 0 turns it off [default: 20]
    #[arg(long, global = true, env = "MERCATO_ACCOUNT_RATE_LIMIT", value_name = "PER_MINUTE")]
    account_rate_limit: Rate = Rate::new(20);
    /// Requests served at once; beyond, 503 with Retry-After (health, readiness and metrics
    /// are always answered) [default: 512]
    #[arg(long, global = true, env = "MERCATO_MAX_IN_FLIGHT", value_name = "N")]
    max_in_flight: Capacity = Capacity::new(512);
    /// Open connections at once; beyond, a new one gets 503 with Retry-After and is closed
    /// [default: 4096]
    #[arg(long, global = true, env = "MERCATO_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Capacity = Capacity::new(4096);
    /// Open connections from one address (a trusted proxy's are not counted) [default: 256]
    #[arg(long, global = true, env = "MERCATO_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    max_connections_per_address: Capacity = Capacity::new(256);
    /// Proxies whose X-Forwarded-For names the client: addresses or CIDR blocks,
    /// comma-separated; anyone else's X-Forwarded-For is ignored [default: none]
    #[arg(long, global = true, env = "MERCATO_TRUSTED_PROXIES", value_name = "CIDRS")]
    trusted_proxies: Proxies = Proxies::default();
    /// The most units one cart or order line may hold; beyond, 422 [default: 999]
    #[arg(long, global = true, env = "MERCATO_MAX_LINE_QUANTITY", value_name = "N")]
    max_line_quantity: LineQuantity = LineQuantity::new(999);
    /// The most orders of one customer that may wait for payment at once; beyond, 422; 0 turns
    /// it off [default: 10]
    #[arg(long, global = true, env = "MERCATO_MAX_OPEN_ORDERS", value_name = "N")]
    max_open_orders: Rate = Rate::new(10);
    /// The most units one customer's orders waiting for payment may reserve together; beyond,
    /// 422; 0 turns it off [default: 1000]
    #[arg(long, global = true, env = "MERCATO_MAX_RESERVED_UNITS", value_name = "N")]
    max_reserved_units: Rate = Rate::new(1000);
}

/// Why a configuration cannot be used (bad usage: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; check the --config path")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Settings {
    /// The settings of config file `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| {
            // The message alone does not say where; the line it is about names the key.
            let at = error.span().and_then(|span| {
                let line_start = text[..span.start].rfind('\n').map_or(0, |index| index + 1);
                let line_end = text[span.start..]
                    .find('\n')
                    .map_or(text.len(), |index| span.start + index);
                let number = text[..span.start].matches('\n').count() + 1;
                let line = text[line_start..line_end].trim();
                (!line.is_empty()).then(|| format!(" (line {number}: `{line}`)"))
            });
            ConfigError::Parse {
                path: path.to_owned(),
                message: format!("{}{}", error.message().trim(), at.unwrap_or_default()),
            }
        })
    }
}

impl Config {
    /// The bounds on what one customer may hold reserved.
    pub fn order_caps(&self) -> command_api::caps::OrderCaps {
        let count = |value: i32| u32::try_from(value).unwrap_or(0);
        command_api::caps::OrderCaps {
            max_line_quantity: count(self.max_line_quantity.get()),
            max_open_orders: count(self.max_open_orders.get()),
            max_reserved_units: count(self.max_reserved_units.get()),
        }
    }

    /// The configuration of `flags` (flags and environment, already merged by clap) over config
    /// file `file` (when given) over the defaults.
    pub fn resolve(flags: Settings, file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match file {
            Some(path) => Settings::load(path)?,
            None => Settings::default(),
        };
        Ok(Config::with_defaults(flags.over(file)))
    }

    /// The payment gateway's time to answer a charge.
    pub fn payment_timeout(&self) -> Duration {
        self.payment_timeout.duration()
    }

    pub fn bank_transfer_timeout(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.bank_transfer_timeout.get()).unwrap_or(1))
    }

    pub fn webhook_timeout(&self) -> Duration {
        self.webhook_timeout.duration()
    }

    /// The niceness a process of role `notifier` takes (0: unchanged).
    pub fn notifier_nice(&self) -> i32 {
        self.notifier_nice.get()
    }

    pub fn webhook_disable_after(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.webhook_disable_after.get()).unwrap_or(1))
    }
}

impl Default for Config {
    /// Everything embedded under `./data`: what `mercato serve` runs with no configuration.
    fn default() -> Self {
        Config::with_defaults(Settings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_everything_embedded_under_the_data_dir() {
        let config = Config::resolve(Settings::default(), None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.role, Role::All);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.database_url.expose(), "sqlite://./data/mercato.db");
        assert!(
            config.redis_url.is_none()
                && config.kafka_bootstrap.is_none()
                && config.opensearch_url.is_none()
        );
        assert_eq!(config.payment_timeout(), Duration::from_secs(30));
        assert_eq!(
            config.test_gateway_late_after.duration(),
            Duration::from_secs(35)
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mercato.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nrole = \"query-api\"\ndata_dir = \"/srv/mercato\"\nredis_url = \"redis://file\"\npayment_timeout = 12\n",
        )
        .unwrap();
        let flags = Settings {
            redis_url: Some(Secret::new("redis://flag")),
            role: Some(Role::Saga),
            ..Settings::default()
        };
        let config = Config::resolve(flags, Some(&path)).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.role, Role::Saga);
        assert_eq!(
            config.redis_url.as_ref().map(Secret::expose),
            Some("redis://flag")
        );
        assert_eq!(
            config.database_url.expose(),
            "sqlite:///srv/mercato/mercato.db"
        );
        assert_eq!(config.payment_timeout(), Duration::from_secs(12));
        assert_eq!(
            config.test_gateway_late_after.duration(),
            Duration::from_secs(17)
        );
    }

    #[test]
    fn an_unknown_key_in_the_config_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let error = Config::resolve(Settings::default(), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(error.contains("lisen"), "{error}");
    }

    #[test]
    fn a_file_value_out_of_range_is_refused_as_the_flag_is() {
        let dir = tempfile::tempdir().unwrap();
        for (line, flag_error) in [
            (
                "kafka_partitions = 0",
                Partitions::from_str("0").unwrap_err(),
            ),
            (
                "kafka_replication = 17",
                Replication::from_str("17").unwrap_err(),
            ),
            ("payment_timeout = -1", Seconds::from_str("-1").unwrap_err()),
            (
                "test_gateway_latency = 100000.5",
                Seconds::from_str("100000.5").unwrap_err(),
            ),
        ] {
            let path = dir.path().join("range.toml");
            std::fs::write(&path, format!("{line}\n")).unwrap();
            let error = Config::resolve(Settings::default(), Some(&path))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&flag_error), "{line}: {error}");
            assert!(error.contains(line), "the key is named: {error}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("postgres://user:hunter2@db/mercato");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.redacted(), "postgres://user:***@db/mercato");
        let flags = Settings {
            database_url: Some(secret),
            ..Settings::default()
        };
        let described = Config::resolve(flags, None).unwrap().describe();
        assert!(
            described.contains("database_url = \"postgres://user:***@db/mercato\""),
            "{described}"
        );
        assert!(!described.contains("hunter2"));
        assert_eq!(
            Secret::new("postgres://postgres@db/x").redacted(),
            "postgres://postgres@db/x"
        );
        assert_eq!(Secret::new("opaque-token").redacted(), "***");
        assert_eq!(
            Secret::new("postgres://db/x?user=shop&password=hunter2&sslmode=verify-full")
                .redacted(),
            "postgres://db/x?user=shop&password=***&sslmode=verify-full"
        );
        assert_eq!(
            Secret::new("rediss://:hunter2@cache:6380/0").redacted(),
            "rediss://:***@cache:6380/0"
        );
        assert_eq!(
            Secret::new("postgres://u:p@s?s/@db/x?sslmode=require").redacted(),
            "postgres://u:***@db/x?sslmode=require"
        );
        let flags = Settings {
            signing_key: Some(Secret::new(
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA\n",
            )),
            smtp_url: Some(Secret::new("smtps://shop:mailpass@mail.example:465")),
            ..Settings::default()
        };
        let described = Config::resolve(flags, None).unwrap().describe();
        assert!(described.contains("signing_key = \"***\""), "{described}");
        assert!(
            described.contains("smtp_url = \"smtps://shop:***@mail.example:465\""),
            "{described}"
        );
        assert!(!described.contains("MC4CAQ") && !described.contains("mailpass"));
        let flags = Settings {
            stripe_api_key: Some(Secret::new("sk_test_51Hunter2")),
            stripe_webhook_secret: Some(Secret::new("whsec_hunter2")),
            ..Settings::default()
        };
        let config = Config::resolve(flags, None).unwrap();
        let described = config.describe();
        assert!(
            described.contains("stripe_api_key = \"***\"")
                && described.contains("stripe_webhook_secret = \"***\"")
                && described.contains("stripe_api_base = \"https://api.stripe.com\"")
                && described.contains("stripe_currency = \"usd\""),
            "{described}"
        );
        assert!(!described.contains("hunter2") && !format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn every_setting_is_described_in_the_table_order() {
        let described = Config::default().describe();
        let keys: Vec<&str> = described
            .lines()
            .filter(|line| !line.starts_with("# ") || line.ends_with(" is not set"))
            .filter_map(|line| {
                let line = line.strip_prefix("# ").unwrap_or(line);
                line.split([' ']).next()
            })
            .collect();
        assert_eq!(
            keys,
            [
                "listen",
                "data_dir",
                "role",
                "database_url",
                "db_pool",
                "redis_url",
                "redis_ca_cert",
                "redis_client_cert",
                "redis_client_key",
                "kafka_bootstrap",
                "source",
                "kafka_partitions",
                "kafka_replication",
                "kafka_prefix",
                "kafka_security_protocol",
                "kafka_sasl_mechanism",
                "kafka_sasl_username",
                "kafka_sasl_password",
                "kafka_ssl_ca_location",
                "kafka_ssl_certificate_location",
                "kafka_ssl_key_location",
                "kafka_ssl_key_password",
                "opensearch_url",
                "otel_endpoint",
                "otel_protocol",
                "log_format",
                "payment_timeout",
                "test_gateway_latency",
                "test_gateway_late_after",
                "bank_transfer_timeout",
                "stripe_api_key",
                "stripe_webhook_secret",
                "stripe_api_base",
                "stripe_currency",
                "smtp_url",
                "mail_from",
                "mail_send_timeout",
                "shop_name",
                "templates_dir",
                "twilio_account_sid",
                "twilio_auth_token",
                "twilio_from",
                "twilio_api_base",
                "webhook_allowlist",
                "webhook_timeout",
                "webhook_disable_after",
                "notifier_nice",
                "signing_key",
                "oidc_issuer_url",
                "oidc_audience",
                "public_url",
                "api_url",
                "rate_limit",
                "staff_rate_limit",
                "account_rate_limit",
                "max_in_flight",
                "max_connections",
                "max_connections_per_address",
                "trusted_proxies",
                "max_line_quantity",
                "max_open_orders",
                "max_reserved_units",
            ]
        );
        assert!(described.contains("role = \"all\"\n"), "{described}");
        assert!(
            described.contains("# redis_url is not set\n"),
            "{described}"
        );
    }

    #[test]
    fn the_described_configuration_reads_back_as_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Settings {
            listen: Some("0.0.0.0:9000".parse().unwrap()),
            role: Some(Role::QueryApi),
            redis_url: Some(Secret::new("redis://cache:6379/0")),
            payment_timeout: Some(Seconds::from_secs(12)),
            test_gateway_latency: Some("0.25".parse().unwrap()),
            kafka_partitions: Some(Partitions::new(7)),
            ..Settings::default()
        };
        let config = Config::resolve(flags, None).unwrap();
        let path = dir.path().join("described.toml");
        std::fs::write(&path, config.describe()).unwrap();
        let again = Config::resolve(Settings::default(), Some(path.as_path()))
            .unwrap_or_else(|error| panic!("{error}: {}", config.describe()));
        assert_eq!(again.describe(), config.describe());
        assert_eq!(again.role, Role::QueryApi);
        assert_eq!(
            again.test_gateway_latency.duration(),
            Duration::from_millis(250)
        );
    }
}
