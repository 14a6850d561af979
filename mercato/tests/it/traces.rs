//! Traces exported over OTLP to a receiver built on OpenTelemetry's own protobuf definitions
//! (scripts/otlp-receiver.py): one checkout is one trace, from the HTTP request through the
//! command, the append, the projection batches and the saga's steps to the gateway's charge, in
//! a process started with the standard variables; a client's `traceparent` is continued and a
//! malformed one ignored.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, ServerData, Setup, eventually};

/// The receiver, started as the tests' other Python peers are.
struct Receiver {
    peer: mail::testing::StartedPeer,
}

impl Receiver {
    async fn start(test_name: &str) -> Option<Receiver> {
        let peer = mail::testing::PythonPeer {
            test_name,
            what: "the OTLP receiver",
            script_name: "otlp-receiver.py",
            script: include_str!("../../../scripts/otlp-receiver.py"),
            directories: &[],
            args: &["spans.jsonl"],
            missing: "opentelemetry-proto or grpcio is not installed (scripts/test-setup installs them)",
        }
        .start()
        .await?;
        Some(Receiver { peer })
    }

    fn grpc(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer.port)
    }

    fn http(&self) -> String {
        let port = std::fs::read_to_string(self.peer.directory.path().join("http.port"))
            .expect("the receiver's HTTP port");
        format!("http://127.0.0.1:{}", port.trim())
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(self.peer.directory.path().join("spans.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Value> {
        self.spans()
            .into_iter()
            .filter(|span| span["trace_id"] == trace_id)
            .collect()
    }
}

fn names(spans: &[Value]) -> BTreeSet<String> {
    spans
        .iter()
        .filter_map(|span| span["name"].as_str().map(str::to_owned))
        .collect()
}

/// A customer checks out with a `traceparent` of the client's trace: answers the order id.
async fn checkout(server: &Server, traceparent: &str) -> String {
    checkout_in(server, traceparent, "traced-cart").await
}

/// [`checkout`], with the cart `cart`.
async fn checkout_in(server: &Server, traceparent: &str, cart: &str) -> String {
    let (product_id, _) = server
        .create_product("Traced lamp", "lights a trace", 12.5, 10, "lighting")
        .await;
    let customer = server.register_customer("Tess").await;
    let added = customer
        .post(
            &format!("/carts/{cart}/items"),
            json!({ "product_id": product_id, "quantity": 1 }),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    let path = format!("/carts/{cart}/checkout");
    let checked_out = customer
        .send(
            &path,
            customer
                .request(reqwest::Method::POST, &path)
                .header("traceparent", traceparent)
                .header("tracestate", "mercato-test=1")
                .json(&json!({ "payment_token": "tok_visa" })),
        )
        .await;
    assert_eq!(checked_out.status(), StatusCode::ACCEPTED);
    let body: Value = checked_out.json().await.expect("json");
    let order_id = body["order_id"].as_str().expect("order_id").to_owned();
    eventually(Duration::from_secs(60), || async {
        let order: Value = customer
            .get(&format!("/orders/{order_id}"))
            .await
            .json()
            .await
            .ok()?;
        (order["status"] == "CONFIRMED").then_some(())
    })
    .await;
    order_id
}

async fn one_checkout_is_one_trace(protocol: &str, test_name: &str) {
    let Some(receiver) = Receiver::start(test_name).await else {
        return;
    };
    let data = ServerData::new(Setup::Embedded, test_name)
        .await
        .expect("embedded");
    let endpoint = if protocol == "grpc" {
        receiver.grpc()
    } else {
        receiver.http()
    };
    let server = Server::start_with_env(
        &data,
        "all",
        &["--payment-timeout", "30"],
        "info",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "mercato-under-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let order_id = checkout(&server, &format!("00-{trace_id}-{client_span}-01")).await;

    // A malformed traceparent is ignored: the request is answered, in a trace of its own.
    let malformed = server
        .send(
            "/search",
            server
                .request(reqwest::Method::GET, "/search?q=lamp")
                .header("traceparent", "00-not-a-trace-01"),
        )
        .await;
    assert_eq!(malformed.status(), StatusCode::OK);

    // The customer's mails (verification, received, receipt, confirmed) are sent.
    let mail_dir = data.data_dir.path().join("mail");
    eventually(Duration::from_secs(60), || async {
        (mail::testing::outbox_messages(&mail_dir).len() >= 4).then_some(())
    })
    .await;
    // Stopping flushes what the batch still holds.
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(data.data_dir.path().join("server.log")).unwrap_or_default();
    let spans = receiver.of_trace(trace_id);
    let found = names(&spans);
    for expected in [
        "POST /carts/{cart_id}/checkout",
        "checkout command",
        "store read",
        "store append",
        "saga step",
        "payment gateway charge",
        "send order_confirmed",
        "mail send",
    ] {
        assert!(
            found.contains(expected),
            "no {expected:?} span in the checkout's trace; its spans: {found:?}\nserver log:\n{log}"
        );
    }
    assert!(
        found.iter().any(|name| name.starts_with("project ")),
        "no projection batch in the checkout's trace: {found:?}"
    );
    assert!(
        found.iter().any(|name| name == "order command"),
        "the saga's order commands are in the trace: {found:?}"
    );
    // The HTTP span continues the client's span, with the semantic conventions' attributes.
    let http = spans
        .iter()
        .find(|span| span["name"] == "POST /carts/{cart_id}/checkout")
        .expect("the HTTP span");
    assert_eq!(http["parent_span_id"], client_span, "{http}");
    assert_eq!(http["kind"], 2, "a server span: {http}");
    assert_eq!(http["attributes"]["http.request.method"], "POST");
    assert_eq!(
        http["attributes"]["http.route"],
        "/carts/{cart_id}/checkout"
    );
    assert_eq!(http["attributes"]["http.response.status_code"], 202);
    // Every span of the trace came from this process, named as the standard variables say.
    for span in &spans {
        assert_eq!(
            span["resource"]["service.name"], "mercato-under-test",
            "{span}"
        );
        assert_eq!(span["resource"]["deployment.environment"], "test", "{span}");
        assert_eq!(span["resource"]["mercato.role"], "all", "{span}");
        assert_eq!(
            span["transport"],
            if protocol == "grpc" { "grpc" } else { "http" }
        );
    }
    // The stored events carry the trace context, and the malformed one started a new trace.
    let events = data.store().await;
    let order_events = events
        .read_stream("order", &order_id, 0, 100)
        .await
        .expect("read the order");
    assert!(
        order_events.iter().all(|event| event
            .metadata
            .traceparent
            .as_deref()
            .is_some_and(|parent| parent.contains(trace_id))),
        "{order_events:?}"
    );
    let search = receiver
        .spans()
        .into_iter()
        .find(|span| span["name"] == "GET /search")
        .expect("the GET /search span");
    assert_ne!(search["trace_id"], trace_id);
    assert_eq!(search["parent_span_id"], "", "{search}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_exported_over_grpc() {
    one_checkout_is_one_trace("grpc", "trace_grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_exported_over_http() {
    one_checkout_is_one_trace("http/protobuf", "trace_http").await;
}

/// Sampling is decided where a trace starts, and the work it causes follows that decision: with
/// no root sampled, a request without a sampled caller exports nothing, not even of the saga,
/// projections and mails its events cause later, while its events still carry its context (its
/// sampled flag off); a caller's sampled trace is exported whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_checkout_exports_nothing_and_a_sampled_one_everything() {
    let test_name = "trace_sampling";
    let Some(receiver) = Receiver::start(test_name).await else {
        return;
    };
    let data = ServerData::new(Setup::Embedded, test_name)
        .await
        .expect("embedded");
    let endpoint = receiver.http();
    let server = Server::start_with_env(
        &data,
        "all",
        &["--payment-timeout", "30"],
        "info",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    )
    .await;
    let unsampled = "6bf92f3577b34da6a3ce929d0e0e4738";
    let sampled = "7bf92f3577b34da6a3ce929d0e0e4739";
    let unsampled_order = checkout_in(
        &server,
        &format!("00-{unsampled}-00f067aa0ba902b9-00"),
        "cart-a",
    )
    .await;
    checkout_in(
        &server,
        &format!("00-{sampled}-00f067aa0ba902ba-01"),
        "cart-b",
    )
    .await;
    let root = server.get("/search?q=lamp").await;
    assert_eq!(root.status(), StatusCode::OK);
    let mail_dir = data.data_dir.path().join("mail");
    eventually(Duration::from_secs(60), || async {
        (mail::testing::outbox_messages(&mail_dir).len() >= 8).then_some(())
    })
    .await;
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");

    let found = names(&receiver.of_trace(sampled));
    for expected in [
        "POST /carts/{cart_id}/checkout",
        "checkout command",
        "saga step",
        "payment gateway charge",
        "send order_confirmed",
    ] {
        assert!(
            found.contains(expected),
            "no {expected:?} in the sampled trace: {found:?}"
        );
    }
    let exported = receiver.spans();
    assert!(
        receiver.of_trace(unsampled).is_empty(),
        "spans of the unsampled trace were exported: {:?}",
        names(&receiver.of_trace(unsampled))
    );
    assert!(
        exported.iter().all(|span| span["trace_id"] == sampled),
        "only the sampled trace is exported (no root is sampled): {:?}",
        exported
            .iter()
            .filter(|span| span["trace_id"] != sampled)
            .map(|span| (span["trace_id"].clone(), span["name"].clone()))
            .collect::<Vec<_>>()
    );
    // The unsampled order's events (the request's and the saga's alike) carry its trace, not
    // sampled.
    let events = data.store().await;
    let order_events = events
        .read_stream("order", &unsampled_order, 0, 100)
        .await
        .expect("read the order");
    assert!(
        order_events.len() >= 2
            && order_events
                .iter()
                .any(|event| event.metadata.source == "saga"),
        "the request's event and the saga's: {order_events:?}"
    );
    for event in &order_events {
        let parent = event.metadata.traceparent.as_deref().unwrap_or_default();
        assert!(
            parent.starts_with(&format!("00-{unsampled}-")) && parent.ends_with("-00"),
            "{} carries {parent:?}",
            event.event_type
        );
    }
}

/// With Kafka: the relay publishes the checkout's events with their trace context in the
/// headers, and a Kafka-fed projector in another process (with a database of its own) applies
/// them in spans of the same trace.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_s_trace_crosses_the_relay_into_a_kafka_fed_projector() {
    let test_name = "trace_kafka";
    let Some(broker) = server::testing::broker::Broker::start(test_name).await else {
        return;
    };
    let Some(receiver) = Receiver::start(test_name).await else {
        return;
    };
    let Some(source) = ServerData::new(Setup::PostgresRedis, "trace_kafka_source").await else {
        return;
    };
    let Some(fed) = ServerData::new(Setup::PostgresRedis, "trace_kafka_fed").await else {
        return;
    };
    let endpoint = receiver.grpc();
    let variables = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ];
    let bootstrap = broker.bootstrap();
    let server = Server::start_with_env(
        &source,
        "all",
        &["--kafka-bootstrap", &bootstrap],
        "info",
        &variables,
    )
    .await;
    let projector = Server::start_with_env(
        &fed,
        "projector",
        &["--kafka-bootstrap", &bootstrap, "--source", "kafka"],
        "info",
        &variables,
    )
    .await;
    let joined = eventually(Duration::from_secs(60), || async {
        let ready: Value = projector.get("/ready").await.json().await.ok()?;
        (ready["checks"]["kafka"] == "ok").then_some(())
    })
    .await;
    assert!(joined.is_some(), "the Kafka-fed projector did not join");
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    checkout(&server, &format!("00-{trace_id}-00f067aa0ba902b8-01")).await;
    // The projector's spans of this trace arrive with its next export (every 5 s).
    let crossed = eventually(Duration::from_secs(60), || async {
        let spans = receiver.of_trace(trace_id);
        spans
            .iter()
            .any(|span| {
                span["resource"]["mercato.role"] == "projector" && span["name"] == "project orders"
            })
            .then_some(spans)
    })
    .await;
    let log = std::fs::read_to_string(fed.data_dir.path().join("server.log")).unwrap_or_default();
    let (spans, _) = crossed.unwrap_or_else(|| {
        panic!(
            "no Kafka-fed projection batch in the checkout's trace: {:?}\nprojector log:\n{log}",
            names(&receiver.of_trace(trace_id))
        )
    });
    assert!(
        spans.iter().any(|span| span["name"] == "relay publish"
            && span["resource"]["mercato.role"] == "all"
            && span["kind"] == 4),
        "no relay publish (a producer span) in the trace: {:?}",
        names(&spans)
    );
    projector.terminate().await;
    server.terminate().await;
}
