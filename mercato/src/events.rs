//! `mercato events`: the event history as auditors read it: one stream, the global log, or
//! everything one request caused.
//!
//! Events are read a page at a time and each page is written (and flushed) before the next one is
//! read, so no command holds more than one page of the history in memory. Output goes through a
//! locked, buffered stdout; a reader that goes away (`mercato events tail | head -3`) ends the
//! command normally, with exit 0 and nothing on stderr.

use std::io::{self, BufWriter, StdoutLock, Write};

use chrono::SecondsFormat;
use clap::{Subcommand, ValueEnum};
use eventstore::{RecordedEvent, StoreError, Subscription};
use server::error::store_failure;
use server::{Config, Error, Result};
use uuid::Uuid;

/// How `mercato events` prints events: one line per event in every format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns with a header: position, time, TYPE/ID@version, event type, correlation id
    Table,
    /// The envelope as `GET /events` returns it, one JSON object per line
    Json,
    /// CloudEvents 1.0 in structured JSON mode, one event per line; mercato's metadata are
    /// extension attributes (position, streamtype, streamid, streamversion, schemaversion,
    /// correlationid, causationid, sagaid, actor), all strings
    Cloudevents,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One stream's history in version order, e.g. `order/0b9f...`. A stream without events is an
    /// error (exit 1): the type or id is wrong, or nothing was written to it yet
    Stream {
        /// The stream: its type (product, cart, order, payment, product_views, user), a slash,
        /// its id
        #[arg(value_name = "TYPE/ID")]
        stream: String,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Stop after this many events [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// The global log in position order; an empty log prints nothing and exits 0
    Tail {
        /// Start at this global position (included) [default: the beginning]
        #[arg(long, value_name = "POSITION")]
        from: Option<u64>,
        /// Keep following new events until interrupted (Ctrl-C ends it with exit 0)
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Stop after this many events [default: all, or forever with --follow]
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Everything one request or one saga caused, across streams, in position order. An id with
    /// no events is an error (exit 1)
    Correlated {
        /// The correlation id (the `X-Correlation-Id` of the request)
        #[arg(value_name = "CORRELATION_ID")]
        correlation_id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Stop after this many events [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
}

/// How many events one read asks the store for.
pub const PAGE: usize = 500;

/// The stream types whose ids are UUIDs.
const UUID_STREAMS: &[&str] = &["product", "order", "payment", domain::VIEWS_STREAM_TYPE];

/// Parses `TYPE/ID` into a known stream type and a well-formed id.
pub fn parse_stream(text: &str) -> Result<(&'static str, String)> {
    let known = domain::stream_types();
    let Some((stream_type, stream_id)) = text.split_once('/') else {
        return Err(Error::Usage(format!(
            "`{text}` is not a stream: write TYPE/ID, such as order/0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11 (types: {})",
            known.join(", ")
        )));
    };
    let Some(stream_type) = known.iter().copied().find(|known| *known == stream_type) else {
        return Err(Error::Usage(format!(
            "unknown stream type `{stream_type}`: use one of {}",
            known.join(", ")
        )));
    };
    if UUID_STREAMS.contains(&stream_type) {
        let id = Uuid::parse_str(stream_id).map_err(|_| {
            Error::Usage(format!(
                "`{stream_id}` is not a {stream_type} id: {stream_type} ids are UUIDs, such as 0b9f8c1e-5d1a-4d8e-9a57-3f0f7c0e2a11"
            ))
        })?;
        return Ok((stream_type, id.to_string()));
    }
    domain::CartId::parse(stream_id).map_err(|error| {
        Error::Usage(format!(
            "`{stream_id}` is not a {stream_type} id: {error} (1 to 64 characters of A-Za-z0-9_-)"
        ))
    })?;
    Ok((stream_type, stream_id.to_owned()))
}

fn read_failure(what: String) -> impl FnOnce(StoreError) -> Error {
    store_failure(what)
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
    fn page(&mut self, events: &[RecordedEvent]) -> Result<Flow> {
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
            Err(error) => Err(Error::runtime("cannot write to standard output", error)),
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
                serde_json::to_writer(&mut self.out, &schemas::envelope::feed_json(event))?;
                self.out.write_all(b"\n")
            }
            OutputFormat::Cloudevents => {
                serde_json::to_writer(&mut self.out, &schemas::cloudevents::cloud_event(event))?;
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

pub async fn run(config: Config, command: &Command) -> Result<()> {
    let (format, limit) = match command {
        Command::Stream { format, limit, .. }
        | Command::Tail { format, limit, .. }
        | Command::Correlated { format, limit, .. } => (*format, *limit),
    };
    match command {
        Command::Stream { stream, .. } => {
            let (stream_type, stream_id) = parse_stream(stream)?;
            let store = server::open_existing_store(&config).await?;
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
        Command::Tail { from, follow, .. } => {
            // `--from P` includes P; the store reads after a position.
            let after = from.unwrap_or(0).saturating_sub(1);
            let store = server::open_existing_store(&config).await?;
            let mut printer = Printer::stdout(format, limit);
            if printer.done() {
                return Ok(());
            }
            if *follow {
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
        Command::Correlated { correlation_id, .. } => {
            if correlation_id.is_empty() || correlation_id.len() > 128 {
                return Err(Error::Usage(
                    "a correlation id is 1 to 128 characters (the X-Correlation-Id of a request)"
                        .to_owned(),
                ));
            }
            let store = server::open_existing_store(&config).await?;
            let mut printer = Printer::stdout(format, limit);
            let mut after = 0;
            loop {
                let page = store
                    .read_correlated(correlation_id, after, PAGE)
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
pub fn nothing_found(message: String) -> Error {
    Error::Failed(message)
}

/// Prints batches as the subscription delivers them until the limit, a closed pipe or Ctrl-C.
async fn follow_log(
    mut subscription: Subscription,
    printer: &mut Printer<impl Write>,
) -> Result<()> {
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
            assert!(matches!(parse_stream(bad), Err(Error::Usage(_))), "{bad}");
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
            occurred_at: chrono::Utc::now(),
            metadata: eventstore::EventMetadata {
                correlation_id: "corr-1".to_owned(),
                causation_id: "cause-1".to_owned(),
                saga_id: None,
                actor: "anonymous".to_owned(),
                source: "command-api".to_owned(),
                traceparent: None,
                tracestate: None,
            },
            payload: serde_json::value::RawValue::from_string(r#"{"a":1}"#.to_owned()).unwrap(),
        }
    }
}
