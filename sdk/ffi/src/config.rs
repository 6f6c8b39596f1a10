//! The node's configuration from TOML text: the keys of `shoal-edge`'s configuration file
//! (`shoal::NodeConfig`), with one default changed for apps.

use crate::status::{Failure, ShoalStatus};
use shoal::NodeConfig;
use std::net::SocketAddr;

/// Where the player front listens when the text sets no `listen`: a free loopback port. An
/// app is not the only program on its device, so it does not claim `shoal-edge`'s fixed
/// 127.0.0.1:8080; `shoal_node_local_url` gives players the port it got.
pub(crate) const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

/// Parses and checks `text`. Errors name the line and key (TOML's own messages) or say what
/// to change (`NodeConfig::validate`).
pub fn parse(text: &str) -> Result<NodeConfig, Failure> {
    let bad = |e: String| Failure::new(ShoalStatus::Config, format!("configuration: {e}"));
    let table: toml::Table = toml::from_str(text).map_err(|e| bad(one_line(text, &e)))?;
    let mut config: NodeConfig = toml::from_str(text).map_err(|e| bad(one_line(text, &e)))?;
    if !table.contains_key("listen") {
        config.listen = DEFAULT_LISTEN;
    }
    config.validate().map_err(|e| {
        // The SDK's messages name shoal-edge's flags; here the keys are the TOML's.
        match e.contains("--origin ") {
            true => bad(format!(
                "{e}; in this configuration: origins = [\"HOST[:PORT]\"]"
            )),
            false => bad(e),
        }
    })?;
    Ok(config)
}

/// TOML's error as one line (its `Display` draws the source line over several): `line L,
/// column C (`the line`): message`.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let source = text.lines().nth(line - 1).unwrap_or_default().trim();
    format!("line {line}, column {column} (`{source}`): {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_keys_are_read_and_listen_defaults_to_a_free_loopback_port() {
        let c = parse(
            "origins = [\"cdn.example\"]\ncache_size = \"32MiB\"\nupload_limit = \"2Mbit\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.cache_size.as_u64(), 32 * 1024 * 1024);
        assert_eq!(c.upload_limit.unwrap().bytes_per_sec(), 250_000);
        let c = parse("origins = [\"cdn.example\"]\nlisten = \"127.0.0.1:9090\"").unwrap();
        assert_eq!(c.listen.port(), 9090);
    }

    #[test]
    fn bad_text_says_what_is_wrong() {
        let e = parse("origins = [\"cdn.example\"]\ncache_sise = \"1MiB\"").unwrap_err();
        assert_eq!(e.status, ShoalStatus::Config);
        assert!(e.message.contains("cache_sise"), "{}", e.message);
        assert!(e.message.contains("line 2, column 1"), "{}", e.message);
        assert!(!e.message.contains('\n'), "{}", e.message);
        let e = parse("origins = [").unwrap_err();
        assert!(e.message.contains("line 1"), "{}", e.message);
        let e = parse("").unwrap_err();
        assert!(e.message.contains("no origin is allowed"), "{}", e.message);
    }
}
