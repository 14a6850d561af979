//! The abuse scenario (loopback only, bounded in time): honest customers browse and check out
//! while attackers from other loopback addresses send slowloris connections, a burst of 5,000
//! requests, 1,000 concurrent waits for made-up positions, maximal pages, login guesses and
//! slow orders. The test asserts on it; the bench reports its figures beside the same honest
//! load without attackers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::Server;
use server::testing::Customer;

/// The settings a server under abuse runs with: the defaults of every limit (the harness turns
/// them off), and slow payments that time out after 5 s.
pub const SERVER_ARGS: &[&str] = &[
    "--rate-limit",
    "100",
    "--staff-rate-limit",
    "1000",
    "--account-rate-limit",
    "20",
    "--max-open-orders",
    "10",
    "--max-reserved-units",
    "1000",
    "--payment-timeout",
    "5",
];

/// The addresses the attackers send from (the honest customers send from 127.0.0.1).
const BURST_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SLOWLORIS_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const SLOW_ORDERS_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

/// What the honest customers saw.
#[derive(Debug, Default)]
pub struct Honest {
    /// Each checkout's time to its 202, in ms.
    pub checkout_ms: Vec<f64>,
    /// Checkouts that were not answered 202 (status and body).
    pub failed: Vec<String>,
    /// The orders the checkouts placed.
    pub orders: Vec<String>,
}

/// What the attackers were answered, by status (0: no answer, the connection refused or
/// closed).
#[derive(Debug, Default)]
pub struct Attack {
    pub statuses: BTreeMap<u16, u64>,
    /// 503 answers without `Retry-After`.
    pub unavailable_without_retry_after: u64,
    /// Slowloris connections that got a 503 or were closed by the server.
    pub slowloris_closed: u64,
    pub slowloris_opened: u64,
}

impl Attack {
    fn count(&mut self, response: &reqwest::Response) {
        let status = response.status();
        *self.statuses.entry(status.as_u16()).or_default() += 1;
        if status == StatusCode::SERVICE_UNAVAILABLE
            && !response.headers().contains_key("retry-after")
        {
            self.unavailable_without_retry_after += 1;
        }
    }

    /// 5xx answers other than 503.
    pub fn server_errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| **status >= 500 && **status != 503)
            .map(|(_, count)| count)
            .sum()
    }
}

/// A client sending from `from`.
fn client_from(from: Ipv4Addr, concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(from))
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The customers and the products of a scenario, made before it starts.
#[derive(Debug)]
pub struct Shop {
    pub customers: Vec<Customer>,
    pub products: Vec<String>,
    /// The attacker's own account, for slow orders.
    pub attacker: Customer,
}

/// Registers `n` honest customers and an attacker, and creates 20 products.
pub async fn open_shop(server: &Server, n: usize) -> Shop {
    let mut products = Vec::new();
    for index in 0..20 {
        let (product_id, _) = server
            .create_product(
                &format!("Mug {index}"),
                "a mug for tea",
                4.5,
                1_000_000,
                "Kitchen",
            )
            .await;
        products.push(product_id);
    }
    let mut customers = Vec::new();
    for index in 0..n {
        customers.push(server.register_customer(&format!("honest{index}")).await);
    }
    let attacker = server.register_customer("mallory").await;
    Shop {
        customers,
        products,
        attacker,
    }
}

/// Each honest customer, for `seconds`: reads a product, searches, adds it to a new cart and
/// checks out, over and over.
pub async fn honest_load(server: &Server, shop: &Shop, seconds: u64) -> Honest {
    let honest = Arc::new(Mutex::new(Honest::default()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (index, customer) in shop.customers.iter().enumerate() {
        let (customer, products, honest) =
            (customer.clone(), shop.products.clone(), honest.clone());
        let base = server.url("");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            let token = customer.session.access_token.clone();
            let mut round = 0usize;
            while Instant::now() < deadline {
                round += 1;
                let product = &products[(index + round) % products.len()];
                let _ = client
                    .get(format!("{base}/products/{product}"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                let _ = client
                    .get(format!("{base}/search?q=mug"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                let cart = format!(
                    "{base}/carts/honest-{index}-{round}-{}",
                    uuid::Uuid::new_v4().simple()
                );
                let added = client
                    .post(format!("{cart}/items"))
                    .bearer_auth(&token)
                    .json(&json!({ "product_id": product, "quantity": 1 }))
                    .send()
                    .await;
                if !added
                    .as_ref()
                    .is_ok_and(|answer| answer.status() == StatusCode::OK)
                {
                    let what = match added {
                        Ok(answer) => format!("add: {}", answer.status()),
                        Err(error) => format!("add: {error}"),
                    };
                    honest.lock().unwrap().failed.push(what);
                    continue;
                }
                let started = Instant::now();
                let checkout = client
                    .post(format!("{cart}/checkout"))
                    .bearer_auth(&token)
                    .json(&json!({ "payment_token": "tok_visa" }))
                    .send()
                    .await;
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                match checkout {
                    Ok(answer) if answer.status() == StatusCode::ACCEPTED => {
                        let body: Value = answer.json().await.unwrap_or(Value::Null);
                        let mut honest = honest.lock().unwrap();
                        honest.checkout_ms.push(elapsed);
                        if let Some(order_id) = body["order_id"].as_str() {
                            honest.orders.push(order_id.to_owned());
                        }
                    }
                    Ok(answer) => {
                        let status = answer.status();
                        let body = answer.text().await.unwrap_or_default();
                        honest
                            .lock()
                            .unwrap()
                            .failed
                            .push(format!("checkout: {status} {body}"));
                    }
                    Err(error) => honest
                        .lock()
                        .unwrap()
                        .failed
                        .push(format!("checkout: {error}")),
                }
                // A person between two purchases.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("an honest customer");
    }
    Arc::try_unwrap(honest)
        .expect("every customer is done")
        .into_inner()
        .unwrap()
}

/// Every attack at once, for about `seconds`; answers what the attackers were answered.
pub async fn attack(server: &Server, shop: &Shop, seconds: u64) -> Attack {
    let attack = Arc::new(Mutex::new(Attack::default()));
    let base = server.url("");
    let address: SocketAddr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the server's address");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();

    // Slowloris: 1,000 connections that send a request head a byte at a time.
    let slowloris = attack.clone();
    tasks.push(tokio::spawn(async move {
        let mut connections = Vec::new();
        for _ in 0..1_000 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            if socket
                .bind(SocketAddr::new(IpAddr::V4(SLOWLORIS_FROM), 0))
                .is_err()
            {
                break;
            }
            match socket.connect(address).await {
                Ok(mut stream) => {
                    let _ = stream
                        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                        .await;
                    connections.push(stream);
                }
                Err(_) => break,
            }
        }
        slowloris.lock().unwrap().slowloris_opened = connections.len() as u64;
        let mut closed = vec![false; connections.len()];
        while Instant::now() < deadline {
            for (index, stream) in connections.iter_mut().enumerate() {
                if !closed[index] && stream.write_all(b"X").await.is_err() {
                    closed[index] = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A connection the server closed or refused reads its end (or an answer).
        for (index, stream) in connections.iter_mut().enumerate() {
            if closed[index] {
                continue;
            }
            let mut buffer = [0u8; 64];
            if let Ok(Ok(read)) = tokio::time::timeout(
                Duration::from_millis(5),
                tokio::io::AsyncReadExt::read(stream, &mut buffer),
            )
            .await
            {
                closed[index] = read == 0
                    || buffer.starts_with(b"HTTP/1.1 503")
                    || buffer.starts_with(b"HTTP/1.1 408");
            }
        }
        slowloris.lock().unwrap().slowloris_closed = closed.iter().filter(|c| **c).count() as u64;
    }));

    // A burst of 5,000 product reads, 64 at once; then 1,000 waits for a made-up position at
    // once; then 200 maximal pages; all anonymous from one address.
    let burst = attack.clone();
    let product = shop.products[0].clone();
    let burst_base = base.clone();
    tasks.push(tokio::spawn(async move {
        let client = client_from(BURST_FROM, 64);
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let mut requests = Vec::new();
        for _ in 0..5_000 {
            let (client, url, burst, sem) = (
                client.clone(),
                format!("{burst_base}/products/{product}"),
                burst.clone(),
                sem.clone(),
            );
            requests.push(tokio::spawn(async move {
                let _permit = sem.acquire().await;
                send(client.get(url), &burst).await;
            }));
        }
        for request in requests {
            let _ = request.await;
        }
        let mut waits = Vec::new();
        for _ in 0..1_000 {
            let (client, url, burst) = (
                client.clone(),
                format!("{burst_base}/search?q=mug&min_position=999999999"),
                burst.clone(),
            );
            waits.push(tokio::spawn(async move {
                send(client.get(url), &burst).await;
            }));
        }
        for wait in waits {
            let _ = wait.await;
        }
        for index in 0..200 {
            let url = if index % 2 == 0 {
                format!("{burst_base}/search?limit=100&offset=9900")
            } else {
                format!("{burst_base}/events?limit=1000")
            };
            send(client.get(url), &burst).await;
        }
    }));

    // Login guessing: wrong passwords for an honest customer's email.
    let guessing = attack.clone();
    let email = shop.customers[0].email.clone();
    let guess_base = base.clone();
    tasks.push(tokio::spawn(async move {
        let client = client_from(BURST_FROM, 8);
        for index in 0..300 {
            let request = client.post(format!("{guess_base}/sessions")).json(
                &json!({ "email": email, "password": format!("guess number {index} of many") }),
            );
            send(request, &guessing).await;
        }
    }));

    // 200 orders paid with a token the gateway never answers, from the attacker's account.
    let slow = attack.clone();
    let token = shop.attacker.session.access_token.clone();
    let slow_product = shop.products[1].clone();
    let slow_base = base.clone();
    tasks.push(tokio::spawn(async move {
        let client = client_from(SLOW_ORDERS_FROM, 8);
        for _ in 0..200 {
            let request = client
                .post(format!("{slow_base}/orders"))
                .bearer_auth(&token)
                .json(&json!({
                    "lines": [{ "product_id": slow_product, "quantity": 999 }],
                    "payment_token": "tok_timeout",
                }));
            send(request, &slow).await;
            if Instant::now() >= deadline {
                break;
            }
        }
    }));

    for task in tasks {
        task.await.expect("an attacker");
    }
    Arc::try_unwrap(attack)
        .expect("every attacker is done")
        .into_inner()
        .unwrap()
}

/// Sends `request` and counts its answer (0 for none).
async fn send(request: reqwest::RequestBuilder, attack: &Mutex<Attack>) {
    match request.send().await {
        Ok(response) => attack.lock().unwrap().count(&response),
        Err(_) => *attack.lock().unwrap().statuses.entry(0).or_default() += 1,
    }
}

/// Waits until every order in `orders` is `CONFIRMED` (support staff reads them); answers those
/// that are not after `timeout`.
pub async fn unconfirmed(server: &Server, orders: &[String], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut waiting: Vec<String> = orders.to_vec();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for order_id in waiting {
            let status = match server
                .get(&format!("/orders/{order_id}"))
                .await
                .json::<Value>()
                .await
            {
                Ok(order) => order["status"].as_str().unwrap_or("").to_owned(),
                Err(_) => String::new(),
            };
            if status != "CONFIRMED" {
                still.push(order_id);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    waiting
}

/// The `p`-th percentile (0 to 100) of `values`.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
