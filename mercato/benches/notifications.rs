//! Notification and webhook benchmarks of the release build.
//!
//! - Messages per second the notifier hands to a local SMTP server (aiosmtpd) while customers
//!   place orders (each order makes three: received, payment receipt, confirmed), against the
//!   same number of mails sent straight through the mail adapter, 16 at once (as many as the
//!   notifier sends at once), to the same server: the ratio is what the outbox, the templates
//!   and the recipients' lookups cost on top of SMTP itself.
//! - The time from `OrderConfirmed` (its `occurred_at`) to its message accepted by the SMTP
//!   server (the stored file's time), p50 and p99, with orders placed at a steady 10 a second
//!   (the burst's figure is the backlog's drain), against one mail's own SMTP send.
//! - Webhook deliveries per second to a local receiver (an axum handler answering 204), one
//!   endpoint replaying the whole log, against the same receiver posted to one request at a
//!   time with a body of the same size (deliveries to one endpoint are one at a time, in order).
//! - Checkouts confirmed per second with each role in its own process on PostgreSQL, without a
//!   notifier and with one (mail to the SMTP server and every event to a webhook endpoint).
//!
//! Run with `just bench` or `cargo bench -p mercato --bench notifications`. BENCH_SECONDS
//! (default 5) sets the checkout phases; BENCH_ORDERS (default 200) the orders of the first.

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{Server, ServerData, Setup};
use serde_json::{Value, json};
use support::shop::{
    CLIENTS, ServerTarget, create_products, log_in_all, place, register, saga_capacity,
};
use support::{percentile, phase_seconds};

/// Orders a second in the latency phase: well below what the notifier sends.
const STEADY_RATE: u32 = 10;
/// Messages the notifier sends at once, and the baseline's concurrent sends.
const SENDERS: usize = 16;

fn orders() -> usize {
    std::env::var("BENCH_ORDERS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(200)
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// A webhook receiver in this process: every POST is counted and answered 204.
struct Receiver {
    url: String,
    count: Arc<AtomicU64>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let count = Arc::new(AtomicU64::new(0));
        let last = Arc::new(std::sync::Mutex::new(None));
        let (counter, latest) = (count.clone(), last.clone());
        let app = axum::Router::new().fallback(move || {
            let (counter, latest) = (counter.clone(), latest.clone());
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut latest) = latest.lock() {
                    *latest = Some(Instant::now());
                }
                axum::http::StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, count, last }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn last(&self) -> Option<Instant> {
        self.last.lock().ok().and_then(|last| *last)
    }
}

/// The stored messages of `smtp`: their subjects and when the server accepted each.
fn stored(smtp: &mail::testing::SmtpServer) -> Vec<(String, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(smtp.messages_dir()) else {
        return Vec::new();
    };
    let mut stored = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|extension| extension != "eml") {
            continue;
        }
        let (Ok(bytes), Ok(metadata)) = (std::fs::read(&path), entry.metadata()) else {
            continue;
        };
        let subject = mail_parser::MessageParser::default()
            .parse(&bytes)
            .and_then(|message| message.subject().map(str::to_owned))
            .unwrap_or_default();
        if let Ok(modified) = metadata.modified() {
            stored.push((subject, modified));
        }
    }
    stored
}

/// How many messages `smtp` has stored (counted, not read).
fn mails(smtp: &mail::testing::SmtpServer) -> usize {
    std::fs::read_dir(smtp.messages_dir()).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|e| e == "eml"))
            .count()
    })
}

async fn wait_for_stored(
    smtp: &mail::testing::SmtpServer,
    count: usize,
    timeout: Duration,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if smtp.messages().await.len() >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Orders placed for `seconds` at [`STEADY_RATE`] a second, each by the next customer: answers
/// their order numbers (what their messages' subjects show).
async fn steady_orders(
    target: &ServerTarget,
    tokens: &[String],
    products: &[String],
    seconds: u64,
) -> std::collections::HashSet<String> {
    let mut numbers = std::collections::HashSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / STEADY_RATE);
    for index in 0..(seconds * u64::from(STEADY_RATE)) as usize {
        ticker.tick().await;
        let token = &tokens[index % tokens.len()];
        if let Some(order_id) = place(target, &products[index % products.len()], token).await {
            numbers.insert(order_number(&order_id));
        }
    }
    numbers
}

fn order_number(order_id: &str) -> String {
    order_id
        .chars()
        .filter(|c| *c != '-')
        .take(8)
        .collect::<String>()
        .to_uppercase()
}

/// For each order of `numbers`: the time from its `OrderConfirmed` to its "is confirmed"
/// message stored by the SMTP server.
async fn confirmed_to_accepted(
    store: &std::sync::Arc<dyn eventstore::EventStore>,
    mails: &[(String, SystemTime)],
    numbers: &std::collections::HashSet<String>,
) -> Vec<Duration> {
    let mut confirmed_at = std::collections::HashMap::new();
    let mut after = 0;
    loop {
        let events = store.read_all(after, 5_000).await.expect("read the log");
        let Some(last) = events.last() else { break };
        after = last.position;
        for event in events
            .iter()
            .filter(|event| event.event_type == "OrderConfirmed")
        {
            let number = order_number(&event.stream_id);
            if numbers.contains(&number) {
                confirmed_at.insert(number, SystemTime::from(event.occurred_at));
            }
        }
    }
    mails
        .iter()
        .filter_map(|(subject, at)| {
            let number = subject
                .strip_prefix("Your order ")?
                .strip_suffix(" is confirmed")?;
            at.duration_since(*confirmed_at.get(number)?).ok()
        })
        .collect()
}

/// Sends `count` mails straight through the SMTP adapter, [`SENDERS`] at once: answers mails per
/// second and each send's time.
async fn raw_smtp(url: &str, count: usize) -> (f64, Vec<Duration>) {
    let outbox = tempfile::tempdir().expect("temporary directory");
    let mailer = mail::open(&mail::MailSettings {
        smtp_url: Some(url.to_owned()),
        from: "shop@mercato.example".to_owned(),
        send_timeout: Duration::from_secs(30),
        outbox_dir: outbox.path().to_owned(),
    })
    .expect("mailer");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (mailer, next) = (mailer.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count as u64 {
                    return times;
                }
                let mail = mail::Mail::text(
                    mail::Recipient::named("Bench Customer", format!("raw-{index}@example.com")),
                    format!("Your order {index:08} is confirmed"),
                    "Your order is confirmed and paid. We are preparing it for shipping.",
                )
                .with_html(
                    "<p>Your order is confirmed and paid. We are preparing it for shipping.</p>",
                );
                let sent = Instant::now();
                if mailer.send(&mail).await.is_ok() {
                    times.push(sent.elapsed());
                }
            }
        }));
    }
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.unwrap_or_default());
    }
    (times.len() as f64 / started.elapsed().as_secs_f64(), times)
}

/// Posts `count` bodies of `size` bytes to `url`, one at a time: answers posts per second.
async fn raw_posts(url: &str, count: u64, size: usize) -> f64 {
    let client = reqwest::Client::new();
    let body = vec![b'x'; size];
    let started = Instant::now();
    for _ in 0..count {
        let _ = client
            .post(url)
            .header("content-type", "application/cloudevents+json")
            .body(body.clone())
            .send()
            .await;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// The notifier and webhook figures, embedded.
async fn embedded(smtp: &mail::testing::SmtpServer, receiver: &Receiver) -> Vec<String> {
    let Some(data) = ServerData::new(Setup::Embedded, "bench_notify_embedded").await else {
        return Vec::new();
    };
    let smtp_url = smtp.url();
    let server = Server::start_with(
        &data,
        "all",
        &[
            "--smtp-url",
            &smtp_url,
            "--payment-timeout",
            "30",
            "--webhook-allowlist",
            "127.0.0.1/32",
        ],
    )
    .await;
    let target = ServerTarget {
        base: server.base.clone(),
        client: reqwest::Client::new(),
    };
    let products = create_products(&server, "Notify item", 20, 100_000_000).await;
    let customers = register(&server, CLIENTS).await;
    assert!(
        wait_for_stored(smtp, CLIENTS, Duration::from_secs(60)).await,
        "the verification mails did not arrive"
    );
    let tokens = log_in_all(&server, &customers).await;
    let before = smtp.messages().await.len();
    let orders = orders();
    let expected = 3 * orders;
    let started_at = SystemTime::now();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for token in tokens.iter().take(CLIENTS) {
        let (target, token, products, next) = (
            target.clone(),
            token.clone(),
            products.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                if index >= orders {
                    return;
                }
                place(&target, &products[index % products.len()], &token).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let placed_in = started.elapsed();
    let arrived = wait_for_stored(smtp, before + expected, Duration::from_secs(300)).await;
    let mails = stored(smtp);
    let last = mails
        .iter()
        .filter_map(|(_, at)| at.duration_since(started_at).ok())
        .max()
        .unwrap_or_default();
    let notifier_rate = expected as f64 / last.as_secs_f64();
    eprintln!(
        "embedded: {orders} orders placed in {:.1} s; {expected} messages accepted by SMTP {:.1} s after the first order{}",
        placed_in.as_secs_f64(),
        last.as_secs_f64(),
        if arrived { "" } else { " (not all arrived)" }
    );
    // From OrderConfirmed to its message accepted, at a steady rate below the capacity (the
    // burst above measures the backlog's drain, not one message's way).
    let store = data.store().await;
    let steady = steady_orders(&target, &tokens, &products, phase_seconds()).await;
    let expected_now = smtp.messages().await.len() + 3 * steady.len();
    wait_for_stored(smtp, expected_now, Duration::from_secs(120)).await;
    let mut latencies = confirmed_to_accepted(&store, &stored(smtp), &steady).await;
    latencies.sort();
    let (p50, p99) = if latencies.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
    };
    let (raw_rate, mut raw_times) = raw_smtp(&smtp_url, expected).await;
    raw_times.sort();
    let raw_p99 = if raw_times.is_empty() {
        Duration::ZERO
    } else {
        percentile(&raw_times, 0.99)
    };
    eprintln!(
        "embedded: raw SMTP {raw_rate:.0} mails/s, p99 send {}",
        millis(raw_p99)
    );

    // Webhooks: one endpoint replays the whole log.
    // The harness's client holds an admin API key.
    let registered: Value = server
        .post(
            "/webhooks",
            json!({ "url": receiver.url, "event_types": ["*"] }),
        )
        .await
        .json()
        .await
        .expect("json");
    let webhook_id = registered["webhook_id"]
        .as_str()
        .expect("webhook_id")
        .to_owned();
    let head = store.head_position().await.expect("head");
    let before = receiver.count();
    let started = Instant::now();
    let _ = server
        .post(
            &format!("/webhooks/{webhook_id}/replay"),
            json!({ "from_position": 1 }),
        )
        .await;
    while receiver.count() < before + head && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = receiver.count() - before;
    let took = receiver
        .last()
        .map_or(started.elapsed(), |last| last.duration_since(started));
    let webhook_rate = delivered as f64 / took.as_secs_f64();
    let raw_rate_posts = raw_posts(&receiver.url, delivered.min(5_000), 900).await;
    eprintln!(
        "embedded: {delivered} webhook deliveries at {webhook_rate:.0}/s; plain posts {raw_rate_posts:.0}/s"
    );
    server.terminate().await;
    vec![
        format!(
            "| embedded: messages per second to a local SMTP server ({orders} orders by {CLIENTS} customers, {expected} messages) | {notifier_rate:.0}/s | {raw_rate:.0}/s (the mail adapter alone, {SENDERS} at once) | {:.2}x | |",
            notifier_rate / raw_rate
        ),
        format!(
            "| embedded: OrderConfirmed to its message accepted by SMTP, {STEADY_RATE} orders a second, p50 | {} | - | - | |",
            millis(p50)
        ),
        format!(
            "| embedded: the same, p99 ({} messages) | {} | {} (one SMTP send, p99) | {:.2}x | |",
            latencies.len(),
            millis(p99),
            millis(raw_p99),
            raw_p99.as_secs_f64() / p99.as_secs_f64()
        ),
        format!(
            "| embedded: webhook deliveries per second, one endpoint replaying {delivered} events | {webhook_rate:.0}/s | {raw_rate_posts:.0}/s (plain posts of 900 bytes, one at a time) | {:.2}x | |",
            webhook_rate / raw_rate_posts
        ),
    ]
}

/// Checkouts confirmed per second with each role in a process of its own on PostgreSQL, with or
/// without a notifier (mail to `smtp`, every event to `receiver`).
async fn checkouts(
    with_notifier: bool,
    smtp: &mail::testing::SmtpServer,
    receiver: &Receiver,
) -> Option<f64> {
    let label = if with_notifier { "with" } else { "without" };
    let data = ServerData::new(Setup::PostgresRedis, &format!("bench_notify_{label}")).await?;
    let pool = ["--db-pool", "8"];
    let smtp_url = smtp.url();
    let notifier_args = [
        "--db-pool",
        "8",
        "--smtp-url",
        &smtp_url,
        "--webhook-allowlist",
        "127.0.0.1/32",
    ];
    let command = Server::start_with(
        &data,
        "command-api",
        &["--db-pool", "8", "--webhook-allowlist", "127.0.0.1/32"],
    )
    .await;
    let projector = Server::start_with(&data, "projector", &pool).await;
    let saga = Server::start_with(
        &data,
        "saga",
        &["--db-pool", "8", "--payment-timeout", "30"],
    )
    .await;
    let notifier = if with_notifier {
        Some(Server::start_with(&data, "notifier", &notifier_args).await)
    } else {
        None
    };
    let target = ServerTarget::new(&command.base);
    if with_notifier {
        let response = command
            .post(
                "/webhooks",
                json!({ "url": receiver.url, "event_types": ["*"] }),
            )
            .await;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let log =
            std::fs::read_to_string(data.data_dir.path().join("server.log")).unwrap_or_default();
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}\n{log}");
    }
    let products = create_products(&command, "Bench item", 200, 100_000_000).await;
    let customers = register(&command, CLIENTS).await;
    let tokens = log_in_all(&command, &customers).await;
    let saga_target = ServerTarget {
        base: saga.base.clone(),
        client: target.client.clone(),
    };
    // Where the phase's CPU goes: the notifier's process and the SMTP server's.
    let cpu = |pid: Option<u32>| pid.map_or(0.0, common::cpu_seconds);
    let notifier_pid = notifier.as_ref().and_then(Server::pid);
    let (notifier_before, smtp_before) = (cpu(notifier_pid), cpu(smtp.pid()));
    let (mails_before, hooks_before) = (mails(smtp), receiver.count());
    let phase = Instant::now();
    let (placed, confirmed, _) =
        saga_capacity(&target, &saga_target, &tokens, &products, phase_seconds()).await;
    let phase = phase.elapsed();
    let (notifier_cpu, smtp_cpu) = (
        cpu(notifier_pid) - notifier_before,
        cpu(smtp.pid()) - smtp_before,
    );
    if with_notifier {
        eprintln!(
            "postgres, with a notifier: over the {:.1} s of placing and confirming, the notifier process used {notifier_cpu:.1} CPU seconds and the SMTP server {smtp_cpu:.1}",
            phase.as_secs_f64()
        );
        // What the notifier sent while the checkouts ran, and how long the rest took after
        // them: its messages wait for CPU, not the checkouts.
        let (mails_during, hooks_during) =
            (mails(smtp) - mails_before, receiver.count() - hooks_before);
        let drain = Instant::now();
        let mut last = (mails_during, hooks_during);
        let mut still = Instant::now();
        while still.elapsed() < Duration::from_secs(3) && drain.elapsed() < Duration::from_secs(300)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = (mails(smtp) - mails_before, receiver.count() - hooks_before);
            if now != last {
                last = now;
                still = Instant::now();
            }
        }
        let drained = drain.elapsed().saturating_sub(still.elapsed());
        eprintln!(
            "postgres, with a notifier: during the checkouts {mails_during} mails and {hooks_during} webhook deliveries; after them {} mails and {} deliveries more, in {:.1} s",
            last.0 - mails_during,
            last.1 - hooks_during,
            drained.as_secs_f64()
        );
    }

    eprintln!(
        "postgres, {label} a notifier: {placed:.0} orders placed/s, {confirmed:.0} confirmed/s"
    );
    if let Some(notifier) = notifier {
        notifier.terminate().await;
    }
    saga.terminate().await;
    projector.terminate().await;
    command.terminate().await;
    Some(confirmed)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let Some(smtp) = mail::testing::SmtpServer::start("bench_notifications").await else {
        println!(
            "notifications: skipped (aiosmtpd is not installed; scripts/test-setup installs it)"
        );
        return;
    };
    let receiver = Receiver::start().await;
    let mut rows = embedded(&smtp, &receiver).await;
    let without = checkouts(false, &smtp, &receiver).await;
    let with = checkouts(true, &smtp, &receiver).await;
    if let (Some(without), Some(with)) = (without, with) {
        rows.push(format!(
            "| postgres, a process per role: checkouts confirmed per second with a notifier (mail to SMTP, every event to a webhook) | {with:.0}/s | {without:.0}/s (no notifier) | {:.2}x | no slower |",
            with / without
        ));
    }
    println!("\n| figure | ours | baseline | ratio | target |\n| --- | --- | --- | --- | --- |");
    for row in rows {
        println!("{row}");
    }
}
