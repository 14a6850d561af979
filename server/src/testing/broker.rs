//! A Kafka-protocol broker of a test's own: tansu (`cargo install tansu --locked
//! --no-default-features --features dynostore`), in memory, reached through a TCP proxy that can
//! cut it off as an outage would.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use eventstore::testing::skip_or_fail;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::eventually;

/// The tansu binary: `$TANSU`, else `tansu` on the PATH or in `~/.cargo/bin`.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TANSU") {
        return Some(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("tansu"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    candidates.into_iter().find(|path| path.is_file())
}

/// Whether the Kafka client the tests read with (kafka-python) is installed.
pub fn kafka_python_available() -> bool {
    std::process::Command::new("python3")
        // Isolated (-I), so that a directory named kafka where it runs (the repository's own
        // crate) does not pass for the package.
        .args(["-I", "-c", "import kafka.consumer"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A TCP proxy in front of the broker: `down` closes every connection and drops new ones as
/// they come, as a broker that went away would.
///
/// The proxy keeps its port while down: were it to let the port go, a client reconnecting to it
/// meanwhile could take it (a TCP connection to a free local port may connect to itself), and
/// the proxy could never listen there again.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    up: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("address").port();
        let (up, _) = watch::channel(true);
        let accept = tokio::spawn(Proxy::serve(listener, target, up.subscribe()));
        Proxy { port, up, accept }
    }

    async fn serve(listener: TcpListener, target: u16, up: watch::Receiver<bool>) {
        // Dropping the set (when this task is aborted) aborts every connection.
        let mut connections = JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            if !*up.borrow() {
                drop(inbound);
                continue;
            }
            let mut up = up.clone();
            connections.spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = up.wait_for(|up| !*up) => {}
                }
            });
            while connections.try_join_next().is_some() {}
        }
    }

    /// Cuts the broker off: open connections drop, new ones are closed as they come.
    pub fn down(&mut self) {
        self.up.send_replace(false);
    }

    /// Lets clients reach the broker again, on the same port.
    pub fn up(&mut self) {
        self.up.send_replace(true);
    }
}

/// A tansu broker (in memory) of the test's own, behind a [`Proxy`].
#[derive(Debug)]
pub struct Broker {
    _child: Child,
    pub proxy: Proxy,
    _log_dir: TempDir,
}

impl Broker {
    /// Starts a broker, or `None` when the test must be skipped (tansu or kafka-python missing).
    pub async fn start(test_name: &str) -> Option<Broker> {
        let Some(tansu) = tansu_binary() else {
            skip_or_fail(
                test_name,
                "tansu is not installed (cargo install tansu --locked --no-default-features --features dynostore)",
            );
            return None;
        };
        if !kafka_python_available() {
            skip_or_fail(
                test_name,
                "kafka-python is not installed (pip install kafka-python)",
            );
            return None;
        }
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("address").port()
        };
        let proxy = Proxy::start(port).await;
        let log_dir = TempDir::new().expect("temporary directory");
        let log = std::fs::File::create(log_dir.path().join("tansu.log")).expect("log");
        let child = Command::new(tansu)
            .args([
                "broker",
                "--storage-engine=memory://tansu/",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", proxy.port),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start tansu");
        let listening = eventually(Duration::from_secs(30), || async {
            TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(listening.is_some(), "tansu did not listen within 30 s");
        Some(Broker {
            _child: child,
            proxy,
            _log_dir: log_dir,
        })
    }

    /// The broker's address, through the proxy.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

/// Publishes `payload` under `key` straight onto `topic` of the broker at `bootstrap`, as a
/// client other than mercato's relay would (a poison message, say).
#[cfg(feature = "kafka")]
pub async fn produce(bootstrap: &str, topic: &str, key: &str, payload: &str) {
    let settings = kafka::KafkaSettings {
        bootstrap: bootstrap.to_owned(),
        prefix: String::new(),
        partitions: 1,
        replication: 1,
        security: kafka::KafkaSecurity::Plaintext,
    };
    kafka::produce(&settings, topic, key, payload.as_bytes())
        .await
        .expect("publish the message");
}
