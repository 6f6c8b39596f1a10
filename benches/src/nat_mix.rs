//! The NAT-mix mode: every node in a home of its own behind a real NAT router of the NAT lab
//! (`shoal_testkit::netlab`), the origin, the tracker and the provider's relay on the lab's
//! internet, and peer protocol v2 (QUIC) between the nodes, as shipped.
//!
//! The kind of each node's home is drawn from a [`NatMix`] with the run's seed. After the
//! run, every pair of nodes that tried to connect is classified by what theory says of its
//! two kinds ([`theory_direct`]) and by what happened ([`ReachReport`]).

use serde::Serialize;
use shoal_testkit::netlab::{HomeKind, Host, NatLab};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;

/// Shares of home kinds, e.g. `public=35,lan=5,eim=30,upnp=15,sym=10,noudp=5`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NatMix {
    /// Kinds with their weights (normalised when drawn).
    pub weights: Vec<(String, f64)>,
}

impl Default for NatMix {
    /// About two thirds of viewers behind a NAT (the upper end of the 45–66 % measured for
    /// BitTorrent peers: Halkes and Pouwelse, "UDP NAT and Firewall Puncturing in the Wild",
    /// 2011), and of those about one in five behind a NAT or firewall hole punching cannot
    /// pass (Ford, Srisuresh and Kegel, "Peer-to-Peer Communication Across Network Address
    /// Translators", USENIX 2005: UDP hole punching worked through 82 % of the NATs tested).
    fn default() -> Self {
        Self {
            weights: [
                ("public", 35.0),
                ("lan", 5.0),
                ("eim", 30.0),
                ("upnp", 15.0),
                ("sym", 10.0),
                ("noudp", 5.0),
            ]
            .map(|(k, w)| (k.to_string(), w))
            .to_vec(),
        }
    }
}

impl FromStr for NatMix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, w) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: write KIND=WEIGHT, e.g. eim=30"))?;
            kind_of(k.trim())?;
            let w: f64 = w
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight is not a number"))?;
            if !(w >= 0.0 && w.is_finite()) {
                return Err(format!("`{part}`: the weight must be at least 0"));
            }
            weights.push((k.trim().to_string(), w));
        }
        if weights.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
            return Err("the mix has no weight: give at least one KIND=WEIGHT above 0".into());
        }
        Ok(Self { weights })
    }
}

/// A home kind by its short name (`public`, `lan`, `eim`, `upnp`, `sym`, `noudp`).
pub fn kind_of(name: &str) -> Result<HomeKind, String> {
    HomeKind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| {
            format!("unknown home kind `{name}`: use public, lan, eim, upnp, sym or noudp")
        })
}

impl NatMix {
    /// The kind for a uniform draw `u` in `[0, 1)`.
    pub fn pick(&self, u: f64) -> HomeKind {
        let total: f64 = self.weights.iter().map(|(_, w)| w).sum();
        let mut at = u * total;
        for (k, w) in &self.weights {
            if at < *w {
                return kind_of(k).unwrap_or(HomeKind::Public);
            }
            at -= w;
        }
        self.weights
            .last()
            .and_then(|(k, _)| kind_of(k).ok())
            .unwrap_or(HomeKind::Public)
    }
}

/// Whether two nodes in homes of these kinds can connect directly, in theory: a public host
/// or a mapped port is reachable by anyone with UDP; two endpoint-independent mappings punch
/// through each other; a symmetric NAT's port for a new destination is unknown in advance,
/// so it needs the other side reachable (public or mapped); a home without UDP reaches
/// nobody directly. `same_home`: two hosts on one LAN.
pub fn theory_direct(a: HomeKind, b: HomeKind, same_home: bool) -> bool {
    use HomeKind::*;
    if a == UdpBlocked || b == UdpBlocked {
        return false;
    }
    if same_home {
        return true;
    }
    let open = |k: HomeKind| matches!(k, Public | Upnp);
    let punchable = |k: HomeKind| matches!(k, Eim | SharedLan | Upnp | Public);
    match (a, b) {
        (Symmetric, other) | (other, Symmetric) => open(other),
        _ => punchable(a) && punchable(b),
    }
}

/// The lab of a NAT-mix run: its servers and the homes made so far.
pub struct Lab {
    /// The lab itself (removes everything when dropped).
    pub lab: std::sync::Mutex<NatLab>,
    /// The server the origin, the tracker and the relay run on.
    pub services: Host,
    /// PEM of the lab CA the relay's certificate is signed by.
    pub ca: PathBuf,
    /// Paths of the relay's certificate and key.
    pub relay_cert: PathBuf,
    /// The relay's key.
    pub relay_key: PathBuf,
    /// A second host of the last `lan` home, for the next `lan` viewer.
    pub spare_lan_host: std::sync::Mutex<Option<(usize, Host)>>,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Builds the lab and the services server, with a CA and a leaf for the relay.
    pub fn create() -> Result<Lab, shoal_testkit::Error> {
        let mut lab = NatLab::new()?;
        let services = lab.add_server("services")?;
        let dir = tempfile::tempdir().map_err(|e| shoal_testkit::Error::Io {
            what: "a temp dir for the lab CA".into(),
            source: e,
        })?;
        let pki = shoal_testkit::pki::LabCa::new(dir.path(), "Shoal benchmark lab CA")?;
        let leaf = pki.leaf_for(services.ip.into())?;
        let (ca, relay_cert, relay_key) = (pki.ca_path(), leaf.cert, leaf.key);
        Ok(Lab {
            lab: std::sync::Mutex::new(lab),
            services,
            ca,
            relay_cert,
            relay_key,
            spare_lan_host: std::sync::Mutex::new(None),
            _dir: dir,
        })
    }

    /// A host for a new viewer in a home of `kind`: a new home, or the second host of the
    /// last `lan` home. Returns the host and the home's index.
    pub fn host_for(&self, kind: HomeKind) -> Result<(usize, Host), shoal_testkit::Error> {
        if kind == HomeKind::SharedLan {
            if let Some(spare) = self
                .spare_lan_host
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                return Ok(spare);
            }
        }
        let mut lab = self.lab.lock().unwrap_or_else(|e| e.into_inner());
        let home = lab.add_home(kind)?;
        if kind == HomeKind::SharedLan {
            *self
                .spare_lan_host
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some((home.index, home.hosts[1].clone()));
        }
        Ok((home.index, home.hosts[0].clone()))
    }
}

/// One node of the run as the reach report sees it.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Its endpoint id (hex).
    pub endpoint: String,
    /// Its home's kind.
    pub kind: HomeKind,
    /// Its home's index (two `lan` viewers may share one).
    pub home: usize,
    /// Its last attempt to each neighbour it dialled: endpoint id, path or failure.
    pub attempts: Vec<(String, &'static str)>,
}

/// What the pairs of a NAT-mix run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReachReport {
    /// The mix the homes were drawn from.
    pub mix: Vec<(String, f64)>,
    /// Nodes by home kind.
    pub nodes_by_kind: BTreeMap<String, usize>,
    /// Pairs of nodes at least one of which tried to connect to the other.
    pub pairs_tried: usize,
    /// Of those, pairs theory says can connect directly.
    pub pairs_direct_in_theory: usize,
    /// Of those, pairs that did connect directly.
    pub pairs_direct_in_theory_connected: usize,
    /// Pairs (any) that connected directly, by the path (the dialler's view).
    pub direct_by_path: BTreeMap<String, usize>,
    /// Pairs that connected through the relay (only with relay media allowed).
    pub relayed: usize,
    /// Pairs that did not connect at all.
    pub not_connected: usize,
    /// Pairs theory says can connect directly that did not, by kind pair, for inspection.
    pub missed: BTreeMap<String, usize>,
}

impl ReachReport {
    /// Classifies every pair the nodes tried.
    pub fn from_nodes(mix: &NatMix, nodes: &[Placed]) -> ReachReport {
        let mut r = ReachReport {
            mix: mix.weights.clone(),
            ..Default::default()
        };
        let by_id: HashMap<&str, &Placed> =
            nodes.iter().map(|n| (n.endpoint.as_str(), n)).collect();
        for n in nodes {
            *r.nodes_by_kind.entry(n.kind.name().into()).or_default() += 1;
        }
        // Unordered pair -> the best outcome either side saw.
        let mut pairs: BTreeMap<(&str, &str), &'static str> = BTreeMap::new();
        let rank = |o: &str| match o {
            "lan" | "direct" | "punched" | "mapped" => 2,
            "relay" => 1,
            _ => 0,
        };
        for n in nodes {
            for (remote, outcome) in &n.attempts {
                if !by_id.contains_key(remote.as_str()) {
                    continue;
                }
                let key = if n.endpoint.as_str() < remote.as_str() {
                    (n.endpoint.as_str(), remote.as_str())
                } else {
                    (remote.as_str(), n.endpoint.as_str())
                };
                let e = pairs.entry(key).or_insert(outcome);
                if rank(outcome) > rank(e) {
                    *e = outcome;
                }
            }
        }
        for ((a, b), outcome) in &pairs {
            let (a, b) = (by_id[a], by_id[b]);
            let theory = theory_direct(a.kind, b.kind, a.home == b.home);
            r.pairs_tried += 1;
            match rank(outcome) {
                2 => *r.direct_by_path.entry(outcome.to_string()).or_default() += 1,
                1 => r.relayed += 1,
                _ => r.not_connected += 1,
            }
            if theory {
                r.pairs_direct_in_theory += 1;
                if rank(outcome) == 2 {
                    r.pairs_direct_in_theory_connected += 1;
                } else {
                    let mut kinds = [a.kind.name(), b.kind.name()];
                    kinds.sort();
                    *r.missed.entry(kinds.join("-")).or_default() += 1;
                }
            }
        }
        r
    }

    /// Share of the pairs that can connect directly in theory that did.
    pub fn direct_share(&self) -> f64 {
        if self.pairs_direct_in_theory == 0 {
            return 0.0;
        }
        self.pairs_direct_in_theory_connected as f64 / self.pairs_direct_in_theory as f64
    }
}

/// The port the origin listens on, on the services server.
pub const ORIGIN_PORT: u16 = 8000;
/// The tracker's port there.
pub const TRACKER_PORT: u16 = 7070;
/// The relay's HTTPS port there.
pub const RELAY_HTTPS: u16 = 3443;
/// The relay's QUIC address discovery port there (iroh's default, the nodes' default too).
pub const RELAY_QUIC: u16 = 7842;

/// A NAT-mix run's lab and the runtime whose threads live on its services server (so the
/// origin, the tracker and the relay bind and dial inside the lab).
pub struct LabRun {
    /// The lab.
    pub lab: Lab,
    runtime: Option<tokio::runtime::Runtime>,
    relay: std::sync::Mutex<Option<shoal_transport::relay::RelayServer>>,
}

impl LabRun {
    /// Builds the lab (blocking work, off the caller's runtime).
    pub async fn create() -> Result<LabRun, shoal_testkit::Error> {
        let lab = tokio::task::spawn_blocking(Lab::create)
            .await
            .map_err(|e| shoal_testkit::Error::Io {
                what: "building the NAT lab".into(),
                source: std::io::Error::other(e),
            })??;
        let runtime = lab.services.netns.enter(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        })?;
        Ok(LabRun {
            lab,
            runtime: Some(runtime),
            relay: std::sync::Mutex::new(None),
        })
    }

    /// Runs `f` on the services server's runtime and waits for it.
    pub async fn run<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the lab");
        rt.spawn(f)
            .await
            .expect("a task on the lab's runtime panicked")
    }

    /// Starts the provider's relay on the services server.
    pub async fn start_relay(&self) -> Result<(), shoal_transport::TransportError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |e: rustls::pki_types::pem::Error| {
            shoal_transport::TransportError::Relay(format!("lab certificate: {e}"))
        };
        let ip = self.lab.services.ip;
        let config = shoal_transport::relay::RelayServerConfig {
            http_addr: (ip, 3340).into(),
            https_addr: (ip, RELAY_HTTPS).into(),
            quic_addr: Some((ip, RELAY_QUIC).into()),
            cert_chain: CertificateDer::pem_file_iter(&self.lab.relay_cert)
                .map_err(bad)?
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            key: PrivateKeyDer::from_pem_file(&self.lab.relay_key).map_err(bad)?,
        };
        let relay = self
            .run(shoal_transport::relay::RelayServer::start(config))
            .await?;
        *self.relay.lock().unwrap_or_else(|e| e.into_inner()) = Some(relay);
        Ok(())
    }

    /// The relay's URL, as the nodes are given it.
    pub fn relay_url(&self) -> String {
        format!("https://{}:{RELAY_HTTPS}/", self.lab.services.ip)
    }
}

impl Drop for LabRun {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.get_mut().ok().and_then(Option::take) {
            drop(relay);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HomeKind::*;

    #[test]
    fn theory_matches_the_lab_pairs() {
        assert!(theory_direct(Public, Public, false));
        assert!(theory_direct(SharedLan, SharedLan, true));
        assert!(theory_direct(Eim, Eim, false));
        assert!(theory_direct(Upnp, Eim, false));
        assert!(theory_direct(Symmetric, Public, false));
        assert!(theory_direct(Symmetric, Upnp, false));
        assert!(!theory_direct(Symmetric, Symmetric, false));
        assert!(!theory_direct(Symmetric, Eim, false));
        assert!(!theory_direct(UdpBlocked, Public, false));
    }

    #[test]
    fn mixes_parse_and_draw_by_weight() {
        let m: NatMix = "public=1,sym=3".parse().unwrap();
        assert_eq!(m.pick(0.0), Public);
        assert_eq!(m.pick(0.24), Public);
        assert_eq!(m.pick(0.26), Symmetric);
        assert_eq!(m.pick(0.999), Symmetric);
        assert!("teleport=1".parse::<NatMix>().is_err());
        assert!("public=0".parse::<NatMix>().is_err());
        assert!("public".parse::<NatMix>().is_err());
        let d = NatMix::default();
        assert_eq!(d.weights.iter().map(|(_, w)| w).sum::<f64>(), 100.0);
    }

    #[test]
    fn pairs_are_counted_once_with_the_best_outcome_either_side_saw() {
        let node = |id: &str, kind, home, attempts: &[(&str, &'static str)]| Placed {
            endpoint: id.into(),
            kind,
            home,
            attempts: attempts.iter().map(|(r, o)| (r.to_string(), *o)).collect(),
        };
        let nodes = [
            node("a", Eim, 0, &[("b", "punched"), ("c", "no_direct_path")]),
            node("b", Eim, 1, &[("a", "no_direct_path")]),
            node(
                "c",
                Symmetric,
                2,
                &[("a", "no_direct_path"), ("d", "no_direct_path")],
            ),
            node("d", Symmetric, 3, &[]),
        ];
        let r = ReachReport::from_nodes(&NatMix::default(), &nodes);
        assert_eq!(r.pairs_tried, 3);
        assert_eq!(r.pairs_direct_in_theory, 1, "only a-b");
        assert_eq!(r.pairs_direct_in_theory_connected, 1);
        assert_eq!(r.direct_by_path.get("punched"), Some(&1));
        assert_eq!(r.not_connected, 2);
        assert_eq!(r.direct_share(), 1.0);
    }
}
