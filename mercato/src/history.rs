//! `mercato events` and `mercato audit state`: the event history as auditors read it.
//!
//! Events are read a page at a time and each page is written (and flushed) before the next one is
//! read, so no command holds more than one page of the history in memory. Output goes through a
//! locked, buffered stdout; a reader that goes away (`mercato events tail | head -3`) ends the
//! command normally, with exit 0 and nothing on stderr.

use std::io::{self, BufWriter, StdoutLock, Write};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::Aggregate;
use eventstore::{EventStore, RecordedEvent, StoreError, Subscription};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::config::Config;
use crate::{EventsCommand, Failure, OutputFormat};

/// How many events one read asks the store for.
const PAGE: usize = 500;

/// The stream types whose ids are UUIDs.
const UUID_STREAMS: &[&str] = &["product", "order", "payment", domain::VIEWS_STREAM_TYPE];

/// The stream types that hold an aggregate `audit state` can rebuild.
const AGGREGATES: &[&str] = &["product", "cart", "order", "payment"];

/// Every stream type events are written to.
fn stream_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = Vec::new();
    for (stream_type, _, _) in domain::EVENT_TYPES {
        if !types.contains(stream_type) {
            types.push(stream_type);
        }
    }
    types
}

/// Parses `TYPE/ID` into a known stream type and a well-formed id.
fn parse_stream(text: &str) -> Result<(&'static str, String), Failure> {
    let known = stream_types();
    let Some((stream_type, stream_id)) = text.split_once('/') else {
        return Err(Failure::Usage(format!(
            "`{text}` is not a stream: write TYPE/ID, such as order/0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11 (types: {})",
            known.join(", ")
        )));
    };
    let Some(stream_type) = known.iter().copied().find(|known| *known == stream_type) else {
        return Err(Failure::Usage(format!(
            "unknown stream type `{stream_type}`: use one of {}",
            known.join(", ")
        )));
    };
    if UUID_STREAMS.contains(&stream_type) {
        let id = Uuid::parse_str(stream_id).map_err(|_| {
            Failure::Usage(format!(
                "`{stream_id}` is not a {stream_type} id: {stream_type} ids are UUIDs, such as 0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11"
            ))
        })?;
        return Ok((stream_type, id.to_string()));
    }
    domain::CartId::parse(stream_id).map_err(|error| {
        Failure::Usage(format!(
            "`{stream_id}` is not a {stream_type} id: {error} (1 to 64 characters of A-Za-z0-9_-)"
        ))
    })?;
    Ok((stream_type, stream_id.to_owned()))
}

async fn open_store(config: &Config) -> Result<Arc<dyn EventStore>, Failure> {
    eventstore::open(config.database_url.expose())
        .await
        .map_err(|error| {
            Failure::from(error).context(format!(
                "cannot open the event store at {} (check DATABASE_URL and that the database is running)",
                config.database_url.redacted()
            ))
        })
}

fn read_failure(what: String) -> impl FnOnce(StoreError) -> Failure {
    move |error| Failure::from(error).context(what)
}

/// Whether to go on writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The limit is reached or the reader went away: a normal end.
    Stop,
}

/// Writes events to stdout in one format, counting them against a limit.
struct Printer<W: Write> {
    out: W,
    format: OutputFormat,
    limit: Option<u64>,
    written: u64,
    header_written: bool,
}

impl Printer<BufWriter<StdoutLock<'static>>> {
    fn stdout(format: OutputFormat, limit: Option<u64>) -> Self {
        Printer::new(
            BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
            format,
            limit,
        )
    }
}

impl<W: Write> Printer<W> {
    fn new(out: W, format: OutputFormat, limit: Option<u64>) -> Self {
        Printer {
            out,
            format,
            limit,
            written: 0,
            header_written: false,
        }
    }

    fn done(&self) -> bool {
        self.limit.is_some_and(|limit| self.written >= limit)
    }

    /// Writes a page of events and flushes it.
    fn page(&mut self, events: &[RecordedEvent]) -> Result<Flow, Failure> {
        let result = (|| {
            for event in events {
                if self.done() {
                    break;
                }
                self.event(event)?;
                self.written += 1;
            }
            self.out.flush()
        })();
        match result {
            Ok(()) if self.done() => Ok(Flow::Stop),
            Ok(()) => Ok(Flow::Continue),
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
            Err(error) => Err(Failure::Runtime(
                anyhow::Error::new(error).context("cannot write to standard output"),
            )),
        }
    }

    fn event(&mut self, event: &RecordedEvent) -> io::Result<()> {
        match self.format {
            OutputFormat::Table => {
                if !self.header_written {
                    self.header_written = true;
                    writeln!(self.out, "{}", table_header())?;
                }
                writeln!(self.out, "{}", table_line(event))
            }
            OutputFormat::Json => {
                serde_json::to_writer(&mut self.out, &query_api::event_json(event))?;
                self.out.write_all(b"\n")
            }
            OutputFormat::Cloudevents => {
                serde_json::to_writer(&mut self.out, &cloud_event(event))?;
                self.out.write_all(b"\n")
            }
        }
    }
}

const POSITION_WIDTH: usize = 16;
const TIME_WIDTH: usize = 27;
const STREAM_WIDTH: usize = 52;
const TYPE_WIDTH: usize = 22;

fn table_header() -> String {
    format!(
        "{:>POSITION_WIDTH$}  {:<TIME_WIDTH$}  {:<STREAM_WIDTH$}  {:<TYPE_WIDTH$}  CORRELATION_ID",
        "POSITION", "OCCURRED_AT", "STREAM@VERSION", "EVENT_TYPE"
    )
}

/// One aligned line: position, time, TYPE/ID@version, event type, correlation id.
fn table_line(event: &RecordedEvent) -> String {
    format!(
        "{:>POSITION_WIDTH$}  {:<TIME_WIDTH$}  {:<STREAM_WIDTH$}  {:<TYPE_WIDTH$}  {}",
        event.position,
        event
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        format!(
            "{}/{}@{}",
            event.stream_type, event.stream_id, event.stream_version
        ),
        event.event_type,
        event.metadata.correlation_id,
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn uri_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The event as a CloudEvents 1.0 structured-mode JSON object. `source` is `/mercato/{part}` (the
/// part of mercato that wrote it), `type` is `mercato.{stream_type}.{EventType}`, `subject` is
/// `TYPE/ID`; mercato's envelope fields are string-valued extension attributes.
fn cloud_event(event: &RecordedEvent) -> Value {
    let mut object = Map::new();
    object.insert("specversion".into(), json!("1.0"));
    object.insert("id".into(), json!(event.event_id.to_string()));
    object.insert(
        "source".into(),
        json!(format!("/mercato/{}", uri_segment(&event.metadata.source))),
    );
    object.insert(
        "type".into(),
        json!(format!(
            "mercato.{}.{}",
            event.stream_type, event.event_type
        )),
    );
    object.insert(
        "subject".into(),
        json!(format!("{}/{}", event.stream_type, event.stream_id)),
    );
    object.insert(
        "time".into(),
        json!(
            event
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true)
        ),
    );
    object.insert("datacontenttype".into(), json!("application/json"));
    object.insert(
        "data".into(),
        serde_json::from_str(event.payload.get()).unwrap_or(Value::Null),
    );
    let metadata = &event.metadata;
    let mut extensions = vec![
        ("position", event.position.to_string()),
        ("streamtype", event.stream_type.clone()),
        ("streamid", event.stream_id.clone()),
        ("streamversion", event.stream_version.to_string()),
        ("schemaversion", event.schema_version.to_string()),
        ("correlationid", metadata.correlation_id.clone()),
        ("causationid", metadata.causation_id.clone()),
        ("actor", metadata.actor.clone()),
    ];
    if let Some(saga_id) = &metadata.saga_id {
        extensions.push(("sagaid", saga_id.clone()));
    }
    for (name, value) in extensions {
        object.insert(name.into(), Value::String(value));
    }
    Value::Object(object)
}

pub(crate) async fn events(config: &Config, command: EventsCommand) -> Result<(), Failure> {
    match command {
        EventsCommand::Stream {
            stream,
            format,
            limit,
        } => {
            let (stream_type, stream_id) = parse_stream(&stream)?;
            let store = open_store(config).await?;
            let mut printer = Printer::stdout(format, limit);
            let mut after_version = 0;
            loop {
                let page = store
                    .read_stream(stream_type, &stream_id, after_version, PAGE)
                    .await
                    .map_err(read_failure(format!(
                        "cannot read stream {stream_type}/{stream_id}"
                    )))?;
                if page.is_empty() && after_version == 0 {
                    return Err(nothing_found(format!(
                        "stream {stream_type}/{stream_id} has no events: check the type and id (`mercato events tail` shows what is stored)"
                    )));
                }
                if printer.page(&page)? == Flow::Stop || page.len() < PAGE {
                    return Ok(());
                }
                after_version = page.last().map_or(after_version, |e| e.stream_version);
            }
        }
        EventsCommand::Tail {
            from,
            follow,
            format,
            limit,
        } => {
            // `--from P` includes P; the store reads after a position.
            let after = from.unwrap_or(0).saturating_sub(1);
            let store = open_store(config).await?;
            let mut printer = Printer::stdout(format, limit);
            if printer.done() {
                return Ok(());
            }
            if follow {
                let subscription = store
                    .subscribe(after)
                    .await
                    .map_err(read_failure("cannot follow the event log".to_owned()))?
                    .with_batch_size(PAGE);
                return follow_log(subscription, &mut printer).await;
            }
            let mut after = after;
            loop {
                let page = store
                    .read_all(after, PAGE)
                    .await
                    .map_err(read_failure(format!(
                        "cannot read the event log after position {after}"
                    )))?;
                if printer.page(&page)? == Flow::Stop || page.len() < PAGE {
                    return Ok(());
                }
                after = page.last().map_or(after, |event| event.position);
            }
        }
        EventsCommand::Correlated {
            correlation_id,
            format,
            limit,
        } => {
            if correlation_id.is_empty() || correlation_id.len() > 128 {
                return Err(Failure::Usage(
                    "a correlation id is 1 to 128 characters (the X-Correlation-Id of a request)"
                        .to_owned(),
                ));
            }
            let store = open_store(config).await?;
            let mut printer = Printer::stdout(format, limit);
            let mut after = 0;
            loop {
                let page = store
                    .read_correlated(&correlation_id, after, PAGE)
                    .await
                    .map_err(read_failure(format!(
                        "cannot read the events of correlation id {correlation_id}"
                    )))?;
                if page.is_empty() && after == 0 {
                    return Err(nothing_found(format!(
                        "no events have correlation id {correlation_id}: check the id (the X-Correlation-Id a request answered with)"
                    )));
                }
                if printer.page(&page)? == Flow::Stop || page.len() < PAGE {
                    return Ok(());
                }
                after = page.last().map_or(after, |event| event.position);
            }
        }
    }
}

/// Nothing matched: exit 1 with a line that says what to check.
fn nothing_found(message: String) -> Failure {
    Failure::Runtime(anyhow::anyhow!(message))
}

/// Prints batches as the subscription delivers them until the limit, a closed pipe or Ctrl-C.
async fn follow_log(
    mut subscription: Subscription,
    printer: &mut Printer<impl Write>,
) -> Result<(), Failure> {
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            batch = subscription.next_batch() => {
                let batch = batch.map_err(read_failure(format!(
                    "cannot follow the event log after position {}",
                    subscription.checkpoint()
                )))?;
                if printer.page(&batch)? == Flow::Stop {
                    return Ok(());
                }
            }
        }
    }
}

/// The moment `audit state --at` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    Position(u64),
    Time(DateTime<Utc>),
}

impl Moment {
    fn parse(text: &str) -> Result<Moment, Failure> {
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

fn at_usage(text: &str) -> Failure {
    Failure::Usage(format!(
        "--at `{text}` is neither a global position (a whole number such as 1234) nor an RFC 3339 time (such as 2026-01-31T12:00:00Z or 2026-01-31T13:00:00+01:00)"
    ))
}

/// Folds a stream's events up to `moment` through the aggregate's `apply`, decoding (and
/// upcasting) each stored event with `schemas::decode` as the command path does
/// (`eventstore::aggregate::load`). Reads page by page; stops at the first event after the
/// moment (a stream's events are in position order, and a later event with an earlier clock
/// reading stays out too). Answers the state as JSON and the last event folded in.
async fn fold<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    moment: Moment,
) -> Result<(Value, Option<RecordedEvent>), Failure> {
    let mut state = A::default();
    let mut last: Option<RecordedEvent> = None;
    let mut after_version = 0;
    loop {
        let page = store
            .read_stream(A::TYPE, stream_id, after_version, PAGE)
            .await
            .map_err(read_failure(format!(
                "cannot read stream {}/{stream_id}",
                A::TYPE
            )))?;
        let full = page.len() == PAGE;
        for recorded in page {
            if !moment.includes(&recorded) {
                return to_json(&state).map(|state| (state, last));
            }
            let event: A::Event = schemas::decode(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.payload,
            )
            .map_err(|error| {
                Failure::Runtime(anyhow::Error::new(error).context(format!(
                    "event {} of {}/{stream_id} (position {}) cannot be decoded",
                    recorded.stream_version,
                    A::TYPE,
                    recorded.position
                )))
            })?;
            state.apply(event);
            after_version = recorded.stream_version;
            last = Some(recorded);
        }
        if !full {
            return to_json(&state).map(|state| (state, last));
        }
    }
}

fn to_json(state: &impl serde::Serialize) -> Result<Value, Failure> {
    serde_json::to_value(state).map_err(|error| {
        Failure::Runtime(anyhow::Error::new(error).context("cannot write the state as JSON"))
    })
}

pub(crate) async fn state(config: &Config, stream: &str, at: &str) -> Result<(), Failure> {
    let (stream_type, stream_id) = parse_stream(stream)?;
    if !AGGREGATES.contains(&stream_type) {
        return Err(Failure::Usage(format!(
            "{stream_type} streams hold no aggregate: `audit state` rebuilds {} (use `mercato events stream` to read {stream_type} events)",
            AGGREGATES.join(", ")
        )));
    }
    let moment = Moment::parse(at)?;
    let store = open_store(config).await?;
    let (state, reached) = match stream_type {
        "product" => fold::<domain::Product>(store.as_ref(), &stream_id, moment).await?,
        "cart" => fold::<domain::Cart>(store.as_ref(), &stream_id, moment).await?,
        "order" => fold::<domain::Order>(store.as_ref(), &stream_id, moment).await?,
        _ => fold::<domain::Payment>(store.as_ref(), &stream_id, moment).await?,
    };
    let Some(reached) = reached else {
        let first = store
            .read_stream(stream_type, &stream_id, 0, 1)
            .await
            .map_err(read_failure(format!(
                "cannot read stream {stream_type}/{stream_id}"
            )))?;
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
        .map_err(read_failure(format!(
            "cannot read stream {stream_type}/{stream_id}"
        )))?;
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
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(Failure::Runtime(
            anyhow::Error::new(error).context("cannot write to standard output"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_arguments_name_a_known_type_and_a_well_formed_id() {
        let id = "0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11";
        assert_eq!(
            parse_stream(&format!("order/{id}")).ok(),
            Some(("order", id.to_owned()))
        );
        assert_eq!(
            parse_stream("cart/cart-1").ok(),
            Some(("cart", "cart-1".to_owned()))
        );
        for bad in [
            "order",
            "orders/0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11",
            "order/not-a-uuid",
            "cart/has space",
            "/x",
        ] {
            assert!(matches!(parse_stream(bad), Err(Failure::Usage(_))), "{bad}");
        }
    }

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
                Err(Failure::Usage(message)) => assert!(message.contains("RFC 3339"), "{message}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_closed_pipe_stops_the_printer_without_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
        let mut printer = Printer::new(Closed, OutputFormat::Json, None);
        let event = sample_event();
        assert!(matches!(printer.page(&[event]), Ok(Flow::Stop)));
    }

    #[test]
    fn the_limit_stops_after_n_events() {
        let mut printer = Printer::new(Vec::new(), OutputFormat::Json, Some(2));
        let events = vec![sample_event(), sample_event(), sample_event()];
        assert!(matches!(printer.page(&events), Ok(Flow::Stop)));
        assert_eq!(printer.out.iter().filter(|b| **b == b'\n').count(), 2);
    }

    #[test]
    fn table_lines_align_under_the_header() {
        let mut printer = Printer::new(Vec::new(), OutputFormat::Table, None);
        printer
            .page(&[sample_event(), sample_event()])
            .expect("written");
        let text = String::from_utf8(printer.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let column = lines[0].find("EVENT_TYPE").unwrap();
        assert_eq!(&lines[1][column..column + 12], "OrderCreated", "{text}");
        assert!(lines[1].contains("order/"), "{text}");
        assert!(lines[1].ends_with("corr-1"), "{text}");
    }

    fn sample_event() -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::new_v4(),
            event_type: "OrderCreated".to_owned(),
            schema_version: 1,
            stream_type: "order".to_owned(),
            stream_id: Uuid::new_v4().to_string(),
            stream_version: 1,
            position: 7,
            occurred_at: Utc::now(),
            metadata: eventstore::EventMetadata {
                correlation_id: "corr-1".to_owned(),
                causation_id: "cause-1".to_owned(),
                saga_id: None,
                actor: "anonymous".to_owned(),
                source: "command-api".to_owned(),
            },
            payload: serde_json::value::RawValue::from_string(r#"{"a":1}"#.to_owned()).unwrap(),
        }
    }
}
