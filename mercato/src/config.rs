//! One typed configuration, loaded once: flag, then environment, then config file, then default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// A value that must never be printed: connection strings carry passwords.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    #[cfg(test)]
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value with any password masked: `postgres://user:***@host/db`. Safe to print.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "***".to_owned();
        };
        match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => self.0.clone(),
            },
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret(value.to_owned()))
    }
}

/// Which part of mercato a process runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    All,
    CommandApi,
    QueryApi,
    Projector,
    Saga,
    Relay,
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The options every data subcommand shares. Each one is also read from its environment
/// variable, then from the `--config` file.
#[derive(Clone, Debug, Default, Args)]
pub struct CommonArgs {
    /// Configuration file (TOML) with any of the keys below in snake_case.
    #[arg(long, global = true, env = "MERCATO_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Directory for embedded data (SQLite store, search index) [default: ./data]
    #[arg(long, global = true, env = "MERCATO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Event store and SQL read models: postgres://... or sqlite://PATH [default: sqlite://{data-dir}/mercato.db]
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<Secret>,
    /// Redis for the query cache, carts and popularity [default: in-process]
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<Secret>,
    /// Kafka brokers (host:port,...) for the relay and Kafka-fed consumers [default: none]
    #[arg(long, global = true, env = "KAFKA_BOOTSTRAP", value_name = "HOSTS")]
    pub kafka_bootstrap: Option<String>,
    /// Where the projector and saga roles read events: the store's log, or Kafka (needs
    /// KAFKA_BOOTSTRAP and a running relay) [default: log]
    #[arg(long, global = true, env = "MERCATO_SOURCE", value_enum)]
    pub source: Option<Source>,
    /// Partitions of each event topic the relay creates [default: 3]
    #[arg(long, global = true, env = "MERCATO_KAFKA_PARTITIONS", value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub kafka_partitions: Option<i32>,
    /// Replication factor of the topics the relay creates [default: 1]
    #[arg(long, global = true, env = "MERCATO_KAFKA_REPLICATION", value_name = "N", value_parser = clap::value_parser!(i32).range(1..=16))]
    pub kafka_replication: Option<i32>,
    /// Prepended to every Kafka topic and consumer group name, so that several deployments can
    /// share a cluster [default: none]
    #[arg(
        long,
        global = true,
        env = "MERCATO_KAFKA_PREFIX",
        value_name = "PREFIX"
    )]
    pub kafka_prefix: Option<String>,
    /// OpenSearch or Elasticsearch for product search [default: embedded index]
    #[arg(
        long,
        global = true,
        env = "OPENSEARCH_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub opensearch_url: Option<Secret>,
    /// OTLP endpoint for traces [default: no export]
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otel_endpoint: Option<String>,
    /// Log format
    #[arg(long, global = true, env = "MERCATO_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds the payment gateway has to answer before the order is cancelled [default: 30]
    #[arg(long, global = true, env = "MERCATO_PAYMENT_TIMEOUT", value_name = "SECONDS", value_parser = parse_seconds)]
    pub payment_timeout: Option<f64>,
    /// Seconds the built-in test gateway takes per charge or refund [default: 0]
    #[arg(long, global = true, env = "MERCATO_TEST_GATEWAY_LATENCY", value_name = "SECONDS", value_parser = parse_seconds)]
    pub test_gateway_latency: Option<f64>,
    /// Seconds after the charge call the test gateway makes a `tok_lateSuccess` charge
    /// [default: the payment timeout plus 5]
    #[arg(long, global = true, env = "MERCATO_TEST_GATEWAY_LATE_AFTER", value_name = "SECONDS", value_parser = parse_seconds)]
    pub test_gateway_late_after: Option<f64>,
}

/// A duration in seconds: a finite, non-negative number of at most a day.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 86400 (such as 30 or 0.5)"
        )),
    }
}

/// What a config file may hold: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub role: Option<Role>,
    pub database_url: Option<Secret>,
    pub redis_url: Option<Secret>,
    pub kafka_bootstrap: Option<String>,
    pub source: Option<Source>,
    pub kafka_partitions: Option<i32>,
    pub kafka_replication: Option<i32>,
    pub kafka_prefix: Option<String>,
    pub opensearch_url: Option<Secret>,
    pub otel_endpoint: Option<String>,
    pub log_format: Option<LogFormat>,
    pub payment_timeout: Option<f64>,
    pub test_gateway_latency: Option<f64>,
    pub test_gateway_late_after: Option<f64>,
}

/// The configuration a process runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub role: Role,
    pub database_url: Secret,
    pub redis_url: Option<Secret>,
    pub kafka_bootstrap: Option<String>,
    /// Where the projector and saga roles read events.
    pub source: Source,
    /// Partitions of each topic the relay creates.
    pub kafka_partitions: i32,
    /// Replication factor of each topic the relay creates.
    pub kafka_replication: i32,
    /// Prepended to every topic and consumer group name.
    pub kafka_prefix: String,
    pub opensearch_url: Option<Secret>,
    pub otel_endpoint: Option<String>,
    pub log_format: LogFormat,
    /// How long the payment gateway has to answer a charge.
    pub payment_timeout: Duration,
    /// How long the built-in test gateway takes per call.
    pub test_gateway_latency: Duration,
    /// When the test gateway makes a `tok_lateSuccess` charge, after the charge call.
    pub test_gateway_late_after: Duration,
}

pub const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(30);

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_DATA_DIR: &str = "./data";

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

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.message().to_owned(),
        })
    }
}

impl Config {
    /// Where the Kafka topics are, when `KAFKA_BOOTSTRAP` is set.
    pub fn kafka(&self) -> Option<crate::kafka::KafkaSettings> {
        self.kafka_bootstrap
            .as_ref()
            .map(|bootstrap| crate::kafka::KafkaSettings {
                bootstrap: bootstrap.clone(),
                prefix: self.kafka_prefix.clone(),
                partitions: self.kafka_partitions,
                replication: self.kafka_replication,
            })
    }

    /// The configuration as `key = value` lines, secrets masked.
    pub fn describe(&self) -> String {
        let optional = |value: Option<String>| value.unwrap_or_else(|| "(not set)".to_owned());
        let role = format!("{:?}", self.role).to_lowercase();
        let log_format = format!("{:?}", self.log_format).to_lowercase();
        [
            ("listen", self.listen.to_string()),
            ("data_dir", self.data_dir.display().to_string()),
            ("role", role),
            ("database_url", self.database_url.redacted()),
            (
                "redis_url",
                optional(self.redis_url.as_ref().map(Secret::redacted)),
            ),
            ("kafka_bootstrap", optional(self.kafka_bootstrap.clone())),
            ("source", format!("{:?}", self.source).to_lowercase()),
            ("kafka_partitions", self.kafka_partitions.to_string()),
            ("kafka_replication", self.kafka_replication.to_string()),
            ("kafka_prefix", self.kafka_prefix.clone()),
            (
                "opensearch_url",
                optional(self.opensearch_url.as_ref().map(Secret::redacted)),
            ),
            ("otel_endpoint", optional(self.otel_endpoint.clone())),
            ("log_format", log_format),
            (
                "payment_timeout",
                format!("{}", self.payment_timeout.as_secs_f64()),
            ),
            (
                "test_gateway_latency",
                format!("{}", self.test_gateway_latency.as_secs_f64()),
            ),
            (
                "test_gateway_late_after",
                format!("{}", self.test_gateway_late_after.as_secs_f64()),
            ),
        ]
        .iter()
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect()
    }

    /// Resolves flags and environment (already merged by clap) over the config file and defaults.
    /// `OPENSEARCH_URL` has the alias `ELASTICSEARCH_URL`.
    pub fn resolve(
        common: &CommonArgs,
        listen: Option<SocketAddr>,
        role: Option<Role>,
        elasticsearch_url: Option<Secret>,
    ) -> Result<Config, ConfigError> {
        let file = match &common.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let data_dir = common
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let default_database_url = || {
            Secret(format!(
                "sqlite://{}",
                data_dir.join("mercato.db").display()
            ))
        };
        let seconds = |flag: Option<f64>, file: Option<f64>| {
            flag.or(file)
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                .map(Duration::from_secs_f64)
        };
        let payment_timeout = seconds(common.payment_timeout, file.payment_timeout)
            .unwrap_or(DEFAULT_PAYMENT_TIMEOUT);
        Ok(Config {
            payment_timeout,
            test_gateway_latency: seconds(common.test_gateway_latency, file.test_gateway_latency)
                .unwrap_or(Duration::ZERO),
            test_gateway_late_after: seconds(
                common.test_gateway_late_after,
                file.test_gateway_late_after,
            )
            .unwrap_or(payment_timeout + Duration::from_secs(5)),
            listen: listen.or(file.listen).unwrap_or(DEFAULT_LISTEN),
            role: role.or(file.role).unwrap_or_default(),
            database_url: common
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(default_database_url),
            redis_url: common.redis_url.clone().or(file.redis_url),
            kafka_bootstrap: common.kafka_bootstrap.clone().or(file.kafka_bootstrap),
            source: common.source.or(file.source).unwrap_or_default(),
            kafka_partitions: common
                .kafka_partitions
                .or(file.kafka_partitions)
                .filter(|n| (1..=1000).contains(n))
                .unwrap_or(3),
            kafka_replication: common
                .kafka_replication
                .or(file.kafka_replication)
                .filter(|n| (1..=16).contains(n))
                .unwrap_or(1),
            kafka_prefix: common
                .kafka_prefix
                .clone()
                .or(file.kafka_prefix)
                .unwrap_or_default(),
            opensearch_url: common
                .opensearch_url
                .clone()
                .or(elasticsearch_url)
                .or(file.opensearch_url),
            otel_endpoint: common.otel_endpoint.clone().or(file.otel_endpoint),
            log_format: common.log_format.or(file.log_format).unwrap_or_default(),
            data_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_everything_embedded_under_the_data_dir() {
        let config = Config::resolve(&CommonArgs::default(), None, None, None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.role, Role::All);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.database_url.expose(), "sqlite://./data/mercato.db");
        assert!(
            config.redis_url.is_none()
                && config.kafka_bootstrap.is_none()
                && config.opensearch_url.is_none()
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mercato.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nrole = \"query-api\"\ndata_dir = \"/srv/mercato\"\nredis_url = \"redis://file\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path),
            redis_url: Some(Secret::new("redis://flag")),
            ..CommonArgs::default()
        };
        let config = Config::resolve(&common, None, Some(Role::Saga), None).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.role, Role::Saga);
        assert_eq!(config.redis_url.unwrap().expose(), "redis://flag");
        assert_eq!(
            config.database_url.expose(),
            "sqlite:///srv/mercato/mercato.db"
        );
    }

    #[test]
    fn elasticsearch_url_is_an_alias_that_opensearch_url_overrides() {
        let alias = Some(Secret::new("http://es:9200"));
        let config = Config::resolve(&CommonArgs::default(), None, None, alias.clone()).unwrap();
        assert_eq!(config.opensearch_url.unwrap().expose(), "http://es:9200");
        let common = CommonArgs {
            opensearch_url: Some(Secret::new("http://os:9200")),
            ..CommonArgs::default()
        };
        let config = Config::resolve(&common, None, None, alias).unwrap();
        assert_eq!(config.opensearch_url.unwrap().expose(), "http://os:9200");
    }

    #[test]
    fn an_unknown_key_in_the_config_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let common = CommonArgs {
            config: Some(path),
            ..CommonArgs::default()
        };
        let error = Config::resolve(&common, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("lisen"), "{error}");
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("postgres://user:hunter2@db/mercato");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.redacted(), "postgres://user:***@db/mercato");
        let common = CommonArgs {
            database_url: Some(secret),
            ..CommonArgs::default()
        };
        let described = Config::resolve(&common, None, None, None)
            .unwrap()
            .describe();
        assert!(
            described.contains("database_url = postgres://user:***@db/mercato"),
            "{described}"
        );
        assert!(!described.contains("hunter2"));
        assert_eq!(
            Secret::new("postgres://postgres@db/x").redacted(),
            "postgres://postgres@db/x"
        );
        assert_eq!(Secret::new("opaque-token").redacted(), "***");
    }
}
