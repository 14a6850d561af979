//! What each role runs: the one table every part of the server asks, instead of each part
//! deciding for itself which roles it belongs to.

use crate::config::{Config, Role, Source};

/// The parts a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// The command routes, and the sealer that records the audit checkpoints.
    pub command_api: bool,
    /// The query routes, and the recorder of product views.
    pub query_api: bool,
    /// The projections: this process writes the read models (and keeps an in-process cache
    /// they invalidate, without Redis).
    pub projector: bool,
    /// The checkout saga.
    pub saga: bool,
    /// The relay to Kafka.
    pub relay: Relay,
    /// Notifications and outgoing webhooks.
    pub notifier: bool,
    /// The web console's pages (`/`), over the command and query routes of the same process
    /// (role `all`) or of the API at MERCATO_API_URL (role `console`).
    pub console: bool,
}

/// When a role runs the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay {
    Never,
    /// When Kafka is configured (`all`: the relay is part of everything).
    WithKafka,
    /// Always: the role is the relay, and needs Kafka.
    Always,
}

impl Parts {
    /// Whether nothing of this process answers a customer or moves a checkout on: it only sends
    /// notifications and webhooks, work that may wait.
    pub const fn background_only(&self) -> bool {
        self.notifier
            && !self.command_api
            && !self.query_api
            && !self.projector
            && !self.saga
            && matches!(self.relay, Relay::Never)
    }
}

impl Role {
    /// The table: what each role runs.
    pub const fn parts(self) -> Parts {
        let none = Parts {
            command_api: false,
            query_api: false,
            projector: false,
            saga: false,
            relay: Relay::Never,
            notifier: false,
            console: false,
        };
        match self {
            Role::All => Parts {
                command_api: true,
                query_api: true,
                projector: true,
                saga: true,
                relay: Relay::WithKafka,
                notifier: true,
                console: true,
            },
            Role::CommandApi => Parts {
                command_api: true,
                ..none
            },
            Role::QueryApi => Parts {
                query_api: true,
                ..none
            },
            Role::Projector => Parts {
                projector: true,
                ..none
            },
            Role::Saga => Parts { saga: true, ..none },
            Role::Relay => Parts {
                relay: Relay::Always,
                ..none
            },
            Role::Notifier => Parts {
                notifier: true,
                ..none
            },
            Role::Console => Parts {
                console: true,
                ..none
            },
        }
    }
}

/// What a configured process runs: its role's parts, and what follows from the rest of the
/// configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub parts: Parts,
    /// Whether the relay runs (its role runs it, and Kafka is configured).
    pub relay: bool,
    /// Whether the projector and saga read Kafka instead of the store's log.
    pub from_kafka: bool,
    /// Whether read-your-writes waits for Kafka partitions: the process serves or writes read
    /// models that Kafka feeds.
    pub follows_partitions: bool,
    /// Whether the process learns how far the read models got by polling their stored
    /// checkpoints: it serves them without running their projections.
    pub polls_checkpoints: bool,
}

impl Plan {
    pub fn of(config: &Config) -> Plan {
        let parts = config.role.parts();
        let kafka = config.kafka_bootstrap.is_some();
        let from_kafka = config.source == Source::Kafka;
        Plan {
            parts,
            relay: match parts.relay {
                Relay::Never => false,
                Relay::WithKafka => kafka,
                Relay::Always => true,
            },
            from_kafka,
            follows_partitions: from_kafka && (parts.projector || parts.query_api),
            polls_checkpoints: parts.query_api && !parts.projector,
        }
    }

    /// Whether the process uses Kafka at all.
    pub fn uses_kafka(&self) -> bool {
        self.relay || self.from_kafka
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(role: Role, kafka: bool, source: Source) -> Plan {
        Plan::of(&Config {
            role,
            kafka_bootstrap: kafka.then(|| "127.0.0.1:9092".to_owned()),
            source,
            ..Config::default()
        })
    }

    #[test]
    fn all_runs_every_part_and_the_relay_only_with_kafka() {
        let embedded = plan(Role::All, false, Source::Log);
        assert!(embedded.parts.command_api && embedded.parts.query_api);
        assert!(embedded.parts.projector && embedded.parts.saga);
        assert!(embedded.parts.notifier);
        assert!(Role::Notifier.parts().notifier && !Role::Saga.parts().notifier);
        assert!(Role::Notifier.parts().background_only());
        assert!(!Role::All.parts().background_only() && !Role::Saga.parts().background_only());
        assert!(!embedded.relay && !embedded.uses_kafka());
        assert!(plan(Role::All, true, Source::Log).relay);
    }

    #[test]
    fn each_scale_out_role_runs_one_part() {
        for (role, expected) in [
            (Role::CommandApi, [true, false, false, false]),
            (Role::QueryApi, [false, true, false, false]),
            (Role::Projector, [false, false, true, false]),
            (Role::Saga, [false, false, false, true]),
            (Role::Relay, [false, false, false, false]),
        ] {
            let parts = role.parts();
            assert_eq!(
                [
                    parts.command_api,
                    parts.query_api,
                    parts.projector,
                    parts.saga
                ],
                expected,
                "{role:?}"
            );
        }
        assert!(plan(Role::Relay, false, Source::Log).relay);
        assert!(!plan(Role::Saga, true, Source::Log).relay);
        let console = Role::Console.parts();
        assert!(console.console && !console.command_api && !console.query_api);
        assert!(Role::All.parts().console && !Role::QueryApi.parts().console);
    }

    #[test]
    fn a_query_api_alone_polls_checkpoints_and_follows_partitions_when_kafka_feeds_it() {
        assert!(plan(Role::QueryApi, false, Source::Log).polls_checkpoints);
        assert!(!plan(Role::All, false, Source::Log).polls_checkpoints);
        assert!(plan(Role::QueryApi, true, Source::Kafka).follows_partitions);
        assert!(plan(Role::Projector, true, Source::Kafka).follows_partitions);
        assert!(!plan(Role::Saga, true, Source::Kafka).follows_partitions);
        assert!(!plan(Role::All, true, Source::Log).follows_partitions);
    }
}
