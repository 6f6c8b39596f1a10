//! Builds the C programs of `tests/c` with gcc against `include/shoal.h` and the static
//! library cargo built beside this test, and talks to them over their stdin and stdout.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::time::Instant;

/// The static library built with this test. `cargo test -p shoal-ffi` builds every crate
/// type of the library in one go, into the folder of the test binaries (`target/debug/deps`;
/// only `cargo build` copies it up to `target/debug`).
pub fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let lib = exe
        .parent()
        .expect("the test binary sits in a folder")
        .join("libshoal_ffi.a");
    assert!(
        lib.is_file(),
        "{} is missing: cargo test -p shoal-ffi builds it",
        lib.display()
    );
    lib
}

/// What gcc needs beside the static library, as docs/sdk.md and the header say: the system
/// libraries the Rust standard library and the SDK's dependencies call into (glibc 2.34 and
/// later hold most of them in libc; older ones need them named).
pub const SYSTEM_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm"];

/// Compiles `tests/c/<name>.c` into `out_dir/<name>` with `extra` gcc flags.
pub fn compile(name: &str, out_dir: &Path, extra: &[&str]) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    compile_source(
        &crate_dir.join(format!("tests/c/{name}.c")),
        &out_dir.join(name),
        extra,
    )
}

/// Compiles the C file `source` into the program `out` with `extra` gcc flags, against the
/// header and the static library; every warning is an error, so the header must compile
/// cleanly as C11.
pub fn compile_source(source: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let lib = static_lib();
    compile_with(source, out, extra, &[lib.as_os_str()])
}

/// The folder the shared library `libshoal_ffi.so` is in (beside the static one), to link
/// with `-L` and run with `LD_LIBRARY_PATH`.
pub fn shared_lib_dir() -> PathBuf {
    let dir = static_lib().parent().unwrap().to_path_buf();
    assert!(
        dir.join("libshoal_ffi.so").is_file(),
        "no libshoal_ffi.so in {}",
        dir.display()
    );
    dir
}

/// [`compile_source`] against the shared library instead.
pub fn compile_source_shared(source: &Path, out: &Path) -> PathBuf {
    let dir = format!("-L{}", shared_lib_dir().display());
    compile_with(source, out, &[], &[dir.as_ref(), "-lshoal_ffi".as_ref()])
}

fn compile_with(source: &Path, out: &Path, extra: &[&str], libs: &[&std::ffi::OsStr]) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gcc = shoal_testkit::which("gcc", "gcc").expect("gcc is installed");
    let result = Command::new(gcc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .args(extra)
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(source)
        .args(libs)
        .args(SYSTEM_LIBS)
        .arg("-o")
        .arg(out)
        .output()
        .expect("running gcc");
    assert!(
        result.status.success(),
        "gcc failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    out.to_path_buf()
}

/// A running C program whose stdout lines arrive on a channel.
pub struct Program {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line so far.
    pub seen: Vec<String>,
}

impl Program {
    /// Starts `cmd` with piped stdin and stdout (stderr is inherited: the test's output).
    pub fn start(mut cmd: Command) -> Program {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the C program");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Program {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("writing to the C program");
        stdin.flush().expect("flushing to the C program");
    }

    /// The rest of the first stdout line starting with `prefix` (earlier lines are kept in
    /// `seen`), within `timeout`. A `FAIL` line fails the test at once.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!(
                    "no `{prefix}` line from the C program within {timeout:?} ({e}; exit: {:?}); it printed:\n{}",
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            };
            self.seen.push(line.clone());
            assert!(!line.starts_with("FAIL"), "the C program: {line}");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim_start().to_string();
            }
        }
    }

    /// Waits for the program to exit, within `timeout`; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("waiting for the C program") {
                // The reader thread ends at the pipe's end of file, after the last line.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the C program did not exit within {timeout:?}");
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
