//! The C program in `docs/sdk.md` compiles against the header and links with the static
//! library as the guide says (it needs real hosts to run; `c_program.rs` runs a C app).

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
