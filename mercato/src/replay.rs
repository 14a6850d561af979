//! `mercato replay`: rebuilds read models from the store beside the ones in service and swaps
//! them in (`projections::rebuild`), drawing the progress on stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use projections::ReadModel;
use projections::rebuild::{self, Observer, RebuildError, RebuildRequest};
use server::{Access, Config, Error, Platform, Result};

/// How often plain progress lines are printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false, id = "target")]
pub struct Target {
    /// The read model to rebuild
    #[arg(long, value_name = "NAME", group = "target")]
    projection: Option<String>,
    /// Rebuild every read model
    #[arg(long, group = "target")]
    all: bool,
    /// Drop every unfinished rebuild (what an interrupted replay built) and stop
    #[arg(long, group = "target")]
    discard: bool,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Rebuild from the events after this global position only: the rebuilt read model starts
    /// empty there and leaves out every earlier event, so it needs --drop-earlier-events
    /// [default: 0, the whole log]
    #[arg(long, value_name = "POSITION")]
    from: Option<u64>,
    /// Confirms --from: the read models in service are replaced by ones without the events at
    /// or before that position (their products, carts and orders are gone from them)
    #[arg(long, requires = "from")]
    drop_earlier_events: bool,
    /// Start over instead of resuming an interrupted rebuild of the same read models
    #[arg(long)]
    restart: bool,
}

/// A failed rebuild: a runtime failure naming what was being done.
pub fn rebuild_failure(error: RebuildError) -> Error {
    Error::runtime("the rebuild stopped", error)
}

pub async fn run(config: Config, args: &Args) -> Result<()> {
    let started = Instant::now();
    let models = match (&args.target.projection, args.target.all) {
        (Some(name), _) => vec![ReadModel::named(name).map_err(|error| {
            Error::Usage(format!(
                "{error}; --projection takes one of them (or use --all)"
            ))
        })?],
        (None, true) => ReadModel::ALL.to_vec(),
        (None, false) => Vec::new(),
    };
    if let Some(from) = args.from.filter(|from| *from > 0) {
        let names = models.iter().map(|model| model.name()).collect::<Vec<_>>();
        let what = format!(
            "--from {from} rebuilds {} from the events after position {from} only: the read models in service would be replaced by ones without the events at positions 1 to {from} (the products, carts and orders they made would be gone from them)",
            names.join(", ")
        );
        if !args.drop_earlier_events {
            return Err(Error::Usage(format!(
                "{what}; add --drop-earlier-events if that is what you mean, or leave out --from to rebuild from the whole log"
            )));
        }
        eprintln!("warning: {what}");
    }
    let platform = Platform::open_existing(&config, Access::Reader).await?;
    let mut meter = Meter::new();
    if args.target.discard {
        let had = rebuild::discard(&platform.read_models, &mut meter)
            .await
            .map_err(rebuild_failure)?;
        if had {
            println!("unfinished rebuilds dropped; the read models in service are unchanged");
        } else {
            println!("no unfinished rebuild to drop");
        }
        return Ok(());
    }
    let request = RebuildRequest {
        models,
        from: args.from,
        restart: args.restart,
    };
    let rebuilt = rebuild::rebuild(
        platform.store.clone(),
        &platform.read_models,
        &request,
        &mut meter,
    )
    .await
    .map_err(rebuild_failure)?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    for (name, position) in &rebuilt.models {
        let _ = writeln!(
            stdout,
            "{name}\trebuilt and in service at position {position}"
        );
    }
    let _ = writeln!(
        stdout,
        "replayed {} events into {} read model(s) in {elapsed:.1} s ({:.0} events/s)",
        rebuilt.events_read,
        rebuilt.models.len(),
        rebuilt.events_read as f64 / elapsed.max(1e-9)
    );
    Ok(())
}

/// Progress of a rebuild on stderr: a bar redrawn in place on a terminal, a plain line every few
/// seconds otherwise.
struct Meter {
    from: u64,
    head: u64,
    started: Instant,
    last_line: Instant,
    terminal: bool,
    read: u64,
    position: u64,
    /// Debug builds only, for the tests of an interrupted rebuild: after this many events the
    /// rebuild prints its progress line and stops there, never swapping anything in, until the
    /// test kills it (`MERCATO_TEST_REPLAY_STALL_AFTER`). A rebuild killed at a progress line
    /// could otherwise have finished a small history before the kill arrived.
    stall_after: Option<u64>,
}

impl Meter {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            from: 0,
            head: 0,
            started: now,
            last_line: now,
            terminal: std::io::stderr().is_terminal(),
            read: 0,
            position: 0,
            stall_after: if cfg!(debug_assertions) {
                std::env::var("MERCATO_TEST_REPLAY_STALL_AFTER")
                    .ok()
                    .and_then(|events| events.parse().ok())
            } else {
                None
            },
        }
    }

    /// The share of the log done, from positions (PostgreSQL's are not dense, so this is an
    /// estimate there; SQLite's count events exactly).
    fn fraction(&self) -> f64 {
        if self.head <= self.from {
            return 1.0;
        }
        (self.position.saturating_sub(self.from) as f64 / (self.head - self.from) as f64).min(1.0)
    }

    fn rate(&self) -> f64 {
        self.read as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn seconds_left(&self) -> f64 {
        let fraction = self.fraction();
        let elapsed = self.started.elapsed().as_secs_f64();
        if fraction > 0.0 {
            (elapsed / fraction - elapsed).max(0.0)
        } else {
            0.0
        }
    }

    fn line(&self) -> String {
        format!(
            "replay: {} events, position {} of {} ({:.0}%), {:.0} events/s, {:.0} s left",
            self.read,
            self.position,
            self.head,
            self.fraction() * 100.0,
            self.rate(),
            self.seconds_left()
        )
    }

    fn draw(&self) {
        const WIDTH: usize = 30;
        let fraction = self.fraction();
        let filled = ((fraction * WIDTH as f64) as usize).min(WIDTH);
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r[{}{}] {:>3.0}%  {} events  {:.0} events/s  {:.0} s left ",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            fraction * 100.0,
            self.read,
            self.rate(),
            self.seconds_left()
        );
        let _ = stderr.flush();
    }
}

impl Observer for Meter {
    fn resuming(&mut self, resumed: &[(&'static str, u64)]) {
        let resumed: Vec<String> = resumed
            .iter()
            .map(|(name, position)| format!("{name} at position {position}"))
            .collect();
        eprintln!(
            "resuming an interrupted rebuild: {} (--restart starts over)",
            resumed.join(", ")
        );
    }

    fn started(&mut self, from: u64, head: u64) {
        self.from = from;
        self.head = head;
        self.position = from;
    }

    fn progress(&mut self, read: u64, position: u64) {
        self.read = read;
        self.position = position;
        if self
            .stall_after
            .is_some_and(|stall_after| read >= stall_after)
        {
            eprintln!("{}", self.line());
            loop {
                std::thread::park();
            }
        }
        if self.terminal {
            self.draw();
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn caught_up(&mut self) {
        self.position = self.position.max(self.head);
        if self.terminal {
            self.draw();
            eprintln!();
        } else {
            eprintln!("{}", self.line());
        }
    }

    fn warning(&mut self, message: &str) {
        eprintln!("{message}");
    }
}
