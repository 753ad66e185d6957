//! Where the network kinds (`http`, `tcp`) may not go: link-local addresses (169.254.0.0/16 and
//! fe80::/10), where cloud metadata services answer (169.254.169.254, fd00:ec2::254) with the
//! machine's credentials. A job naming such an address is refused when it is enqueued; a host
//! name that resolves only to such addresses fails the job when it runs (DNS is asked then, so
//! the check is on the address actually dialled). Loopback and private networks stay open: a
//! local sink is what these kinds are for.

use std::net::{IpAddr, SocketAddr};

/// Why `ip` may not be dialled, if it may not.
pub(crate) fn refused(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_link_local() => {
            Some("a link-local address (cloud metadata services answer there)")
        }
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
        IpAddr::V6(v6) if v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
            Some("a cloud metadata address")
        }
        _ => None,
    }
}

/// The host of a `host:port` address (brackets kept for IPv6).
pub(crate) fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

/// Checks an `http` job's URL and a `tcp` job's address as written: IP literals here, names
/// once resolved.
pub(crate) fn check_target(kind: &str, key: &str, value: &str) -> Result<(), String> {
    let host = match kind {
        "http" => reqwest::Url::parse(value)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string)),
        "tcp" => Some(host_of(value).to_string()),
        _ => None,
    };
    match host {
        Some(host) => check_host(&host).map_err(|e| format!("{kind} job: argument \"{key}\": {e}")),
        None => Ok(()),
    }
}

/// Checks a host as written in a URL or `host:port` (an IP literal, with or without brackets):
/// names pass here and are checked once resolved.
pub(crate) fn check_host(host: &str) -> Result<(), String> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(ip) => match refused(ip) {
            Some(why) => Err(format!("{literal} is {why}; network jobs may not reach it")),
            None => Ok(()),
        },
        Err(_) => Ok(()),
    }
}

/// The addresses `resolved` of `host` that may be dialled, or why none may.
pub(crate) fn allowed(host: &str, resolved: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
    let mut why = None;
    let ok: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|a| match refused(a.ip()) {
            Some(w) => {
                why = Some((a.ip(), w));
                false
            }
            None => true,
        })
        .collect();
    match (ok.is_empty(), why) {
        (true, Some((ip, w))) => Err(format!(
            "{host} resolves to {ip}, {w}; network jobs may not reach it"
        )),
        _ => Ok(ok),
    }
}

/// A destination refused by this module's rule, as an I/O error's cause.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// reqwest's resolver, keeping only addresses [`refused`] lets through.
#[derive(Debug, Default)]
pub(crate) struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = allowed(&host, resolved)?;
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_addresses_are_refused_loopback_is_not() {
        for bad in [
            "169.254.169.254",
            "[fe80::1]",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        for fine in ["127.0.0.1", "[::1]", "10.0.0.5", "example.com", "localhost"] {
            assert!(check_host(fine).is_ok(), "{fine}");
        }
        let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let e = allowed("metadata.internal", vec![metadata]).unwrap_err();
        assert!(
            e.contains("metadata.internal resolves to 169.254.169.254"),
            "{e}"
        );
        assert_eq!(
            allowed("mixed", vec![metadata, local]).unwrap(),
            vec![local]
        );
    }
}
