//! Kafka: the relay that publishes the event log (the store's event table is the outbox), the
//! consumers that feed projections and the saga from it, and the dead-letter topics.
//!
//! - [`relay`]: the log to the topics, the checkpoint moved once the broker acknowledged.
//! - [`consumer`]: a consumer group applying each partition to projections exactly once, and
//!   dead-lettering what they refuse.
//! - [`dlq`]: listing and replaying dead letters (`mercato dlq`).
//! - [`locator`]: the partition an event is on, for read-your-writes.
//!
//! Topic and header names, the message headers of an event and a stream's partition come from
//! `schemas::topics`: this crate moves messages, it does not define them. What it finds of the
//! brokers it reports through [`Health`], which the server provides.
//!
//! Every event of the store goes to the topic of its stream type (CONTRACT.md), keyed by stream
//! id, as the JSON envelope, with the contract's headers. Within a partition, messages are in the
//! order of the log, so a consumer keeps, per projection and partition, the position of the last
//! event it applied (see [`projections::Feed`]): a message redelivered by an at-least-once relay
//! or after a rebalance is recognised and skipped.

pub mod consumer;
pub mod dlq;
pub mod locator;
pub mod relay;
pub mod requests;

use std::path::PathBuf;
use std::time::Duration;

use eventstore::RecordedEvent;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use schemas::topics;

pub use consumer::{ConsumerOptions, run_consumer};
pub use locator::KafkaLocator;
pub use relay::run_relay;

/// The component name the Kafka clients report their state under (`/ready`'s `kafka` check).
pub const COMPONENT: &str = "kafka";

/// Where the Kafka clients report what they find of the brokers: `Ok` when working, else why
/// not. Several clients of one process report as different `reporter`s (the relay, each
/// consumer group); the server counts Kafka ready only when every one of them is.
pub trait Health: Send + Sync + std::fmt::Debug + 'static {
    fn report(&self, reporter: &str, state: Result<(), String>);
}

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A topic that is not one of mercato's: bad usage.
    #[error("unknown topic {name:?}; the topics are {}", topics::TOPICS.join(", "))]
    UnknownTopic { name: String },
    /// The client failed doing `what`.
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The brokers did not do what was asked, or answered what mercato cannot work with.
    #[error("{0}")]
    Broker(String),
}

impl KafkaError {
    /// A client failure while doing `what`.
    pub fn client(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let what = what.into();
        move |source| KafkaError::Client { what, source }
    }

    /// Whether the caller asked for something that does not exist (bad usage, exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, KafkaError::UnknownTopic { .. })
    }
}

/// Where mercato's topics are and how they are named and created.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `host:port,...`
    pub bootstrap: String,
    /// Prepended to every topic and consumer group name (`MERCATO_KAFKA_PREFIX`): lets several
    /// deployments, or test runs, share one cluster. Empty by default.
    pub prefix: String,
    /// Partitions of each topic created.
    pub partitions: i32,
    /// Replication factor of each topic created.
    pub replication: i32,
    /// How the clients talk to the brokers: TLS, a SASL login, both or neither.
    pub security: KafkaSecurity,
}

/// How the clients talk to the brokers (librdkafka's `security.protocol`), with what each way
/// needs; a combination librdkafka would refuse, or silently ignore, cannot be written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KafkaSecurity {
    /// Neither TLS nor a login.
    #[default]
    Plaintext,
    /// TLS.
    Ssl(TlsSettings),
    /// A SASL login without TLS.
    SaslPlaintext(SaslLogin),
    /// A SASL login over TLS.
    SaslSsl(SaslLogin, TlsSettings),
}

/// The files of TLS to the brokers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the authorities the brokers' certificates come from; `None`: the system's.
    pub ca_location: Option<PathBuf>,
    /// The client certificate, for brokers that ask for one.
    pub client: Option<ClientCertificate>,
}

/// A client certificate and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    pub certificate_location: PathBuf,
    pub key_location: PathBuf,
    /// The password of an encrypted key.
    pub key_password: Option<Password>,
}

/// A SASL login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslLogin {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Password,
}

/// How a SASL login proves the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// Its name in `sasl.mechanism`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A password, never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("***")
    }
}

impl KafkaSecurity {
    /// The librdkafka properties of this way of talking to the brokers, `security.protocol`
    /// first.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let (protocol, login, tls) = match self {
            KafkaSecurity::Plaintext => ("plaintext", None, None),
            KafkaSecurity::Ssl(tls) => ("ssl", None, Some(tls)),
            KafkaSecurity::SaslPlaintext(login) => ("sasl_plaintext", Some(login), None),
            KafkaSecurity::SaslSsl(login, tls) => ("sasl_ssl", Some(login), Some(tls)),
        };
        let mut properties = vec![("security.protocol", protocol.to_owned())];
        if let Some(login) = login {
            properties.push(("sasl.mechanism", login.mechanism.name().to_owned()));
            properties.push(("sasl.username", login.username.clone()));
            properties.push(("sasl.password", login.password.0.clone()));
        }
        if let Some(tls) = tls {
            let path = |path: &PathBuf| path.display().to_string();
            if let Some(ca_location) = &tls.ca_location {
                properties.push(("ssl.ca.location", path(ca_location)));
            }
            if let Some(client) = &tls.client {
                properties.push((
                    "ssl.certificate.location",
                    path(&client.certificate_location),
                ));
                properties.push(("ssl.key.location", path(&client.key_location)));
                if let Some(password) = &client.key_password {
                    properties.push(("ssl.key.password", password.0.clone()));
                }
            }
        }
        properties
    }
}

impl KafkaSettings {
    /// The name of `topic` (a contract name) in this deployment.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// The contract topic name of a deployment topic (the prefix removed).
    pub fn contract_topic<'a>(&self, topic: &'a str) -> &'a str {
        topic.strip_prefix(&self.prefix).unwrap_or(topic)
    }

    /// The name of consumer group `group` in this deployment.
    pub fn group(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    /// Every event and request topic and every dead-letter topic, as named in this deployment.
    pub fn all_topics(&self) -> Vec<String> {
        topics::TOPICS
            .iter()
            .chain(topics::REQUEST_TOPICS)
            .flat_map(|topic| [self.topic(topic), self.topic(&topics::dlq_topic(topic))])
            .collect()
    }

    /// A client configuration for these brokers.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "mercato")
            // Kafka-protocol brokers that do not speak IPv6 (and `localhost` resolving to ::1).
            .set("broker.address.family", "v4")
            .set("socket.keepalive.enable", "true");
        for (key, value) in self.security.properties() {
            config.set(key, value);
        }
        config
    }

    /// A producer configuration: idempotent, each message acknowledged by every in-sync replica.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config.set("enable.idempotence", "true").set("acks", "all");
        config
    }

    /// A consumer configuration in group `group_id` (as named on the brokers): offsets stored and
    /// committed only by hand, reading from the beginning when the group has none.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        config
    }

    /// [`KafkaSettings::consumer_config`] for a consumer group's member: a ten-second session
    /// with a heartbeat a second, and fetches that wait at most 10 ms for data (brokers that
    /// hold a fetch to its end, as tansu does, would otherwise add librdkafka's default 500 ms
    /// to every message's lag).
    pub fn group_member_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.consumer_config(group_id);
        config
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "10");
        config
    }

    /// Creates every event, request and dead-letter topic that does not exist yet.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(KafkaError::client("cannot create a Kafka admin client"))?;
        let names = self.all_topics();
        let new_topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(KafkaError::client("cannot create the Kafka topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::Broker(format!(
                        "cannot create Kafka topic {topic}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// How many partitions `topic` has, from the brokers' metadata (a blocking call: run it off the
/// async threads).
pub fn partition_count(
    client: &rdkafka::consumer::BaseConsumer,
    topic: &str,
) -> Result<i32, KafkaError> {
    use rdkafka::consumer::Consumer;
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(KafkaError::client(format!(
            "cannot read the metadata of {topic}"
        )))?;
    let count = metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic)
        .map_or(0, |found| found.partitions().len());
    match i32::try_from(count) {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(KafkaError::Broker(format!(
            "topic {topic} has no partitions (does it exist?)"
        ))),
    }
}

/// The headers of an event's message (`schemas::topics::event_headers`).
pub fn event_headers(event: &RecordedEvent) -> OwnedHeaders {
    topics::event_headers(event)
        .iter()
        .fold(OwnedHeaders::new(), |all, (key, value)| {
            all.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        })
}

/// The headers of `headers` whose names `keep` accepts, in order.
pub fn copy_headers<H: Headers>(headers: Option<&H>, keep: impl Fn(&str) -> bool) -> OwnedHeaders {
    let mut copy = OwnedHeaders::new();
    for entry in headers.into_iter().flat_map(Headers::iter) {
        if keep(entry.key) {
            copy = copy.insert(Header {
                key: entry.key,
                value: entry.value,
            });
        }
    }
    copy
}

/// Publishes one message, `payload` under `key`, to `topic` (a name of this deployment), and
/// waits until the broker took it.
pub async fn produce(
    settings: &KafkaSettings,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<(), KafkaError> {
    let producer: rdkafka::producer::FutureProducer = settings
        .producer_config()
        .create()
        .map_err(KafkaError::client("cannot create a Kafka producer"))?;
    producer
        .send(
            rdkafka::producer::FutureRecord::to(topic)
                .key(key)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map(|_| ())
        .map_err(|(source, _)| KafkaError::Client {
            what: format!("cannot publish to {topic}"),
            source,
        })
}

/// The value of header `key` as text, if present and UTF-8.
pub fn header<'a, H: Headers>(headers: Option<&'a H>, key: &str) -> Option<&'a str> {
    let headers = headers?;
    headers
        .iter()
        .find(|header| header.key == key)
        .and_then(|header| header.value)
        .and_then(|value| std::str::from_utf8(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn names_carry_the_deployment_prefix() {
        let settings = KafkaSettings {
            bootstrap: "127.0.0.1:9092".to_owned(),
            prefix: "t1.".to_owned(),
            partitions: 3,
            replication: 1,
            security: KafkaSecurity::Plaintext,
        };
        assert_eq!(settings.topic("orders.events"), "t1.orders.events");
        assert_eq!(settings.contract_topic("t1.orders.events"), "orders.events");
        assert_eq!(settings.group("mercato-projector"), "t1.mercato-projector");
        let all = settings.all_topics();
        assert_eq!(all.len(), 12);
        assert!(all.contains(&"t1.notifications.commands".to_owned()));
        assert!(all.contains(&"t1.payments.events.dlq".to_owned()));
    }

    fn settings(security: KafkaSecurity) -> KafkaSettings {
        KafkaSettings {
            bootstrap: "broker:9093".to_owned(),
            prefix: String::new(),
            partitions: 3,
            replication: 1,
            security,
        }
    }

    /// The security properties `config` sets, in the order of librdkafka's documentation.
    fn security_properties(config: &ClientConfig) -> Vec<(String, String)> {
        [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
            "ssl.key.password",
        ]
        .into_iter()
        .filter_map(|key| Some((key.to_owned(), config.get(key)?.to_owned())))
        .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn each_security_protocol_sets_its_librdkafka_properties_on_every_client() {
        let login = SaslLogin {
            mechanism: SaslMechanism::ScramSha512,
            username: "shop".to_owned(),
            password: Password::new("hunter2"),
        };
        let tls = TlsSettings {
            ca_location: Some(PathBuf::from("/etc/kafka/ca.pem")),
            client: Some(ClientCertificate {
                certificate_location: PathBuf::from("/etc/kafka/client.pem"),
                key_location: PathBuf::from("/etc/kafka/client.key"),
                key_password: Some(Password::new("keypass")),
            }),
        };
        let cases = [
            (
                KafkaSecurity::Plaintext,
                pairs(&[("security.protocol", "plaintext")]),
            ),
            (
                KafkaSecurity::Ssl(TlsSettings::default()),
                pairs(&[("security.protocol", "ssl")]),
            ),
            (
                KafkaSecurity::Ssl(tls.clone()),
                pairs(&[
                    ("security.protocol", "ssl"),
                    ("ssl.ca.location", "/etc/kafka/ca.pem"),
                    ("ssl.certificate.location", "/etc/kafka/client.pem"),
                    ("ssl.key.location", "/etc/kafka/client.key"),
                    ("ssl.key.password", "keypass"),
                ]),
            ),
            (
                KafkaSecurity::SaslPlaintext(SaslLogin {
                    mechanism: SaslMechanism::Plain,
                    ..login.clone()
                }),
                pairs(&[
                    ("security.protocol", "sasl_plaintext"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "shop"),
                    ("sasl.password", "hunter2"),
                ]),
            ),
            (
                KafkaSecurity::SaslSsl(
                    login.clone(),
                    TlsSettings {
                        ca_location: Some(PathBuf::from("/etc/kafka/ca.pem")),
                        client: None,
                    },
                ),
                pairs(&[
                    ("security.protocol", "sasl_ssl"),
                    ("sasl.mechanism", "SCRAM-SHA-512"),
                    ("sasl.username", "shop"),
                    ("sasl.password", "hunter2"),
                    ("ssl.ca.location", "/etc/kafka/ca.pem"),
                ]),
            ),
        ];
        for (security, expected) in cases {
            let settings = settings(security.clone());
            for config in [
                settings.client_config(),
                settings.producer_config(),
                settings.consumer_config("group"),
            ] {
                assert_eq!(security_properties(&config), expected, "{security:?}");
                assert_eq!(config.get("bootstrap.servers"), Some("broker:9093"));
            }
        }
        assert_eq!(SaslMechanism::ScramSha256.name(), "SCRAM-SHA-256");
    }

    #[test]
    fn passwords_never_print() {
        let settings = settings(KafkaSecurity::SaslSsl(
            SaslLogin {
                mechanism: SaslMechanism::Plain,
                username: "shop".to_owned(),
                password: Password::new("hunter2"),
            },
            TlsSettings {
                ca_location: None,
                client: Some(ClientCertificate {
                    certificate_location: PathBuf::from("client.pem"),
                    key_location: PathBuf::from("client.key"),
                    key_password: Some(Password::new("keypass")),
                }),
            },
        ));
        for printed in [
            format!("{settings:?}"),
            format!("{:?}", settings.client_config()),
            format!("{:?}", settings.producer_config()),
        ] {
            assert!(
                !printed.contains("hunter2") && !printed.contains("keypass"),
                "{printed}"
            );
        }
        assert!(format!("{settings:?}").contains("shop"));
    }

    #[test]
    fn headers_carry_the_contract_fields() {
        let event: RecordedEvent = serde_json::from_value(serde_json::json!({
            "event_id": "7f0c5a9e-2f7b-4c2e-9a39-0d0c1c7e5b11",
            "event_type": "OrderConfirmed",
            "schema_version": 1,
            "stream_type": "order",
            "stream_id": "o-1",
            "stream_version": 2,
            "position": 42,
            "occurred_at": "2026-11-22T10:00:00Z",
            "metadata": {
                "correlation_id": "c-1", "causation_id": "e-0", "saga_id": "s-1",
                "actor": "saga", "source": "saga"
            },
            "payload": {"order_id": "o-1"}
        }))
        .unwrap();
        let headers = event_headers(&event);
        let value = |key: &str| header(Some(&headers), key).map(str::to_owned);
        assert_eq!(value("correlationId").as_deref(), Some("c-1"));
        assert_eq!(value("causationId").as_deref(), Some("e-0"));
        assert_eq!(value("sagaId").as_deref(), Some("s-1"));
        assert_eq!(value("eventType").as_deref(), Some("OrderConfirmed"));
        assert_eq!(value("source").as_deref(), Some("saga"));
        assert_eq!(value("timestamp").as_deref(), Some("2026-11-22T10:00:00Z"));
        assert_eq!(value("position").as_deref(), Some("42"));
        assert_eq!(
            value("eventId").as_deref(),
            Some("7f0c5a9e-2f7b-4c2e-9a39-0d0c1c7e5b11")
        );
        assert_eq!(headers.count(), 10);
        let without_ids = copy_headers(Some(&headers), |key| key != "eventId");
        assert_eq!(without_ids.count(), 9);
        assert!(header(Some(&without_ids), "eventId").is_none());
        assert_eq!(header(Some(&without_ids), "sagaId"), Some("s-1"));
    }
}
