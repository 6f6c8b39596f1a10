//! Addresses a node never talks to ([`Exclusions`]): plain data the node applies to the
//! tracker's neighbour lists and the peer server to whoever connects.

use ipnet::IpNet;
use std::net::IpAddr;

/// An exclusion entry that is neither an IP address nor a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither an IP address nor a CIDR block like 10.0.0.0/8")]
pub struct BadNet(pub String);

/// Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (`192.0.2.7`, one host).
pub fn parse_net(entry: &str) -> Result<IpNet, BadNet> {
    let t = entry.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| BadNet(entry.to_owned()))
}

/// Address blocks whose peers a node neither connects to nor takes bytes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    nets: Vec<IpNet>,
}

impl Exclusions {
    /// The node's own list (from its configuration).
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// This list plus a swarm policy's `exclude` entries (strings as the tracker sends them).
    /// Entries that do not parse are skipped with a warning: the tracker validates its
    /// policy, so one would only come from a newer tracker's syntax.
    pub fn with_policy(&self, policy: &[String]) -> Self {
        let mut nets = self.nets.clone();
        nets.extend(policy.iter().filter_map(|e| match parse_net(e) {
            Ok(n) => Some(n),
            Err(err) => {
                tracing::warn!(error = %err, "ignoring an exclusion entry of the swarm policy");
                None
            }
        }));
        Self { nets }
    }

    /// True when `ip` is in an excluded block. IPv4-mapped IPv6 addresses count as the IPv4
    /// address they carry, so `::ffff:10.1.2.3` cannot slip past `10.0.0.0/8`.
    pub fn excludes(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// True when nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_as_cidr_or_single_address() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_net("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(parse_net("10.0.0.0/40").is_err());
        assert!(parse_net("example.com").is_err());
    }

    #[test]
    fn own_list_and_policy_both_exclude() {
        let own = Exclusions::new(vec![parse_net("127.0.0.2").unwrap()]);
        let merged = own.with_policy(&["10.0.0.0/8".into(), "not a net".into()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(merged.excludes(ip("127.0.0.2")));
        assert!(merged.excludes(ip("10.200.0.1")));
        assert!(merged.excludes(ip("::ffff:10.0.0.1")));
        assert!(!merged.excludes(ip("127.0.0.1")));
        // The node's own list is not changed by one swarm's policy.
        assert!(!own.excludes(ip("10.200.0.1")));
        assert!(Exclusions::default().is_empty());
    }
}
