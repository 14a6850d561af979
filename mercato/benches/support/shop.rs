//! Checkouts as the shop's customers make them: registered customers placing orders with their
//! access tokens and waiting for them to be confirmed (the checkout bench, and the notifications
//! bench's checkouts with and without the notifier).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::testing::Customer;

use crate::common::{self, Server};

/// `n` products named `{prefix} {index}` at 20.00 with `stock` units each, written with the
/// harness's admin API key; answers their ids.
pub async fn create_products(
    server: &common::Api,
    prefix: &str,
    n: usize,
    stock: i64,
) -> Vec<String> {
    let mut products = Vec::with_capacity(n);
    for index in 0..n {
        let (product_id, _) = server
            .create_product(&format!("{prefix} {index}"), "Plenty", 20.0, stock, "bench")
            .await;
        products.push(product_id);
    }
    products
}

/// Concurrent customers of a throughput phase.
pub const CLIENTS: usize = 32;

/// Places one order as the customer whose access token is `token` (who orders for themselves:
/// no `customer_id`); answers its id.
pub async fn place(server: &ServerTarget, product_id: &str, token: &str) -> Option<String> {
    let response = server
        .client
        .post(format!("{}/orders", server.base))
        .bearer_auth(token)
        .json(&json!({
            "lines": [{ "product_id": product_id, "quantity": 1 }],
            "payment_token": "tok_visa",
        }))
        .send()
        .await
        .ok()?;
    if response.status() != reqwest::StatusCode::ACCEPTED {
        eprintln!("  an order was answered {}", response.status());
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["order_id"].as_str().map(str::to_owned)
}

/// Polls the order, as its customer, every `interval` until it reads `CONFIRMED` (at most 30 s).
pub async fn until_confirmed(
    server: &ServerTarget,
    order_id: &str,
    token: &str,
    interval: Duration,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(response) = server
            .client
            .get(format!("{}/orders/{order_id}", server.base))
            .bearer_auth(token)
            .send()
            .await
            && let Ok(order) = response.json::<Value>().await
        {
            match order["status"].as_str() {
                Some("CONFIRMED") => return true,
                Some("CANCELLED") => return false,
                _ => {}
            }
        }
        tokio::time::sleep(interval).await;
    }
    false
}

/// The saga's count of confirmed checkouts, from `/metrics`.
pub async fn confirmed_total(server: &ServerTarget) -> f64 {
    let Ok(response) = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
    else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("mercato_saga_confirmed_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[derive(Clone)]
pub struct ServerTarget {
    pub base: String,
    pub client: reqwest::Client,
}

impl ServerTarget {
    /// The server at `base`, through a client that keeps enough idle connections for
    /// [`CLIENTS`] customers.
    pub fn new(base: &str) -> ServerTarget {
        ServerTarget {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
        }
    }
}

/// A fresh access token for each customer: a phase never outlives its tokens' 15 minutes.
pub async fn log_in_all(server: &Server, customers: &[Customer]) -> Vec<String> {
    let mut tokens = Vec::with_capacity(customers.len());
    for customer in customers {
        tokens.push(
            server
                .log_in(&customer.email, &customer.password)
                .await
                .access_token,
        );
    }
    tokens
}

/// Registers `n` customers at once (the server computes at most four password hashes at a time).
pub async fn register(server: &Server, n: usize) -> Vec<Customer> {
    let mut registrations = Vec::with_capacity(n);
    for index in 0..n {
        let api = common::Api::clone(server);
        registrations.push(tokio::spawn(async move {
            api.register_customer(&format!("shopper{index}")).await
        }));
    }
    let mut customers = Vec::with_capacity(n);
    for registration in registrations {
        customers.push(registration.await.expect("registration"));
    }
    customers
}

/// [`CLIENTS`] loops for `seconds`, each a customer with its access token in `tokens`; each
/// places an order and, when `confirm`, waits for it to be confirmed. Answers orders per second.
pub async fn throughput(
    server: &ServerTarget,
    tokens: &[String],
    products: &[String],
    confirm: bool,
    seconds: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, token) in tokens.iter().enumerate().take(CLIENTS) {
        let (server, products) = (server.clone(), products.to_vec());
        let token = token.clone();
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = client;
            while Instant::now() < deadline {
                next = (next + 7) % products.len();
                let Some(order_id) = place(&server, &products[next], &token).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                // 32 clients polling every millisecond would load the server more than the
                // checkouts do: they poll every 20 ms here (one client every 1 ms below).
                if !confirm
                    || until_confirmed(&server, &order_id, &token, Duration::from_millis(20)).await
                {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        println!("  ({failed} orders failed or were not confirmed)");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The saga's capacity: [`CLIENTS`] customers place orders through `orders` (the command path)
/// for `seconds` without waiting for them; answers orders placed per second, checkouts confirmed
/// per second (every order placed over the time until the saga, read from `saga`'s metrics,
/// confirmed the last of them) and how long the placing took.
pub async fn saga_capacity(
    orders: &ServerTarget,
    saga: &ServerTarget,
    tokens: &[String],
    products: &[String],
    seconds: u64,
) -> (f64, f64, Duration) {
    let confirmed_before = confirmed_total(saga).await;
    let started = Instant::now();
    let placed = throughput(orders, tokens, products, false, seconds).await;
    let placed_count = (placed * started.elapsed().as_secs_f64()).round();
    let placed_for = started.elapsed();
    while confirmed_total(saga).await - confirmed_before < placed_count
        && started.elapsed() < Duration::from_secs(seconds * 10 + 30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let confirmed =
        (confirmed_total(saga).await - confirmed_before) / started.elapsed().as_secs_f64();
    (placed, confirmed, placed_for)
}
