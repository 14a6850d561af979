//! Test support (cargo feature `testing`): a real webhook receiver per test.
//!
//! [`WebhookReceiver`] runs `webhook_receiver.py` (started with `python3`) on a free port of
//! 127.0.0.1. It checks every delivery as a receiver following the standards would: the
//! signature with the `standardwebhooks` Python package, the body with the `cloudevents` Python
//! package (version 2); so a test proves that mercato's deliveries verify and parse with
//! libraries it did not write. It records each delivery, and can be told to fail or redirect the
//! next ones.
//!
//! When `python3` or one of the packages is missing a test that asks for a receiver prints a loud
//! `SKIPPED` line (not captured by the test harness) and gets `None`; with
//! `MERCATO_REQUIRE_SERVICES=1` (as CI sets it) it panics instead, as the other services of the
//! tests do ([`mail::testing::skip_or_fail`]). `scripts/test-setup` is where the packages get
//! installed (`python3 -m pip install standardwebhooks cloudevents`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::Child;

pub use mail::testing::{services_required, skip_or_fail};

/// The receiver script, written into each receiver's temporary directory.
const RECEIVER_SCRIPT: &str = include_str!("webhook_receiver.py");
/// How long a control request may take (the receiver is local: far more than enough).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// A real webhook receiver for one test, on a free port of 127.0.0.1 (see the module
/// documentation). Every path but `/_control`, `/_received` and `/_attempts` is a delivery
/// endpoint: a delivery is answered 204 when its signature verifies (with the secret of
/// [`WebhookReceiver::set_secret`]) and it parses as a CloudEvent, 400 otherwise, unless told to
/// fail ([`WebhookReceiver::fail_next`]) or redirect ([`WebhookReceiver::redirect_next`]).
///
/// A record of a delivery is a JSON object: `path`, `method`, `webhook_id`, `verified` (bool),
/// `error` (why it was refused, or null), the CloudEvent's `type`, `id`, `subject`, `position`
/// (the extension attribute, as a string) and `data`, its other `extensions`, the `status`
/// answered and the request's `headers` (names in lowercase). The process is killed when this is
/// dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    process: Child,
    port: u16,
    client: reqwest::Client,
    /// The script and its log.
    directory: TempDir,
}

impl WebhookReceiver {
    /// Starts a receiver and waits until it listens. `None` when the test must be skipped
    /// (`python3`, standardwebhooks or cloudevents missing; see the module documentation).
    pub async fn start(test_name: &str) -> Option<Self> {
        let peer = mail::testing::PythonPeer {
            test_name,
            what: "the webhook receiver",
            script_name: "webhook_receiver.py",
            script: RECEIVER_SCRIPT,
            directories: &[],
            args: &[],
            missing: "a Python package of the webhook receiver is missing (python3 -m pip install standardwebhooks cloudevents, as scripts/test-setup does)",
        };
        let started = peer.start().await?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(CONTROL_TIMEOUT)
            .build()
            .unwrap_or_else(|error| panic!("{test_name}: cannot build an HTTP client: {error}"));
        Some(Self {
            process: started.process,
            port: started.port,
            client,
            directory: started.directory,
        })
    }

    /// `http://127.0.0.1:PORT{path}`: the URL of a delivery endpoint (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The port the receiver listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The receiver's log (its standard error: one line per request, and any Python error).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("peer.log")).unwrap_or_default()
    }

    /// Verifies deliveries with `secret` (`whsec_` and the base64 of the key) from now on.
    pub async fn set_secret(&self, secret: &str) {
        self.control(json!({ "secret": secret })).await;
    }

    /// Answers the next `n` deliveries with `status` (a 5xx to make the sender retry, a 4xx to
    /// make it give up), whatever they carry.
    pub async fn fail_next(&self, n: usize, status: u16) {
        self.control(json!({ "fail_next": n, "fail_status": status }))
            .await;
    }

    /// Answers the next `n` deliveries (after any told to fail) with a 302 to `to`.
    pub async fn redirect_next(&self, n: usize, to: &str) {
        self.control(json!({ "redirect_next": n, "redirect_to": to }))
            .await;
    }

    /// The records of the deliveries answered 2xx so far, in arrival order.
    pub async fn received(&self) -> Vec<Value> {
        self.records("/_received").await
    }

    /// The records of every delivery so far, each with the `status` answered, in arrival order.
    pub async fn attempts(&self) -> Vec<Value> {
        self.records("/_attempts").await
    }

    /// Waits until at least `count` deliveries were accepted and returns them all; panics (with
    /// every attempt) when they have not been within `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let received = self.received().await;
            if received.len() >= count {
                return received;
            }
            if started.elapsed() >= timeout {
                let attempts = self.attempts().await;
                panic!(
                    "expected {count} accepted webhook deliveries within {timeout:?}, {} arrived; every attempt:\n{}",
                    received.len(),
                    serde_json::to_string_pretty(&attempts).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn control(&self, changes: Value) {
        let response = self
            .client
            .post(self.url("/_control"))
            .json(&changes)
            .send()
            .await
            .unwrap_or_else(|error| panic!("cannot reach the webhook receiver: {error}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "the webhook receiver refused {changes}: {status} {text}"
        );
    }

    async fn records(&self, path: &str) -> Vec<Value> {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("cannot reach the webhook receiver: {error}"));
        let status = response.status();
        assert!(
            status.is_success(),
            "the webhook receiver answered {path} with {status}"
        );
        response
            .json()
            .await
            .unwrap_or_else(|error| panic!("the webhook receiver's {path} is not JSON: {error}"))
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
        // Reap the process now rather than leave it to the runtime.
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    const KEY: &[u8] = b"a test key of the webhook receiver";

    fn secret() -> String {
        format!("whsec_{}", STANDARD.encode(KEY))
    }

    /// The Standard Webhooks signature of `body`: `v1,` and the base64 of HMAC-SHA256 over
    /// `{id}.{timestamp}.{body}`.
    fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn event(id: &str, position: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "specversion": "1.0",
            "type": "com.mercato.order.placed",
            "source": "/mercato",
            "id": id,
            "subject": "order-1",
            "time": "2026-01-02T03:04:05.678Z",
            "datacontenttype": "application/json",
            "position": position.to_string(),
            "data": { "order": "order-1", "total": "12.50" },
        }))
        .unwrap()
    }

    async fn deliver(
        receiver: &WebhookReceiver,
        path: &str,
        webhook_id: &str,
        key: &[u8],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(receiver.url(path))
            .header("content-type", "application/cloudevents+json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(key, webhook_id, timestamp, &body))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_receiver_verifies_parses_and_records() {
        let Some(receiver) =
            WebhookReceiver::start("the_receiver_verifies_parses_and_records").await
        else {
            return;
        };
        receiver.set_secret(&secret()).await;

        let accepted = deliver(&receiver, "/hooks/a", "msg_1", KEY, event("evt-1", 7)).await;
        assert_eq!(accepted.status(), reqwest::StatusCode::NO_CONTENT);
        let received = receiver.wait_for(1, Duration::from_secs(10)).await;
        let record = &received[0];
        assert_eq!(record["path"], "/hooks/a");
        assert_eq!(record["webhook_id"], "msg_1");
        assert_eq!(record["verified"], true);
        assert_eq!(record["error"], Value::Null);
        assert_eq!(record["type"], "com.mercato.order.placed");
        assert_eq!(record["id"], "evt-1");
        assert_eq!(record["subject"], "order-1");
        assert_eq!(record["position"], "7");
        assert_eq!(record["data"]["total"], "12.50");

        let forged = deliver(
            &receiver,
            "/hooks/a",
            "msg_2",
            b"another key",
            event("evt-2", 8),
        )
        .await;
        assert_eq!(forged.status(), reqwest::StatusCode::BAD_REQUEST);

        receiver.fail_next(1, 503).await;
        let failed = deliver(&receiver, "/hooks/a", "msg_3", KEY, event("evt-3", 9)).await;
        assert_eq!(failed.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);

        receiver.redirect_next(1, &receiver.url("/target")).await;
        let redirected = deliver(&receiver, "/hooks/a", "msg_3", KEY, event("evt-3", 9)).await;
        assert_eq!(redirected.status(), reqwest::StatusCode::FOUND);
        assert_eq!(
            redirected.headers()["location"].to_str().unwrap(),
            receiver.url("/target")
        );
        let retried = deliver(&receiver, "/target", "msg_3", KEY, event("evt-3", 9)).await;
        assert_eq!(retried.status(), reqwest::StatusCode::NO_CONTENT);

        let received = receiver.received().await;
        let ids: Vec<&str> = received
            .iter()
            .map(|record| record["webhook_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["msg_1", "msg_3"]);
        assert_eq!(received[1]["path"], "/target");

        let attempts = receiver.attempts().await;
        let seen: Vec<(&str, u64, bool)> = attempts
            .iter()
            .map(|record| {
                (
                    record["path"].as_str().unwrap(),
                    record["status"].as_u64().unwrap(),
                    record["verified"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("/hooks/a", 204, true),
                ("/hooks/a", 400, false),
                ("/hooks/a", 503, true),
                ("/hooks/a", 302, true),
                ("/target", 204, true),
            ]
        );
        assert!(
            attempts[1]["error"]
                .as_str()
                .unwrap()
                .contains("verification failed"),
            "{}",
            attempts[1]
        );
    }
}
