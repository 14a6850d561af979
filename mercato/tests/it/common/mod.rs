//! What the command line's tests share: the binary with the machine's configuration removed, the
//! binary serving as its own process (where the process is the subject: signals, SIGKILL, its
//! log output), and everything `server::testing` has for in-process servers.

#![allow(dead_code)]

pub mod abuse;
pub mod replay;

use std::ops::Deref;
use std::process::Stdio;
use std::time::Duration;

#[allow(unused_imports)]
pub use server::testing::{
    Api, Setup, TestApp, TestData, cache_header, event_position, eventually,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// The data a server runs on (the name the process tests use).
pub type ServerData = TestData;

/// The binary, with every variable it reads its configuration from removed, so that the
/// machine's configuration (`DATABASE_URL` set for the tests, say) cannot leak into a test.
pub fn mercato() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mercato"));
    for variable in server::testing::configuration_variables() {
        command.env_remove(variable);
    }
    command
}

/// [`mercato`] as an asynchronous command, killed when dropped.
pub fn mercato_async() -> tokio::process::Command {
    let mut command = tokio::process::Command::from(mercato());
    command.kill_on_drop(true);
    command
}

/// The binary on `data`'s store (and its Redis, when it has one), as an operator runs it beside
/// the server: `args`, then `--data-dir`.
pub fn mercato_on(data: &ServerData, args: &[&str]) -> tokio::process::Command {
    let mut command = mercato_async();
    command
        .args(args)
        .arg("--data-dir")
        .arg(data.data_dir.path());
    if let Some(database) = &data.database {
        command.env("DATABASE_URL", database.url());
    }
    if let Some(redis_url) = &data.redis_url {
        command.env("REDIS_URL", redis_url);
    }
    command
}

/// Places an order through `POST /orders`; answers its id.
pub async fn place_order(
    server: &Api,
    customer: &str,
    lines: &[(&str, u32)],
    token: &str,
) -> String {
    server.place_order(customer, lines, token).await
}

/// An API key with the admin role on `data` (and the settings among `serve_args`, such as
/// `--database-url`), made once with `mercato api-keys create` (as an operator makes one) and
/// kept in the data directory for the test's later servers.
pub async fn admin_key(data: &ServerData, serve_args: &[&str]) -> String {
    let kept = data.data_dir.path().join("test-admin-key");
    if let Ok(key) = std::fs::read_to_string(&kept) {
        return key;
    }
    let output = mercato_on(
        data,
        &["api-keys", "create", "--role", "admin", "--name", "tests"],
    )
    .args(serve_args)
    .output()
    .await
    .expect("run mercato api-keys create");
    assert!(
        output.status.success(),
        "mercato api-keys create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    std::fs::write(&kept, &key).expect("keep the key");
    key
}

/// The variables of the rate limits and of the caps on a customer's open orders, which
/// [`Server`] turns off.
pub const RATE_LIMIT_VARIABLES: [&str; 5] = [
    "MERCATO_RATE_LIMIT",
    "MERCATO_STAFF_RATE_LIMIT",
    "MERCATO_ACCOUNT_RATE_LIMIT",
    "MERCATO_MAX_OPEN_ORDERS",
    "MERCATO_MAX_RESERVED_UNITS",
];

/// A running `mercato serve` process.
#[derive(Debug)]
pub struct Server {
    api: Api,
    child: Child,
}

impl Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    /// Starts the binary on `data` and waits until it listens.
    pub async fn start(data: &ServerData) -> Server {
        Server::start_role(data, "all").await
    }

    /// Starts one role of the binary on `data` and waits until it listens.
    pub async fn start_role(data: &ServerData, role: &str) -> Server {
        Server::start_with(data, role, &[]).await
    }

    /// Starts the binary with extra arguments (after `serve`), its stderr written to a file.
    /// Its client holds an admin API key made with `mercato api-keys create` on the same data.
    pub async fn start_with(data: &ServerData, role: &str, extra: &[&str]) -> Server {
        let log_filter = if extra.is_empty() { "warn" } else { "info" };
        Server::start_with_log_filter(data, role, extra, log_filter).await
    }

    /// [`Server::start_with`] with `RUST_LOG` set to `log_filter` (`debug`, say).
    pub async fn start_with_log_filter(
        data: &ServerData,
        role: &str,
        extra: &[&str],
        log_filter: &str,
    ) -> Server {
        Server::start_with_env(data, role, extra, log_filter, &[]).await
    }

    /// [`Server::start_with_log_filter`] with more environment variables.
    pub async fn start_with_env(
        data: &ServerData,
        role: &str,
        extra: &[&str],
        log_filter: &str,
        variables: &[(&str, &str)],
    ) -> Server {
        let admin_key = admin_key(data, extra).await;
        let mut command = mercato_on(data, &["serve", "--listen", "127.0.0.1:0", "--role", role]);
        command
            .args(extra)
            .envs(variables.iter().copied())
            .env("RUST_LOG", log_filter)
            .stdout(Stdio::piped());
        // Tests and benches register and log in many customers, drive load from one address
        // and place many slow orders for one customer: the rate limits and the open-order caps
        // are off unless `extra` sets them (a flag beats the variable).
        for variable in RATE_LIMIT_VARIABLES {
            command.env(variable, "0");
        }
        // Tests run side by side on one PostgreSQL server; a bench sets its own pool (a flag
        // beats the variable) or the variable itself.
        if std::env::var_os("MERCATO_DB_POOL").is_none() {
            command.env("MERCATO_DB_POOL", server::testing::TEST_DB_POOL.to_string());
        }
        if extra.is_empty() {
            command.stderr(Stdio::inherit());
        } else {
            let log =
                std::fs::File::create(data.data_dir.path().join("server.log")).expect("log file");
            command.stderr(Stdio::from(log));
        }
        let mut child = command.spawn().expect("start mercato serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("mercato serve did not start listening within 60 s")
            .expect("read stdout")
            .expect("mercato serve exited before listening");
        let base = line
            .strip_prefix("mercato listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            api: Api::new(base).with_credentials(&admin_key),
            child,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the process to stop (SIGTERM) and waits for it.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("mercato did not stop within 30 s of SIGTERM")
            .expect("wait")
    }
}

/// The CPU time process `pid` has used so far (user and system, from `/proc/PID/stat`), in
/// seconds (0 when unreadable).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Clock ticks are 100 a second on Linux for every architecture it runs on here.
    (ticks(11) + ticks(12)) / 100.0
}

/// A `kB` field of process `pid`'s `/proc/PID/status` (`VmHWM:`, `RssAnon:`), in MB (0 when
/// unreadable).
pub fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in MB.
pub fn peak_memory_mb(pid: u32) -> f64 {
    status_mb(pid, "VmHWM:")
}
