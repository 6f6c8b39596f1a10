//! A real `miniupnpd` (Debian `miniupnpd-iptables`) in a UPnP home's router.

use super::Router;
use crate::{io_err, which, ChildGuard, Error, Result};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// What `miniupnpd -d` logs once its NAT-PMP/PCP socket is open (after the HTTP and SSDP
/// sockets of UPnP IGD).
const READY: &str = "Listening for NAT-PMP/PCP traffic on port 5351";

/// The configuration of home `index`'s daemon: WAN `wan0`, LAN `lan0`, NAT-PMP/PCP and
/// UPnP IGD on, mappings allowed for the LAN's hosts on ports 1024-65535.
fn config(router: &Router, index: usize) -> String {
    let lan = u32::from(router.lan_ip) & (u32::MAX << (32 - router.lan_prefix));
    format!(
        "ext_ifname=wan0\n\
         listening_ip=lan0\n\
         enable_natpmp=yes\n\
         enable_upnp=yes\n\
         secure_mode=no\n\
         system_uptime=yes\n\
         uuid=3d3cec3a-8cf0-11e0-98ee-{index:012x}\n\
         allow 1024-65535 {}/{} 1024-65535\n\
         deny 0-65535 0.0.0.0/0 0-65535\n",
        std::net::Ipv4Addr::from(lan),
        router.lan_prefix
    )
}

/// Starts `miniupnpd` in the foreground inside `router`'s namespace (its chains must exist),
/// logging to `dir/miniupnpd-<index>.log`, and waits until it listens.
pub(super) fn start(router: &Router, dir: &Path, index: usize) -> Result<ChildGuard> {
    let bin = which("miniupnpd", "miniupnpd-iptables")?;
    let conf = dir.join(format!("miniupnpd-{index}.conf"));
    let log_path = dir.join(format!("miniupnpd-{index}.log"));
    std::fs::write(&conf, config(router, index)).map_err(io_err("writing miniupnpd.conf"))?;
    let log = std::fs::File::create(&log_path).map_err(io_err("creating miniupnpd's log"))?;
    let err = log.try_clone().map_err(io_err("opening miniupnpd's log"))?;
    let child = router
        .netns
        .command(bin)
        .arg("-d")
        .arg("-f")
        .arg(&conf)
        .arg("-P")
        .arg(dir.join(format!("miniupnpd-{index}.pid")))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(io_err("starting miniupnpd"))?;
    let mut child = ChildGuard(child);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let timeout = Duration::from_secs(10);
    let start = Instant::now();
    loop {
        if let Some(status) = child
            .0
            .try_wait()
            .map_err(io_err("waiting for miniupnpd"))?
        {
            return Err(Error::Exited {
                what: format!("miniupnpd in {}", router.netns),
                status,
                log: read_log(),
            });
        }
        if read_log().contains(READY) {
            return Ok(child);
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("miniupnpd in {} to listen", router.netns),
                timeout,
                log: read_log(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlab::Netns;
    use std::net::Ipv4Addr;

    #[test]
    fn the_configuration_allows_the_lan_only() {
        let router = Router {
            netns: Netns { name: "r".into() },
            wan_ip: Ipv4Addr::new(11, 7, 2, 4),
            lan_ip: Ipv4Addr::new(192, 168, 4, 1),
            lan_prefix: 24,
        };
        let c = config(&router, 3);
        assert!(
            c.contains("allow 1024-65535 192.168.4.0/24 1024-65535\n"),
            "{c}"
        );
        assert!(c.contains("ext_ifname=wan0\n") && c.contains("listening_ip=lan0\n"));
        assert!(
            c.contains("uuid=3d3cec3a-8cf0-11e0-98ee-000000000003\n"),
            "{c}"
        );
    }
}
