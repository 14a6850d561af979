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

/// Every event topic.
pub const TOPICS: &[&str] = &[PRODUCT_EVENTS, CART_EVENTS, ORDERS_EVENTS, PAYMENTS_EVENTS];

/// Appended to a topic's name to name its dead-letter topic.
pub const DLQ_SUFFIX: &str = ".dlq";

/// The topic of a stream type (`product`, `product_views`, `cart`, `order`, `payment`), or `None`
/// for a stream type this build does not know.
pub fn topic_for_stream_type(stream_type: &str) -> Option<&'static str> {
    match stream_type {
        "product" | domain::VIEWS_STREAM_TYPE => Some(PRODUCT_EVENTS),
        "cart" => Some(CART_EVENTS),
        "order" => Some(ORDERS_EVENTS),
        "payment" => Some(PAYMENTS_EVENTS),
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
        assert_eq!(topic_for_stream_type("inventory"), None);
        assert_eq!(
            topic_for_event_type("PaymentSucceeded"),
            Some("payments.events")
        );
        assert_eq!(
            topic_for_event_type("ProductViewed"),
            Some("product.events")
        );
        assert_eq!(topic_for_event_type("ProductRenamed"), None);
    }

    #[test]
    fn every_event_type_has_a_topic() {
        for (stream_type, event_type, _) in domain::EVENT_TYPES {
            let topic = topic_for_stream_type(stream_type);
            assert!(topic.is_some_and(|t| TOPICS.contains(&t)), "{event_type}");
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
                "payments.events.dlq"
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
}
