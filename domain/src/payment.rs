//! The Payment aggregate: one payment per order, keyed by the order id, so that an order can
//! never be charged twice. A success that arrives after a timeout is recorded, then refunded.

use std::collections::BTreeMap;

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
    /// Where the payment token is kept (the vault's reference); empty for a payment requested
    /// before payment tokens left the log.
    pub payment_ref: String,
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

/// Staff asked for a refund of `amount`; the gateway is asked next, and `PaymentRefunded` (or
/// `RefundFailed`) records its answer. Until then the amount counts as refunded, so two refunds
/// asked at once never exceed what was captured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequested {
    pub order_id: Uuid,
    pub refund_id: String,
    #[serde(rename = "amount_minor")]
    pub amount: Money,
    pub reason: Option<String>,
}

/// The gateway refused a requested refund; its amount may be asked for again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundFailed {
    pub order_id: Uuid,
    pub refund_id: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentRequested(PaymentRequested),
    PaymentSucceeded(PaymentSucceeded),
    PaymentFailed(PaymentFailed),
    PaymentTimedOut(PaymentTimedOut),
    PaymentRefunded(PaymentRefunded),
    RefundRequested(RefundRequested),
    RefundFailed(RefundFailed),
}

/// The most refunds one payment takes.
pub const REFUNDS_MAX: usize = 50;
/// The prefix of the charge id of a payment staff recorded (a bank transfer received).
pub const RECEIVED_PREFIX: &str = "received:";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentCommand {
    RequestPayment {
        order_id: Uuid,
        amount: Money,
        payment_ref: String,
    },
    RecordSuccess {
        charge_id: String,
    },
    RecordFailure {
        reason: String,
    },
    RecordTimeout,
    /// Records a refund the gateway made: a requested one (by its id), or, with a new id, the
    /// refund of what is left when a charged order is cancelled.
    RecordRefund {
        refund_id: String,
        amount: Money,
    },
    RequestRefund {
        refund_id: String,
        amount: Money,
        reason: Option<String>,
    },
    FailRefund {
        refund_id: String,
        reason: String,
    },
    /// Staff received the payment another way (a bank transfer): the amount must be the order's.
    RecordReceived {
        reference: String,
        amount: Money,
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
    #[error("refunded never exceeds captured: {asked} asked, {left} left to refund")]
    ExceedsCaptured { asked: Money, left: Money },
    #[error("a payment takes at most {REFUNDS_MAX} refunds")]
    TooManyRefunds,
    #[error("the payment to record is the order's total, {0}")]
    WrongAmount(Money),
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

/// The longest vault reference accepted.
pub const PAYMENT_REF_MAX_CHARS: usize = 128;

/// A vault reference names where a payment token is kept: 1 to 128 printable ASCII characters.
pub fn validate_payment_ref(payment_ref: &str) -> Result<(), FieldError> {
    if payment_ref.is_empty()
        || payment_ref.len() > PAYMENT_REF_MAX_CHARS
        || !payment_ref.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(FieldError::new(
            "payment_ref",
            format!("must be 1 to {PAYMENT_REF_MAX_CHARS} printable ASCII characters"),
        ));
    }
    Ok(())
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub order_id: Option<Uuid>,
    /// In minor units, as every money field a person or a script reads (`*_minor`); the old
    /// name is read from snapshots written before.
    #[serde(rename = "amount_minor", alias = "amount")]
    pub amount: Money,
    /// The vault's reference to the token. A snapshot written before tokens left the log has
    /// `payment_token` instead, which is not read: such a payment's reference is empty, as its
    /// upcast `PaymentRequested` says.
    #[serde(default)]
    pub payment_ref: String,
    pub status: PaymentStatus,
    pub charge_id: Option<String>,
    /// True once the gateway was told of a timeout: a later success must be refunded.
    pub timed_out: bool,
    /// What was refunded, and what is asked and not yet answered, by refund id.
    #[serde(default)]
    pub refunded: Money,
    #[serde(default)]
    pub refunds: BTreeMap<String, RefundState>,
}

/// Where one refund stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundState {
    #[serde(rename = "amount_minor")]
    pub amount: Money,
    /// `None` while the gateway has not answered; then whether it refunded.
    pub refunded: Option<bool>,
}

impl Payment {
    /// What was captured and is not refunded nor asked to be.
    pub fn refundable(&self) -> Money {
        // A fully refunded payment has nothing left (a snapshot of one written before partial
        // refunds has no `refunded` amount to subtract from).
        if self.status != PaymentStatus::Succeeded {
            return Money::ZERO;
        }
        let pending = self
            .refunds
            .values()
            .filter(|refund| refund.refunded.is_none())
            .fold(Money::ZERO, |sum, refund| {
                sum.checked_add(refund.amount).unwrap_or(sum)
            });
        self.amount
            .checked_sub(self.refunded)
            .and_then(|left| left.checked_sub(pending))
            .filter(|left| !left.is_negative())
            .unwrap_or(Money::ZERO)
    }

    /// The refunds asked and not yet answered by the gateway.
    pub fn pending_refunds(&self) -> impl Iterator<Item = (&String, Money)> {
        self.refunds
            .iter()
            .filter(|(_, refund)| refund.refunded.is_none())
            .map(|(id, refund)| (id, refund.amount))
    }
}

impl Payment {
    fn decide(&self, command: PaymentCommand) -> Result<Option<PaymentEvent>, PaymentError> {
        use PaymentStatus::*;
        let Some(order_id) = self.order_id else {
            let PaymentCommand::RequestPayment {
                order_id,
                amount,
                payment_ref,
            } = command
            else {
                return Err(PaymentError::NotRequested);
            };
            if !amount.is_positive() {
                return Err(FieldError::new("amount", "must be greater than 0").into());
            }
            return Ok(Some(PaymentEvent::PaymentRequested(PaymentRequested {
                order_id,
                amount,
                payment_ref,
            })));
        };
        let event = match (command, self.status) {
            (
                PaymentCommand::RequestPayment {
                    order_id: requested,
                    amount,
                    payment_ref,
                },
                _,
            ) => {
                if requested == order_id && amount == self.amount && payment_ref == self.payment_ref
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
            (PaymentCommand::RecordRefund { refund_id, amount }, Succeeded | Refunded) => {
                match self.refunds.get(&refund_id) {
                    Some(RefundState {
                        refunded: Some(_), ..
                    }) => return Ok(None),
                    // A requested refund: its amount was reserved when it was asked.
                    Some(requested) => PaymentEvent::PaymentRefunded(PaymentRefunded {
                        order_id,
                        amount: requested.amount,
                        refund_id,
                    }),
                    None => {
                        self.check_refund(amount)?;
                        PaymentEvent::PaymentRefunded(PaymentRefunded {
                            order_id,
                            amount,
                            refund_id,
                        })
                    }
                }
            }
            (PaymentCommand::RequestRefund { refund_id, .. }, _)
                if self.refunds.contains_key(&refund_id) =>
            {
                return Ok(None);
            }
            (
                PaymentCommand::RequestRefund {
                    refund_id,
                    amount,
                    reason,
                },
                Succeeded,
            ) => {
                self.check_refund(amount)?;
                PaymentEvent::RefundRequested(RefundRequested {
                    order_id,
                    refund_id,
                    amount,
                    reason,
                })
            }
            (PaymentCommand::FailRefund { refund_id, reason }, _) => {
                match self.refunds.get(&refund_id) {
                    Some(RefundState { refunded: None, .. }) => {
                        PaymentEvent::RefundFailed(RefundFailed {
                            order_id,
                            refund_id,
                            reason,
                        })
                    }
                    _ => return Ok(None),
                }
            }
            (
                PaymentCommand::RecordRefund { .. } | PaymentCommand::RequestRefund { .. },
                status,
            ) => {
                return Err(PaymentError::NotCharged(status));
            }
            (PaymentCommand::RecordReceived { reference, amount }, Requested) => {
                if self.timed_out {
                    return Err(PaymentError::AlreadySettled(PaymentStatus::TimedOut));
                }
                if amount != self.amount {
                    return Err(PaymentError::WrongAmount(self.amount));
                }
                PaymentEvent::PaymentSucceeded(PaymentSucceeded {
                    order_id,
                    amount: self.amount,
                    charge_id: format!("{RECEIVED_PREFIX}{reference}"),
                })
            }
            (_, status) => return Err(PaymentError::AlreadySettled(status)),
        };
        Ok(Some(event))
    }

    fn check_refund(&self, amount: Money) -> Result<(), PaymentError> {
        if !amount.is_positive() {
            return Err(FieldError::new("amount", "must be greater than 0").into());
        }
        if self.refunds.len() >= REFUNDS_MAX {
            return Err(PaymentError::TooManyRefunds);
        }
        let left = self.refundable();
        if amount > left {
            return Err(PaymentError::ExceedsCaptured {
                asked: amount,
                left,
            });
        }
        Ok(())
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
                self.payment_ref = requested.payment_ref;
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
            PaymentEvent::PaymentRefunded(refunded) => {
                self.refunded = self
                    .refunded
                    .checked_add(refunded.amount)
                    .unwrap_or(self.refunded);
                self.refunds.insert(
                    refunded.refund_id,
                    RefundState {
                        amount: refunded.amount,
                        refunded: Some(true),
                    },
                );
                // Fully refunded (a refund of an older version refunded the whole amount).
                if self.refunded >= self.amount {
                    self.status = PaymentStatus::Refunded;
                }
            }
            PaymentEvent::RefundRequested(requested) => {
                self.refunds.insert(
                    requested.refund_id,
                    RefundState {
                        amount: requested.amount,
                        refunded: None,
                    },
                );
            }
            PaymentEvent::RefundFailed(failed) => {
                if let Some(refund) = self.refunds.get_mut(&failed.refund_id) {
                    refund.refunded = Some(false);
                }
            }
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
            PaymentEvent::RefundRequested(_) => "RefundRequested",
            PaymentEvent::RefundFailed(_) => "RefundFailed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::current_schema_version(&self.event_type()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::{AggregateTestExecutor, TestFramework};

    use super::*;

    const AMOUNT: Money = Money::from_minor(4_048);

    fn order_id() -> Uuid {
        Uuid::from_u128(0x0a0d_0001)
    }

    const VAULT_REF: &str = "vault:0a0d0001";

    fn request_with(amount: Money, payment_ref: &str) -> PaymentCommand {
        PaymentCommand::RequestPayment {
            order_id: order_id(),
            amount,
            payment_ref: payment_ref.to_owned(),
        }
    }

    fn request() -> PaymentCommand {
        request_with(AMOUNT, VAULT_REF)
    }

    fn requested() -> PaymentEvent {
        PaymentEvent::PaymentRequested(PaymentRequested {
            order_id: order_id(),
            amount: AMOUNT,
            payment_ref: VAULT_REF.to_owned(),
        })
    }

    fn record_success(charge_id: &str) -> PaymentCommand {
        PaymentCommand::RecordSuccess {
            charge_id: charge_id.to_owned(),
        }
    }

    fn succeeded(charge_id: &str) -> PaymentEvent {
        PaymentEvent::PaymentSucceeded(PaymentSucceeded {
            order_id: order_id(),
            amount: AMOUNT,
            charge_id: charge_id.to_owned(),
        })
    }

    fn record_failure() -> PaymentCommand {
        PaymentCommand::RecordFailure {
            reason: "card declined".to_owned(),
        }
    }

    fn failed() -> PaymentEvent {
        PaymentEvent::PaymentFailed(PaymentFailed {
            order_id: order_id(),
            reason: "card declined".to_owned(),
        })
    }

    fn timed_out() -> PaymentEvent {
        PaymentEvent::PaymentTimedOut(PaymentTimedOut {
            order_id: order_id(),
        })
    }

    fn record_refund() -> PaymentCommand {
        PaymentCommand::RecordRefund {
            refund_id: "re_1".to_owned(),
            amount: AMOUNT,
        }
    }

    fn request_refund(refund_id: &str, minor: i64) -> PaymentCommand {
        PaymentCommand::RequestRefund {
            refund_id: refund_id.to_owned(),
            amount: Money::from_minor(minor),
            reason: None,
        }
    }

    fn refund_requested(refund_id: &str, minor: i64) -> PaymentEvent {
        PaymentEvent::RefundRequested(RefundRequested {
            order_id: order_id(),
            refund_id: refund_id.to_owned(),
            amount: Money::from_minor(minor),
            reason: None,
        })
    }

    fn refunded_part(refund_id: &str, minor: i64) -> PaymentEvent {
        PaymentEvent::PaymentRefunded(PaymentRefunded {
            order_id: order_id(),
            amount: Money::from_minor(minor),
            refund_id: refund_id.to_owned(),
        })
    }

    #[test]
    fn partial_refunds_add_up_to_at_most_what_was_captured_counting_those_asked() {
        let charged = vec![requested(), succeeded("ch_1")];
        given(charged.clone())
            .when(request_refund("r1", 1_000))
            .then_expect_events(vec![refund_requested("r1", 1_000)]);
        let mut history = charged;
        history.push(refund_requested("r1", 1_000));
        // Asked, not yet answered: it counts, so 4,048 - 1,000 = 3,048 is all that is left.
        given(history.clone())
            .when(request_refund("r2", 3_049))
            .then_expect_error(PaymentError::ExceedsCaptured {
                asked: Money::from_minor(3_049),
                left: Money::from_minor(3_048),
            });
        // The gateway's answer records the amount asked, once.
        given(history.clone())
            .when(PaymentCommand::RecordRefund {
                refund_id: "r1".to_owned(),
                amount: Money::from_minor(1),
            })
            .then_expect_events(vec![refunded_part("r1", 1_000)]);
        history.push(refunded_part("r1", 1_000));
        given(history.clone())
            .when(request_refund("r1", 1_000))
            .then_expect_events(vec![]);
        given(history.clone())
            .when(request_refund("r2", 3_048))
            .then_expect_events(vec![refund_requested("r2", 3_048)]);
        history.push(refund_requested("r2", 3_048));
        history.push(refunded_part("r2", 3_048));
        let mut payment = Payment::default();
        for event in history.clone() {
            payment.apply(event);
        }
        assert_eq!(payment.status, PaymentStatus::Refunded);
        assert_eq!(payment.refunded, AMOUNT);
        given(history)
            .when(request_refund("r3", 1))
            .then_expect_error(PaymentError::NotCharged(PaymentStatus::Refunded));
    }

    #[test]
    fn a_failed_refund_gives_its_amount_back_to_refund() {
        let history = vec![
            requested(),
            succeeded("ch_1"),
            refund_requested("r1", AMOUNT.minor()),
            PaymentEvent::RefundFailed(RefundFailed {
                order_id: order_id(),
                refund_id: "r1".to_owned(),
                reason: "no".to_owned(),
            }),
        ];
        given(history)
            .when(request_refund("r2", AMOUNT.minor()))
            .then_expect_events(vec![refund_requested("r2", AMOUNT.minor())]);
    }

    #[test]
    fn a_received_payment_must_be_the_orders_amount_and_before_its_deadline() {
        let received = |minor| PaymentCommand::RecordReceived {
            reference: "BANK-1".to_owned(),
            amount: Money::from_minor(minor),
        };
        given(vec![requested()])
            .when(received(AMOUNT.minor()))
            .then_expect_events(vec![succeeded("received:BANK-1")]);
        given(vec![requested()])
            .when(received(1))
            .then_expect_error(PaymentError::WrongAmount(AMOUNT));
        given(vec![requested(), timed_out()])
            .when(received(AMOUNT.minor()))
            .then_expect_error(PaymentError::AlreadySettled(PaymentStatus::TimedOut));
    }

    fn refunded() -> PaymentEvent {
        PaymentEvent::PaymentRefunded(PaymentRefunded {
            order_id: order_id(),
            amount: AMOUNT,
            refund_id: "re_1".to_owned(),
        })
    }

    fn given(events: Vec<PaymentEvent>) -> AggregateTestExecutor<Payment> {
        TestFramework::<Payment>::with(()).given(events)
    }

    fn refused_field_error(result: Result<Vec<PaymentEvent>, PaymentError>) -> FieldError {
        match result {
            Err(PaymentError::Invalid(field_error)) => field_error,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    // RequestPayment

    #[test]
    fn requesting_a_payment_emits_payment_requested() {
        given(vec![])
            .when(request())
            .then_expect_events(vec![requested()]);
    }

    #[test]
    fn an_amount_of_zero_or_less_fails_naming_the_amount_field() {
        for minor in [0, -1] {
            let result = given(vec![])
                .when(request_with(Money::from_minor(minor), VAULT_REF))
                .inspect_result();
            assert_eq!(refused_field_error(result).field, "amount");
        }
    }

    #[test]
    fn a_token_of_1_to_128_printable_characters_is_accepted() {
        let longest = "t".repeat(PAYMENT_TOKEN_MAX_CHARS);
        for payment_token in [
            "t",
            "tok_visa",
            "pm_1Nv0~!#$%&*+/=?^",
            longest.as_str(),
            // Fewer than 12 or more than 19 digits are not taken for a card number.
            "12345678901",
            "12345678901234567890",
        ] {
            assert_eq!(
                validate_payment_token(payment_token),
                Ok(()),
                "{payment_token:?}"
            );
        }
    }

    #[test]
    fn an_empty_too_long_spaced_or_non_ascii_token_fails_naming_the_payment_token_field() {
        let too_long = "t".repeat(PAYMENT_TOKEN_MAX_CHARS + 1);
        for payment_token in [
            "",
            too_long.as_str(),
            "tok visa",
            "tok_visa\n",
            "tök_visa",
            "\u{7f}",
        ] {
            let error = validate_payment_token(payment_token).expect_err(payment_token);
            assert_eq!(error.field, "payment_token", "{payment_token:?}");
        }
    }

    #[test]
    fn a_raw_card_number_is_refused_with_a_message_asking_for_a_gateway_token() {
        for card_number in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "378282246310005",
            "123456789012",
            "1234567890123456789",
        ] {
            let field_error = validate_payment_token(card_number).expect_err(card_number);
            assert_eq!(field_error.field, "payment_token");
            assert!(
                field_error.message.contains("card number")
                    && field_error
                        .message
                        .contains("token from the payment gateway"),
                "{card_number:?}: {}",
                field_error.message
            );
        }
    }

    #[test]
    fn a_vault_reference_is_1_to_128_printable_ascii_characters() {
        assert_eq!(validate_payment_ref(VAULT_REF), Ok(()));
        for bad in [
            "",
            "vault ref",
            "vault:é",
            &"v".repeat(PAYMENT_REF_MAX_CHARS + 1),
        ] {
            assert_eq!(
                validate_payment_ref(bad).expect_err(bad).field,
                "payment_ref"
            );
        }
    }

    #[test]
    fn a_snapshot_written_before_tokens_left_the_log_loads_without_its_token() {
        let old = r#"{"order_id":"00000000-0000-0000-0000-00000a0d0001","amount_minor":4048,
            "payment_token":"tok_visa","status":"REQUESTED","charge_id":null,"timed_out":false}"#;
        let payment: Payment = serde_json::from_str(old).expect("an old snapshot loads");
        assert_eq!(payment.payment_ref, "");
        assert!(
            !serde_json::to_string(&payment)
                .expect("json")
                .contains("tok_visa")
        );
    }

    #[test]
    fn the_same_request_again_emits_nothing() {
        given(vec![requested()])
            .when(request())
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_same_request_after_the_charge_emits_nothing() {
        given(vec![requested(), succeeded("ch_1")])
            .when(request())
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_request_with_another_amount_or_token_fails_with_already_requested() {
        for command in [
            request_with(Money::from_minor(4_049), VAULT_REF),
            request_with(AMOUNT, "vault:another"),
        ] {
            given(vec![requested()])
                .when(command)
                .then_expect_error(PaymentError::AlreadyRequested);
        }
    }

    #[test]
    fn every_command_before_a_request_fails_with_not_requested() {
        for command in [
            record_success("ch_1"),
            record_failure(),
            PaymentCommand::RecordTimeout,
            record_refund(),
        ] {
            given(vec![])
                .when(command)
                .then_expect_error(PaymentError::NotRequested);
        }
    }

    // RecordSuccess

    #[test]
    fn recording_a_success_emits_payment_succeeded_for_the_requested_amount() {
        given(vec![requested()])
            .when(record_success("ch_1"))
            .then_expect_events(vec![succeeded("ch_1")]);
    }

    #[test]
    fn recording_a_success_twice_never_emits_a_second_payment_succeeded() {
        given(vec![requested(), succeeded("ch_1")])
            .when(record_success("ch_2"))
            .then_expect_events(vec![]);
        given(vec![requested(), succeeded("ch_1"), refunded()])
            .when(record_success("ch_2"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn recording_a_success_after_a_failure_fails_with_already_settled() {
        given(vec![requested(), failed()])
            .when(record_success("ch_1"))
            .then_expect_error(PaymentError::AlreadySettled(PaymentStatus::Failed));
    }

    // RecordFailure

    #[test]
    fn recording_a_failure_emits_payment_failed() {
        given(vec![requested()])
            .when(record_failure())
            .then_expect_events(vec![failed()]);
    }

    #[test]
    fn recording_a_failure_twice_emits_nothing() {
        given(vec![requested(), failed()])
            .when(record_failure())
            .then_expect_events(vec![]);
    }

    #[test]
    fn recording_a_failure_after_a_success_fails_with_already_settled() {
        given(vec![requested(), succeeded("ch_1")])
            .when(record_failure())
            .then_expect_error(PaymentError::AlreadySettled(PaymentStatus::Succeeded));
    }

    // RecordTimeout

    #[test]
    fn recording_a_timeout_of_a_requested_payment_emits_payment_timed_out() {
        given(vec![requested()])
            .when(PaymentCommand::RecordTimeout)
            .then_expect_events(vec![timed_out()]);
    }

    #[test]
    fn a_success_after_a_timeout_is_recorded_so_that_it_can_be_refunded() {
        given(vec![requested(), timed_out()])
            .when(record_success("ch_late"))
            .then_expect_events(vec![succeeded("ch_late")]);
        given(vec![requested(), timed_out(), succeeded("ch_late")])
            .when(record_refund())
            .then_expect_events(vec![refunded()]);
    }

    // RecordRefund

    #[test]
    fn refunding_a_succeeded_payment_emits_payment_refunded_for_its_amount() {
        given(vec![requested(), succeeded("ch_1")])
            .when(record_refund())
            .then_expect_events(vec![refunded()]);
    }

    #[test]
    fn refunding_twice_emits_nothing() {
        given(vec![requested(), succeeded("ch_1"), refunded()])
            .when(record_refund())
            .then_expect_events(vec![]);
    }

    #[test]
    fn refunding_a_payment_that_was_never_charged_fails_with_not_charged() {
        let cases = [
            (vec![requested()], PaymentStatus::Requested),
            (vec![requested(), failed()], PaymentStatus::Failed),
            (vec![requested(), timed_out()], PaymentStatus::TimedOut),
        ];
        for (history, status) in cases {
            given(history)
                .when(record_refund())
                .then_expect_error(PaymentError::NotCharged(status));
        }
    }

    // Snapshots

    #[test]
    fn a_payment_snapshot_round_trips_through_json() {
        let mut payment = Payment::default();
        for event in [requested(), timed_out(), succeeded("ch_late")] {
            payment.apply(event);
        }
        assert!(payment.timed_out);
        assert_eq!(payment.status, PaymentStatus::Succeeded);
        let json = serde_json::to_string(&payment).expect("a payment serializes");
        let restored: Payment = serde_json::from_str(&json).expect("a snapshot deserializes");
        assert_eq!(restored, payment);
    }
}
