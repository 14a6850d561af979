//! The payment gateway port, and the built-in test gateway with its durable ledger.
//!
//! A gateway charges a payment token once per order: the order id is the idempotency key, so
//! asking again for the same order returns the first answer and never charges twice. A gateway
//! that does not answer is not an error: the saga bounds every call by the payment deadline.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use domain::Money;
use projections::readdb::ReadDb;
use sqlx::Row;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::SagaError;

/// What the saga asks the gateway to charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The idempotency key: one charge per order, however often it is asked.
    pub order_id: Uuid,
    pub amount: Money,
    pub payment_token: String,
}

/// What the saga (or support, for a part of an order) asks the gateway to refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    pub order_id: Uuid,
    /// The gateway's id of the charge to refund (`PaymentSucceeded`'s `charge_id`).
    pub charge_id: String,
    pub amount: Money,
    /// The refund's idempotency key: one refund per key, however often it is asked.
    pub key: String,
}

/// The gateway's answer to a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved { charge_id: String },
    Declined { reason: String },
}

/// A charge the gateway made after the saga stopped waiting for it (delivered like a webhook).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateCharge {
    pub order_id: Uuid,
    pub charge_id: String,
}

/// The payment gateway port. The test gateway implements it; a real gateway is another adapter.
#[async_trait]
pub trait PaymentGateway: Send + Sync + fmt::Debug {
    /// Charges the order's token, or answers what the first charge of this order answered.
    /// May never complete (a gateway that does not answer): callers bound it with a timeout.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, SagaError>;

    /// Refunds `request.amount` of the order's charge and answers the refund's id. The request's
    /// key is the refund's idempotency key: the same key asked again answers the first refund's
    /// id and refunds once; another key is another refund (an order may be refunded in parts).
    async fn refund(&self, request: &RefundRequest) -> Result<String, SagaError>;

    /// Charges that arrive after the saga stopped waiting. The saga takes the receiver once.
    fn late_charges(&self) -> Option<mpsc::UnboundedReceiver<LateCharge>> {
        None
    }
}

/// Statements that create the test gateway's ledger; idempotent. One ledger row per order (its
/// charge), one refund row per order and refund key.
const LEDGER_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS test_gateway_ledger (
        order_id TEXT PRIMARY KEY,
        payment_token TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        charge_id TEXT,
        refund_id TEXT,
        charge_requests BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS test_gateway_refunds (
        order_id TEXT NOT NULL,
        refund_key TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        refund_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (order_id, refund_key))",
];

/// The test tokens: approved, declined, never answers.
pub const TOKEN_APPROVED: &str = "tok_visa";
pub const TOKEN_DECLINED: &str = "tok_chargeDeclined";
pub const TOKEN_TIMEOUT: &str = "tok_timeout";
/// Does not answer the charge call, then charges anyway after [`TestGatewayOptions::late_after`]
/// and reports the charge as a [`LateCharge`]: the case a saga must refund.
pub const TOKEN_LATE_SUCCESS: &str = "tok_lateSuccess";

/// How the test gateway behaves.
#[derive(Clone, Copy, Debug)]
pub struct TestGatewayOptions {
    /// How long each charge and refund takes to answer.
    pub latency: Duration,
    /// How long after the charge call a `tok_lateSuccess` charge is made.
    pub late_after: Duration,
}

impl Default for TestGatewayOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            late_after: Duration::from_secs(35),
        }
    }
}

/// One row of the test gateway's ledger: what it was asked and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub order_id: Uuid,
    pub payment_token: String,
    pub amount_minor: i64,
    /// `charged`, `declined` or `pending` (asked, not answered).
    pub outcome: String,
    pub charge_id: Option<String>,
    /// The id of the order's first refund (`None` while nothing of the charge was refunded);
    /// every refund is a row of [`refunds`].
    pub refund_id: Option<String>,
    /// How much of the charge was refunded, all refunds together.
    pub refunded_minor: i64,
    /// How many times a charge of this order was asked (retries after a crash ask again).
    pub charge_requests: i64,
}

/// One refund the test gateway made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundEntry {
    pub order_id: Uuid,
    /// The refund's idempotency key.
    pub refund_key: String,
    pub amount_minor: i64,
    pub refund_id: String,
}

/// The built-in gateway of CONTRACT.md's test tokens. Its ledger is a table of the read-model
/// database, so tests (and auditors of a test run) can prove that every order was charged at
/// most once and that every charge of a cancelled order was refunded.
#[derive(Debug)]
pub struct TestGateway {
    db: ReadDb,
    options: TestGatewayOptions,
    late_sender: mpsc::UnboundedSender<LateCharge>,
    late_receiver: Mutex<Option<mpsc::UnboundedReceiver<LateCharge>>>,
}

impl TestGateway {
    /// Opens the ledger (creating its table) and re-announces late charges made before a
    /// restart that were never refunded, so that none is left charged on a cancelled order.
    pub async fn open(db: ReadDb, options: TestGatewayOptions) -> Result<Arc<Self>, SagaError> {
        db.ensure_schema(LEDGER_SCHEMA).await?;
        let (late_sender, late_receiver) = mpsc::unbounded_channel();
        let gateway = Arc::new(TestGateway {
            db,
            options,
            late_sender,
            late_receiver: Mutex::new(Some(late_receiver)),
        });
        let unrefunded = sqlx::query(
            "SELECT order_id, charge_id FROM test_gateway_ledger
             WHERE payment_token = $1 AND outcome = 'charged' AND refund_id IS NULL",
        )
        .bind(TOKEN_LATE_SUCCESS)
        .fetch_all(gateway.db.pool())
        .await?;
        for row in unrefunded {
            let order_id: String = row.try_get(0)?;
            let charge_id: String = row.try_get(1)?;
            if let Ok(order_id) = Uuid::parse_str(&order_id) {
                let _ = gateway.late_sender.send(LateCharge {
                    order_id,
                    charge_id,
                });
            }
        }
        let pending_late = sqlx::query(
            "SELECT order_id FROM test_gateway_ledger WHERE payment_token = $1 AND outcome = 'pending'",
        )
        .bind(TOKEN_LATE_SUCCESS)
        .fetch_all(gateway.db.pool())
        .await?;
        for row in pending_late {
            let order_id: String = row.try_get(0)?;
            if let Ok(order_id) = Uuid::parse_str(&order_id) {
                gateway.schedule_late_charge(order_id);
            }
        }
        Ok(gateway)
    }

    /// The whole ledger, by order id.
    pub async fn ledger(&self) -> Result<Vec<LedgerEntry>, SagaError> {
        ledger(&self.db).await
    }

    fn schedule_late_charge(self: &Arc<Self>, order_id: Uuid) {
        let gateway = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(gateway.options.late_after).await;
            let charge_id = charge_id_of(order_id);
            let charged = sqlx::query(
                "UPDATE test_gateway_ledger SET outcome = 'charged', charge_id = $1, updated_at = $2
                 WHERE order_id = $3 AND outcome = 'pending'",
            )
            .bind(&charge_id)
            .bind(now_text())
            .bind(order_id.to_string())
            .execute(gateway.db.pool())
            .await;
            match charged {
                Ok(_) => {
                    tracing::info!(%order_id, %charge_id, "test gateway: late charge made");
                    let _ = gateway.late_sender.send(LateCharge {
                        order_id,
                        charge_id,
                    });
                }
                Err(error) => tracing::warn!(%order_id, %error, "test gateway: late charge failed"),
            }
        });
    }
}

/// The ledger of the test gateway in `db` (empty if it never ran).
pub async fn ledger(db: &ReadDb) -> Result<Vec<LedgerEntry>, SagaError> {
    db.ensure_schema(LEDGER_SCHEMA).await?;
    let rows = sqlx::query(
        "SELECT l.order_id, l.payment_token, l.amount_minor, l.outcome, l.charge_id, l.refund_id,
             l.charge_requests,
             (SELECT CAST(COALESCE(SUM(r.amount_minor), 0) AS BIGINT) FROM test_gateway_refunds r
              WHERE r.order_id = l.order_id)
         FROM test_gateway_ledger l ORDER BY l.order_id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            let order_id: String = row.try_get(0)?;
            Ok(LedgerEntry {
                order_id: Uuid::parse_str(&order_id)
                    .map_err(|error| SagaError::Storage(error.to_string()))?,
                payment_token: row.try_get(1)?,
                amount_minor: row.try_get(2)?,
                outcome: row.try_get(3)?,
                charge_id: row.try_get(4)?,
                refund_id: row.try_get(5)?,
                charge_requests: row.try_get(6)?,
                refunded_minor: row.try_get(7)?,
            })
        })
        .collect()
}

/// Every refund of the test gateway in `db`, by order and in the order they were made.
pub async fn refunds(db: &ReadDb) -> Result<Vec<RefundEntry>, SagaError> {
    db.ensure_schema(LEDGER_SCHEMA).await?;
    let rows = sqlx::query(
        "SELECT order_id, refund_key, amount_minor, refund_id FROM test_gateway_refunds
         ORDER BY order_id, created_at, refund_key",
    )
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            let order_id: String = row.try_get(0)?;
            Ok(RefundEntry {
                order_id: Uuid::parse_str(&order_id)
                    .map_err(|error| SagaError::Storage(error.to_string()))?,
                refund_key: row.try_get(1)?,
                amount_minor: row.try_get(2)?,
                refund_id: row.try_get(3)?,
            })
        })
        .collect()
}

/// The id of the refund of `order_id` with key `key`: the same for the same key.
fn refund_id_of(order_id: Uuid, key: &str) -> String {
    format!("re_{}", Uuid::new_v5(&order_id, key.as_bytes()).simple())
}

fn charge_id_of(order_id: Uuid) -> String {
    format!("ch_{}", order_id.simple())
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339()
}

#[async_trait]
impl PaymentGateway for Arc<TestGateway> {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, SagaError> {
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
        let outcome = match request.payment_token.as_str() {
            TOKEN_APPROVED => "charged",
            TOKEN_TIMEOUT | TOKEN_LATE_SUCCESS => "pending",
            _ => "declined",
        };
        let charge_id = (outcome == "charged").then(|| charge_id_of(request.order_id));
        let now = now_text();
        // One row per order: the first request decides, later ones only count.
        let row = sqlx::query(
            "INSERT INTO test_gateway_ledger (order_id, payment_token, amount_minor, outcome,
                 charge_id, refund_id, charge_requests, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, NULL, 1, $6, $6)
             ON CONFLICT (order_id) DO UPDATE SET
                 charge_requests = test_gateway_ledger.charge_requests + 1,
                 updated_at = excluded.updated_at
             RETURNING payment_token, amount_minor, outcome, charge_id, charge_requests",
        )
        .bind(request.order_id.to_string())
        .bind(&request.payment_token)
        .bind(request.amount.minor())
        .bind(outcome)
        .bind(&charge_id)
        .bind(&now)
        .fetch_one(self.db.pool())
        .await?;
        let stored_token: String = row.try_get(0)?;
        let stored_amount: i64 = row.try_get(1)?;
        let stored_outcome: String = row.try_get(2)?;
        let stored_charge: Option<String> = row.try_get(3)?;
        let requests: i64 = row.try_get(4)?;
        if stored_token != request.payment_token || stored_amount != request.amount.minor() {
            return Err(SagaError::Gateway(format!(
                "order {} was already charged with other parameters (idempotency key reused)",
                request.order_id
            )));
        }
        match (stored_outcome.as_str(), stored_charge) {
            ("charged", Some(charge_id)) => Ok(ChargeOutcome::Approved { charge_id }),
            ("declined", _) => Ok(ChargeOutcome::Declined {
                reason: if stored_token == TOKEN_DECLINED {
                    "card_declined".to_owned()
                } else {
                    "unknown payment token".to_owned()
                },
            }),
            _ => {
                if requests == 1 && stored_token == TOKEN_LATE_SUCCESS {
                    self.schedule_late_charge(request.order_id);
                }
                // Never answers: the caller's deadline ends the wait.
                std::future::pending().await
            }
        }
    }

    async fn refund(&self, request: &RefundRequest) -> Result<String, SagaError> {
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
        let order_id = request.order_id.to_string();
        let charge = sqlx::query(
            "SELECT amount_minor FROM test_gateway_ledger
             WHERE order_id = $1 AND charge_id = $2 AND outcome = 'charged'",
        )
        .bind(&order_id)
        .bind(&request.charge_id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(charge) = charge else {
            return Err(SagaError::Gateway(format!(
                "no charge {} of order {order_id} to refund",
                request.charge_id
            )));
        };
        let charged: i64 = charge.try_get(0)?;
        let earlier = |row: sqlx::any::AnyRow| -> Result<String, SagaError> {
            let amount: i64 = row.try_get(0)?;
            if amount != request.amount.minor() {
                return Err(SagaError::Gateway(format!(
                    "refund {} of order {order_id} was already made for another amount (idempotency key reused)",
                    request.key
                )));
            }
            Ok(row.try_get(1)?)
        };
        let find = "SELECT amount_minor, refund_id FROM test_gateway_refunds
                    WHERE order_id = $1 AND refund_key = $2";
        if let Some(row) = sqlx::query(find)
            .bind(&order_id)
            .bind(&request.key)
            .fetch_optional(self.db.pool())
            .await?
        {
            return earlier(row);
        }
        if !request.amount.is_positive() {
            return Err(SagaError::Gateway(format!(
                "a refund must be of more than 0, not {}",
                request.amount.minor()
            )));
        }
        let refunded: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM test_gateway_refunds
             WHERE order_id = $1",
        )
        .bind(&order_id)
        .fetch_one(self.db.pool())
        .await?
        .try_get(0)?;
        if refunded + request.amount.minor() > charged {
            return Err(SagaError::Gateway(format!(
                "refunding {} of order {order_id} would refund more than its charge of {charged} ({refunded} refunded already)",
                request.amount.minor()
            )));
        }
        let refund_id = refund_id_of(request.order_id, &request.key);
        let now = now_text();
        // A concurrent refund with the same key inserts first: its row is the answer.
        sqlx::query(
            "INSERT INTO test_gateway_refunds (order_id, refund_key, amount_minor, refund_id, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (order_id, refund_key) DO NOTHING",
        )
        .bind(&order_id)
        .bind(&request.key)
        .bind(request.amount.minor())
        .bind(&refund_id)
        .bind(&now)
        .execute(self.db.pool())
        .await?;
        let row = sqlx::query(find)
            .bind(&order_id)
            .bind(&request.key)
            .fetch_one(self.db.pool())
            .await?;
        let refund_id = earlier(row)?;
        sqlx::query(
            "UPDATE test_gateway_ledger SET refund_id = COALESCE(refund_id, $1), updated_at = $2
             WHERE order_id = $3",
        )
        .bind(&refund_id)
        .bind(&now)
        .bind(&order_id)
        .execute(self.db.pool())
        .await?;
        Ok(refund_id)
    }

    fn late_charges(&self) -> Option<mpsc::UnboundedReceiver<LateCharge>> {
        match self.late_receiver.lock() {
            Ok(mut receiver) => receiver.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}
