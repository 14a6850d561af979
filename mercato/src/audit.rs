//! `mercato audit verify|head|state`: tamper evidence of the stored history, and an aggregate as
//! it stood at a moment.

use std::io::{self, BufWriter, Write};

use clap::Subcommand;
use eventstore::audit::{self, Scope};
use query_api::audit::{AGGREGATES, Moment, StateError, stream_state};
use server::error::store_failure;
use server::{Config, Error, Result, SEAL_EVERY};

use crate::events::{nothing_found, parse_stream};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// An aggregate as it stood at a time or position
    State {
        #[arg(value_name = "TYPE/ID")]
        stream: String,
        /// RFC 3339 time or a global position
        #[arg(long, value_name = "TIME|POSITION")]
        at: String,
    },
    /// Recompute the hash chains; exit 1 naming the first event that does not match
    Verify {
        #[arg(long, value_name = "TYPE/ID")]
        stream: Option<String>,
        /// A head hash recorded earlier (`audit head`): the history up to its position must be
        /// unchanged; later events extend it
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
    },
    /// Print the current head hash, for an auditor to record outside the system
    Head,
}

pub async fn run(config: Config, command: &Command) -> Result<()> {
    match command {
        Command::Verify {
            stream,
            expect_head,
        } => verify(&config, stream.as_deref(), expect_head.as_deref()).await,
        Command::Head => {
            let store = server::open_existing_store(&config).await?;
            let head = audit::seal_head(&*store, SEAL_EVERY)
                .await
                .map_err(store_failure("cannot seal a checkpoint at the head"))?;
            println!(
                "position {}\nevents {}\nhash {}",
                head.position, head.events, head.hash_hex
            );
            Ok(())
        }
        Command::State { stream, at } => state(&config, stream, at).await,
    }
}

async fn verify(config: &Config, stream: Option<&str>, expect_head: Option<&str>) -> Result<()> {
    let scope = match stream {
        None => Scope::All,
        Some(stream) => verify_scope(stream)?,
    };
    if let Some(expected) = expect_head {
        if audit::parse_hash(expected).is_none() {
            return Err(Error::Usage(format!(
                "--expect-head {expected:?} is not a hash: give the 64 hex digits `mercato audit head` printed"
            )));
        }
        if stream.is_some() {
            return Err(Error::Usage(
                "--expect-head checks the whole log's history: leave out --stream".to_owned(),
            ));
        }
    }
    let store = server::open_existing_store(config).await?;
    let report = audit::verify(&*store, scope, expect_head)
        .await
        .map_err(store_failure("cannot verify the event store"))?;
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
    if let Some((position, events)) = report.expected_head_at {
        println!(
            "expected head found at position {position} ({events} events; {} stored since)",
            report.head.events.saturating_sub(events)
        );
    }
    match report.first_problem {
        None => {
            println!("ok: the stored history verifies");
            Ok(())
        }
        Some(problem) => {
            println!("TAMPERED: {problem}");
            Err(Error::Failed(format!(
                "the stored history does not verify: {problem}"
            )))
        }
    }
}

fn verify_scope(stream: &str) -> Result<Scope> {
    match stream.split_once('/') {
        Some((stream_type, stream_id)) if !stream_type.is_empty() && !stream_id.is_empty() => {
            Ok(Scope::Stream {
                stream_type: stream_type.to_owned(),
                stream_id: stream_id.to_owned(),
            })
        }
        _ => Err(Error::Usage(format!(
            "--stream {stream:?} is not TYPE/ID: give a stream type and id, e.g. product/0b7e...-..."
        ))),
    }
}

async fn state(config: &Config, stream: &str, at: &str) -> Result<()> {
    let (stream_type, stream_id) = parse_stream(stream)?;
    if !AGGREGATES.contains(&stream_type) {
        return Err(Error::Usage(format!(
            "{stream_type} streams hold no aggregate: `audit state` rebuilds {} (use `mercato events stream` to read {stream_type} events)",
            AGGREGATES.join(", ")
        )));
    }
    let moment = Moment::parse(at).map_err(|usage| Error::Usage(format!("--at {usage}")))?;
    let store = server::open_existing_store(config).await?;
    let answer = match stream_state(store.as_ref(), stream_type, &stream_id, moment).await {
        Ok(answer) => answer,
        Err(StateError::NotFound(message) | StateError::NoAggregate(message)) => {
            return Err(nothing_found(message));
        }
        Err(error) => {
            return Err(Error::runtime(
                format!("cannot read stream {stream_type}/{stream_id}"),
                error,
            ));
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, &answer)
        .map_err(io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
            Err(Error::runtime("cannot write to standard output", error))
        }
        _ => Ok(()),
    }
}
