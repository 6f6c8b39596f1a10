//! Per-swarm policy: whether peers may exchange segments, and addresses never handed out.

use crate::store::NeighbourRef;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use shoal_proto::{SwarmId, SwarmPolicy};
use std::net::IpAddr;

/// One `[[policy]]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Swarms it applies to: an exact swarm id, or a prefix ending in `*` (`*` alone: all).
    pub swarm: String,
    /// Whether peers of these swarms may exchange segments; unset: the global `p2p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p2p: Option<bool>,
    /// IPs and CIDR blocks (`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`) whose peers are never
    /// handed out as neighbours in these swarms; also sent to nodes to enforce.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Why a policy rule was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// An exclusion entry is neither an IP nor a CIDR block.
    #[error("policy for {swarm:?}: exclude entry {entry:?} is neither an IP address nor a CIDR block like 10.0.0.0/8")]
    BadExclude {
        /// The rule's swarm pattern.
        swarm: String,
        /// The entry.
        entry: String,
    },
    /// The swarm pattern is empty or has a `*` elsewhere than at its end.
    #[error("policy swarm pattern {0:?} must be a swarm id, or a prefix followed by a single '*' at the end")]
    BadPattern(String),
}

/// True when `swarm` matches `pattern`: equal, or starting with the part before a final `*`.
pub fn swarm_matches(pattern: &str, swarm: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => swarm.starts_with(prefix),
        None => pattern == swarm,
    }
}

/// Checks a swarm pattern's form.
pub fn check_pattern(pattern: &str) -> Result<(), PolicyError> {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if pattern.is_empty() || body.contains('*') {
        return Err(PolicyError::BadPattern(pattern.to_owned()));
    }
    Ok(())
}

pub(crate) fn parse_net(entry: &str) -> Option<IpNet> {
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

#[derive(Debug, Clone)]
struct Compiled {
    pattern: String,
    policy: SwarmPolicy,
    nets: Vec<IpNet>,
}

/// The configured rules, ready to apply; the first rule whose pattern matches a swarm wins.
#[derive(Debug, Clone)]
pub struct Policies {
    rules: Vec<Compiled>,
    default: SwarmPolicy,
}

/// What applies to one swarm.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    /// Sent to the swarm's peers.
    pub policy: &'a SwarmPolicy,
    nets: &'a [IpNet],
}

impl Policies {
    /// Compiles `rules`; swarms no rule matches get `default`.
    pub fn new(rules: &[PolicyRule], default: SwarmPolicy) -> Result<Self, PolicyError> {
        let rules = rules
            .iter()
            .map(|r| {
                check_pattern(&r.swarm)?;
                let nets = r
                    .exclude
                    .iter()
                    .map(|e| {
                        parse_net(e).ok_or_else(|| PolicyError::BadExclude {
                            swarm: r.swarm.clone(),
                            entry: e.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let policy = SwarmPolicy {
                    p2p: r.p2p.unwrap_or(default.p2p),
                    exclude: nets.iter().map(IpNet::to_string).collect(),
                    ..default.clone()
                };
                Ok(Compiled {
                    pattern: r.swarm.clone(),
                    policy,
                    nets,
                })
            })
            .collect::<Result<_, PolicyError>>()?;
        Ok(Self { rules, default })
    }

    /// The policy of `swarm`.
    pub fn for_swarm(&self, swarm: &SwarmId) -> Applied<'_> {
        match self
            .rules
            .iter()
            .find(|r| swarm_matches(&r.pattern, swarm.as_str()))
        {
            Some(r) => Applied {
                policy: &r.policy,
                nets: &r.nets,
            },
            None => Applied {
                policy: &self.default,
                nets: &[],
            },
        }
    }
}

impl<'a> Applied<'a> {
    /// True when `addr` (`ip:port`, `[ipv6]:port` or a bare IP) is in an excluded block.
    /// Host names are not resolved and never match.
    pub fn excludes(&self, addr: &str) -> bool {
        if self.nets.is_empty() {
            return false;
        }
        // Every form of `shoal_proto::addr` that names an IP (a relay URL names none).
        let ip = shoal_proto::Announced::parse(addr)
            .socket_addr()
            .map(|s| s.ip())
            .or_else(|| addr.parse::<IpAddr>().ok());
        ip.is_some_and(|ip| self.nets.iter().any(|n| n.contains(&ip)))
    }

    /// Whether `n` may be handed out, and with which of its addresses: nobody without P2P, and
    /// never a peer with no address; otherwise its addresses that are not excluded, unless
    /// all its IPs are excluded.
    pub fn admit<'n>(
        self,
        n: &NeighbourRef<'n>,
    ) -> Option<impl Iterator<Item = &'n str> + Clone + use<'a, 'n>> {
        // Without P2P nobody is handed out; a peer with no address (download-only, or not
        // uploading now) is handed to nobody: nobody could fetch from it.
        if !self.policy.p2p || n.addrs().next().is_none() {
            return None;
        }
        let kept = n.addrs().filter(move |a| !self.excludes(a));
        // A relay URL names no IP, so it decides nothing: a peer all of whose IPs are
        // excluded is not handed out, relay or not.
        let names_ip = |a: &&str| shoal_proto::Announced::parse(a).socket_addr().is_some();
        let dropped = !self.nets.is_empty()
            && n.addrs().any(|a| names_ip(&a))
            && !kept.clone().any(|a| names_ip(&a));
        (!dropped).then_some(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{pack_info, Neighbours};

    fn rule(swarm: &str, p2p: Option<bool>, exclude: &[&str]) -> PolicyRule {
        PolicyRule {
            swarm: swarm.into(),
            p2p,
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn id(s: &str) -> SwarmId {
        SwarmId::new(s).unwrap()
    }

    #[test]
    fn first_matching_rule_wins_and_others_get_the_default() {
        let p = Policies::new(
            &[
                rule("cdn.example.com/premium/*", Some(false), &[]),
                rule("cdn.example.com/*", None, &["10.0.0.0/8", "192.0.2.7"]),
            ],
            SwarmPolicy::default(),
        )
        .unwrap();
        assert!(
            !p.for_swarm(&id("cdn.example.com/premium/a.m3u8"))
                .policy
                .p2p
        );
        let live = p.for_swarm(&id("cdn.example.com/live/a.m3u8"));
        assert!(live.policy.p2p);
        assert_eq!(live.policy.exclude, ["10.0.0.0/8", "192.0.2.7/32"]);
        assert!(live.excludes("10.1.2.3:9000"));
        assert!(live.excludes("192.0.2.7:1"));
        assert!(!live.excludes("192.0.2.8:1"));
        assert!(!live.excludes("peer.example:1"));
        let other = p.for_swarm(&id("other.example/x"));
        assert!(other.policy.exclude.is_empty() && other.policy.p2p);
    }

    fn admitted(p: &Policies, swarm: &str) -> Vec<(String, Vec<String>)> {
        let mut list = Neighbours::with_capacity(4, 0);
        for (peer, addrs) in [
            ("a", &["10.0.0.1:1"][..]),
            ("b", &["10.0.0.1:1", "203.0.113.5:2"]),
            ("c", &["[::1]:3"]),
            ("d", &[]),
        ] {
            let addrs: Vec<String> = addrs.iter().map(|s| s.to_string()).collect();
            list.push(peer, &pack_info("", &addrs));
        }
        let applied = p.for_swarm(&id(swarm));
        list.iter()
            .filter_map(|n| {
                let addrs = applied.admit(&n)?;
                Some((n.peer_id.to_owned(), addrs.map(str::to_owned).collect()))
            })
            .collect()
    }

    #[test]
    fn excluded_addresses_are_removed_and_addressless_neighbours_dropped() {
        let p = Policies::new(
            &[
                rule("off", Some(false), &[]),
                rule("*", None, &["10.0.0.0/8", "::1"]),
            ],
            Default::default(),
        )
        .unwrap();
        // `d` announced no address (download-only): nobody could fetch from it, and as a
        // rendezvous member it could be ranked a seeder whose `have` never comes.
        assert_eq!(
            admitted(&p, "s"),
            [("b".to_string(), vec!["203.0.113.5:2".to_string()])]
        );
        assert!(admitted(&p, "off").is_empty(), "no P2P: no neighbours");
        let open = Policies::new(&[], Default::default()).unwrap();
        assert_eq!(admitted(&open, "s").len(), 3);
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let e =
            Policies::new(&[rule("*", None, &["10.0.0.0/33"])], Default::default()).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
        assert!(Policies::new(&[rule("a*b", None, &[])], Default::default()).is_err());
        assert!(Policies::new(&[rule("", None, &[])], Default::default()).is_err());
    }
}
