//! The C program in `docs/sdk.md` compiles against the header and links with the static
//! library as the guide says (it needs real hosts to run; `c_program.rs` runs a C app), and
//! the shared library exports every call of the header.

mod support;

use std::path::Path;

#[test]
fn the_guides_c_program_compiles_and_links() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sdk.md");
    let text = std::fs::read_to_string(&guide).expect("reading docs/sdk.md");
    let program = text
        .split("```c\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/sdk.md has a ```c block");
    assert!(program.contains("shoal_node_new"), "{program}");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("app.c");
    std::fs::write(&source, program).unwrap();
    let exe = support::compile_source(&source, &dir.path().join("app"), &[]);
    // Without its argument it prints its usage: the program runs, linked.
    let out = std::process::Command::new(&exe).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}

#[test]
fn the_shared_library_serves_a_c_program_too() {
    // driver.c calls every function of the header: it links only if the .so exports all.
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/driver.c");
    let exe = support::compile_source_shared(&source, &dir.path().join("driver"));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = std::process::Command::new(&exe);
    cmd.env("LD_LIBRARY_PATH", support::shared_lib_dir())
        .args(["errors", "127.0.0.1:9"])
        .arg(busy.local_addr().unwrap().to_string());
    let mut app = support::Program::start(cmd);
    app.expect("DONE", std::time::Duration::from_secs(60));
    assert_eq!(app.wait(std::time::Duration::from_secs(10)), Some(0));
    assert!(
        app.seen
            .iter()
            .any(|l| l.starts_with("RESULT misspelt_key 2 ")),
        "{:?}",
        app.seen
    );
}
