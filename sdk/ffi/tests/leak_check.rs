//! No memory leak that grows with the number of nodes an app makes: a C program
//! (`tests/c/leak_loop.c`) creates, starts, plays a playlist and a segment through, stops and
//! frees a node N times against a real tracker and nginx, under a leak checker. The leak it
//! reports for many rounds must not exceed the one for few rounds by even one small block per
//! extra round (what is left at exit once, like the runtime's thread-locals, is the same for
//! any N).
//!
//! Two checkers, each with 10 and 100 rounds, each first shown to see a leak made through the
//! ABI on purpose (stats strings never released): LeakSanitizer (`gcc -fsanitize=leak`, a few
//! seconds, in the default run) and valgrind's memcheck (about a minute, so behind
//! `cargo test -p shoal-ffi --test leak_check -- --ignored`; docs/benchmarks.md).

mod support;

use shoal_testkit::{encode_vod_ladder, Nginx, VodLadder};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::compile;
use tokio::time::Instant;

/// Bytes a leak checker reports lost at exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost {
    /// Blocks nothing points to (valgrind's "definitely lost", LeakSanitizer's direct leaks).
    direct: u64,
    /// Blocks only lost blocks point to.
    indirect: u64,
    /// Blocks only pointers into their middle point to (valgrind's "possibly lost"; 0 for
    /// LeakSanitizer, which has no such kind).
    possible: u64,
}

/// The origin, tracker and configuration file the rounds play against.
struct Setup {
    _dir: tempfile::TempDir,
    _nginx: Nginx,
    _tracker: shoal_tracker::RunningTracker,
    work: tempfile::TempDir,
    config: PathBuf,
    manifest: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| encode_vod_ladder(dir.path())).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let origin = nginx.host_port();
    let tracker = shoal_tracker::spawn(shoal_tracker::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        origins: vec![origin.clone()],
        origin_schemes: vec![format!("{origin}=http")],
        ..Default::default()
    })
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("shoal.toml");
    std::fs::write(
        &config,
        format!(
            "origins = [\"{origin}\"]\norigin_schemes = [\"{origin}=http\"]\n\
             tracker = \"{}\"\npeer_listen = \"127.0.0.1:0\"\ncache_size = \"8MiB\"\n",
            tracker.url()
        ),
    )
    .unwrap();
    Setup {
        manifest: nginx.url(VodLadder::MASTER),
        _dir: dir,
        _nginx: nginx,
        _tracker: tracker,
        work,
        config,
    }
}

/// Runs `cmd` (a leak checker over leak_loop), checks the rounds all played, and returns its
/// stderr.
fn run_rounds(mut cmd: Command, rounds: u32) -> String {
    let started = Instant::now();
    let out = cmd.output().expect("running the leak check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "{rounds} rounds in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        stdout.trim()
    );
    assert!(
        stdout.contains(&format!("ROUNDS {rounds} ")),
        "the rounds did not all play: {stdout}\n{stderr}"
    );
    let segment_bytes: u64 = stdout
        .split_whitespace()
        .skip_while(|w| *w != "SEGMENT_BYTES")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(segment_bytes > 0, "no segment bytes: {stdout}");
    stderr
}

/// LeakSanitizer's report: the sums of its "Direct leak of N byte(s)" and "Indirect leak of
/// N byte(s)" lines (none when nothing leaked).
fn lsan_lost(stderr: &str) -> Lost {
    let sum = |kind: &str| -> u64 {
        stderr
            .lines()
            .filter_map(|l| l.trim().strip_prefix(kind))
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    };
    Lost {
        direct: sum("Direct leak of "),
        indirect: sum("Indirect leak of "),
        possible: 0,
    }
}

/// valgrind's LEAK SUMMARY: "definitely lost: N bytes", "indirectly lost: N bytes", "possibly
/// lost: N bytes".
fn valgrind_lost(stderr: &str) -> Lost {
    let find = |kind: &str| -> u64 {
        let line = stderr
            .lines()
            .find_map(|l| l.split_once(kind).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no `{kind}` in valgrind's report:\n{stderr}"));
        line.split_whitespace()
            .next()
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap()
    };
    if stderr.contains("All heap blocks were freed") {
        return Lost {
            direct: 0,
            indirect: 0,
            possible: 0,
        };
    }
    Lost {
        direct: find("definitely lost: "),
        indirect: find("indirectly lost: "),
        possible: find("possibly lost: "),
    }
}

/// Less than one 8-byte block lost per round beyond the few-rounds run.
fn assert_no_growth(few: (u32, Lost), many: (u32, Lost)) {
    if let Err(e) = growth(few, many) {
        panic!("{e}");
    }
}

fn growth(few: (u32, Lost), many: (u32, Lost)) -> Result<(), String> {
    let extra_rounds = u64::from(many.0 - few.0);
    for (what, a, b) in [
        ("direct", few.1.direct, many.1.direct),
        ("indirect", few.1.indirect, many.1.indirect),
        ("possible", few.1.possible, many.1.possible),
    ] {
        if b >= a + 8 * extra_rounds {
            return Err(format!(
                "{what} leak grows with the rounds: {a} bytes after {} rounds, {b} after {}",
                few.0, many.0
            ));
        }
    }
    Ok(())
}

fn leak_loop(exe: &Path, setup: &Setup, rounds: u32) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg(&setup.config)
        .arg(rounds.to_string())
        .arg(&setup.manifest);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_of_nodes_leak_nothing_that_grows_lsan() {
    let setup = setup().await;
    let exe = tokio::task::block_in_place(|| {
        compile("leak_loop", setup.work.path(), &["-fsanitize=leak"])
    });
    let run = |rounds: u32, forget: bool| {
        let mut cmd = leak_loop(&exe, &setup, rounds);
        // Exit 0 even when leaks are found: what is compared is how much.
        cmd.env("LSAN_OPTIONS", "exitcode=0:report_objects=0");
        if forget {
            cmd.env("LEAK_LOOP_FORGET_STATS", "1");
        }
        let stderr = tokio::task::block_in_place(|| run_rounds(cmd, rounds));
        let lost = lsan_lost(&stderr);
        eprintln!("{rounds} rounds (forgetting the stats strings: {forget}): {lost:?}");
        (rounds, lost)
    };
    // The checker sees a leak through the ABI: a stats string never released, every round.
    let forgot = run(10, true);
    assert!(
        forgot.1.direct >= 10 * 64,
        "LeakSanitizer missed ten stats strings never released: {forgot:?}"
    );
    let few = run(10, false);
    let many = run(100, false);
    assert_no_growth(few, many);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute under valgrind: cargo test -p shoal-ffi --test leak_check -- --ignored"]
async fn rounds_of_nodes_leak_nothing_that_grows_valgrind() {
    let valgrind = shoal_testkit::which("valgrind", "valgrind").unwrap();
    let setup = setup().await;
    let exe = tokio::task::block_in_place(|| compile("leak_loop", setup.work.path(), &[]));
    let run = |rounds: u32, forget: bool| {
        let mut cmd = Command::new(&valgrind);
        cmd.args([
            "--leak-check=full",
            "--show-leak-kinds=definite",
            "--num-callers=40",
            "--fair-sched=yes",
        ])
        .arg(&exe)
        .arg(&setup.config)
        .arg(rounds.to_string())
        .arg(&setup.manifest);
        if forget {
            cmd.env("LEAK_LOOP_FORGET_STATS", "1");
        }
        let stderr = tokio::task::block_in_place(|| run_rounds(cmd, rounds));
        for line in stderr.lines().filter(|l| {
            [
                "lost:",
                "reachable:",
                "suppressed:",
                "ERROR SUMMARY",
                "All heap",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            eprintln!("  {line}");
        }
        let lost = valgrind_lost(&stderr);
        eprintln!("{rounds} rounds (forgetting the stats strings: {forget}): {lost:?}");
        (rounds, lost)
    };
    let forgot = run(3, true);
    assert!(
        forgot.1.direct >= 3 * 64,
        "valgrind missed three stats strings never released: {forgot:?}"
    );
    let few = run(10, false);
    let many = run(100, false);
    assert_no_growth(few, many);
}

#[test]
fn leak_reports_are_read() {
    let lsan = "==1==ERROR: LeakSanitizer: detected memory leaks\n\n\
                Direct leak of 40 byte(s) in 1 object(s) allocated from:\n    #0 malloc\n\n\
                Indirect leak of 16 byte(s) in 2 object(s) allocated from:\n\n\
                Direct leak of 8 byte(s) in 1 object(s) allocated from:\n\n\
                SUMMARY: LeakSanitizer: 64 byte(s) leaked in 4 allocation(s).\n";
    assert_eq!(
        lsan_lost(lsan),
        Lost {
            direct: 48,
            indirect: 16,
            possible: 0
        }
    );
    assert_eq!(lsan_lost("").direct, 0);
    let vg = "==7== LEAK SUMMARY:\n==7==    definitely lost: 1,024 bytes in 3 blocks\n\
              ==7==    indirectly lost: 0 bytes in 0 blocks\n\
              ==7==      possibly lost: 4,656 bytes in 3 blocks\n";
    assert_eq!(
        valgrind_lost(vg),
        Lost {
            direct: 1024,
            indirect: 0,
            possible: 4656
        }
    );
    let none = Lost {
        direct: 0,
        indirect: 0,
        possible: 0,
    };
    let some = Lost {
        direct: 720,
        indirect: 0,
        possible: 0,
    };
    let grows = growth((10, none), (100, some));
    assert!(grows.is_err(), "one 8-byte block a round must fail");
}
