//! Two tracker instances on one Redis Cluster: a master is SIGKILLed and its replica takes
//! over; then the whole cluster goes away and comes back.

mod common;

use common::{announce_body, config};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;
use shoal_testkit::{metrics_text, RedisCluster};
use shoal_tracker::config::StoreSpec;
use shoal_tracker::RunningTracker;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

const SWARMS: usize = 12;
const PER_SWARM: usize = 3;

struct Peer {
    id: String,
    swarm: String,
    key: String,
}

/// What one announce got: status, body, `Retry-After`, and how long it took.
struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<String>,
    took: Duration,
}

async fn announce(http: &reqwest::Client, base: &str, body: &Value) -> Answer {
    let start = Instant::now();
    let r = http
        .post(format!("{base}/v1/announce"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        retry_after,
        took: start.elapsed(),
    }
}

/// Every peer refreshes at once, peer i through instance i % 2; returns the answers.
async fn round(
    http: &reqwest::Client,
    trackers: &[RunningTracker; 2],
    peers: &[Peer],
) -> Vec<Answer> {
    join_all(peers.iter().enumerate().map(|(i, p)| {
        let base = trackers[i % 2].url();
        let body = announce_body(&p.id, &p.swarm, Some(&p.key));
        async move { announce(http, &base, &body).await }
    }))
    .await
}

/// A failed announce must be the store's 503 with `Retry-After`, never a refusal that would
/// mean the tracker lost or mixed up a member's state.
fn assert_store_down(a: &Answer) {
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "only 503 may fail while Redis fails over: {}",
        a.body
    );
    assert_eq!(a.body["error"], "store_unavailable", "{}", a.body);
    assert!(
        a.body["message"].as_str().unwrap().contains("store"),
        "{}",
        a.body
    );
    assert!(a.retry_after.is_some(), "503 without Retry-After");
}

async fn status_of(http: &reqwest::Client, url: String) -> StatusCode {
    http.get(url).send().await.unwrap().status()
}

/// The `/metrics` page of the tracker at `base`, by series.
async fn scrape(http: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics_text::parse(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_fails_over_and_the_whole_cluster_comes_back() {
    // A short node timeout: a replica takes over about two seconds after its master dies.
    let mut cluster = tokio::task::spawn_blocking(|| {
        RedisCluster::start_with_node_timeout(Duration::from_millis(2000))
    })
    .await
    .unwrap()
    .expect("starting a Redis Cluster");
    let spec = || StoreSpec::RedisCluster(cluster.url.clone());
    let trackers = [
        shoal_tracker::spawn(config(spec(), Duration::from_secs(20)))
            .await
            .unwrap(),
        shoal_tracker::spawn(config(spec(), Duration::from_secs(20)))
            .await
            .unwrap(),
    ];
    let http = reqwest::Client::new();

    let mut peers = Vec::new();
    for s in 0..SWARMS {
        for p in 0..PER_SWARM {
            let (id, swarm) = (format!("p{s}-{p}"), format!("live/{s}"));
            let a = announce(
                &http,
                &trackers[peers.len() % 2].url(),
                &announce_body(&id, &swarm, None),
            )
            .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            let key = a.body["peer_key"].as_str().unwrap().to_owned();
            peers.push(Peer { id, swarm, key });
        }
    }
    for a in round(&http, &trackers, &peers).await {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(
            a.body["neighbours"].as_array().unwrap().len(),
            PER_SWARM - 1
        );
    }

    // Kill the master that serves the first swarm, once its replica has everything.
    cluster = tokio::task::spawn_blocking(move || {
        cluster
            .wait_ready(Duration::from_secs(30))
            .map(|()| cluster)
    })
    .await
    .unwrap()
    .unwrap();
    let victim = cluster
        .master_for_key(&format!("shoal:swarm:{{{}}}:m", peers[0].swarm))
        .unwrap();
    cluster.kill(victim.port).unwrap();
    let killed = Instant::now();
    let (mut failed, mut first_fail, mut last_fail) = (0usize, None, None);
    let mut slowest = Duration::ZERO;
    let mut clean_rounds = 0;
    // Recovered: three rounds in a row in which every announce succeeds, after the cluster
    // has a master for every slot again.
    while clean_rounds < 3 {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "announces did not recover within 60 s of the master's death ({failed} failed)"
        );
        let started = killed.elapsed();
        let answers = round(&http, &trackers, &peers).await;
        let mut clean = true;
        for (a, p) in answers.iter().zip(&peers) {
            slowest = slowest.max(a.took);
            if a.status == StatusCode::OK {
                // The member survived: its key is the one it got before the failover.
                assert_eq!(a.body["peer_key"], p.key.as_str(), "{} lost its key", p.id);
            } else {
                assert_store_down(a);
                failed += 1;
                clean = false;
                first_fail.get_or_insert(started);
                last_fail = Some(killed.elapsed());
            }
        }
        clean_rounds = if clean { clean_rounds + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "failover: {failed} announces failed, first {first_fail:?} and last {last_fail:?} after \
         the SIGKILL; slowest announce {slowest:?}; recovered within {:?}",
        killed.elapsed()
    );
    // No swarm lost: every member is still there, handed out to the others.
    for a in round(&http, &trackers, &peers).await {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(
            a.body["neighbours"].as_array().unwrap().len(),
            PER_SWARM - 1
        );
    }
    for t in &trackers {
        assert_eq!(
            status_of(&http, format!("{}/healthz", t.url())).await,
            StatusCode::OK
        );
        let peers_gauge = scrape(&http, &t.url()).await["shoal_tracker_peers"];
        assert_eq!(peers_gauge, (SWARMS * PER_SWARM) as f64);
    }
    if failed > 0 {
        let mut errors = 0.0;
        for t in &trackers {
            let m = scrape(&http, &t.url()).await;
            errors += metrics_text::sum(&m, "shoal_tracker_store_errors_total");
        }
        assert!(
            errors >= failed as f64,
            "{errors} store errors counted, {failed} 503s"
        );
    }

    // All of Redis goes away: 503 with Retry-After, not ready, still alive.
    cluster.stop_all();
    let down = Instant::now();
    for a in round(&http, &trackers, &peers[..4]).await {
        assert_store_down(&a);
    }
    eprintln!(
        "with every node gone, announces answered 503 within {:?}",
        down.elapsed()
    );
    for t in &trackers {
        let healthz = status_of(&http, format!("{}/healthz", t.url())).await;
        assert_eq!(healthz, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status_of(&http, format!("{}/livez", t.url())).await,
            StatusCode::OK
        );
    }

    // It comes back empty (no persistence): each peer re-appears at its next announce, as a
    // new member with a new key.
    let cluster = tokio::task::spawn_blocking(move || cluster.start_all().map(|()| cluster))
        .await
        .unwrap()
        .expect("restarting the cluster");
    let back = Instant::now();
    loop {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "announces did not succeed within 60 s of the cluster's return"
        );
        let answers = round(&http, &trackers, &peers).await;
        let mut all_ok = true;
        for (a, p) in answers.iter().zip(peers.iter_mut()) {
            if a.status == StatusCode::OK {
                p.key = a.body["peer_key"].as_str().unwrap().to_owned();
            } else {
                assert_store_down(a);
                all_ok = false;
            }
        }
        if all_ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "after the restart, announces succeeded again within {:?}",
        back.elapsed()
    );
    for a in round(&http, &trackers, &peers).await {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(
            a.body["neighbours"].as_array().unwrap().len(),
            PER_SWARM - 1
        );
    }
    for t in &trackers {
        assert_eq!(
            status_of(&http, format!("{}/healthz", t.url())).await,
            StatusCode::OK
        );
    }
    drop(cluster);
}
