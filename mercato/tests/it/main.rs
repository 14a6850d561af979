//! The command line's tests: subcommands, exit codes and output, the binary serving as its own
//! process where the process is the subject (SIGKILL, SIGTERM, its log lines), and the flows
//! that combine a server (in this process) with the commands an operator or auditor runs beside
//! it.

mod accounts;
mod audit;
mod cli;
mod common;
mod console;
mod erasure;
mod generate;
mod history;
#[cfg(feature = "kafka")]
mod kafka;
mod no_store;
mod notifications;
mod process;
mod replay;
mod replay_opensearch;
mod replay_redis;
mod saga;
mod secrets;
mod traces;
mod unreachable;
