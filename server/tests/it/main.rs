//! The server library's tests: the HTTP behaviour of every role, with the server started in
//! this process (`server::testing::TestApp`).

mod access;
mod accounts;
mod after_checkout;
mod audit;
mod console_role;
mod docs;
mod e2e;
mod edges;
mod idempotency;
mod limits;
mod notifications;
mod parking;
mod platform;
mod readiness;
mod stripe;
mod tokens;
mod transport_security;
