//! Where outgoing webhooks may connect: public addresses only, unless the operator allowlists a
//! host or an address block.
//!
//! Whoever registers a webhook chooses its URL, so without a check the server would make
//! requests on their behalf into its own network: the cloud metadata service at
//! 169.254.169.254, a database on 10.0.0.5, an admin interface on localhost (server-side request
//! forgery). [`DestinationGuard`] refuses such destinations twice:
//!
//! - when a URL is registered ([`DestinationGuard::check_url`]), so that a wrong URL is answered
//!   at once, with a reason;
//! - at every connection ([`DestinationGuard::client`]), because a name that resolved to a public
//!   address at registration may resolve to a private one later (DNS rebinding). The client's
//!   resolver checks the very addresses the connection then uses, so there is no window between
//!   the check and the connect. Redirects are not followed: a public receiver could otherwise
//!   bounce the request to an internal address. reqwest does not ask the resolver about a URL
//!   whose host is an IP address, so a sender calls [`DestinationGuard::check_before_send`]
//!   before each request as well.
//!
//! `MERCATO_WEBHOOK_ALLOWLIST` ([`Allowlist`]) names the exceptions: receivers inside the
//! operator's network, and the local receivers of tests.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use url::{Host, Url};

/// The environment variable holding the [`Allowlist`].
pub const ALLOWLIST_VARIABLE: &str = "MERCATO_WEBHOOK_ALLOWLIST";

/// The `User-Agent` of webhook requests, so that receivers can tell mercato's requests apart.
pub const USER_AGENT: &str = concat!("mercato-webhooks/", env!("CARGO_PKG_VERSION"));

/// The longest a webhook connection may take to open (capped by the request's total timeout):
/// a receiver that does not accept within this is down, and waiting longer holds up the queue.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a host name may take to resolve before it counts as not resolving.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The hosts and address blocks webhooks may reach even though they are not public
/// (`MERCATO_WEBHOOK_ALLOWLIST`): a receiver inside the operator's network, or a test's local
/// receiver.
///
/// A host name matches exactly (case-insensitively, a trailing dot ignored; no wildcards, no
/// subdomains) and then allows every address it resolves to. An address block (CIDR) allows the
/// addresses in it whatever name led there. Empty by default: only public addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Lowercase, without a trailing dot.
    hosts: BTreeSet<String>,
    networks: Vec<IpNet>,
}

impl Allowlist {
    /// Parses a comma-separated list of host names, IP addresses and CIDR blocks, such as
    /// `localhost,127.0.0.1/32,10.0.0.0/8,::1`. Blank items are ignored; a bare address is a
    /// block of one (`/32` or `/128`). The error names the bad item and what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = Self::empty();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item.contains('/') {
                let network: IpNet = item.parse().map_err(|_| {
                    format!(
                        "{ALLOWLIST_VARIABLE}: `{item}` is not an address block; write a block as \
                         ADDRESS/PREFIX-LENGTH, such as 10.0.0.0/8 or fd00::/8"
                    )
                })?;
                list.push_network(network.trunc());
            } else if let Some(ip) = parse_ip(item) {
                list.push_network(IpNet::from(ip));
            } else if let Some(host) = host_name(item) {
                list.hosts.insert(host);
            } else {
                return Err(format!(
                    "{ALLOWLIST_VARIABLE}: `{item}` is neither a host name, an IP address nor an \
                     address block; list them separated by commas, without schemes or ports, \
                     such as localhost,127.0.0.1/32,10.0.0.0/8,::1"
                ));
            }
        }
        Ok(list)
    }

    /// The empty list: webhooks reach public addresses only.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether nothing is allowlisted.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.networks.is_empty()
    }

    /// Whether the host name `host` is listed (case-insensitively, a trailing dot ignored).
    pub fn allows_host(&self, host: &str) -> bool {
        !self.hosts.is_empty() && self.hosts.contains(&normalize_host(host))
    }

    /// Whether `ip` lies in a listed block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) also
    /// matches the blocks of its IPv4 address.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.networks.iter().any(|network| {
            network.contains(&ip) || mapped.is_some_and(|inner| network.contains(&inner))
        })
    }

    fn push_network(&mut self, network: IpNet) {
        if !self.networks.contains(&network) {
            self.networks.push(network);
        }
    }
}

/// The list as `MERCATO_WEBHOOK_ALLOWLIST` would spell it (for the startup log).
impl fmt::Display for Allowlist {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let hosts = self.hosts.iter().map(|host| host as &dyn fmt::Display);
        let networks = self
            .networks
            .iter()
            .map(|network| network as &dyn fmt::Display);
        for item in hosts.chain(networks) {
            if !first {
                formatter.write_str(",")?;
            }
            first = false;
            write!(formatter, "{item}")?;
        }
        Ok(())
    }
}

/// An IP address, bare or in brackets (`[::1]`).
fn parse_ip(item: &str) -> Option<IpAddr> {
    let bare = item
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(item);
    bare.parse().ok()
}

/// A host name in its compared form (lowercase, no trailing dot), or `None` when `item` is not
/// one: labels of letters, digits, `-` and `_`, each 1 to 63 long, 253 in all. A name in another
/// script is taken in its IDNA (punycode) form, as URLs carry it.
fn host_name(item: &str) -> Option<String> {
    let name = match Host::parse(item).ok()? {
        Host::Domain(name) => normalize_host(&name),
        Host::Ipv4(_) | Host::Ipv6(_) => return None,
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        });
    valid.then_some(name)
}

/// A host name as compared: lowercase, without a trailing dot.
fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The IPv4 blocks that are not public destinations: (network, prefix length, reason). The
/// single addresses come before the blocks that contain them.
const FORBIDDEN_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 32, "unspecified"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "carrier-grade NAT"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (cloud metadata among them)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// The IPv6 blocks that are not public destinations, besides `::`, `::1`, the ones embedding an
/// IPv4 address (judged by it) and everything outside global unicast (2000::/3, "reserved").
const FORBIDDEN_V6: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (deprecated)",
    ),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
    (
        Ipv6Addr::new(0x0100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only",
    ),
    (
        Ipv6Addr::new(0x0064, 0xff9b, 0x0001, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64",
    ),
    (
        Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
    (
        Ipv6Addr::new(0x2001, 0x0002, 0, 0, 0, 0, 0, 0),
        48,
        "benchmarking",
    ),
];

/// Why `ip` is not a public destination, in words (`"loopback"`, `"private"`, `"link-local
/// (cloud metadata among them)"`, ...), or `None` for a public address. IPv6 addresses that
/// carry an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that IPv4 address, since that is where the
/// packets end up.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    FORBIDDEN_V4
        .iter()
        .find(|(network, prefix, _)| {
            let mask = u32::MAX << (32 - u32::from(*prefix));
            bits & mask == u32::from(*network) & mask
        })
        .map(|(_, _, reason)| *reason)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    let bits = u128::from(ip);
    let listed = FORBIDDEN_V6.iter().find(|(network, prefix, _)| {
        let mask = u128::MAX << (128 - u32::from(*prefix));
        bits & mask == u128::from(*network) & mask
    });
    if let Some((_, _, reason)) = listed {
        return Some(reason);
    }
    // Only 2000::/3 is allocated for global unicast.
    if bits >> 125 != 0b001 {
        return Some("reserved");
    }
    None
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = ip.segments();
    let octets = ip.octets();
    let last_32 = || Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match segments {
        [0, 0, 0, 0, 0, 0, _, _] => Some(last_32()),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(last_32()),
        [0x2002, high, low, ..] => Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))),
        _ => None,
    }
}

/// Why a webhook destination is refused; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The text is not an absolute URL with a host.
    #[error(
        "the webhook URL is not valid ({reason}); give an absolute URL such as https://hooks.example.com/mercato"
    )]
    BadUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// A scheme other than `http` and `https`.
    #[error(
        "the webhook URL's scheme is `{scheme}`, but webhooks are sent over http:// or https:// only; give an https:// URL"
    )]
    UnsupportedScheme {
        /// The URL's scheme.
        scheme: String,
    },
    /// A user name or password in the URL: they would be shown wherever the URL is, and the
    /// receiver authenticates the sender by the signature anyway.
    #[error(
        "the webhook URL carries a user name or password; remove them from the URL (the receiver checks the webhook signature instead)"
    )]
    CredentialsInUrl,
    /// The host name has no addresses (or the lookup failed or took too long).
    #[error(
        "the webhook host `{host}` does not resolve ({reason}); check the host name, and that this server's DNS resolves it"
    )]
    DoesNotResolve {
        /// The host name of the URL.
        host: String,
        /// What the lookup answered.
        reason: String,
    },
    /// An address that is not public and not allowlisted.
    #[error(
        "webhooks may not connect to {ip}{}, which is not a public address: {reason}; give a public address, or, for a trusted receiver inside your network, name it in MERCATO_WEBHOOK_ALLOWLIST (its host name, or an address block such as {ip}/{})",
        through_host(.host, .ip),
        full_prefix(.ip)
    )]
    Forbidden {
        /// The host name of the URL (the address itself for an IP-literal URL).
        host: String,
        /// The refused address.
        ip: IpAddr,
        /// Why it is not public, as [`forbidden`] says.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error(
        "cannot build the webhook HTTP client ({reason}); check the TLS setup of this build (reqwest with rustls and the webpki roots)"
    )]
    Client {
        /// What reqwest answered.
        reason: String,
    },
}

impl DestinationError {
    /// The guard's refusal within an error's chain of sources, such as the [`reqwest::Error`] of
    /// a request whose connection the resolver of [`DestinationGuard::client`] refused: a sender
    /// tells a refused destination (which a retry does not help) from a failed connection.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(found) = error.downcast_ref::<Self>() {
                return Some(found);
            }
            current = error.source();
        }
        None
    }
}

/// ` (host `name`)` when the address was reached through a name.
fn through_host(host: &str, ip: &IpAddr) -> String {
    if host.parse::<IpAddr>().is_ok_and(|literal| literal == *ip) {
        String::new()
    } else {
        format!(" (host `{host}`)")
    }
}

/// The prefix length of a block of one address.
fn full_prefix(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Decides where webhooks may connect, and makes the HTTP client that enforces it at every
/// connection (see the module documentation).
#[derive(Clone, Debug)]
pub struct DestinationGuard {
    allow: Arc<Allowlist>,
}

impl DestinationGuard {
    /// A guard letting webhooks reach public addresses and whatever `allow` lists.
    pub fn new(allow: Allowlist) -> Self {
        Self {
            allow: Arc::new(allow),
        }
    }

    /// The exceptions this guard makes.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allow
    }

    /// Checks a URL being registered as a webhook and returns it parsed: `http` or `https`, a
    /// host, no user name or password, and a host that resolves, each of its addresses public
    /// or allowlisted (by the host name or by address). A host that is an IP address is checked
    /// as it is. Passing here does not make later requests safe (the name may resolve
    /// elsewhere by then): send them with [`DestinationGuard::client`].
    pub async fn check_url(&self, url: &str) -> Result<Url, DestinationError> {
        let parsed = Url::parse(url.trim()).map_err(|error| DestinationError::BadUrl {
            reason: error.to_string(),
        })?;
        check_form(&parsed)?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        match parsed.host() {
            Some(Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip))?,
            Some(Host::Domain(host)) => {
                for address in resolve(host, port).await? {
                    self.check_ip(host, address.ip())?;
                }
            }
            None => {
                return Err(DestinationError::BadUrl {
                    reason: "it has no host".to_owned(),
                });
            }
        }
        Ok(parsed)
    }

    /// Whether a connection to `ip`, reached through the name `host`, is allowed: yes when the
    /// host name or the address is allowlisted, otherwise when [`forbidden`] finds nothing.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), DestinationError> {
        check_ip(&self.allow, host, ip)
    }

    /// Checks a stored webhook URL just before a request to it. reqwest does not call the
    /// resolver of [`DestinationGuard::client`] for a URL whose host is an IP address, so such
    /// a host is checked here; a host name is left to that resolver (which sees the addresses
    /// actually connected to). The scheme and the absence of credentials are checked again too.
    /// A sender must call this before each request, redirects included (they are not followed
    /// automatically).
    pub fn check_before_send(&self, url: &Url) -> Result<(), DestinationError> {
        check_form(url)?;
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip)),
            Some(Host::Domain(_)) => Ok(()),
            None => Err(DestinationError::BadUrl {
                reason: "it has no host".to_owned(),
            }),
        }
    }

    /// An HTTP client for webhook deliveries that checks every connection: its resolver refuses
    /// (with a [`DestinationError::Forbidden`] in the error's sources, see
    /// [`DestinationError::find`]) a name with any forbidden address that is not allowlisted.
    /// It follows no redirects (a 3xx is returned as the answer), uses no proxy (a proxy would
    /// resolve the name itself, unchecked), gives up after `timeout` in all and opens
    /// connections within [`CONNECT_TIMEOUT`], and says [`USER_AGENT`].
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, DestinationError> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: Arc::clone(&self.allow),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|error| DestinationError::Client {
                reason: error_chain(&error),
            })
    }
}

/// The checks of a URL that need no lookup: scheme, credentials, a host.
fn check_form(url: &Url) -> Result<(), DestinationError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DestinationError::UnsupportedScheme {
            scheme: url.scheme().to_owned(),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DestinationError::CredentialsInUrl);
    }
    if url.host().is_none() {
        return Err(DestinationError::BadUrl {
            reason: "it has no host".to_owned(),
        });
    }
    Ok(())
}

fn check_ip(allow: &Allowlist, host: &str, ip: IpAddr) -> Result<(), DestinationError> {
    if allow.allows_host(host) || allow.allows_ip(ip) {
        return Ok(());
    }
    match forbidden(ip) {
        Some(reason) => Err(DestinationError::Forbidden {
            host: host.to_owned(),
            ip,
            reason,
        }),
        None => Ok(()),
    }
}

/// The addresses of `host` (at least one), within [`RESOLVE_TIMEOUT`].
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, DestinationError> {
    let does_not_resolve = |reason: String| DestinationError::DoesNotResolve {
        host: host.to_owned(),
        reason,
    };
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| does_not_resolve(format!("no answer within {RESOLVE_TIMEOUT:?}")))?
        .map_err(|error| does_not_resolve(error.to_string()))?;
    let addresses: Vec<SocketAddr> = lookup.collect();
    if addresses.is_empty() {
        return Err(does_not_resolve("no addresses".to_owned()));
    }
    Ok(addresses)
}

/// The resolver of [`DestinationGuard::client`]: resolves with tokio, then refuses the
/// connection when any address is forbidden and not allowlisted.
#[derive(Debug)]
struct GuardedResolver {
    allow: Arc<Allowlist>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = Arc::clone(&self.allow);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port.
            let addresses = resolve(&host, 0).await?;
            for address in &addresses {
                check_ip(&allow, &host, address.ip())?;
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// An error and its sources, joined with `: `.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn guard(allowlist: &str) -> DestinationGuard {
        DestinationGuard::new(Allowlist::parse(allowlist).unwrap())
    }

    #[test]
    fn every_non_public_range_is_refused() {
        let cases = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "\"this network\""),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.254", "carrier-grade NAT"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local (cloud metadata among them)"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.254", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local (deprecated)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001:2::1", "benchmarking"),
            ("100::1", "discard-only"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("4000::1", "reserved"),
            ("1234::1", "reserved"),
        ];
        for (address, reason) in cases {
            assert_eq!(forbidden(ip(address)), Some(reason), "{address}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for address in [
            "93.184.215.14",
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888",
        ] {
            assert_eq!(forbidden(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn addresses_carrying_an_ipv4_address_are_judged_by_it() {
        let cases = [
            ("::ffff:127.0.0.1", Some("loopback")),
            (
                "::ffff:169.254.169.254",
                Some("link-local (cloud metadata among them)"),
            ),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:93.184.215.14", None),
            ("::127.0.0.1", Some("loopback")),
            ("::10.0.0.1", Some("private")),
            ("::93.184.215.14", None),
            ("64:ff9b::127.0.0.1", Some("loopback")),
            ("64:ff9b::192.168.0.1", Some("private")),
            ("64:ff9b::93.184.215.14", None),
            ("2002:7f00:1::1", Some("loopback")),
            (
                "2002:a9fe:a9fe::",
                Some("link-local (cloud metadata among them)"),
            ),
            ("2002:5db8:d70e::1", None),
        ];
        for (address, reason) in cases {
            assert_eq!(forbidden(ip(address)), reason, "{address}");
        }
    }

    #[test]
    fn the_allowlist_parses_hosts_addresses_and_blocks() {
        let list =
            Allowlist::parse(" localhost, 127.0.0.1/32 ,,10.0.0.0/8,::1, Hooks.Example.COM. ")
                .unwrap();
        assert!(list.allows_host("localhost"));
        assert!(list.allows_host("LOCALHOST."));
        assert!(list.allows_host("hooks.example.com"));
        assert!(!list.allows_host("sub.hooks.example.com"));
        assert!(!list.allows_host("example.com"));
        assert!(list.allows_ip(ip("127.0.0.1")));
        assert!(!list.allows_ip(ip("127.0.0.2")));
        assert!(list.allows_ip(ip("10.200.3.4")));
        assert!(list.allows_ip(ip("::1")));
        assert!(list.allows_ip(ip("::ffff:10.0.0.1")));
        assert!(!list.allows_ip(ip("192.168.0.1")));
        assert_eq!(
            list.to_string(),
            "hooks.example.com,localhost,127.0.0.1/32,10.0.0.0/8,::1/128"
        );

        let bare = Allowlist::parse("[fd00::5],192.168.0.0/16").unwrap();
        assert!(bare.allows_ip(ip("fd00::5")));
        assert!(bare.allows_ip(ip("192.168.77.1")));

        assert!(Allowlist::parse("").unwrap().is_empty());
        assert!(Allowlist::parse(" , ,").unwrap().is_empty());
        assert_eq!(Allowlist::empty(), Allowlist::default());
    }

    #[test]
    fn a_bad_allowlist_item_is_named() {
        for (text, bad) in [
            ("localhost,10.0.0.0/33", "`10.0.0.0/33`"),
            ("10.0.0.0/x", "`10.0.0.0/x`"),
            ("http://localhost", "`http://localhost`"),
            ("localhost:8080", "`localhost:8080`"),
            ("*.example.com", "`*.example.com`"),
            ("a b", "`a b`"),
        ] {
            let error = Allowlist::parse(text).unwrap_err();
            assert!(error.contains(bad), "{text}: {error}");
            assert!(error.contains(ALLOWLIST_VARIABLE), "{error}");
        }
    }

    #[test]
    fn check_ip_allows_by_host_or_block() {
        let by_host = guard("localhost");
        by_host.check_ip("localhost", ip("127.0.0.1")).unwrap();
        by_host.check_ip("localhost.", ip("::1")).unwrap();
        assert!(by_host.check_ip("evil.example", ip("127.0.0.1")).is_err());

        let by_block = guard("10.0.0.0/8");
        by_block
            .check_ip("internal.example", ip("10.1.1.1"))
            .unwrap();
        assert!(
            by_block
                .check_ip("internal.example", ip("192.168.1.1"))
                .is_err()
        );

        let none = guard("");
        none.check_ip("example.com", ip("93.184.215.14")).unwrap();
        let error = none.check_ip("meta", ip("169.254.169.254")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("MERCATO_WEBHOOK_ALLOWLIST"), "{message}");
        assert!(message.contains("169.254.169.254/32"), "{message}");
        assert!(message.contains("cloud metadata"), "{message}");
        let error = none.check_ip("::1", ip("::1")).unwrap_err();
        assert!(error.to_string().contains("::1/128"), "{error}");
    }

    #[tokio::test]
    async fn check_url_refuses_what_it_must() {
        let none = guard("");
        assert!(matches!(
            none.check_url("ftp://example.com/hooks").await,
            Err(DestinationError::UnsupportedScheme { scheme }) if scheme == "ftp"
        ));
        assert!(matches!(
            none.check_url("http://user:pw@x/").await,
            Err(DestinationError::CredentialsInUrl)
        ));
        assert!(matches!(
            none.check_url("https://user@example.com/").await,
            Err(DestinationError::CredentialsInUrl)
        ));
        assert!(matches!(
            none.check_url("not a url").await,
            Err(DestinationError::BadUrl { .. })
        ));
        assert!(matches!(
            none.check_url("http://127.0.0.1:1/").await,
            Err(DestinationError::Forbidden {
                reason: "loopback",
                ..
            })
        ));
        assert!(matches!(
            none.check_url("http://[::1]/").await,
            Err(DestinationError::Forbidden {
                reason: "loopback",
                ..
            })
        ));
        assert!(matches!(
            none.check_url("http://[::ffff:7f00:1]/").await,
            Err(DestinationError::Forbidden {
                reason: "loopback",
                ..
            })
        ));
        // The URL parser reads these forms of 127.0.0.1 as an address, not as a name.
        assert!(matches!(
            none.check_url("http://0x7f.1/").await,
            Err(DestinationError::Forbidden {
                reason: "loopback",
                ..
            })
        ));
        assert!(matches!(
            none.check_url("http://2130706433/").await,
            Err(DestinationError::Forbidden {
                reason: "loopback",
                ..
            })
        ));
        match none
            .check_url("http://169.254.169.254/latest/meta-data")
            .await
        {
            Err(DestinationError::Forbidden {
                ip: found, reason, ..
            }) => {
                assert_eq!(found, ip("169.254.169.254"));
                assert_eq!(reason, "link-local (cloud metadata among them)");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        match none.check_url("http://localhost:9/").await {
            Err(DestinationError::Forbidden { host, reason, .. }) => {
                assert_eq!(host, "localhost");
                assert_eq!(reason, "loopback");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(
            none.check_url("http://does-not-exist.invalid/").await,
            Err(DestinationError::DoesNotResolve { .. })
        ));
    }

    #[tokio::test]
    async fn check_url_accepts_allowlisted_destinations() {
        let url = guard("127.0.0.1")
            .check_url("http://127.0.0.1:9/hooks")
            .await
            .unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/hooks");
        guard("localhost")
            .check_url("http://localhost:9/")
            .await
            .unwrap();
        guard("127.0.0.0/8")
            .check_url("http://localhost:9/")
            .await
            .unwrap();
        guard("::1").check_url("http://[::1]:9/").await.unwrap();
    }

    #[test]
    fn check_before_send_checks_address_hosts_only() {
        let none = guard("");
        let literal = Url::parse("http://127.0.0.1:8080/hooks").unwrap();
        assert!(matches!(
            none.check_before_send(&literal),
            Err(DestinationError::Forbidden { .. })
        ));
        guard("127.0.0.1").check_before_send(&literal).unwrap();
        let name = Url::parse("http://localhost:8080/hooks").unwrap();
        none.check_before_send(&name).unwrap();
        let public = Url::parse("https://93.184.215.14/hooks").unwrap();
        none.check_before_send(&public).unwrap();
        let credentials = Url::parse("https://a:b@example.com/").unwrap();
        assert!(none.check_before_send(&credentials).is_err());
    }

    /// A local server: `/` answers 200, `/redirect` 302 to `/target`, which counts its hits.
    async fn local_server() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let root_hits = Arc::new(AtomicUsize::new(0));
        let target_hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(
                "/",
                get({
                    let hits = Arc::clone(&root_hits);
                    move || async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        "ok"
                    }
                }),
            )
            .route(
                "/redirect",
                get(|| async {
                    (StatusCode::FOUND, [(header::LOCATION, "/target")]).into_response()
                }),
            )
            .route(
                "/target",
                get({
                    let hits = Arc::clone(&target_hits);
                    move || async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        "target"
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (port, root_hits, target_hits)
    }

    #[tokio::test]
    async fn the_client_checks_every_connection_and_follows_no_redirect() {
        let (port, root_hits, target_hits) = local_server().await;
        let url = format!("http://localhost:{port}/");

        let refusing = guard("").client(Duration::from_secs(10)).unwrap();
        let error = refusing.get(&url).send().await.unwrap_err();
        match DestinationError::find(&error) {
            Some(DestinationError::Forbidden { host, reason, .. }) => {
                assert_eq!(host, "localhost");
                assert_eq!(*reason, "loopback");
            }
            other => panic!("expected the resolver's refusal in {error:?}, found {other:?}"),
        }
        assert_eq!(root_hits.load(Ordering::SeqCst), 0);

        let allowing = guard("localhost").client(Duration::from_secs(10)).unwrap();
        let response = allowing.get(&url).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "ok");
        assert_eq!(root_hits.load(Ordering::SeqCst), 1);

        let redirected = allowing
            .get(format!("http://localhost:{port}/redirect"))
            .send()
            .await
            .unwrap();
        assert_eq!(redirected.status(), reqwest::StatusCode::FOUND);
        assert_eq!(
            redirected.headers().get(header::LOCATION.as_str()).unwrap(),
            "/target"
        );
        assert_eq!(target_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_client_sends_its_user_agent() {
        let app = Router::new().route(
            "/",
            get(|headers: axum::http::HeaderMap| async move {
                headers
                    .get(header::USER_AGENT)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let client = guard("127.0.0.1").client(Duration::from_secs(10)).unwrap();
        let agent = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(agent, USER_AGENT);
        assert!(agent.starts_with("mercato-webhooks/"));
    }
}
