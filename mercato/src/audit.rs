//! `mercato audit verify|head|state`: tamper evidence of the stored history, and an aggregate as
//! it stood at a moment.

use std::io::{self, BufWriter, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use cqrs_es::Aggregate;
use eventstore::audit::{self, Scope};
use eventstore::{EventStore, RecordedEvent};
use serde_json::{Value, json};
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

/// The stream types that hold an aggregate `audit state` can rebuild.
const AGGREGATES: &[&str] = &["product", "cart", "order", "payment", "user"];

/// The moment `audit state --at` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    Position(u64),
    Time(DateTime<Utc>),
}

impl Moment {
    fn parse(text: &str) -> Result<Moment> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
            return text
                .parse()
                .map(Moment::Position)
                .map_err(|_| at_usage(text));
        }
        DateTime::parse_from_rfc3339(text)
            .map(|time| Moment::Time(time.with_timezone(&Utc)))
            .map_err(|_| at_usage(text))
    }

    fn includes(self, event: &RecordedEvent) -> bool {
        match self {
            Moment::Position(position) => event.position <= position,
            Moment::Time(time) => event.occurred_at <= time,
        }
    }

    fn describe(self) -> String {
        match self {
            Moment::Position(position) => format!("position {position}"),
            Moment::Time(time) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }
}

fn at_usage(text: &str) -> Error {
    Error::Usage(format!(
        "--at `{text}` is neither a global position (a whole number such as 1234) nor an RFC 3339 time (such as 2026-01-31T12:00:00Z or 2026-01-31T13:00:00+01:00)"
    ))
}

/// The aggregate of `stream_id` at `moment`, as JSON, and the last event folded in.
async fn fold<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    moment: Moment,
) -> Result<(Value, Option<RecordedEvent>)> {
    let (state, last) =
        eventstore::aggregate::state_at::<A>(store, stream_id, |event| moment.includes(event))
            .await
            .map_err(|error| {
                Error::runtime(format!("cannot read stream {}/{stream_id}", A::TYPE), error)
            })?;
    let state = serde_json::to_value(&state)
        .map_err(|error| Error::runtime("cannot write the state as JSON", error))?;
    Ok((state, last))
}

async fn state(config: &Config, stream: &str, at: &str) -> Result<()> {
    let (stream_type, stream_id) = parse_stream(stream)?;
    if !AGGREGATES.contains(&stream_type) {
        return Err(Error::Usage(format!(
            "{stream_type} streams hold no aggregate: `audit state` rebuilds {} (use `mercato events stream` to read {stream_type} events)",
            AGGREGATES.join(", ")
        )));
    }
    let moment = Moment::parse(at)?;
    let store = server::open_existing_store(config).await?;
    let (state, reached) = match stream_type {
        "product" => fold::<domain::Product>(store.as_ref(), &stream_id, moment).await?,
        "cart" => fold::<domain::Cart>(store.as_ref(), &stream_id, moment).await?,
        "order" => fold::<domain::Order>(store.as_ref(), &stream_id, moment).await?,
        "user" => fold::<domain::User>(store.as_ref(), &stream_id, moment).await?,
        _ => fold::<domain::Payment>(store.as_ref(), &stream_id, moment).await?,
    };
    let read_failure = || store_failure(format!("cannot read stream {stream_type}/{stream_id}"));
    let Some(reached) = reached else {
        let first = store
            .read_stream(stream_type, &stream_id, 0, 1)
            .await
            .map_err(read_failure())?;
        return Err(match first.first() {
            None => nothing_found(format!(
                "stream {stream_type}/{stream_id} has no events: check the type and id"
            )),
            Some(first) => nothing_found(format!(
                "{stream_type}/{stream_id} did not exist yet at {}: its first event is at position {} ({})",
                moment.describe(),
                first.position,
                first
                    .occurred_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true)
            )),
        });
    };
    let current_version = store
        .stream_version(stream_type, &stream_id)
        .await
        .map_err(read_failure())?;
    let answer = json!({
        "stream_type": stream_type,
        "stream_id": stream_id,
        "at": moment.describe(),
        "version": reached.stream_version,
        "position": reached.position,
        "occurred_at": reached.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "current_version": current_version,
        "state": state,
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_a_position_or_an_rfc3339_time() {
        assert_eq!(Moment::parse("42").ok(), Some(Moment::Position(42)));
        let time = Moment::parse("2026-01-31T13:00:00+01:00").ok();
        assert_eq!(
            time,
            Some(Moment::Time(
                DateTime::parse_from_rfc3339("2026-01-31T12:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            ))
        );
        for bad in [
            "",
            "yesterday",
            "-1",
            "2026-01-31",
            "99999999999999999999999",
        ] {
            match Moment::parse(bad) {
                Err(Error::Usage(message)) => assert!(message.contains("RFC 3339"), "{message}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
