//! Where the network kinds (`http`, `tcp`) may go: never to link-local addresses (169.254.0.0/16
//! and fe80::/10), where cloud metadata services answer (169.254.169.254, fd00:ec2::254) with the
//! machine's credentials, unless `[net] allow` names them; never to what `[net] deny` names; and,
//! when `[net] allow` is given, only to what it names. Entries are networks (`10.0.0.0/8`, an
//! address) or host names (`hooks.example.com`, `.example.com` for it and every subdomain).
//! A job naming a refused address or host is refused when it is enqueued; a host name whose
//! addresses are all refused fails the job when it runs (DNS is asked then, so the check is on
//! the address actually dialled). Loopback and private networks stay open by default: a local
//! sink is what these kinds are for.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The `[net]` rules of the config: what network jobs may and may not reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

/// One `[net]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Net(IpNet),
    /// A host name, lower case; with a leading `.`, the domain and every name under it.
    Host(String),
}

impl Rule {
    fn parse(entry: &str) -> Result<Self, String> {
        let e = entry.trim();
        if let Ok(net) = e.parse::<IpNet>() {
            return Ok(Rule::Net(net));
        }
        if let Ok(ip) = e
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(Rule::Net(IpNet::from(ip)));
        }
        let name = e.to_ascii_lowercase();
        let bare = name.strip_prefix('.').unwrap_or(&name);
        let valid = !bare.is_empty()
            && bare
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return Err(format!(
                "\"{entry}\" is neither a network (10.0.0.0/8, an address) nor a host name (hooks.example.com, .example.com)"
            ));
        }
        Ok(Rule::Host(name))
    }

    fn matches_host(&self, host: &str) -> bool {
        match self {
            Rule::Host(rule) => match rule.strip_prefix('.') {
                Some(domain) => host == domain || host.ends_with(rule.as_str()),
                None => host == rule,
            },
            Rule::Net(_) => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        matches!(self, Rule::Net(net) if net.contains(&ip))
    }
}

fn rules(entries: &[String]) -> Result<Vec<Rule>, String> {
    entries.iter().map(|e| Rule::parse(e)).collect()
}

impl NetPolicy {
    /// From the `allow` and `deny` lists; an entry that is neither a network nor a host name is
    /// named in the error.
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, String> {
        Self::default().allow(allow)?.deny(deny)
    }

    /// With `entries` added to the allow list (`[net] allow`).
    pub fn allow(mut self, entries: &[String]) -> Result<Self, String> {
        self.allow.extend(rules(entries)?);
        Ok(self)
    }

    /// With `entries` added to the deny list (`[net] deny`).
    pub fn deny(mut self, entries: &[String]) -> Result<Self, String> {
        self.deny.extend(rules(entries)?);
        Ok(self)
    }

    /// Why the host as written (a name, or an IP literal with or without brackets) may not be
    /// reached, if that is known before resolving it.
    fn refuse_host(&self, host: &str) -> Option<String> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return self.refuse_ip(None, ip);
        }
        let name = normal_host(literal);
        if self.deny.iter().any(|r| r.matches_host(&name)) {
            return Some("denied by [net] deny".into());
        }
        let nets_allowed = self.allow.iter().any(|r| matches!(r, Rule::Net(_)));
        if !self.allow.is_empty()
            && !nets_allowed
            && !self.allow.iter().any(|r| r.matches_host(&name))
        {
            return Some("not in [net] allow".into());
        }
        None
    }

    /// Why `ip` (the address of `host`, when it was resolved from a name) may not be dialled.
    fn refuse_ip(&self, host: Option<&str>, ip: IpAddr) -> Option<String> {
        let ip = unmapped(ip);
        if self.deny.iter().any(|r| r.matches_ip(ip)) {
            return Some("denied by [net] deny".into());
        }
        let named =
            host.is_some_and(|h| self.allow.iter().any(|r| r.matches_host(&normal_host(h))));
        let allowed = named || self.allow.iter().any(|r| r.matches_ip(ip));
        if allowed {
            return None;
        }
        if !self.allow.is_empty() {
            return Some("not in [net] allow".into());
        }
        refused(ip).map(|why| format!("{why}, which [net] allow does not name"))
    }
}

/// `ip`, an IPv4 address written as IPv6 (`::ffff:a.b.c.d`) taken as the IPv4 one it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A host name as rules compare it: lower case, without a trailing dot.
fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Why `ip` may not be dialled, if it may not.
pub(crate) fn refused(ip: IpAddr) -> Option<&'static str> {
    let ip = unmapped(ip);
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

/// Checks an `http` job's URL and a `tcp` job's address as written: IP literals and host rules
/// here, names' addresses once resolved.
pub(crate) fn check_target(
    policy: &NetPolicy,
    kind: &str,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let host = match kind {
        "http" => reqwest::Url::parse(value)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string)),
        "tcp" => Some(host_of(value).to_string()),
        _ => None,
    };
    match host {
        Some(host) => {
            check_host(policy, &host).map_err(|e| format!("{kind} job: argument \"{key}\": {e}"))
        }
        None => Ok(()),
    }
}

/// Checks a host as written in a URL or `host:port` (a name, or an IP literal with or without
/// brackets); a name's addresses are checked once resolved.
pub(crate) fn check_host(policy: &NetPolicy, host: &str) -> Result<(), String> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match policy.refuse_host(host) {
        Some(why) => Err(format!("{literal} is {why}; network jobs may not reach it")),
        None => Ok(()),
    }
}

/// The addresses `resolved` of `host` that may be dialled, or why none may.
pub(crate) fn allowed(
    policy: &NetPolicy,
    host: &str,
    resolved: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    let mut why = None;
    let ok: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|a| match policy.refuse_ip(Some(host), a.ip()) {
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

/// reqwest's resolver, keeping only addresses the policy lets through.
#[derive(Debug, Default)]
pub(crate) struct GuardedResolver(pub(crate) NetPolicy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let policy = self.0.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = allowed(&policy, &host, resolved)?;
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
            assert!(check_host(&NetPolicy::default(), bad).is_err(), "{bad}");
        }
        for fine in ["127.0.0.1", "[::1]", "10.0.0.5", "example.com", "localhost"] {
            assert!(check_host(&NetPolicy::default(), fine).is_ok(), "{fine}");
        }
        let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let open = NetPolicy::default();
        let e = allowed(&open, "metadata.internal", vec![metadata]).unwrap_err();
        assert!(
            e.contains("metadata.internal resolves to 169.254.169.254"),
            "{e}"
        );
        assert_eq!(
            allowed(&open, "mixed", vec![metadata, local]).unwrap(),
            vec![local]
        );
    }

    fn policy(allow: &[&str], deny: &[&str]) -> NetPolicy {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        NetPolicy::parse(&list(allow), &list(deny)).unwrap()
    }

    #[test]
    fn deny_refuses_networks_and_hosts_and_wins_over_allow() {
        let p = policy(
            &["10.0.0.0/8"],
            &["10.9.0.0/16", ".internal.example", "127.0.0.1"],
        );
        assert!(check_host(&p, "10.1.2.3").is_ok());
        let e = check_host(&p, "10.9.1.1").unwrap_err();
        assert!(e.contains("denied by [net] deny"), "{e}");
        assert!(check_host(&p, "db.internal.example").is_err());
        assert!(check_host(&p, "internal.example").is_err());
        assert!(check_host(&p, "127.0.0.1").is_err());
        let ten: SocketAddr = "10.9.0.1:80".parse().unwrap();
        let e = allowed(&p, "name.example", vec![ten]).unwrap_err();
        assert!(e.contains("name.example resolves to 10.9.0.1"), "{e}");
    }

    #[test]
    fn an_allow_list_admits_only_what_it_names_and_may_lift_the_metadata_rule() {
        let p = policy(&["169.254.169.254", "hooks.example.com"], &[]);
        assert!(
            check_host(&p, "169.254.169.254").is_ok(),
            "named, so allowed"
        );
        assert!(
            check_host(&p, "169.254.1.1").is_err(),
            "link-local and not named"
        );
        assert!(
            check_host(&p, "192.168.1.1")
                .unwrap_err()
                .contains("not in [net] allow")
        );
        let any: SocketAddr = "192.168.1.1:443".parse().unwrap();
        assert_eq!(
            allowed(&p, "hooks.example.com", vec![any]).unwrap(),
            vec![any]
        );
        assert!(allowed(&p, "other.example.com", vec![any]).is_err());
        // Host names only: a name that is not listed is refused before resolving.
        let names = policy(&["hooks.example.com"], &[]);
        assert!(check_host(&names, "other.example.com").is_err());
        assert!(check_host(&names, "HOOKS.example.com").is_ok());
    }

    #[test]
    fn entries_that_are_neither_networks_nor_names_are_refused_naming_them() {
        let e = NetPolicy::parse(&["10.0.0.0/33".into()], &[]).unwrap_err();
        assert!(e.contains("10.0.0.0/33"), "{e}");
        assert!(NetPolicy::parse(&[], &["no spaces.example".into()]).is_err());
        assert!(NetPolicy::parse(&["[fe80::1]".into(), "::1/128".into()], &[]).is_ok());
    }
}
