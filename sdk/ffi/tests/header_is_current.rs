//! The committed header `include/shoal.h` is what cbindgen makes of the crate now: a change
//! to the C ABI that forgot the header fails here. `SHOAL_BLESS=1` writes the new header
//! instead (then review and commit it).

use std::path::Path;

#[test]
fn committed_header_matches_the_crate() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("reading cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen reads the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = crate_dir.join("include/shoal.h");
    if std::env::var_os("SHOAL_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing include/shoal.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/shoal.h is stale: regenerate it with\n  SHOAL_BLESS=1 cargo test -p shoal-ffi --test header_is_current\n\
         and commit it. First difference at line {}:\n  committed: {:?}\n  generated: {:?}",
        first_difference(&committed, &generated) + 1,
        committed.lines().nth(first_difference(&committed, &generated)),
        generated.lines().nth(first_difference(&committed, &generated)),
    );
}

/// The index of the first line that differs.
fn first_difference(a: &str, b: &str) -> usize {
    a.lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.lines().count().min(b.lines().count()))
}
