//! The mail port's tests: the behaviour suite both adapters pass, what only the SMTP adapter
//! (a real aiosmtpd server, unreachable and silent servers) or only the outbox files show, and
//! how [`mail::open`] picks and checks.

mod file;
mod open;
mod smtp;
mod suite;
mod support;
