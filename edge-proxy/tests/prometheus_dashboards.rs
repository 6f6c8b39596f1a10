//! The deploy files a provider installs: Prometheus's config, rules and alerts pass promtool
//! (with a unit test for every rule and alert), and Grafana can provision the dashboards.
//!
//! That every panel's PromQL returns data from a live Shoal is checked by `browser_players`.

mod observability;

use observability::{dashboards, panel_queries, repo};
use serde_json::Value;
use shoal_testkit::which;
use std::collections::HashSet;
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

fn promtool(args: &[&str]) -> String {
    let bin = which("promtool", "prometheus").expect("promtool installed");
    let out = Command::new(bin)
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(repo().join(path)).expect("reading a deploy file");
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{path} is empty"))
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    // `check config` also checks the rule files the config names.
    let out = promtool(&["check", "config", "prometheus.yml"]);
    assert!(out.contains("2 rule files found"), "{out}");
    promtool(&[
        "check",
        "rules",
        "rules/shoal-recording.yml",
        "rules/shoal-alerts.yml",
    ]);
}

#[test]
fn every_rule_and_alert_has_a_passing_unit_test() {
    let tests = ["tests/recording_test.yml", "tests/alerts_test.yml"];
    let mut args = vec!["test", "rules"];
    args.extend(tests);
    promtool(&args);

    // Each recorded series and each alert is named in some test's expectations.
    let tested: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(repo().join("deploy/prometheus").join(t)).unwrap())
        .collect();
    for file in ["shoal-recording.yml", "shoal-alerts.yml"] {
        let doc = yaml(&format!("deploy/prometheus/rules/{file}"));
        for group in doc["groups"].as_vec().expect("groups") {
            for rule in group["rules"].as_vec().expect("rules") {
                let name = rule["record"]
                    .as_str()
                    .or_else(|| rule["alert"].as_str())
                    .expect("a rule records or alerts");
                let asserted = if rule["alert"].as_str().is_some() {
                    format!("alertname: {name}\n")
                } else {
                    format!("expr: {name}\n")
                };
                assert!(
                    tested.contains(&asserted),
                    "{name} ({file}) has no unit test"
                );
            }
        }
    }
}

/// What Grafana's file provisioning needs from a dashboard, and what keeps it usable.
fn check_dashboard(name: &str, d: &Value, datasource_uid: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            bad.push(format!("{name}: {what}"));
        }
    };
    need(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "a title".into(),
    );
    let uid = d["uid"].as_str().unwrap_or_default();
    need(
        !uid.is_empty()
            && uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        format!("a stable uid of at most 40 URL-safe characters, not {uid:?}"),
    );
    // A fixed id would clash with whatever the Grafana database holds.
    need(d["id"].is_null(), "id null".into());
    need(
        d["schemaVersion"].as_u64().is_some(),
        "a schemaVersion".into(),
    );
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    need(
        vars.iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "a `datasource` variable of type datasource".into(),
    );
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    need(!panels.is_empty(), "panels".into());
    let mut ids = HashSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        need(
            p["id"].as_u64().is_some_and(|id| ids.insert(id)),
            format!("panel {title:?}: a unique id"),
        );
        need(
            p["type"].as_str().is_some_and(|t| !t.is_empty()),
            format!("panel {title:?}: a type"),
        );
        need(!title.is_empty(), "every panel titled".into());
        need(
            p["description"].as_str().is_some_and(|t| !t.is_empty()),
            format!("panel {title:?}: a description (what it means)"),
        );
        let g = &p["gridPos"];
        let dims: Vec<Option<u64>> = ["h", "w", "x", "y"].iter().map(|k| g[k].as_u64()).collect();
        need(
            matches!(dims[..], [Some(h), Some(w), Some(x), Some(_)] if h > 0 && w > 0 && x + w <= 24),
            format!("panel {title:?}: a gridPos within 24 columns"),
        );
        let ds_ok = |v: &Value| {
            v["type"] == "prometheus" && (v["uid"] == "${datasource}" || v["uid"] == datasource_uid)
        };
        need(
            ds_ok(&p["datasource"]),
            format!("panel {title:?}: the Prometheus data source"),
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        need(!targets.is_empty(), format!("panel {title:?}: targets"));
        let mut refs = HashSet::new();
        for t in &targets {
            need(
                t["refId"]
                    .as_str()
                    .is_some_and(|r| refs.insert(r.to_string())),
                format!("panel {title:?}: unique refIds"),
            );
            need(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                format!("panel {title:?}: an expr in every target"),
            );
            need(
                ds_ok(&t["datasource"]),
                format!("panel {title:?}: targets on the Prometheus data source"),
            );
        }
    }
    bad
}

#[test]
fn grafana_can_provision_the_dashboards() {
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(ds["apiVersion"].as_i64(), Some(1));
    let sources = ds["datasources"].as_vec().expect("datasources");
    let prom = sources
        .iter()
        .find(|s| s["type"].as_str() == Some("prometheus"))
        .expect("a Prometheus data source");
    let uid = prom["uid"].as_str().expect("the data source has a uid");
    assert!(prom["url"].as_str().is_some_and(|u| u.starts_with("http")));

    let prov = yaml("deploy/grafana/provisioning/dashboards/shoal.yml");
    assert_eq!(prov["apiVersion"].as_i64(), Some(1));
    let providers = prov["providers"].as_vec().expect("providers");
    assert!(providers.iter().any(|p| p["type"].as_str() == Some("file")
        && p["options"]["path"].as_str().is_some_and(|p| !p.is_empty())));

    let all = dashboards();
    assert!(all.len() >= 2, "a fleet and an edge dashboard");
    let mut uids = HashSet::new();
    let mut bad = Vec::new();
    for (path, d) in &all {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        bad.extend(check_dashboard(&name, d, uid));
        assert!(uids.insert(d["uid"].clone()), "{name}: uid used twice");
    }
    assert!(
        bad.is_empty(),
        "dashboards Grafana would reject or mislead with:\n{}",
        bad.join("\n")
    );

    // Their PromQL runs against a live Prometheus in `browser_players`.
    let queries = panel_queries();
    assert!(queries.len() >= 15, "only {} queries", queries.len());
}

#[test]
fn the_dashboard_check_rejects_what_grafana_would() {
    // The check above must be able to fail: a panel without targets, a duplicate id, and a
    // missing uid are each reported.
    let (_, mut d) = dashboards().into_iter().next().unwrap();
    assert!(check_dashboard("ok", &d, "prometheus").is_empty());
    d["uid"] = Value::Null;
    let panels = d["panels"].as_array_mut().unwrap();
    let first_id = panels[0]["id"].clone();
    panels[1]["id"] = first_id;
    panels[2]["targets"] = Value::Array(vec![]);
    let bad = check_dashboard("broken", &d, "prometheus");
    assert_eq!(bad.len(), 3, "{bad:#?}");
}
