//! `mercato audit verify` and `mercato audit head`: tamper evidence of the stored history.

use eventstore::audit::{self, Scope};

use crate::config::Config;
use crate::{AuditCommand, Failure};

/// How many events one checkpoint covers when `audit head` seals (the server's sealer uses the
/// same block size, so both write the same checkpoints).
pub(crate) const SEAL_EVERY: u64 = 10_000;

pub(crate) async fn audit(config: &Config, command: AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify {
            stream,
            expect_head,
        } => {
            let scope = match stream.as_deref() {
                None => Scope::All,
                Some(stream) => parse_stream(stream)?,
            };
            if let Some(expected) = expect_head.as_deref()
                && audit::parse_hash(expected).is_none()
            {
                return Err(Failure::Usage(format!(
                    "--expect-head {expected:?} is not a hash: give the 64 hex digits `mercato audit head` printed"
                )));
            }
            let store = open(config).await?;
            let report = audit::verify(&*store, scope, expect_head.as_deref())
                .await
                .map_err(|error| {
                    Failure::from(error).context("cannot verify the event store".to_owned())
                })?;
            println!(
                "events {}\nstreams {}\ncheckpoints {}\nhead position {}\nhead events {}\nhead hash {}\nverified {:.0} events/s in {:.3} s",
                report.events,
                report.streams,
                report.checkpoints,
                report.head.position,
                report.head.events,
                report.head.hash_hex,
                report.events_per_second(),
                report.elapsed.as_secs_f64()
            );
            match report.first_problem {
                None => {
                    println!("ok: the stored history verifies");
                    Ok(())
                }
                Some(problem) => {
                    println!("TAMPERED: {problem}");
                    Err(Failure::Runtime(anyhow::anyhow!(
                        "the stored history does not verify: {problem}"
                    )))
                }
            }
        }
        AuditCommand::Head => {
            let store = open(config).await?;
            let head = audit::seal_head(&*store, SEAL_EVERY)
                .await
                .map_err(|error| {
                    Failure::from(error).context("cannot seal a checkpoint at the head".to_owned())
                })?;
            println!(
                "position {}\nevents {}\nhash {}",
                head.position, head.events, head.hash_hex
            );
            Ok(())
        }
        AuditCommand::State { .. } => Err(Failure::Usage(
            "`mercato audit state` is handled by the history command".to_owned(),
        )),
    }
}

async fn open(config: &Config) -> Result<std::sync::Arc<dyn eventstore::EventStore>, Failure> {
    eventstore::open(config.database_url.expose())
        .await
        .map_err(|error| {
            Failure::from(error).context(format!(
                "cannot open the event store at {}",
                config.database_url.redacted()
            ))
        })
}

fn parse_stream(stream: &str) -> Result<Scope, Failure> {
    match stream.split_once('/') {
        Some((stream_type, stream_id)) if !stream_type.is_empty() && !stream_id.is_empty() => {
            Ok(Scope::Stream {
                stream_type: stream_type.to_owned(),
                stream_id: stream_id.to_owned(),
            })
        }
        _ => Err(Failure::Usage(format!(
            "--stream {stream:?} is not TYPE/ID: give a stream type and id, e.g. product/0b7e...-..."
        ))),
    }
}
