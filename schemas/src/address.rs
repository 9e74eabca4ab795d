//! Where a device may be: the guard that keeps sshq from being pointed at internal services.
//!
//! A device's `host` is caller input, and the worker connects to it from inside the
//! deployment. Without a guard, registering `127.0.0.1:5432`, `169.254.169.254:80` or the NATS
//! port turns the worker into a port scanner for whoever holds an administrator key. So every
//! address a host resolves to is checked, at registration (the API) and again right before
//! each connection (the worker, which connects only to the addresses it checked, so a DNS
//! answer that changes in between cannot slip past):
//!
//! - loopback, link-local (cloud metadata services live there), unspecified, multicast and
//!   broadcast addresses, and the known metadata addresses outside those ranges, are internal:
//!   refused unless the operator allows internal devices (`SSHQ_ALLOW_INTERNAL_DEVICES`; the
//!   demo and the tests do, since their devices are on loopback);
//! - cloud metadata services (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192)
//!   and the stack's own services (NATS, Postgres, the API and projector listeners) are
//!   refused always, allowed or not: no SSH device lives there.
//!
//! Private LAN ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are where fleets live and are
//! allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a device address is refused. Its text is safe to show to a caller: it names the rule,
/// not what (if anything) listens there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the host does not resolve to any address")]
    Unresolvable,
    #[error(
        "the host resolves to an internal address (loopback, link-local, metadata or similar), which devices may not use"
    )]
    Internal,
    #[error("the host and port are one of sshq's own services")]
    OwnService,
    #[error(
        "the host resolves to a cloud metadata service: an internal address that devices may never use, whatever the settings"
    )]
    Metadata,
}

/// The rules for device addresses, from the service's settings.
#[derive(Clone, Debug, Default)]
pub struct AddressGuard {
    /// Loopback, link-local and the like are allowed (an operator's explicit choice).
    pub allow_internal: bool,
    /// The stack's own listeners (`host:port` as configured); refused always.
    own_services: Vec<(String, u16)>,
}

impl AddressGuard {
    pub fn new(allow_internal: bool) -> Self {
        Self {
            allow_internal,
            own_services: Vec::new(),
        }
    }

    /// Adds a service of the stack by URL (`nats://h:4222`, `postgres://u@h:5432/db`, several
    /// comma-separated NATS seeds) or `host:port`. Unparseable text is ignored.
    pub fn with_service(mut self, url: &str) -> Self {
        for part in url.split(',') {
            if let Some(hp) = host_port(part.trim()) {
                self.own_services.push(hp);
            }
        }
        self
    }

    pub fn with_socket(mut self, addr: SocketAddr) -> Self {
        self.own_services.push((addr.ip().to_string(), addr.port()));
        self
    }

    /// Resolves `host` and checks every address; returns them all if each is allowed.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, AddressError> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| AddressError::Unresolvable)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(AddressError::Unresolvable);
        }
        for addr in &addrs {
            self.check(host, *addr).await?;
        }
        Ok(addrs)
    }

    /// Checks one resolved address of `host`.
    async fn check(&self, host: &str, addr: SocketAddr) -> Result<(), AddressError> {
        let ip = canonical(addr.ip());
        if is_metadata(ip) {
            return Err(AddressError::Metadata);
        }
        for (service_host, service_port) in &self.own_services {
            if *service_port != addr.port() {
                continue;
            }
            let same_host = service_host.eq_ignore_ascii_case(host)
                || is_local(ip)
                || match service_host.parse::<IpAddr>() {
                    Ok(service_ip) => {
                        canonical(service_ip) == ip
                            || is_local(canonical(service_ip)) && is_local(ip)
                    }
                    Err(_) => tokio::net::lookup_host((service_host.as_str(), *service_port))
                        .await
                        .map(|mut a| a.any(|a| canonical(a.ip()) == ip))
                        .unwrap_or(false),
                };
            if same_host {
                return Err(AddressError::OwnService);
            }
        }
        if !self.allow_internal && is_internal(ip) {
            return Err(AddressError::Internal);
        }
        Ok(())
    }
}

/// `host:port` out of a URL or a bare `host:port`.
fn host_port(text: &str) -> Option<(String, u16)> {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?']).next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// This machine: loopback or unspecified (which connects to this machine too).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// Cloud metadata services: refused even where internal addresses are allowed.
pub fn is_metadata(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => matches!(
            v4.octets(),
            [169, 254, 169, 254] | [169, 254, 170, 2] | [100, 100, 100, 200] | [192, 0, 0, 192]
        ),
        IpAddr::V6(v6) => v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    }
}

/// Addresses a device may not have unless the operator allows internal devices.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    ip.is_loopback()            // 127/8
        || ip.is_unspecified()  // 0.0.0.0
        || a == 0               // 0/8: "this network", reaches the host on Linux
        || ip.is_link_local()   // 169.254/16: AWS, GCP, Azure, OpenStack metadata
        || ip.is_multicast()
        || ip.is_broadcast()
        || (a, b, c, d) == (100, 100, 100, 200) // Alibaba Cloud metadata
        || (a, b, c, d) == (192, 0, 0, 192) // Oracle Cloud metadata (older)
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xffc0) == 0xfe80 // link-local
        || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS metadata over IPv6
        || ip.to_ipv4().is_some_and(|v4| ip.segments()[..6] == [0; 6] && is_internal_v4(v4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn internal_ranges_are_refused_and_lans_are_not() {
        let guard = AddressGuard::new(false);
        for host in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "169.254.1.1",
            "::1",
            "::ffff:127.0.0.1",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "localhost",
        ] {
            assert_eq!(
                run(guard.resolve(host, 22)),
                Err(AddressError::Internal),
                "{host}"
            );
        }
        for host in [
            "10.0.0.5",
            "192.168.1.1",
            "172.16.0.1",
            "8.8.8.8",
            "fd12::1",
            "2001:db8::1",
        ] {
            assert!(run(guard.resolve(host, 22)).is_ok(), "{host}");
        }
    }

    #[test]
    fn own_services_are_refused_even_when_internal_is_allowed() {
        let guard = AddressGuard::new(true)
            .with_service("nats://127.0.0.1:4333,nats://10.1.1.1:4222")
            .with_service("postgres://postgres@127.0.0.1:5544/sshq")
            .with_socket("0.0.0.0:8480".parse().unwrap());
        for (host, port) in [
            ("127.0.0.1", 4333),
            ("localhost", 4333),
            ("127.0.0.2", 5544),
            ("10.1.1.1", 4222),
            ("127.0.0.1", 8480),
            ("::1", 8480),
        ] {
            assert_eq!(
                run(guard.resolve(host, port)),
                Err(AddressError::OwnService),
                "{host}:{port}"
            );
        }
        assert!(run(guard.resolve("127.0.0.1", 2222)).is_ok());
        for host in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
        ] {
            assert_eq!(
                run(guard.resolve(host, 22)),
                Err(AddressError::Metadata),
                "{host}"
            );
        }
        assert!(run(guard.resolve("10.1.1.2", 4222)).is_ok());
    }

    #[test]
    fn urls_yield_host_and_port() {
        assert_eq!(host_port("nats://a:1"), Some(("a".into(), 1)));
        assert_eq!(
            host_port("postgres://u:p@db:5432/x?y=1"),
            Some(("db".into(), 5432))
        );
        assert_eq!(host_port("[::1]:22"), Some(("::1".into(), 22)));
        assert_eq!(host_port("nohost"), None);
    }
}
