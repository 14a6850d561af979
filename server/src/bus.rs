//! Kafka in a server process: the relay, the consumer groups of the projector and saga roles,
//! and read-your-writes on Kafka-fed read models. Kafka is behind the cargo feature `kafka`
//! (librdkafka builds with cmake); a build without it refuses a configuration that needs Kafka,
//! naming the feature.

use crate::config::Config;
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

/// The Kafka settings of `config`: where the topics are and how they are named and created.
#[cfg(feature = "kafka")]
pub fn settings(config: &Config) -> Option<kafka::KafkaSettings> {
    config
        .kafka_bootstrap
        .as_ref()
        .map(|bootstrap| kafka::KafkaSettings {
            bootstrap: bootstrap.clone(),
            prefix: config.kafka_prefix.clone(),
            partitions: config.kafka_partitions.get(),
            replication: config.kafka_replication.get(),
        })
}

/// The Kafka settings of `config`, for a command that works on Kafka (`what`).
#[cfg(feature = "kafka")]
pub fn require(config: &Config, what: &str) -> Result<kafka::KafkaSettings> {
    settings(config).ok_or_else(|| {
        Error::Usage(format!(
            "KAFKA_BOOTSTRAP is not set: {what}; set it (or --kafka-bootstrap) to the brokers"
        ))
    })
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
            settings: settings(config),
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
        let settings = settings(&config).expect("settings");
        assert_eq!(settings.bootstrap, "127.0.0.1:9092");
        assert_eq!(settings.partitions, 3);
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
