//! Limits at the edge, so that one client cannot take the shop from everyone else:
//!
//! - **who the client is**: the peer's address, or, behind a proxy the configuration trusts,
//!   the client its `X-Forwarded-For` names ([`client_address`]); anyone else's
//!   `X-Forwarded-For` is ignored, so an address cannot be forged past the limits;
//! - **rate limits** ([`Limits::admit`]): a GCRA bucket per caller (an account or API key, else
//!   the address), stricter on the account routes (per address), answered 429 with
//!   `Retry-After`;
//! - **load shedding**: at most `max_in_flight` requests run at once; one more is answered 503
//!   with `Retry-After` at once instead of queueing until everything times out. Probes
//!   (`/health`, `/ready`, `/metrics`) are neither limited nor shed;
//! - **connections** ([`Connections`]): at most `max_connections` open, and
//!   `max_connections_per_address` from one address; a connection beyond gets a 503 with
//!   `Retry-After` and is closed, so slow or idle connections of one client cannot take the
//!   file descriptors everyone needs. (A request head must arrive within
//!   [`crate::listen::HEADER_READ_TIMEOUT`], an idle keep-alive connection included.)
//!
//! The buckets are per process: with several query or command processes behind a balancer,
//! each allows its share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_common::Problem;
use http_common::context::ClientAddress;
use identity::Principal;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, Proxies};
use crate::policy::Bucket;

/// How often buckets that are full again are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The rate limits and the in-flight bound of one process.
#[derive(Debug)]
pub struct Limits {
    /// Anonymous callers (by address), guests and customers: per second.
    callers: Option<DefaultKeyedRateLimiter<Caller>>,
    /// Staff accounts and API keys: per second.
    staff: Option<DefaultKeyedRateLimiter<Caller>>,
    /// The account routes, per address: per minute.
    accounts: Option<DefaultKeyedRateLimiter<Caller>>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

/// Whose bucket a request counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Caller {
    /// An account (customer or staff).
    Account(uuid::Uuid),
    /// An API key.
    Key(String),
    /// An address; an IPv6 client is counted by its /64, which one subscriber usually holds
    /// whole.
    Address(IpAddr),
    /// A request whose address is unknown (never over TCP).
    Unknown,
}

impl Caller {
    fn of(principal: &Principal, address: Option<IpAddr>) -> Caller {
        match principal {
            Principal::Customer { user_id, .. } | Principal::Staff { user_id, .. } => {
                Caller::Account(*user_id)
            }
            Principal::Service { key_id, .. } => Caller::Key(key_id.clone()),
            Principal::Anonymous => Caller::by_address(address),
        }
    }

    fn by_address(address: Option<IpAddr>) -> Caller {
        match address {
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Caller::Address(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Caller::Address(IpAddr::V6(prefix.into()))
                }
            },
            Some(address) => Caller::Address(address),
            None => Caller::Unknown,
        }
    }
}

/// A keyed limiter allowing `rate` a second (or a minute) with a burst of `burst` periods' worth,
/// or none for a rate of 0.
fn limiter(rate: i32, per_minute: bool, burst: u32) -> Option<DefaultKeyedRateLimiter<Caller>> {
    let rate = NonZeroU32::new(u32::try_from(rate).ok()?)?;
    let quota = if per_minute {
        Quota::per_minute(rate)
    } else {
        Quota::per_second(rate)
    };
    let burst = rate.saturating_mul(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    Some(RateLimiter::dashmap(quota.allow_burst(burst)))
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its caller is over a rate limit: 429, retry after this long.
    TooMany(Duration),
    /// The process runs as many requests as it may: 503.
    Overloaded,
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        let max_in_flight = usize::try_from(config.max_in_flight.get()).unwrap_or(1);
        Limits {
            callers: limiter(config.rate_limit.get(), false, 2),
            staff: limiter(config.staff_rate_limit.get(), false, 2),
            accounts: limiter(config.account_rate_limit.get(), true, 1),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
        }
    }

    /// Admits one request of `principal` from `address` to a route of `bucket`: a permit to hold
    /// while it runs (none for a probe), or why not.
    pub fn admit(
        &self,
        bucket: Bucket,
        principal: &Principal,
        address: Option<IpAddr>,
    ) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        let (limiter, caller) = match bucket {
            Bucket::Probe => return Ok(None),
            Bucket::Accounts => (&self.accounts, Caller::by_address(address)),
            Bucket::Caller => {
                let limiter = match principal {
                    Principal::Staff { .. } | Principal::Service { .. } => &self.staff,
                    Principal::Customer { .. } | Principal::Anonymous => &self.callers,
                };
                (limiter, Caller::of(principal, address))
            }
        };
        if let Some(limiter) = limiter
            && let Err(not_until) = limiter.check_key(&caller)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("mercato_http_refused_total", "reason" => "rate_limited")
                .increment(1);
            return Err(Refusal::TooMany(wait));
        }
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                metrics::counter!("mercato_http_refused_total", "reason" => "overloaded")
                    .increment(1);
                Err(Refusal::Overloaded)
            }
        }
    }

    /// Forgets the buckets that are full again, every minute, until `shutdown`: an address seen
    /// once costs memory for a minute, not for ever.
    pub fn spawn_forgetting(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let limits = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FORGET_EVERY);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                for limiter in [&limits.callers, &limits.staff, &limits.accounts]
                    .into_iter()
                    .flatten()
                {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            }
        })
    }

    /// How many requests may run at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

impl Refusal {
    /// The answer: 429 or 503, each with `Retry-After` in whole seconds (at least 1).
    pub fn answer(self, max_in_flight: usize) -> Response {
        match self {
            Refusal::TooMany(wait) => {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let seconds = seconds.max(1);
                let mut response = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    format!(
                        "too many requests from this caller; retry after {seconds} s (Retry-After)"
                    ),
                )
                .into_response();
                if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            Refusal::Overloaded => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "the server is running as many requests as it takes ({max_in_flight}); retry after 1 s (Retry-After)"
                ),
            )
            .into_response(),
        }
    }
}

/// The client's address of a connection from `peer`: the peer itself, unless it is a trusted
/// proxy; then the nearest address in `X-Forwarded-For` (read from the right, the proxies'
/// own end) that is not a trusted proxy. A list that cannot be read names no one: the peer is
/// the client then.
pub fn client_of(peer: IpAddr, forwarded: &[&str], trusted: &Proxies) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded
        .iter()
        .flat_map(|header| header.split(','))
        .map(str::trim)
        .rev()
    {
        let Some(address) = parse_forwarded(entry) else {
            return client;
        };
        client = address;
        if !trusted.contains(&address) {
            return address;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, with a port (`1.2.3.4:80`, `[::1]:80`) or without.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address);
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|address| address.ip())
}

/// Records the request's [`ClientAddress`] (see [`client_of`]).
pub async fn client_address(
    State(trusted): State<Arc<Proxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    if let Some(peer) = peer {
        let client = if trusted.is_empty() {
            peer
        } else {
            let forwarded: Vec<&str> = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .collect();
            client_of(peer, &forwarded, &trusted)
        };
        request.extensions_mut().insert(ClientAddress(client));
    }
    next.run(request).await
}

/// The open connections of one listener, in all and by address.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    per_address: usize,
    trusted: Proxies,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection's place; given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    address: Option<IpAddr>,
}

impl Connections {
    pub fn new(config: &Config) -> Arc<Connections> {
        Arc::new(Connections {
            max: usize::try_from(config.max_connections.get()).unwrap_or(1),
            per_address: usize::try_from(config.max_connections_per_address.get()).unwrap_or(1),
            trusted: config.trusted_proxies.clone(),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a connection from `peer`, or `None` when there is no room for it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionSlot> {
        let counted =
            (!self.trusted.contains(&peer)).then(|| match Caller::by_address(Some(peer)) {
                Caller::Address(address) => address,
                _ => peer,
            });
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.0 >= self.max {
            return None;
        }
        if let Some(address) = counted {
            let from_address = open.1.entry(address).or_insert(0);
            if *from_address >= self.per_address {
                return None;
            }
            *from_address += 1;
        }
        open.0 += 1;
        Some(ConnectionSlot {
            connections: self.clone(),
            address: counted,
        })
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(address) = self.address
            && let Some(count) = open.1.get_mut(&address)
        {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&address);
            }
        }
    }
}

/// What a connection beyond the limits is sent before it is closed.
pub fn refused_connection_answer() -> Vec<u8> {
    let body = serde_json::to_vec(&Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too-many-connections",
        "the server has as many connections open as it keeps (from this address, or in all); \
         reuse an open connection or retry after 1 s (Retry-After)",
    ))
    .unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(text: &str) -> Proxies {
        text.parse().expect("proxies")
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted = proxies("10.0.0.0/8, 192.168.1.7");
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let stranger: IpAddr = "198.51.100.4".parse().unwrap();
        // A stranger's header names whoever it likes: ignored.
        assert_eq!(client_of(stranger, &["203.0.113.9"], &trusted), stranger);
        // Through one trusted proxy.
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(client_of(proxy, &["203.0.113.9"], &trusted), client);
        // A forged entry on the left of the real client is not believed.
        assert_eq!(
            client_of(proxy, &["1.1.1.1, 203.0.113.9, 10.0.0.5"], &trusted),
            client
        );
        // Several headers read as one list; ports allowed.
        assert_eq!(
            client_of(proxy, &["1.1.1.1", "203.0.113.9:4000"], &trusted),
            client
        );
        // Nothing readable: the proxy is the client.
        assert_eq!(client_of(proxy, &["unknown"], &trusted), proxy);
        assert_eq!(client_of(proxy, &[], &trusted), proxy);
        // Every entry a proxy: the farthest one.
        assert_eq!(
            client_of(proxy, &["10.9.9.9, 192.168.1.7"], &trusted),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
        assert!("10.0.0.0/33".parse::<Proxies>().is_err());
        assert!("nonsense".parse::<Proxies>().is_err());
    }

    #[test]
    fn a_caller_over_its_rate_gets_told_when_to_retry_and_others_are_not_affected() {
        let config = Config {
            rate_limit: crate::config::Rate::new(1),
            ..Config::default()
        };
        let limits = Limits::new(&config);
        let one: IpAddr = "203.0.113.1".parse().unwrap();
        let other: IpAddr = "203.0.113.2".parse().unwrap();
        let anonymous = Principal::Anonymous;
        // A burst of two seconds' worth, then refused.
        for _ in 0..2 {
            assert!(limits.admit(Bucket::Caller, &anonymous, Some(one)).is_ok());
        }
        let refused = limits.admit(Bucket::Caller, &anonymous, Some(one));
        assert!(matches!(refused, Err(Refusal::TooMany(wait)) if wait <= Duration::from_secs(1)));
        assert!(
            limits
                .admit(Bucket::Caller, &anonymous, Some(other))
                .is_ok()
        );
        // Probes are never limited.
        for _ in 0..10 {
            assert!(limits.admit(Bucket::Probe, &anonymous, Some(one)).is_ok());
        }
        let answer = Refusal::TooMany(Duration::from_millis(300)).answer(1);
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn requests_beyond_the_in_flight_bound_are_shed_until_one_ends() {
        let config = Config {
            max_in_flight: crate::config::Capacity::new(2),
            ..Config::default()
        };
        let limits = Limits::new(&config);
        let key = Principal::Service {
            key_id: "k".to_owned(),
            roles: Default::default(),
        };
        let first = limits.admit(Bucket::Caller, &key, None).unwrap();
        let _second = limits.admit(Bucket::Caller, &key, None).unwrap();
        assert_eq!(
            limits.admit(Bucket::Caller, &key, None).unwrap_err(),
            Refusal::Overloaded
        );
        drop(first);
        assert!(limits.admit(Bucket::Caller, &key, None).is_ok());
    }

    #[test]
    fn connections_are_capped_in_all_and_per_address_and_given_back() {
        let config = Config {
            max_connections: crate::config::Capacity::new(3),
            max_connections_per_address: crate::config::Capacity::new(2),
            trusted_proxies: proxies("10.0.0.1"),
            ..Config::default()
        };
        let connections = Connections::new(&config);
        let one: IpAddr = "203.0.113.1".parse().unwrap();
        let a = connections.admit(one).expect("first");
        let _b = connections.admit(one).expect("second");
        assert!(connections.admit(one).is_none(), "a third from one address");
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let _c = connections.admit(proxy).expect("a proxy's");
        assert!(connections.admit(proxy).is_none(), "the total");
        drop(a);
        assert_eq!(connections.open(), 2);
        assert!(connections.admit(one).is_some());
        // IPv6 clients count by their /64.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(Caller::by_address(Some(v6a)), Caller::by_address(Some(v6b)));
    }
}
