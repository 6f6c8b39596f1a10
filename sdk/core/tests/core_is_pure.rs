//! The core stays free of I/O by construction: no async runtime, HTTP stack, TLS or socket
//! crate may enter its dependency tree (normal dependencies, transitively). A change that
//! needs one belongs in the SDK, the driver around the core.

use std::process::Command;

/// Crates that would bring a runtime, sockets or a network stack into the core.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "mio",
    "socket2",
    "hyper",
    "reqwest",
    "h2",
    "rustls",
    "quinn",
    "iroh",
    "redis",
    "rand",
];

#[test]
fn the_core_depends_on_no_runtime_network_or_randomness_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "shoal-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"shoal-core"), "no tree read: {tree}");
    let found: Vec<&&str> = crates.iter().filter(|c| FORBIDDEN.contains(c)).collect();
    assert!(
        found.is_empty(),
        "shoal-core must stay free of I/O, but depends on {found:?}; move that code to the SDK"
    );
}
