//! Notifications and outgoing webhooks end to end: every message of an order's life cycle
//! through a real SMTP server (aiosmtpd), once each, in the customer's language, with text
//! messages beside; retries after a dropped connection and a deferral ending in one message;
//! nothing sent after an erasure; webhooks verified by the `standardwebhooks` package and parsed
//! by `cloudevents` in a real receiver, in order through failures, with private destinations
//! refused at registration and at delivery and redirects not followed.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Api, Setup, TestApp, TestData, eventually};

const WAIT: Duration = Duration::from_secs(40);

/// One mail as received: its recipient, subject, and its text and HTML parts.
#[derive(Debug, Clone)]
struct Received {
    to: String,
    subject: String,
    text: String,
    html: String,
    message_id: String,
}

fn read(raw: &[u8]) -> Received {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a mail message");
    Received {
        to: message
            .to()
            .and_then(|to| to.first())
            .and_then(|to| to.address())
            .unwrap_or_default()
            .to_owned(),
        subject: message.subject().unwrap_or_default().to_owned(),
        text: message
            .body_text(0)
            .map(|text| text.into_owned())
            .unwrap_or_default(),
        html: message
            .body_html(0)
            .map(|html| html.into_owned())
            .unwrap_or_default(),
        message_id: message.message_id().unwrap_or_default().to_owned(),
    }
}

async fn mails_to(smtp: &mail::testing::SmtpServer, address: &str) -> Vec<Received> {
    smtp.messages()
        .await
        .iter()
        .map(|raw| read(raw))
        .filter(|mail| mail.to.eq_ignore_ascii_case(address))
        .collect()
}

/// Waits until `address` has `count` mails; answers them.
async fn wait_for_mails(
    smtp: &mail::testing::SmtpServer,
    address: &str,
    count: usize,
) -> Vec<Received> {
    let found = eventually(WAIT, || async {
        let mails = mails_to(smtp, address).await;
        (mails.len() >= count).then_some(mails)
    })
    .await;
    match found {
        Some((mails, _)) => mails,
        None => {
            let subjects: Vec<String> = mails_to(smtp, address)
                .await
                .into_iter()
                .map(|mail| mail.subject)
                .collect();
            panic!("{address} did not get {count} mails within {WAIT:?}; it got {subjects:?}")
        }
    }
}

async fn status_and_body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn order_when(api: &Api, order_id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let found = eventually(WAIT, || async {
        let order: Value = api
            .get(&format!("/orders/{order_id}"))
            .await
            .json()
            .await
            .ok()?;
        check(&order).then_some(order)
    })
    .await;
    found
        .map(|(order, _)| order)
        .unwrap_or_else(|| panic!("order {order_id} did not get there"))
}

fn address() -> Value {
    json!({ "name": "Anna Rossi", "line1": "Via Roma 1", "city": "Torino", "postal_code": "10121",
        "country": "IT" })
}

/// The token a verification mail carries.
fn token_of(text: &str, prefix: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '=' || c == '&' || c == '?')
        .find(|word| word.starts_with(prefix) && word.len() > prefix.len() + 20)
        .unwrap_or_else(|| panic!("no {prefix} token in {text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_life_cycle_mails_each_message_once_in_the_customers_language() {
    let Some(smtp) = mail::testing::SmtpServer::start("notify_life_cycle").await else {
        return;
    };
    let Some(data) = TestData::new(Setup::PostgresRedis, "notify_life_cycle").await else {
        return;
    };
    let args = [
        "--smtp-url",
        &smtp.url(),
        "--mail-from",
        "shop@mercato.example",
        "--shop-name",
        "Bottega",
    ];
    let server = TestApp::start_with(&data, "all", &args).await;
    let support = server.service(&data, "support").await;
    let ann = server.register_customer("ann").await;

    // The verification mail, in English (no language chosen yet), with a working link.
    let verify = wait_for_mails(&smtp, &ann.email, 1).await;
    assert_eq!(verify[0].subject, "Confirm your email address");
    assert!(verify[0].text.contains("Hello ann,"), "{}", verify[0].text);
    assert!(verify[0].text.contains("Bottega"), "{}", verify[0].text);
    let html = verify[0].html.replace("&#x2f;", "/");
    assert!(
        html.contains("<a href=\"http://127.0.0.1:0/verify-email?token=ve_"),
        "{html}"
    );
    let token = token_of(&verify[0].text, "ve_");
    let (status, body) = status_and_body(
        server
            .anonymous()
            .post("/users/verify", json!({ "token": token }))
            .await,
    )
    .await;
    assert!(status.is_success(), "{status} {body}");

    // German from now on, with a phone for text messages.
    let (status, body) = status_and_body(
        ann.patch(
            "/users/me",
            json!({ "language": "de-CH", "phone": "+39 011 123 4567" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, refused) =
        status_and_body(ann.patch("/users/me", json!({ "language": "tlh" })).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused.to_string().contains("de, en"), "{refused}");
    let changed = eventually(WAIT, || async {
        let profile: Value = ann.get("/users/me").await.json().await.ok()?;
        (profile["language"] == "de").then_some(profile)
    })
    .await;
    assert!(
        changed.is_some(),
        "the profile's language did not become de"
    );

    let (lamp, _) = server
        .create_product("Desk lamp", "brass", 10.0, 10, "lighting")
        .await;
    let place = |quantity: u32| {
        let ann = ann.api.clone();
        let lamp = lamp.clone();
        async move {
            let (status, body) = status_and_body(
                ann.post(
                    "/orders",
                    json!({ "lines": [{ "product_id": lamp, "quantity": quantity }],
                    "payment_token": "tok_visa", "shipping_address": address() }),
                )
                .await,
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["order_id"].as_str().expect("order_id").to_owned()
        }
    };
    // The first order: shipped, delivered, partly refunded.
    let shipped_order = place(2).await;
    order_when(&ann, &shipped_order, |order| order["status"] == "CONFIRMED").await;
    let (status, shipment) = status_and_body(
        support
            .post(&format!("/orders/{shipped_order}/shipments"),
                json!({ "lines": [{ "product_id": lamp, "quantity": 2 }], "carrier": "DHL", "tracking_number": "JD0146" }))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{shipment}");
    let shipment_id = shipment["shipment_id"].as_str().expect("shipment_id");
    let (status, body) = status_and_body(
        support
            .post(
                &format!("/orders/{shipped_order}/shipments/{shipment_id}/delivered"),
                json!({}),
            )
            .await,
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = status_and_body(
        support
            .post(
                &format!("/orders/{shipped_order}/refunds"),
                json!({ "amount": 5.0, "reason": "scratched" }),
            )
            .await,
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    // The second: cancelled by Ann once confirmed, and refunded.
    let cancelled_order = place(1).await;
    order_when(&ann, &cancelled_order, |order| {
        order["status"] == "CONFIRMED"
    })
    .await;
    let (status, body) = status_and_body(
        ann.post(&format!("/orders/{cancelled_order}/cancel"), json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // 1 verification + 6 of the first order + 5 of the second.
    let mails = wait_for_mails(&smtp, &ann.email, 12).await;
    let mut by_subject: BTreeMap<String, usize> = BTreeMap::new();
    for mail in &mails {
        *by_subject.entry(mail.subject.clone()).or_default() += 1;
        assert!(
            !mail.text.is_empty() && mail.html.contains("<!DOCTYPE html>"),
            "{} is not multipart: {mail:?}",
            mail.subject
        );
        assert!(
            mail.message_id.starts_with("n-") && mail.message_id.ends_with("@mercato.example"),
            "{}",
            mail.message_id
        );
    }
    let number = |order_id: &str| order_id.replace('-', "")[..8].to_uppercase();
    let (first, second) = (number(&shipped_order), number(&cancelled_order));
    for (subject, count) in [
        (format!("Wir haben Ihre Bestellung {first} erhalten"), 1),
        ("Beleg für Ihre Zahlung von 20".to_owned(), 1),
        (format!("Ihre Bestellung {first} ist bestätigt"), 1),
        (format!("Ihre Bestellung {first} ist unterwegs"), 1),
        (format!("Ihre Bestellung {first} wurde zugestellt"), 1),
        (format!("Erstattung von 5 für Ihre Bestellung {first}"), 1),
        (format!("Wir haben Ihre Bestellung {second} erhalten"), 1),
        ("Beleg für Ihre Zahlung von 10".to_owned(), 1),
        (format!("Ihre Bestellung {second} ist bestätigt"), 1),
        (format!("Ihre Bestellung {second} wurde storniert"), 1),
        (format!("Erstattung von 10 für Ihre Bestellung {second}"), 1),
    ] {
        assert_eq!(
            by_subject.get(&subject).copied(),
            Some(count),
            "{subject:?} in {by_subject:?}"
        );
    }
    let shipped = mails
        .iter()
        .find(|mail| mail.subject.contains("unterwegs"))
        .expect("shipped");
    assert!(
        shipped.text.contains("DHL") && shipped.text.contains("JD0146"),
        "{}",
        shipped.text
    );
    let html = shipped.html.replace("&#x2f;", "/");
    assert!(
        html.contains(&format!("http://127.0.0.1:0/shop/orders/{shipped_order}")),
        "{html}"
    );
    let cancelled = mails
        .iter()
        .find(|mail| mail.subject.contains("storniert"))
        .expect("cancelled");
    assert!(
        cancelled.text.contains("auf Ihren Wunsch"),
        "{}",
        cancelled.text
    );
    // Text messages beside the shipment's mails, to the profile's number.
    let sms = notify::sms::FileSms::read_all(&data.data_dir.path().join("sms"));
    assert_eq!(sms.len(), 2, "{sms:?}");
    assert!(
        sms.iter().all(|sms| sms["to"] == "+390111234567"),
        "{sms:?}"
    );
    // In the order of the events: the shipment's before the delivery's.
    let bodies: Vec<&str> = sms
        .iter()
        .map(|sms| sms["body"].as_str().unwrap_or_default())
        .collect();
    assert!(
        bodies[0].contains("JD0146") && bodies[1].contains("zugestellt"),
        "{bodies:?}"
    );

    // Support sees what was sent about the order; a customer may not.
    let (status, listed) = status_and_body(
        support
            .get(&format!("/orders/{shipped_order}/notifications"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed = listed["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed.len(), 8, "{listed:?}");
    assert!(
        listed.iter().all(|message| message["status"] == "sent"),
        "{listed:?}"
    );
    assert_eq!(
        ann.get(&format!("/orders/{shipped_order}/notifications"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Replaying the log from the start records nothing new and sends nothing twice.
    server.stop().await;
    let db = data.read_db().await;
    db.begin_write()
        .await
        .expect("write")
        .commit_at("notifications", 0)
        .await
        .expect("reset the checkpoint");
    let server = TestApp::start_with(&data, "all", &args).await;
    let support = server.service(&data, "support").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mails_to(&smtp, &ann.email).await.len(),
        12,
        "a replay sent mail again"
    );

    // After Ann's erasure nothing more goes to her, and what was sent shows her as erased.
    let ann = server
        .anonymous()
        .with_credentials(&ann.session.access_token);
    let (status, body) = status_and_body(ann.delete("/users/me").await).await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = status_and_body(
        support
            .post(
                &format!("/orders/{shipped_order}/refunds"),
                json!({ "amount": 1.0, "reason": "goodwill" }),
            )
            .await,
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let (listed, _) = eventually(WAIT, || async {
        let listed: Value = support
            .get(&format!("/orders/{shipped_order}/notifications"))
            .await
            .json()
            .await
            .ok()?;
        let listed = listed["notifications"].as_array().cloned()?;
        (listed.len() == 9 && listed.iter().any(|message| message["status"] == "erased"))
            .then_some(listed)
    })
    .await
    .expect("the refund's message is recorded as erased");
    assert!(
        listed
            .iter()
            .all(|message| message["recipient"] == "erased"),
        "{listed:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        smtp.messages().await.len(),
        12,
        "mail went to an erased person"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_and_a_deferral_are_retried_and_end_in_one_message() {
    let Some(smtp) = mail::testing::SmtpServer::start("notify_retries").await else {
        return;
    };
    let Some(data) = TestData::new(Setup::Embedded, "notify_retries").await else {
        return;
    };
    let server = TestApp::start_with(&data, "all", &["--smtp-url", &smtp.url()]).await;
    let mut addresses = Vec::new();
    for domain in ["drop.example", "once-deferred.example", "refused.example"] {
        let email = format!("zoe-{}@{domain}", uuid::Uuid::new_v4().simple());
        let (status, body) = status_and_body(
            server.anonymous().post("/users", json!({ "email": email, "password": "a long enough passphrase 9", "name": "Zoe" })).await,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        addresses.push(email);
    }
    for email in &addresses[..2] {
        wait_for_mails(&smtp, email, 1).await;
    }
    // A refused recipient is parked with the server's reason, and not tried again.
    let db = data.read_db().await;
    let (parked, _) = eventually(WAIT, || async {
        let parked = notify::outbox::list(
            &db,
            &notify::outbox::Filter {
                status: Some("parked".to_owned()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .ok()?;
        (!parked.is_empty()).then_some(parked)
    })
    .await
    .expect("the refused message is parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(
        parked[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("550"),
        "{parked:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for email in &addresses[..2] {
        assert_eq!(
            mails_to(&smtp, email).await.len(),
            1,
            "{email} got a duplicate"
        );
    }
    let sent = notify::outbox::list(
        &db,
        &notify::outbox::Filter {
            status: Some("sent".to_owned()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .expect("the outbox");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent.iter().all(|message| message.attempts >= 2),
        "each took a retry: {sent:?}"
    );
    // Support staff see the parked message over HTTP, with why, and send it again.
    let (status, listed) = status_and_body(server.get("/notifications?status=parked").await).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed = listed["notifications"]
        .as_array()
        .expect("notifications")
        .clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["key"], parked[0].key.as_str());
    assert!(
        listed[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("550"),
        "{listed:?}"
    );
    let support = &*server;
    let act = |key: &str, action: &str| {
        let path = format!("/notifications/{key}/{action}");
        async move { status_and_body(support.post(&path, Value::Null).await).await }
    };
    let (status, retried) = act(&parked[0].key, "retry").await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    let (status, again) = act(&parked[0].key, "retry").await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    // A sent message is sent once more as a new one.
    let (status, resent) = act(&sent[0].key, "resend").await;
    assert_eq!(status, StatusCode::CREATED, "{resent}");
    assert_ne!(resent["key"], sent[0].key.as_str(), "{resent}");
    let (status, unknown) = act("no-such-key", "resend").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    let (status, bad) = status_and_body(server.get("/notifications?status=lost").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    server.stop().await;
}

/// Registers an endpoint: answers its id and secret.
async fn register(admin: &Api, url: &str, types: Value) -> (String, String) {
    let (status, body) = status_and_body(
        admin
            .post("/webhooks", json!({ "url": url, "event_types": types }))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        !admin
            .get("/webhooks")
            .await
            .text()
            .await
            .unwrap_or_default()
            .contains("whsec_"),
        "a secret was shown twice"
    );
    (
        body["webhook_id"].as_str().expect("webhook_id").to_owned(),
        body["secret"].as_str().expect("secret").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_in_order_through_failures_and_never_reach_a_private_address() {
    webhooks_end_to_end(Setup::Embedded, "webhooks_e2e").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_in_order_and_never_reach_a_private_address_on_postgres() {
    webhooks_end_to_end(Setup::PostgresRedis, "webhooks_e2e_pg").await;
}

async fn webhooks_end_to_end(setup: Setup, test_name: &str) {
    let Some(receiver) = notify::testing::WebhookReceiver::start(test_name).await else {
        return;
    };
    let Some(data) = TestData::new(setup, test_name).await else {
        return;
    };
    let allow = ["--webhook-allowlist", "127.0.0.1/32"];
    let server = TestApp::start_with(&data, "all", &allow).await;
    let admin = server.service(&data, "admin").await;

    // Private, loopback (without the allowlist), link-local and metadata addresses are refused.
    for url in [
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "ftp://example.com/x",
    ] {
        let (status, body) = status_and_body(
            admin
                .post("/webhooks", json!({ "url": url, "event_types": ["*"] }))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(body.to_string().contains("url"), "{body}");
    }
    let (status, body) = status_and_body(
        admin
            .post(
                "/webhooks",
                json!({ "url": receiver.url("/x"), "event_types": ["OrderShipped"] }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (webhook_id, secret) = register(
        &admin,
        &receiver.url("/hooks/a"),
        json!(["ProductCreated", "StockAdjusted"]),
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    receiver.set_secret(&secret).await;
    // The receiver fails three times, then redirects once: the deliveries wait, in order.
    receiver.fail_next(3, 500).await;
    receiver.redirect_next(1, &receiver.url("/target")).await;
    let mut products = Vec::new();
    for index in 0..4 {
        let (product, _) = server
            .create_product(
                &format!("Hook {index}"),
                "x",
                1.0 + f64::from(index),
                5,
                "hooks",
            )
            .await;
        products.push(product);
    }
    let (status, body) = status_and_body(
        admin
            .post(
                &format!("/products/{}/stock", products[0]),
                json!({ "delta": 3 }),
            )
            .await,
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let received = receiver.wait_for(5, WAIT).await;
    assert!(
        received.iter().all(|delivery| delivery["verified"] == true),
        "{received:?}"
    );
    let types: Vec<&str> = received
        .iter()
        .map(|delivery| delivery["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        ["mercato.product.ProductCreated"; 4]
            .into_iter()
            .chain(["mercato.product.StockAdjusted"])
            .collect::<Vec<_>>()
    );
    let positions: Vec<u64> = received
        .iter()
        .map(|delivery| {
            delivery["position"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .expect("position")
        })
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "out of order: {positions:?}"
    );
    let subjects: Vec<String> = received
        .iter()
        .take(4)
        .map(|delivery| delivery["subject"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        subjects,
        products
            .iter()
            .map(|product| format!("product/{product}"))
            .collect::<Vec<_>>()
    );
    // The redirect was not followed.
    let attempts = receiver.attempts().await;
    assert!(
        !attempts.iter().any(|attempt| attempt["path"] == "/target"),
        "{attempts:?}"
    );
    assert_eq!(
        attempts
            .iter()
            .filter(|attempt| attempt["status"] == 500)
            .count(),
        3,
        "{attempts:?}"
    );
    // The delivery log shows each attempt with its answer.
    let (status, log) = status_and_body(
        admin
            .get(&format!("/webhooks/{webhook_id}/deliveries"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let deliveries = log["deliveries"].as_array().cloned().unwrap_or_default();
    let first = deliveries
        .iter()
        .find(|delivery| delivery["position"] == positions[0])
        .expect("the first delivery");
    let codes: Vec<Value> = first["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|attempt| attempt["status_code"].clone())
        .collect();
    assert_eq!(
        codes,
        [json!(500), json!(500), json!(500), json!(302), json!(204)],
        "{first}"
    );
    // A replay goes back, never ahead (that would skip events).
    let (status, ahead) = status_and_body(
        admin
            .post(
                &format!("/webhooks/{webhook_id}/replay"),
                json!({ "from_position": positions[positions.len() - 1] + 1_000 }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{ahead}");
    assert_eq!(ahead["field"], "from_position", "{ahead}");
    // Replay from the first position delivers the same events again, with the same ids.
    let (status, _) = status_and_body(
        admin
            .post(
                &format!("/webhooks/{webhook_id}/replay"),
                json!({ "from_position": positions[0] }),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let again = receiver.wait_for(10, WAIT).await;
    assert_eq!(again[5]["webhook_id"], received[0]["webhook_id"]);

    // Restarted without the allowlist, the same endpoint is refused at delivery; failing for
    // longer than a second (here), it is disabled and every admin account is told by mail.
    server.stop().await;
    let quick = ["--webhook-disable-after", "1"];
    let admin_email = format!("ops-{}@example.com", uuid::Uuid::new_v4().simple());
    server::platform::add_staff_account(
        &data.config("all", &quick),
        &admin_email,
        "Olga Ops",
        &[domain::Role::Admin].into_iter().collect(),
        "an admin's long passphrase 42",
    )
    .await
    .expect("an admin account");
    let server = TestApp::start_with(&data, "all", &quick).await;
    let admin = server.service(&data, "admin").await;
    let before = receiver.attempts().await.len();
    server.create_product("Hook 5", "x", 1.0, 5, "hooks").await;
    let (refused, _) = eventually(WAIT, || async {
        let log: Value = admin
            .get(&format!("/webhooks/{webhook_id}/deliveries"))
            .await
            .json()
            .await
            .ok()?;
        let latest = log["deliveries"].as_array()?.first()?.clone();
        let attempt = latest["attempts"].as_array()?.first()?.clone();
        attempt["answer"]
            .as_str()?
            .starts_with("refused")
            .then_some(attempt)
    })
    .await
    .expect("the delivery is refused");
    assert!(
        refused["answer"]
            .as_str()
            .unwrap_or_default()
            .contains("loopback"),
        "{refused}"
    );
    assert_eq!(
        receiver.attempts().await.len(),
        before,
        "a refused destination was connected to"
    );
    let (disabled, _) = eventually(WAIT, || async {
        let endpoint: Value = admin
            .get(&format!("/webhooks/{webhook_id}"))
            .await
            .json()
            .await
            .ok()?;
        (endpoint["status"] == "disabled").then_some(endpoint)
    })
    .await
    .expect("the failing endpoint is disabled");
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("loopback"),
        "{disabled}"
    );
    let (alert, _) = eventually(WAIT, || async {
        mail::testing::outbox_messages(&data.data_dir.path().join("mail"))
            .iter()
            .map(|raw| read(raw))
            .find(|mail| mail.to == admin_email)
    })
    .await
    .expect("the admin is told");
    assert_eq!(alert.subject, "A webhook endpoint was disabled");
    assert!(alert.text.contains(&webhook_id), "{}", alert.text);
    let (status, body) =
        status_and_body(admin.delete(&format!("/webhooks/{webhook_id}")).await).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        admin.get(&format!("/webhooks/{webhook_id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}
