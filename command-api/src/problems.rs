//! How a broken business rule or a failed command is answered.

use axum::http::StatusCode;
use domain::{CartError, OrderError, PaymentError, ProductError};
use eventstore::aggregate::{CommandError, LoadError};
use http_common::Problem;
use http_common::problem::{field_problem, store_problem};

/// The answer for a domain error: 404, 409 (a rule of the current state) or 422 (a field),
/// naming what to fix.
pub trait ToProblem {
    fn to_problem(&self) -> Problem;
}

impl ToProblem for ProductError {
    fn to_problem(&self) -> Problem {
        match self {
            ProductError::NotFound => Problem::not_found("no product has this id"),
            ProductError::AlreadyExists => Problem::conflict(self.to_string()),
            ProductError::Invalid(field) => field_problem(field),
            ProductError::InsufficientStock { .. }
            | ProductError::NegativeStock { .. }
            | ProductError::StockTooLarge { .. }
            | ProductError::NoReservation { .. } => Problem::conflict(self.to_string()),
        }
    }
}

impl ToProblem for CartError {
    fn to_problem(&self) -> Problem {
        match self {
            CartError::Invalid(field) => field_problem(field),
            // Someone else's cart is answered as no cart at all, so ids cannot be probed.
            CartError::NotOwner => Problem::not_found(
                "no cart has this id (or it is not yours: a guest sends its X-Cart-Token)",
            ),
            CartError::CheckedOut => Problem::conflict(self.to_string()),
            CartError::NoSuchLine { .. } => Problem::not_found(self.to_string()),
            // Rules of the cart's state, not of the request's shape: the same request succeeds
            // against another state of the cart, so they are conflicts.
            CartError::TooManyLines | CartError::LineTooLarge { .. } | CartError::Empty => {
                Problem::new(StatusCode::CONFLICT, "business-rule", self.to_string())
            }
        }
    }
}

impl ToProblem for OrderError {
    fn to_problem(&self) -> Problem {
        match self {
            OrderError::NotFound => Problem::not_found("no order has this id"),
            OrderError::AlreadyExists | OrderError::InvalidTransition { .. } => {
                Problem::conflict(self.to_string())
            }
            OrderError::Invalid(field) => field_problem(field),
            OrderError::TotalTooLarge => Problem::invalid("lines", "the order total is too large"),
            OrderError::NotAllowed(_) | OrderError::TooMany(_) => {
                Problem::new(StatusCode::CONFLICT, "business-rule", self.to_string())
            }
        }
    }
}

impl ToProblem for PaymentError {
    fn to_problem(&self) -> Problem {
        match self {
            PaymentError::Invalid(field) => field_problem(field),
            PaymentError::NotRequested => Problem::conflict(
                "the order has no payment yet: its checkout has not asked for one",
            ),
            PaymentError::WrongAmount(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                self.to_string(),
            )
            .with_field("amount"),
            PaymentError::AlreadyRequested
            | PaymentError::AlreadySettled(_)
            | PaymentError::NotCharged(_)
            | PaymentError::ExceedsCaptured { .. }
            | PaymentError::TooManyRefunds => {
                Problem::new(StatusCode::CONFLICT, "business-rule", self.to_string())
            }
        }
    }
}

/// The answer for a failed command: the domain's refusal, or the store's failure.
pub fn command_problem<E: std::error::Error + ToProblem>(error: &CommandError<E>) -> Problem {
    match error {
        CommandError::Domain(error) => error.to_problem(),
        CommandError::Store(error) => store_problem(error),
        CommandError::Load(LoadError::Store(error)) => store_problem(error),
        other => Problem::internal(other),
    }
}

/// The answer for an aggregate that could not be loaded.
pub fn load_problem(error: &LoadError) -> Problem {
    match error {
        LoadError::Store(error) => store_problem(error),
        other => Problem::internal(other),
    }
}
