//! The provider-signed digest list at work: fetched from the origin beside the swarm's
//! manifest, verified with the provider's key, its digests put into the swarm's `digests`.
//! One fetch per swarm at a time, at most one a second. The format is `shoal_proto::signed_list`; where a list lives and how its
//! entries are keyed is `shoal_core::manifest::digests`.

use crate::manifest::digests;
use crate::metrics::{DigestListResult, ResultLabel};
use crate::node::Shared;
use crate::swarm::{Swarm, SwarmState};
use shoal_proto::signed_list::{self, ListError, ProviderKey};
use shoal_proto::SegmentKey;
use std::sync::Arc;
use std::time::Duration;

/// Least time between the starts of two fetches of one swarm's list.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The digest of `key` from the swarm's signed list, fetching the list (again) when `key` is
/// not known yet: a live list grows with the playlist. `None` when no verified list gives
/// one; the peer's bytes are then dropped and the origin serves.
pub(super) async fn digest(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    provider: &ProviderKey,
) -> Option<([u8; 32], u64)> {
    let asked = crate::clock::now();
    let mut last = swarm.digest_list.lock().await;
    if let Some(d) = known(swarm, key) {
        return Some(d);
    }
    // A fetch that started after we asked has answered already: `key` was not in its list.
    if (*last).is_some_and(|started| started >= asked) {
        return None;
    }
    if let Some(started) = *last {
        crate::clock::sleep_until(started + MIN_REFRESH).await;
    }
    *last = Some(crate::clock::now());
    let result = refresh(shared, swarm, provider).await;
    drop(last);
    shared
        .metrics
        .digest_lists
        .get_or_create(&ResultLabel { result })
        .inc();
    let d = known(swarm, key);
    if d.is_none() && result == DigestListResult::Ok {
        tracing::debug!(%key, "segment not in the signed digest list (yet): peer bytes dropped");
    }
    d
}

fn known(swarm: &Swarm, key: &SegmentKey) -> Option<([u8; 32], u64)> {
    swarm.lock().digests.get(key).copied()
}

/// Fetches, verifies and reads the list and its signature, and on success makes its entries
/// the swarm's digests (keeping those of segments still in the playlist).
async fn refresh(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    provider: &ProviderKey,
) -> DigestListResult {
    let Some(manifest) = swarm.lock().manifest_url.clone() else {
        tracing::warn!(swarm = %swarm.id, "no manifest URL, so no signed digest list: peer bytes dropped");
        return DigestListResult::Missing;
    };
    let list_url = digests::list_url(&manifest, &shared.config.digest_list_suffix);
    let sig_url = digests::signature_url(&list_url);
    // The manifest's own origin, so allow-listed; checked again all the same. Logs name the
    // path only: the query may hold the viewer's token.
    if shared.mapper.to_proxy(&list_url).is_none() {
        let list = list_url.path();
        tracing::warn!(swarm = %swarm.id, list, "digest list off the allow-list: peer bytes dropped");
        return DigestListResult::Missing;
    }
    let (list, sig) = futures::future::join(
        shared
            .origin
            .fetch(&list_url, None, signed_list::MAX_LIST_BYTES),
        shared
            .origin
            .fetch(&sig_url, None, signed_list::MAX_SIGNATURE_BYTES),
    )
    .await;
    for fetched in [&list, &sig].into_iter().flatten() {
        shared
            .metrics
            .origin_bytes
            .inc_by(fetched.body.len() as u64);
    }
    let (list, sig) = match (list, sig) {
        (Ok(list), Ok(sig)) => (list.body, sig.body),
        (Err(e), _) | (_, Err(e)) => {
            let list = list_url.path();
            tracing::warn!(swarm = %swarm.id, list, error = %e, "signed digest list unavailable: peer bytes dropped");
            return DigestListResult::Missing;
        }
    };
    match digests::verified_digests(provider, &list_url, &list, &sig) {
        Ok(entries) => {
            let n = entries.len();
            let mut st = swarm.lock();
            let SwarmState {
                digests, segments, ..
            } = &mut *st;
            digests.retain(|k, _| segments.contains_key(k));
            digests.extend(entries);
            tracing::debug!(swarm = %swarm.id, entries = n, "signed digest list verified");
            DigestListResult::Ok
        }
        Err(e) => {
            let list = list_url.path();
            tracing::warn!(swarm = %swarm.id, list, error = %e, "signed digest list refused: peer bytes dropped");
            match e {
                ListError::BadSignature | ListError::SignatureEncoding => {
                    DigestListResult::BadSignature
                }
                _ => DigestListResult::Malformed,
            }
        }
    }
}
