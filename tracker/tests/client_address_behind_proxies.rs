//! Behind a load balancer the tracker takes the client's address from `X-Forwarded-For` or
//! `Forwarded`, but only when the connection comes from a listed proxy.

mod common;

use common::{announce_body, Harness, StoreKind};
use reqwest::StatusCode;
use shoal_tracker::client_addr::ForwardedHeader;

async fn seen_as(h: &Harness, peer: &str, header: Option<(&str, &str)>) -> String {
    let mut req = h
        .client
        .post(h.url("/v1/announce"))
        .json(&announce_body(peer, "s", None));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.headers()[shoal_tracker::api::CLIENT_ADDR_HEADER]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_proxies_may_name_the_client() {
    let xff = Some(("x-forwarded-for", "6.6.6.6, 203.0.113.7"));

    // No proxies listed: the header is a client's claim and is ignored.
    let plain = Harness::start_with(StoreKind::Memory, |_| {}).await;
    assert_eq!(seen_as(&plain, "a", None).await, "127.0.0.1");
    assert_eq!(seen_as(&plain, "b", xff).await, "127.0.0.1");

    // Loopback is the load balancer: the address it appended (not the forged first one).
    let behind = Harness::start_with(StoreKind::Memory, |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    assert_eq!(seen_as(&behind, "a", xff).await, "203.0.113.7");
    assert_eq!(
        seen_as(&behind, "b", Some(("forwarded", "for=198.51.100.1"))).await,
        "127.0.0.1",
        "the proxies append X-Forwarded-For; a Forwarded header is the client's"
    );
    assert_eq!(seen_as(&behind, "c", None).await, "127.0.0.1");

    // Another proxy network is listed, not loopback: ignored again.
    let elsewhere = Harness::start_with(StoreKind::Memory, |c| {
        c.trusted_proxies = vec!["10.0.0.0/8".into()];
    })
    .await;
    assert_eq!(seen_as(&elsewhere, "a", xff).await, "127.0.0.1");

    // RFC 7239 proxies.
    let rfc = Harness::start_with(StoreKind::Memory, |c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.forwarded_header = ForwardedHeader::Forwarded;
    })
    .await;
    let fwd = Some(("forwarded", "for=\"[2001:db8::5]:4711\";proto=https"));
    assert_eq!(seen_as(&rfc, "a", fwd).await, "2001:db8::5");
}
