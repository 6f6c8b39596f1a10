//! The provider's view in tests: the deploy files (`deploy/prometheus/`, `deploy/grafana/`),
//! every PromQL expression the Grafana dashboards run, and a real Prometheus process.

#![allow(dead_code)]

use serde_json::Value;
use shoal_testkit::{free_port, which, ChildGuard};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_path_buf()
}

/// Where tests leave files for people to look at (`target/test-artifacts/`).
pub fn artifacts() -> PathBuf {
    // The test binary is target/<profile>/deps/<name>: keep artifacts beside the build.
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo().join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("creating target/test-artifacts");
    dir
}

/// Every dashboard file under `deploy/grafana/dashboards/`, parsed, in name order.
pub fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards exists")
        .map(|e| e.expect("listing dashboards").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("reading a dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (p, json)
        })
        .collect()
}

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The dashboard's uid.
    pub dashboard: String,
    /// The panel's title.
    pub panel: String,
    /// The target's legend format (`{{source}}` and the like).
    pub legend: String,
    /// PromQL, with Grafana's variables still in it.
    pub expr: String,
}

/// Every panel target's PromQL over every dashboard (rows' nested panels included).
pub fn panel_queries() -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for (_, d) in dashboards() {
        let uid = d["uid"].as_str().unwrap_or_default().to_string();
        // Depth first in reading order: rows hold their panels in `panels` too.
        let mut stack: Vec<&Value> = d["panels"].as_array().into_iter().flatten().rev().collect();
        while let Some(p) = stack.pop() {
            stack.extend(p["panels"].as_array().into_iter().flatten().rev());
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    dashboard: uid.clone(),
                    panel: p["title"].as_str().unwrap_or_default().to_string(),
                    legend: t["legendFormat"].as_str().unwrap_or_default().to_string(),
                    expr: t["expr"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
    }
    out
}

/// Replaces Grafana variables (`$name` and `${name}`) with values; longer names first so that
/// `$__range` is not taken for a prefix of something else.
pub fn expand(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut vars = vars.to_vec();
    vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut s = expr.to_string();
    for (name, value) in vars {
        s = s.replace(&format!("${{{name}}}"), value);
        s = s.replace(&format!("${name}"), value);
    }
    s
}

/// A real Prometheus scraping Shoal on loopback every second, with the deploy rule files.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with the jobs of `deploy/prometheus/prometheus.yml` (`shoal-tracker`,
    /// `shoal-edge`) pointed at the given addresses, and waits until it is ready.
    pub async fn start(trackers: &[SocketAddr], edges: &[SocketAddr]) -> Prometheus {
        let bin = which("prometheus", "prometheus").expect("prometheus installed");
        let dir = tempfile::tempdir().expect("temp dir");
        let list = |a: &[SocketAddr]| {
            a.iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rules = repo().join("deploy/prometheus/rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"{}/*.yml\"\n\
             scrape_configs:\n\
             \x20 - job_name: shoal-tracker\n    static_configs:\n      - targets: [{}]\n\
             \x20 - job_name: shoal-edge\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            list(trackers),
            list(edges)
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting prometheus");
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            _child: ChildGuard(child),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        shoal_testkit::eventually(Duration::from_secs(30), "prometheus ready", || async {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        prometheus
    }

    /// Waits until every target has been scraped successfully.
    pub async fn wait_targets_up(&self, n: usize) {
        let url = format!("{}/api/v1/targets?state=active", self.url);
        shoal_testkit::eventually(Duration::from_secs(30), "every target up", || async {
            let Ok(r) = reqwest::get(&url).await else {
                return false;
            };
            let v: Value = r.json().await.unwrap_or_default();
            let targets = v["data"]["activeTargets"].as_array().cloned();
            targets.is_some_and(|t| t.len() == n && t.iter().all(|t| t["health"] == "up"))
        })
        .await;
    }

    /// `GET /api/v1/<path>` with `params`; the `data` of a successful answer, or the error.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), params)
            .map_err(|e| e.to_string())?;
        let v: Value = reqwest::get(url)
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    /// An instant query now: the result vector (or scalar).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(match data["resultType"].as_str() {
            Some("scalar") => vec![data["result"].clone()],
            _ => data["result"].as_array().cloned().unwrap_or_default(),
        })
    }

    /// A range query from `start` to `end` (Unix seconds) every `step` seconds.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Value>, String> {
        let (start, end, step) = (start.to_string(), end.to_string(), step.to_string());
        let data = self
            .api(
                "query_range",
                &[
                    ("query", expr),
                    ("start", &start),
                    ("end", &end),
                    ("step", &step),
                ],
            )
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}
