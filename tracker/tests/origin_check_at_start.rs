//! At start the tracker asks each allow-listed origin (`HEAD /`) whether it answers, over the
//! scheme its digest service uses for it and, failing that, the other one, and logs one line
//! per origin; start-up does not wait for it.

use shoal_testkit::{free_port, wait_for_port, ChildGuard, Nginx};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-tracker");

/// The JSON log lines of the origin check, by origin.
fn checks(lines: &Mutex<Vec<String>>) -> Vec<serde_json::Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["answers_over"].is_string())
        .collect()
}

fn check_of<'a>(all: &'a [serde_json::Value], origin: &str) -> Option<&'a serde_json::Value> {
    all.iter().find(|v| v["fields"]["origin"] == origin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_origin_is_logged_as_answering_over_its_scheme_or_not() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "origin\n").unwrap();
    let nginx = Nginx::start(root.path()).unwrap();
    let http_origin = nginx.host_port();
    // The same origin under another name, left on the default scheme (HTTPS): the mistake
    // the check exists for.
    let unschemed = format!("localhost:{}", nginx.addr.port());
    // Nobody listens on this port.
    let dead = format!("127.0.0.1:{}", free_port());
    // This one accepts connections but never answers: its check takes the full timeout, and
    // the tracker serves meanwhile.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_origin = silent.local_addr().unwrap().to_string();

    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut child = ChildGuard(
        Command::new(BIN)
            .args(["--listen", &addr.to_string(), "--log-format", "json"])
            .args([
                "--origin",
                &[http_origin.as_str(), &unschemed, &dead, &silent_origin].join(","),
            ])
            .args(["--origin-scheme", &format!("{http_origin}=http")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = Arc::new(Mutex::new(Vec::new()));
    {
        let stderr = child.0.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
    }
    wait_for_port(addr, Duration::from_secs(20)).unwrap();
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        check_of(&checks(&lines), &silent_origin).is_none(),
        "the tracker serves before the check of an origin that never answers is done"
    );

    let all =
        shoal_testkit::poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let all = checks(&lines);
            async move { (all.len() >= 4).then_some(all) }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "four origin check lines; the log:\n{}",
                lines.lock().unwrap().join("\n")
            )
        });

    let ok = check_of(&all, &http_origin).unwrap();
    assert_eq!(ok["level"], "INFO", "{ok}");
    assert_eq!(ok["fields"]["answers"], true, "{ok}");
    assert_eq!(ok["fields"]["answers_over"], "http", "{ok}");
    assert_eq!(ok["fields"]["scheme"], "http", "{ok}");
    let text = ok["fields"]["message"].as_str().unwrap();
    assert!(text.contains("answers over http"), "{ok}");

    let wrong = check_of(&all, &unschemed).unwrap();
    assert_eq!(wrong["level"], "WARN", "{wrong}");
    assert_eq!(wrong["fields"]["answers"], false, "{wrong}");
    assert_eq!(wrong["fields"]["scheme"], "https", "{wrong}");
    assert_eq!(wrong["fields"]["answers_over"], "http", "{wrong}");
    let text = wrong["fields"]["message"].as_str().unwrap();
    assert!(
        text.contains(&format!("add --origin-scheme {unschemed}=http")),
        "{wrong}"
    );

    for origin in [&dead, &silent_origin] {
        let none = check_of(&all, origin).unwrap();
        assert_eq!(none["level"], "WARN", "{none}");
        assert_eq!(none["fields"]["answers"], false, "{none}");
        assert_eq!(none["fields"]["answers_over"], "none", "{none}");
        let text = none["fields"]["message"].as_str().unwrap();
        assert!(text.contains("does not answer"), "{none}");
    }
    let refused = check_of(&all, &dead).unwrap();
    assert!(
        refused["fields"]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "the cause is in the line: {refused}"
    );

    // Only `HEAD /` reached the real origin, with the tracker's name: once for each name it
    // answers under over http, besides the TLS hello of the https attempt, which nginx
    // logs as a bad request.
    let asked = nginx
        .wait_for_requests(3, Duration::from_secs(10))
        .await
        .unwrap();
    let (heads, others): (Vec<_>, Vec<_>) = asked.iter().partition(|r| r.method == "HEAD");
    assert_eq!(heads.len(), 2, "{asked:?}");
    assert!(
        heads.iter().all(|r| r.uri == "/"
            && r.user_agent
                .as_deref()
                .unwrap_or("")
                .starts_with("shoal-tracker/")),
        "{asked:?}"
    );
    assert!(
        others.iter().all(|r| r.method == "-" && r.status == 400),
        "{asked:?}"
    );
    drop(silent);
}
