//! The Payment aggregate: one payment per order, keyed by the order id, so that an order can
//! never be charged twice. A success that arrives after a timeout is recorded, then refunded.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::FieldError;
use crate::money::Money;

pub const PAYMENT_TOKEN_MAX_CHARS: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequested {
    pub order_id: Uuid,
    #[serde(rename = "amount_minor")]
    pub amount: Money,
    pub payment_token: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub order_id: Uuid,
    #[serde(rename = "amount_minor")]
    pub amount: Money,
    /// The gateway's id for the charge.
    pub charge_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: Uuid,
    pub reason: String,
}

/// The gateway did not answer in time; the order is cancelled and any late charge refunded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentTimedOut {
    pub order_id: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    #[serde(rename = "amount_minor")]
    pub amount: Money,
    pub refund_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentRequested(PaymentRequested),
    PaymentSucceeded(PaymentSucceeded),
    PaymentFailed(PaymentFailed),
    PaymentTimedOut(PaymentTimedOut),
    PaymentRefunded(PaymentRefunded),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentCommand {
    RequestPayment {
        order_id: Uuid,
        amount: Money,
        payment_token: String,
    },
    RecordSuccess {
        charge_id: String,
    },
    RecordFailure {
        reason: String,
    },
    RecordTimeout,
    RecordRefund {
        refund_id: String,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    #[default]
    NotRequested,
    Requested,
    Succeeded,
    Failed,
    TimedOut,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::NotRequested => "NOT_REQUESTED",
            PaymentStatus::Requested => "REQUESTED",
            PaymentStatus::Succeeded => "SUCCEEDED",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::TimedOut => "TIMED_OUT",
            PaymentStatus::Refunded => "REFUNDED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("payment was never requested")]
    NotRequested,
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("a different payment was already requested for this order")]
    AlreadyRequested,
    #[error("the payment already ended as {}", .0.as_str())]
    AlreadySettled(PaymentStatus),
    #[error("only a succeeded payment can be refunded; this one is {}", .0.as_str())]
    NotCharged(PaymentStatus),
}

/// A payment token is the gateway's stand-in for a card. Raw card numbers are refused.
pub fn validate_payment_token(token: &str) -> Result<(), FieldError> {
    let field = "payment_token";
    if token.is_empty() || token.chars().count() > PAYMENT_TOKEN_MAX_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {PAYMENT_TOKEN_MAX_CHARS} characters"),
        ));
    }
    let digits: String = token.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if (12..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(
            field,
            "raw card numbers are not accepted: send a token from the payment gateway, such as tok_visa",
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub order_id: Option<Uuid>,
    pub amount: Money,
    pub payment_token: String,
    pub status: PaymentStatus,
    pub charge_id: Option<String>,
    /// True once the gateway was told of a timeout: a later success must be refunded.
    pub timed_out: bool,
}

impl Payment {
    fn decide(&self, command: PaymentCommand) -> Result<Option<PaymentEvent>, PaymentError> {
        use PaymentStatus::*;
        let Some(order_id) = self.order_id else {
            let PaymentCommand::RequestPayment {
                order_id,
                amount,
                payment_token,
            } = command
            else {
                return Err(PaymentError::NotRequested);
            };
            if !amount.is_positive() {
                return Err(FieldError::new("amount", "must be greater than 0").into());
            }
            validate_payment_token(&payment_token)?;
            return Ok(Some(PaymentEvent::PaymentRequested(PaymentRequested {
                order_id,
                amount,
                payment_token,
            })));
        };
        let event = match (command, self.status) {
            (
                PaymentCommand::RequestPayment {
                    order_id: requested,
                    amount,
                    payment_token,
                },
                _,
            ) => {
                if requested == order_id
                    && amount == self.amount
                    && payment_token == self.payment_token
                {
                    return Ok(None); // the same request again: the order id is the idempotency key
                }
                return Err(PaymentError::AlreadyRequested);
            }
            (PaymentCommand::RecordSuccess { .. }, Succeeded | Refunded) => return Ok(None),
            (PaymentCommand::RecordSuccess { charge_id }, Requested | TimedOut) => {
                PaymentEvent::PaymentSucceeded(PaymentSucceeded {
                    order_id,
                    amount: self.amount,
                    charge_id,
                })
            }
            (PaymentCommand::RecordFailure { .. }, Failed) => return Ok(None),
            (PaymentCommand::RecordFailure { reason }, Requested | TimedOut) => {
                PaymentEvent::PaymentFailed(PaymentFailed { order_id, reason })
            }
            (PaymentCommand::RecordTimeout, TimedOut) => return Ok(None),
            (PaymentCommand::RecordTimeout, Requested) => {
                PaymentEvent::PaymentTimedOut(PaymentTimedOut { order_id })
            }
            (PaymentCommand::RecordRefund { .. }, Refunded) => return Ok(None),
            (PaymentCommand::RecordRefund { refund_id }, Succeeded) => {
                PaymentEvent::PaymentRefunded(PaymentRefunded {
                    order_id,
                    amount: self.amount,
                    refund_id,
                })
            }
            (PaymentCommand::RecordRefund { .. }, status) => {
                return Err(PaymentError::NotCharged(status));
            }
            (_, status) => return Err(PaymentError::AlreadySettled(status)),
        };
        Ok(Some(event))
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaymentEvent::PaymentRequested(requested) => {
                self.order_id = Some(requested.order_id);
                self.amount = requested.amount;
                self.payment_token = requested.payment_token;
                self.status = PaymentStatus::Requested;
            }
            PaymentEvent::PaymentSucceeded(succeeded) => {
                self.charge_id = Some(succeeded.charge_id);
                self.status = PaymentStatus::Succeeded;
            }
            PaymentEvent::PaymentFailed(_) => self.status = PaymentStatus::Failed,
            PaymentEvent::PaymentTimedOut(_) => {
                self.timed_out = true;
                self.status = PaymentStatus::TimedOut;
            }
            PaymentEvent::PaymentRefunded(_) => self.status = PaymentStatus::Refunded,
        }
    }
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            PaymentEvent::PaymentRequested(_) => "PaymentRequested",
            PaymentEvent::PaymentSucceeded(_) => "PaymentSucceeded",
            PaymentEvent::PaymentFailed(_) => "PaymentFailed",
            PaymentEvent::PaymentTimedOut(_) => "PaymentTimedOut",
            PaymentEvent::PaymentRefunded(_) => "PaymentRefunded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::current_schema_version(&self.event_type()).to_string()
    }
}
