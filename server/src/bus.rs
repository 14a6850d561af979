//! Kafka in a server process: the relay, the consumer groups of the projector and saga roles,
//! and read-your-writes on Kafka-fed read models. Kafka is behind the cargo feature `kafka`
//! (librdkafka builds with cmake); a build without it refuses a configuration that needs Kafka,
//! naming the feature.

use crate::config::Config;
#[cfg(feature = "kafka")]
use crate::config::SaslMechanism;
use crate::error::{Error, Result};
use crate::roles::{Plan, Relay};

/// What to say when the configuration asks for Kafka and this build has none.
#[cfg(not(feature = "kafka"))]
const NO_KAFKA: &str = "this build of mercato has no Kafka support: build it with `cargo build --release --features kafka` (librdkafka needs cmake; see DEVELOPERS.md)";

/// Checks that `plan` can run with `config`'s Kafka settings: the relay role and `--source
/// kafka` need `KAFKA_BOOTSTRAP`, and Kafka needs a build with the `kafka` feature.
pub(crate) fn check(config: &Config, plan: &Plan) -> Result<()> {
    let bootstrap = config.kafka_bootstrap.is_some();
    if plan.parts.relay == Relay::Always && !bootstrap {
        return Err(Error::Usage(
            "the relay role publishes to Kafka: set KAFKA_BOOTSTRAP (or --kafka-bootstrap) to the brokers"
                .to_owned(),
        ));
    }
    if plan.from_kafka && !bootstrap {
        return Err(Error::Usage(
            "--source kafka reads events from Kafka: set KAFKA_BOOTSTRAP (or --kafka-bootstrap) to the brokers"
                .to_owned(),
        ));
    }
    #[cfg(not(feature = "kafka"))]
    if bootstrap {
        return Err(Error::Usage(format!(
            "KAFKA_BOOTSTRAP is set, but {NO_KAFKA}; or unset KAFKA_BOOTSTRAP"
        )));
    }
    Ok(())
}

/// The Kafka settings of `config`: where the topics are, how they are named and created, and
/// how the clients talk to the brokers ([`security`]).
#[cfg(feature = "kafka")]
pub fn settings(config: &Config) -> Result<Option<kafka::KafkaSettings>> {
    let Some(bootstrap) = &config.kafka_bootstrap else {
        return Ok(None);
    };
    Ok(Some(kafka::KafkaSettings {
        bootstrap: bootstrap.clone(),
        prefix: config.kafka_prefix.clone(),
        partitions: config.kafka_partitions.get(),
        replication: config.kafka_replication.get(),
        security: security(config)?,
    }))
}

/// The Kafka settings of `config`, for a command that works on Kafka (`what`).
#[cfg(feature = "kafka")]
pub fn require(config: &Config, what: &str) -> Result<kafka::KafkaSettings> {
    settings(config)?.ok_or_else(|| {
        Error::Usage(format!(
            "KAFKA_BOOTSTRAP is not set: {what}; set it (or --kafka-bootstrap) to the brokers"
        ))
    })
}

/// How `config`'s Kafka clients talk to the brokers: `KAFKA_SECURITY_PROTOCOL` with the SASL
/// login and the TLS files it needs. A setting the protocol would ignore, or one missing that
/// it needs, is bad usage saying what to set; the files named must be readable.
#[cfg(feature = "kafka")]
fn security(config: &Config) -> Result<kafka::KafkaSecurity> {
    use kafka::{ClientCertificate, KafkaSecurity, Password, SaslLogin, TlsSettings};

    let protocol = config.kafka_security_protocol;
    let protocol_name = crate::config::Describe::describe(&protocol)
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    let listed = |names: &[&str]| names.join(", ");
    let login = if protocol.uses_sasl() {
        let missing: Vec<&str> = [
            (
                "KAFKA_SASL_MECHANISM",
                config.kafka_sasl_mechanism.is_none(),
            ),
            ("KAFKA_SASL_USERNAME", config.kafka_sasl_username.is_none()),
            ("KAFKA_SASL_PASSWORD", config.kafka_sasl_password.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, missing)| missing.then_some(name))
        .collect();
        match (
            config.kafka_sasl_mechanism,
            &config.kafka_sasl_username,
            &config.kafka_sasl_password,
        ) {
            (Some(mechanism), Some(username), Some(password)) => Some(SaslLogin {
                mechanism: match mechanism {
                    SaslMechanism::Plain => kafka::SaslMechanism::Plain,
                    SaslMechanism::ScramSha256 => kafka::SaslMechanism::ScramSha256,
                    SaslMechanism::ScramSha512 => kafka::SaslMechanism::ScramSha512,
                },
                username: username.clone(),
                password: Password::new(password.expose()),
            }),
            _ => {
                return Err(Error::Usage(format!(
                    "KAFKA_SECURITY_PROTOCOL={protocol_name} logs in with SASL: set {} (the mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                    listed(&missing)
                )));
            }
        }
    } else {
        let set: Vec<&str> = [
            (
                "KAFKA_SASL_MECHANISM",
                config.kafka_sasl_mechanism.is_some(),
            ),
            ("KAFKA_SASL_USERNAME", config.kafka_sasl_username.is_some()),
            ("KAFKA_SASL_PASSWORD", config.kafka_sasl_password.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if !set.is_empty() {
            return Err(Error::Usage(format!(
                "{} set, but KAFKA_SECURITY_PROTOCOL is {protocol_name}, which does not log in: set it to SASL_SSL (or SASL_PLAINTEXT) to log in with SASL, or unset {}",
                with_verb(&set),
                listed(&set)
            )));
        }
        None
    };
    let files = [
        ("KAFKA_SSL_CA_LOCATION", &config.kafka_ssl_ca_location),
        (
            "KAFKA_SSL_CERTIFICATE_LOCATION",
            &config.kafka_ssl_certificate_location,
        ),
        ("KAFKA_SSL_KEY_LOCATION", &config.kafka_ssl_key_location),
    ];
    let tls = if protocol.uses_tls() {
        for (name, path) in files {
            if let Some(path) = path {
                std::fs::File::open(path).map_err(|error| {
                    Error::Usage(format!(
                        "{name} {} cannot be read: {error}; check the path",
                        path.display()
                    ))
                })?;
            }
        }
        let client = match (
            &config.kafka_ssl_certificate_location,
            &config.kafka_ssl_key_location,
        ) {
            (Some(certificate), Some(key)) => Some(ClientCertificate {
                certificate_location: certificate.clone(),
                key_location: key.clone(),
                key_password: config
                    .kafka_ssl_key_password
                    .as_ref()
                    .map(|password| Password::new(password.expose())),
            }),
            (Some(_), None) => {
                return Err(Error::Usage(
                    "KAFKA_SSL_CERTIFICATE_LOCATION is set without KAFKA_SSL_KEY_LOCATION: set the file of the certificate's private key too".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Usage(
                    "KAFKA_SSL_KEY_LOCATION is set without KAFKA_SSL_CERTIFICATE_LOCATION: set the file of the client certificate too, or unset the key".to_owned(),
                ));
            }
            (None, None) if config.kafka_ssl_key_password.is_some() => {
                return Err(Error::Usage(
                    "KAFKA_SSL_KEY_PASSWORD is set without a client certificate: set KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION, or unset the password".to_owned(),
                ));
            }
            (None, None) => None,
        };
        Some(TlsSettings {
            ca_location: config.kafka_ssl_ca_location.clone(),
            client,
        })
    } else {
        let mut set: Vec<&str> = files
            .into_iter()
            .filter_map(|(name, path)| path.is_some().then_some(name))
            .collect();
        if config.kafka_ssl_key_password.is_some() {
            set.push("KAFKA_SSL_KEY_PASSWORD");
        }
        if !set.is_empty() {
            return Err(Error::Usage(format!(
                "{} set, but KAFKA_SECURITY_PROTOCOL is {protocol_name}, which has no TLS: set it to SSL (or SASL_SSL) for TLS, or unset {}",
                with_verb(&set),
                listed(&set)
            )));
        }
        None
    };
    Ok(match (login, tls) {
        (None, None) => KafkaSecurity::Plaintext,
        (None, Some(tls)) => KafkaSecurity::Ssl(tls),
        (Some(login), None) => KafkaSecurity::SaslPlaintext(login),
        (Some(login), Some(tls)) => KafkaSecurity::SaslSsl(login, tls),
    })
}

/// `names` and the verb that follows them: "A is", "A, B are".
#[cfg(feature = "kafka")]
fn with_verb(names: &[&str]) -> String {
    let verb = if names.len() == 1 { "is" } else { "are" };
    format!("{} {verb}", names.join(", "))
}

/// A Kafka error: an unknown topic is bad usage, anything else a runtime failure.
#[cfg(feature = "kafka")]
fn kafka_failure(error: kafka::KafkaError) -> Error {
    if error.is_usage() {
        Error::Usage(error.to_string())
    } else {
        Error::runtime("Kafka failed", error)
    }
}

/// Every dead letter of `topic` (or all), as JSON objects (`mercato dlq list`).
pub async fn dead_letters(config: &Config, topic: Option<&str>) -> Result<Vec<serde_json::Value>> {
    #[cfg(feature = "kafka")]
    {
        let settings = require(config, "dead letters are on Kafka")?;
        kafka::dlq::list(&settings, topic)
            .await
            .map_err(kafka_failure)
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (config, topic);
        Err(Error::Usage(format!(
            "dead letters are on Kafka, and {NO_KAFKA}"
        )))
    }
}

/// Sends the dead letters of `topic` (or all) not replayed yet back to their topics; answers
/// how many (`mercato dlq replay`).
pub async fn replay_dead_letters(config: &Config, topic: Option<&str>) -> Result<usize> {
    #[cfg(feature = "kafka")]
    {
        let settings = require(config, "dead letters are on Kafka")?;
        kafka::dlq::replay(&settings, topic)
            .await
            .map_err(kafka_failure)
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (config, topic);
        Err(Error::Usage(format!(
            "dead letters are on Kafka, and {NO_KAFKA}"
        )))
    }
}

/// Kafka in a running process: what its plan asks of Kafka, started by [`crate::Server`]. A
/// build without the `kafka` feature starts nothing ([`check`] refused what needs Kafka).
#[derive(Debug)]
pub(crate) struct Bus {
    plan: Plan,
    #[cfg(feature = "kafka")]
    settings: Option<kafka::KafkaSettings>,
}

impl Bus {
    /// The bus of `config`'s plan, once [`check`] accepts it.
    pub(crate) fn new(config: &Config, plan: &Plan) -> Result<Bus> {
        check(config, plan)?;
        Ok(Bus {
            plan: *plan,
            #[cfg(feature = "kafka")]
            settings: settings(config)?,
        })
    }

    /// Starts what the plan runs on Kafka whatever else the process does: read-your-writes on
    /// the partitions of Kafka-fed read models, and the relay.
    pub(crate) fn start(
        &self,
        platform: &crate::Platform,
        projections: &[std::sync::Arc<dyn projections::Projection>],
        progress: &projections::Progress,
        components: &crate::health::Components,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        #[cfg_attr(not(feature = "kafka"), allow(unused_mut))]
        let mut workers = Vec::new();
        #[cfg(feature = "kafka")]
        if let Some(settings) = &self.settings {
            if self.plan.follows_partitions {
                running::follow_partitions(platform, settings, progress, projections)?;
            }
            if self.plan.relay {
                workers.push(running::relay(
                    platform, settings, progress, components, shutdown,
                ));
            }
            if self.plan.parts.notifier {
                workers.push(running::notification_requests(
                    platform, settings, components, shutdown,
                ));
            }
        }
        #[cfg(not(feature = "kafka"))]
        let _ = (
            platform,
            projections,
            progress,
            components,
            shutdown,
            self.plan,
        );
        Ok(workers)
    }

    /// The projector's consumer group applying every topic to `projections`, when the plan
    /// feeds them from Kafka; `None` when they follow the store's log.
    pub(crate) fn projector(
        &self,
        projections: &[std::sync::Arc<dyn projections::Projection>],
        components: &crate::health::Components,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        #[cfg(feature = "kafka")]
        if let (Some(settings), true) = (&self.settings, self.plan.from_kafka) {
            return Some(running::projector(
                settings,
                projections.to_vec(),
                components,
                shutdown,
            ));
        }
        #[cfg(not(feature = "kafka"))]
        let _ = (projections, components, shutdown);
        None
    }

    /// The saga's consumer group feeding `intake` from the order and payment topics, when the
    /// plan feeds the saga from Kafka; `None` when the saga's worker follows the log itself.
    pub(crate) fn saga_intake(
        &self,
        intake: std::sync::Arc<dyn projections::Projection>,
        components: &crate::health::Components,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        #[cfg(feature = "kafka")]
        if let (Some(settings), true) = (&self.settings, self.plan.from_kafka) {
            return Some(running::saga_intake(settings, intake, components, shutdown));
        }
        #[cfg(not(feature = "kafka"))]
        let _ = (intake, components, shutdown);
        None
    }
}

#[cfg(feature = "kafka")]
mod running {
    use std::sync::Arc;

    use kafka::{ConsumerOptions, KafkaLocator, KafkaSettings, run_consumer, run_relay};
    use projections::{Progress, Projection};
    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;

    use crate::error::{Error, Result};
    use crate::health::Components;
    use crate::platform::Platform;

    /// The consumer group of Kafka-fed projector processes.
    const PROJECTOR_GROUP: &str = "mercato-projector";
    /// The consumer group of Kafka-fed saga processes.
    const SAGA_GROUP: &str = "mercato-saga";
    /// The consumer group of notifiers taking other services' requests for messages.
    const NOTIFIER_GROUP: &str = "mercato-notifier";

    /// Records the messages other services ask for on `notifications.commands` in the outbox.
    #[derive(Debug)]
    struct NotificationRequests(projections::readdb::ReadDb);

    #[async_trait::async_trait]
    impl kafka::requests::RequestHandler for NotificationRequests {
        async fn handle(
            &self,
            _key: Option<&[u8]>,
            payload: &[u8],
        ) -> std::result::Result<(), kafka::requests::RequestRefusal> {
            match notify::requests::record(&self.0, payload).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(reason)) => Err(kafka::requests::RequestRefusal::Invalid(reason)),
                Err(error) => Err(kafka::requests::RequestRefusal::Unavailable(
                    error.to_string(),
                )),
            }
        }
    }

    /// The notifier's consumer group of `notifications.commands`.
    pub(super) fn notification_requests(
        platform: &Platform,
        settings: &KafkaSettings,
        components: &Components,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(kafka::requests::run_requests(
            settings.clone(),
            NOTIFIER_GROUP,
            schemas::topics::NOTIFICATION_COMMANDS,
            Arc::new(NotificationRequests(platform.read_models.db.clone())),
            Arc::new(components.clone()),
            shutdown.clone(),
        ))
    }

    /// Makes reads with `X-Min-Position` wait for the Kafka partition that carries the event.
    pub(super) fn follow_partitions(
        platform: &Platform,
        settings: &KafkaSettings,
        progress: &Progress,
        projections: &[Arc<dyn Projection>],
    ) -> Result<()> {
        let locator = KafkaLocator::new(platform.store.clone(), settings.clone())
            .map_err(|error| Error::runtime("cannot locate events on Kafka", error))?;
        progress.follow_partitions(Arc::new(locator), projections);
        Ok(())
    }

    /// The relay, publishing the log to Kafka.
    pub(super) fn relay(
        platform: &Platform,
        settings: &KafkaSettings,
        progress: &Progress,
        components: &Components,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(run_relay(
            platform.store.clone(),
            platform.read_models.db.clone(),
            settings.clone(),
            progress.clone(),
            Arc::new(components.clone()),
            shutdown.clone(),
        ))
    }

    /// The projector's consumer group, applying every topic to `projections`.
    pub(super) fn projector(
        settings: &KafkaSettings,
        projections: Vec<Arc<dyn Projection>>,
        components: &Components,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        let options = ConsumerOptions::new(
            settings.clone(),
            PROJECTOR_GROUP,
            schemas::topics::TOPICS.to_vec(),
        );
        tokio::spawn(run_consumer(
            projections,
            options,
            Arc::new(components.clone()),
            shutdown.clone(),
        ))
    }

    /// The saga's consumer group, feeding the saga's intake from the order and payment topics.
    pub(super) fn saga_intake(
        settings: &KafkaSettings,
        intake: Arc<dyn Projection>,
        components: &Components,
        shutdown: &CancellationToken,
    ) -> JoinHandle<()> {
        let options = ConsumerOptions::new(
            settings.clone(),
            SAGA_GROUP,
            vec![
                schemas::topics::ORDERS_EVENTS,
                schemas::topics::PAYMENTS_EVENTS,
            ],
        );
        tokio::spawn(run_consumer(
            vec![intake],
            options,
            Arc::new(components.clone()),
            shutdown.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Role, Source};

    fn config(role: Role, bootstrap: bool, source: Source) -> Config {
        Config {
            role,
            kafka_bootstrap: bootstrap.then(|| "127.0.0.1:9092".to_owned()),
            source,
            ..Config::default()
        }
    }

    fn checked(config: &Config) -> Result<()> {
        check(config, &Plan::of(config))
    }

    #[test]
    fn the_relay_and_kafka_fed_roles_without_brokers_are_bad_usage_naming_kafka_bootstrap() {
        for config in [
            config(Role::Relay, false, Source::Log),
            config(Role::Projector, false, Source::Kafka),
        ] {
            let error = checked(&config).unwrap_err();
            assert!(error.is_usage(), "{error}");
            assert!(error.to_string().contains("KAFKA_BOOTSTRAP"), "{error}");
        }
        assert!(checked(&config(Role::All, false, Source::Log)).is_ok());
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn with_the_kafka_feature_brokers_make_kafka_settings() {
        let config = config(Role::All, true, Source::Kafka);
        assert!(checked(&config).is_ok());
        let settings = settings(&config).unwrap().expect("settings");
        assert_eq!(settings.bootstrap, "127.0.0.1:9092");
        assert_eq!(settings.partitions, 3);
    }

    #[cfg(feature = "kafka")]
    fn secured(protocol: crate::config::KafkaProtocol, change: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config {
            kafka_security_protocol: protocol,
            ..config(Role::All, true, Source::Log)
        };
        change(&mut config);
        config
    }

    #[cfg(feature = "kafka")]
    fn login(config: &mut Config) {
        config.kafka_sasl_mechanism = Some(SaslMechanism::ScramSha256);
        config.kafka_sasl_username = Some("shop".to_owned());
        config.kafka_sasl_password = Some(crate::config::Secret::new("hunter2"));
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_security_settings_become_the_clients_security() {
        use crate::config::KafkaProtocol;
        use kafka::KafkaSecurity;

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let certificate = dir.path().join("client.pem");
        let key = dir.path().join("client.key");
        for path in [&ca, &certificate, &key] {
            std::fs::write(path, "-----BEGIN CERTIFICATE-----\n").unwrap();
        }
        let security = |config: Config| {
            assert!(checked(&config).is_ok());
            let bus = Bus::new(&config, &Plan::of(&config)).unwrap();
            bus.settings.expect("settings").security
        };
        assert_eq!(
            security(config(Role::All, true, Source::Log)),
            KafkaSecurity::Plaintext
        );
        let KafkaSecurity::SaslSsl(login_made, tls) =
            security(secured(KafkaProtocol::SaslSsl, |config| {
                login(config);
                config.kafka_ssl_ca_location = Some(ca.clone());
                config.kafka_ssl_certificate_location = Some(certificate.clone());
                config.kafka_ssl_key_location = Some(key.clone());
                config.kafka_ssl_key_password = Some(crate::config::Secret::new("keypass"));
            }))
        else {
            panic!("SASL_SSL makes a SASL login over TLS");
        };
        assert_eq!(login_made.mechanism, kafka::SaslMechanism::ScramSha256);
        assert_eq!(login_made.username, "shop");
        assert_eq!(tls.ca_location.as_ref(), Some(&ca));
        let client = tls.client.expect("the client certificate");
        assert_eq!(client.certificate_location, certificate);
        assert_eq!(client.key_location, key);
        assert_eq!(login_made.password, kafka::Password::new("hunter2"));
        assert_eq!(client.key_password, Some(kafka::Password::new("keypass")));
        assert!(matches!(
            security(secured(KafkaProtocol::SaslPlaintext, login)),
            KafkaSecurity::SaslPlaintext(_)
        ));
        assert_eq!(
            security(secured(KafkaProtocol::Ssl, |_| {})),
            KafkaSecurity::Ssl(kafka::TlsSettings::default())
        );
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_security_settings_that_cannot_work_are_refused_at_start_saying_what_to_set() {
        use crate::config::{KafkaProtocol, Secret};

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.pem");
        std::fs::write(&file, "pem").unwrap();
        let missing = dir.path().join("missing.pem");
        let cases: Vec<(Config, &[&str])> = vec![
            (
                secured(KafkaProtocol::SaslSsl, |_| {}),
                &[
                    "KAFKA_SECURITY_PROTOCOL=SASL_SSL logs in with SASL",
                    "set KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD",
                ],
            ),
            (
                secured(KafkaProtocol::SaslPlaintext, |config| {
                    login(config);
                    config.kafka_sasl_password = None;
                }),
                &["SASL_PLAINTEXT", "set KAFKA_SASL_PASSWORD"],
            ),
            (
                secured(KafkaProtocol::Plaintext, login),
                &[
                    "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD are set",
                    "KAFKA_SECURITY_PROTOCOL is PLAINTEXT",
                    "set it to SASL_SSL",
                ],
            ),
            (
                secured(KafkaProtocol::Ssl, |config| {
                    config.kafka_sasl_username = Some("shop".to_owned());
                }),
                &[
                    "KAFKA_SASL_USERNAME is set",
                    "KAFKA_SECURITY_PROTOCOL is SSL",
                ],
            ),
            (
                secured(KafkaProtocol::SaslPlaintext, |config| {
                    login(config);
                    config.kafka_ssl_ca_location = Some(file.clone());
                }),
                &[
                    "KAFKA_SSL_CA_LOCATION is set",
                    "SASL_PLAINTEXT, which has no TLS",
                    "set it to SSL (or SASL_SSL)",
                ],
            ),
            (
                secured(KafkaProtocol::Ssl, |config| {
                    config.kafka_ssl_certificate_location = Some(file.clone());
                }),
                &["KAFKA_SSL_CERTIFICATE_LOCATION is set without KAFKA_SSL_KEY_LOCATION"],
            ),
            (
                secured(KafkaProtocol::Ssl, |config| {
                    config.kafka_ssl_key_location = Some(file.clone());
                }),
                &["KAFKA_SSL_KEY_LOCATION is set without KAFKA_SSL_CERTIFICATE_LOCATION"],
            ),
            (
                secured(KafkaProtocol::Ssl, |config| {
                    config.kafka_ssl_key_password = Some(Secret::new("keypass"));
                }),
                &["KAFKA_SSL_KEY_PASSWORD is set without a client certificate"],
            ),
            (
                secured(KafkaProtocol::SaslSsl, |config| {
                    login(config);
                    config.kafka_ssl_ca_location = Some(missing.clone());
                }),
                &["KAFKA_SSL_CA_LOCATION", "missing.pem cannot be read"],
            ),
        ];
        for (config, expected) in cases {
            let error = Bus::new(&config, &Plan::of(&config)).unwrap_err();
            assert!(error.is_usage(), "{error}");
            let message = error.to_string();
            for part in expected {
                assert!(message.contains(part), "{part:?} not in: {message}");
            }
            assert!(
                !message.contains("hunter2") && !message.contains("keypass"),
                "{message}"
            );
            let what = "dead letters are on Kafka";
            assert!(require(&config, what).unwrap_err().is_usage());
        }
    }

    #[cfg(not(feature = "kafka"))]
    #[tokio::test]
    async fn without_the_kafka_feature_anything_that_needs_kafka_names_the_feature() {
        let error = checked(&config(Role::All, true, Source::Log)).unwrap_err();
        assert!(error.is_usage(), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("KAFKA_BOOTSTRAP") && message.contains("--features kafka"),
            "{message}"
        );
        for error in [
            dead_letters(&Config::default(), None).await.unwrap_err(),
            replay_dead_letters(&Config::default(), None)
                .await
                .unwrap_err(),
        ] {
            assert!(error.is_usage(), "{error}");
            assert!(error.to_string().contains("--features kafka"), "{error}");
        }
    }
}
