//! Kafka names of CONTRACT.md: the topic of each stream type, the dead-letter topics, and the
//! message headers. Messages are keyed by stream id.

/// Product events, including product views.
pub const PRODUCT_EVENTS: &str = "product.events";
/// Cart events.
pub const CART_EVENTS: &str = "cart.events";
/// Order events.
pub const ORDERS_EVENTS: &str = "orders.events";
/// Payment events.
pub const PAYMENTS_EVENTS: &str = "payments.events";
/// User events: accounts from registration to erasure. Their personal fields are sealed under a
/// key per person, so erasing the person makes them unreadable here too.
pub const USER_EVENTS: &str = "user.events";

/// Every event topic.
pub const TOPICS: &[&str] = &[
    PRODUCT_EVENTS,
    CART_EVENTS,
    ORDERS_EVENTS,
    PAYMENTS_EVENTS,
    USER_EVENTS,
];

/// Messages other services ask mercato's notifier to send (JSON requests, not events).
pub const NOTIFICATION_COMMANDS: &str = "notifications.commands";

/// Every topic of requests to mercato.
pub const REQUEST_TOPICS: &[&str] = &[NOTIFICATION_COMMANDS];

/// Appended to a topic's name to name its dead-letter topic.
pub const DLQ_SUFFIX: &str = ".dlq";

/// The topic of a stream type (`product`, `product_views`, `cart`, `order`, `payment`, `user`),
/// or `None` for a stream type this build does not know.
pub fn topic_for_stream_type(stream_type: &str) -> Option<&'static str> {
    match stream_type {
        "product" | domain::VIEWS_STREAM_TYPE => Some(PRODUCT_EVENTS),
        "cart" => Some(CART_EVENTS),
        "order" => Some(ORDERS_EVENTS),
        "payment" => Some(PAYMENTS_EVENTS),
        domain::user::USER_STREAM_TYPE => Some(USER_EVENTS),
        _ => None,
    }
}

/// The topic an event type is published to, through its stream type in `domain::EVENT_TYPES`.
pub fn topic_for_event_type(event_type: &str) -> Option<&'static str> {
    domain::EVENT_TYPES
        .iter()
        .find(|(_, name, _)| *name == event_type)
        .and_then(|(stream_type, _, _)| topic_for_stream_type(stream_type))
}

/// The dead-letter topic of `topic`: where a message goes that cannot be processed after retries.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}{DLQ_SUFFIX}")
}

/// Kafka header names. The values are the envelope's fields as UTF-8 text.
pub mod headers {
    /// The envelope's `metadata.correlation_id`.
    pub const CORRELATION_ID: &str = "correlationId";
    /// The envelope's `metadata.causation_id`.
    pub const CAUSATION_ID: &str = "causationId";
    /// The envelope's `metadata.saga_id`; absent when no saga caused the event.
    pub const SAGA_ID: &str = "sagaId";
    /// The envelope's `event_type`.
    pub const EVENT_TYPE: &str = "eventType";
    /// The envelope's `occurred_at`, RFC 3339 UTC.
    pub const TIMESTAMP: &str = "timestamp";
    /// The envelope's `metadata.source`.
    pub const SOURCE: &str = "source";
    /// The envelope's `schema_version` (mercato's addition to the headers of CONTRACT.md).
    pub const SCHEMA_VERSION: &str = "schemaVersion";
    /// The envelope's `event_id` (mercato's addition).
    pub const EVENT_ID: &str = "eventId";
    /// The envelope's `stream_type` (mercato's addition).
    pub const STREAM_TYPE: &str = "streamType";
    /// The envelope's `position` in the store's log (mercato's addition).
    pub const POSITION: &str = "position";
    /// The envelope's `metadata.traceparent` (W3C Trace Context); absent when untraced.
    pub const TRACEPARENT: &str = "traceparent";
    /// The envelope's `metadata.tracestate`; absent when there is none.
    pub const TRACESTATE: &str = "tracestate";

    /// Dead-letter headers: why, where and how often a message failed, and who failed it.
    pub mod dead_letter {
        /// What failed, per projection: `name: error; name: error`.
        pub const REASON: &str = "dlq.reason";
        /// The projections that failed the message, comma-separated: a replay applies it to
        /// these.
        pub const PROJECTIONS: &str = "dlq.projections";
        /// The consumer group that failed it: only that group applies a replay.
        pub const GROUP: &str = "dlq.group";
        /// The topic the message was read from (its contract name).
        pub const TOPIC: &str = "dlq.topic";
        /// The partition the message was read from.
        pub const PARTITION: &str = "dlq.partition";
        /// The offset the message was read at.
        pub const OFFSET: &str = "dlq.offset";
        /// How many times it was tried.
        pub const ATTEMPTS: &str = "dlq.attempts";
        /// When it was given up (RFC 3339).
        pub const FAILED_AT: &str = "dlq.failed_at";
        /// On a replayed message: the dead letter it came from (`topic/partition/offset`).
        pub const REPLAYED_FROM: &str = "dlq.replayed_from";
        /// The prefix of every dead-letter header.
        pub const PREFIX: &str = "dlq.";
    }

    /// The headers CONTRACT.md names, in its order.
    pub const CONTRACT: &[&str] = &[
        CORRELATION_ID,
        CAUSATION_ID,
        SAGA_ID,
        EVENT_TYPE,
        TIMESTAMP,
        SOURCE,
    ];
}

/// The partition of a stream's messages in a topic of `partitions` partitions: FNV-1a of the
/// stream id ([`crate::stable_hash`]), so that the relay, which picks it, and a reader waiting for
/// an event agree without asking each other.
pub fn partition_for(stream_id: &str, partitions: i32) -> i32 {
    let hash = crate::stable_hash(stream_id);
    let partitions = u64::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(hash % partitions).unwrap_or(0)
}

/// The headers of an event's message, in order: CONTRACT.md's (`sagaId` only when a saga
/// caused the event), then `schemaVersion`, `eventId`, `streamType` and `position`. Values are
/// the envelope's fields as text; `timestamp` is `occurred_at` in RFC 3339, UTC as `Z`.
pub fn event_headers(event: &crate::RecordedEvent) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        (
            headers::CORRELATION_ID,
            event.metadata.correlation_id.clone(),
        ),
        (headers::CAUSATION_ID, event.metadata.causation_id.clone()),
    ];
    if let Some(saga_id) = &event.metadata.saga_id {
        pairs.push((headers::SAGA_ID, saga_id.clone()));
    }
    pairs.extend([
        (headers::EVENT_TYPE, event.event_type.clone()),
        (
            headers::TIMESTAMP,
            event
                .occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        (headers::SOURCE, event.metadata.source.clone()),
        (headers::SCHEMA_VERSION, event.schema_version.to_string()),
        (headers::EVENT_ID, event.event_id.to_string()),
        (headers::STREAM_TYPE, event.stream_type.clone()),
        (headers::POSITION, event.position.to_string()),
    ]);
    if let Some(traceparent) = &event.metadata.traceparent {
        pairs.push((headers::TRACEPARENT, traceparent.clone()));
        if let Some(tracestate) = &event.metadata.tracestate {
            pairs.push((headers::TRACESTATE, tracestate.clone()));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_types_map_to_the_contract_topics() {
        assert_eq!(topic_for_stream_type("product"), Some("product.events"));
        assert_eq!(
            topic_for_stream_type("product_views"),
            Some("product.events")
        );
        assert_eq!(topic_for_stream_type("cart"), Some("cart.events"));
        assert_eq!(topic_for_stream_type("order"), Some("orders.events"));
        assert_eq!(topic_for_stream_type("payment"), Some("payments.events"));
        assert_eq!(topic_for_stream_type("user"), Some("user.events"));
        assert_eq!(topic_for_stream_type("inventory"), None);
        assert_eq!(
            topic_for_event_type("PaymentSucceeded"),
            Some("payments.events")
        );
        assert_eq!(
            topic_for_event_type("ProductViewed"),
            Some("product.events")
        );
        assert_eq!(topic_for_event_type("UserErased"), Some("user.events"));
        assert_eq!(topic_for_event_type("CartOpened"), Some("cart.events"));
        assert_eq!(topic_for_event_type("ProductRenamed"), None);
    }

    #[test]
    fn every_event_type_has_a_topic_and_every_topic_a_stream_type() {
        for (stream_type, event_type, _) in domain::EVENT_TYPES {
            let topic = topic_for_stream_type(stream_type);
            assert!(topic.is_some_and(|t| TOPICS.contains(&t)), "{event_type}");
        }
        for topic in TOPICS {
            assert!(
                domain::stream_types()
                    .iter()
                    .any(|stream_type| topic_for_stream_type(stream_type) == Some(*topic)),
                "no stream type is published to {topic}"
            );
        }
    }

    #[test]
    fn dead_letter_topics_append_dlq() {
        assert_eq!(dlq_topic(ORDERS_EVENTS), "orders.events.dlq");
        let all: Vec<String> = TOPICS.iter().map(|t| dlq_topic(t)).collect();
        assert_eq!(
            all,
            [
                "product.events.dlq",
                "cart.events.dlq",
                "orders.events.dlq",
                "payments.events.dlq",
                "user.events.dlq"
            ]
        );
    }

    #[test]
    fn header_names_are_the_contract_ones() {
        assert_eq!(
            headers::CONTRACT,
            [
                "correlationId",
                "causationId",
                "sagaId",
                "eventType",
                "timestamp",
                "source"
            ]
        );
        assert!(!headers::CONTRACT.contains(&headers::SCHEMA_VERSION));
    }

    #[test]
    fn a_stream_always_maps_to_the_same_partition_within_range() {
        for partitions in [1, 3, 4, 12] {
            for stream in ["a", "order-1", "7f0c5a9e-2f7b-4c2e-9a39-0d0c1c7e5b11"] {
                let partition = partition_for(stream, partitions);
                assert!((0..partitions).contains(&partition));
                assert_eq!(partition, partition_for(stream, partitions));
            }
        }
        // Spread: 100 streams over 4 partitions use every partition.
        let used: std::collections::BTreeSet<i32> = (0..100)
            .map(|n| partition_for(&format!("s{n}"), 4))
            .collect();
        assert_eq!(used.len(), 4);
        assert_eq!(partition_for("anything", 0), 0);
        // FNV-1a's published test value: the partitions are the same in every build.
        assert_eq!(crate::stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn an_event_carries_the_contract_headers_then_mercatos() {
        let event = crate::envelope::sample_event();
        let pairs = event_headers(&event);
        let names: Vec<&str> = pairs.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "correlationId",
                "causationId",
                "sagaId",
                "eventType",
                "timestamp",
                "source",
                "schemaVersion",
                "eventId",
                "streamType",
                "position"
            ]
        );
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(value("timestamp"), Some("2026-11-22T10:00:00Z"));
        assert_eq!(value("position"), Some("42"));
        let mut without_saga = event.clone();
        without_saga.metadata.saga_id = None;
        assert_eq!(event_headers(&without_saga).len(), 9);
    }
}
