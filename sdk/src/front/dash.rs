//! The DASH side of the player front: one swarm per Representation, its segments learned
//! from each MPD load and, for live templates, the moment each becomes available; and routes
//! for request URLs whose segment key the URL alone does not give (a CDN alternative's
//! BaseURL, byte ranges of a `SegmentBase` file).

use super::dash_clock::Clocks;
use super::prefetch;
use crate::fetch::Mode;
use crate::manifest::{dash, segment_key, ByteRange};
use crate::node::Shared;
use crate::swarm::{NewSegment, Swarm};
use shoal_proto::{SegmentKey, SwarmId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use url::Url;

/// Where a request URL belongs when its own key is not the segment's.
#[derive(Debug, Clone)]
struct Route {
    swarm: SwarmId,
    /// The URL the segment's key derives from.
    key_url: Url,
    /// A `SegmentBase` file: each byte range a player asks for becomes a segment.
    on_demand: bool,
}

/// The node's DASH state: its routes and live schedules. Kept per node, so nodes sharing a
/// process (tests, the swarm benchmark) never see each other's.
pub(crate) struct DashState {
    /// Routes by the request URL's own key (query dropped); bounded.
    routes: moka::sync::Cache<SegmentKey, Route>,
    /// The newest template of each live Representation, by swarm, with the URL of the MPD it
    /// came from (whose clock it runs on). The `usize` is the swarm's address: a swarm left
    /// and joined again needs a new ticker.
    live: Mutex<HashMap<SwarmId, LiveEntry>>,
    /// Origin clocks by MPD, from `UTCTiming`.
    pub(super) clocks: Clocks,
}

/// A live Representation's ticker, as [`DashState::live`] keeps it.
struct LiveEntry {
    swarm_addr: usize,
    mpd_url: Url,
    template: watch::Sender<dash::LiveTemplate>,
}

impl Default for DashState {
    fn default() -> Self {
        Self {
            routes: moka::sync::Cache::new(200_000),
            live: Mutex::new(HashMap::new()),
            clocks: Clocks::default(),
        }
    }
}

/// A live segment is registered the moment the template says it is complete (players ask
/// for it then), but prefetched this long after: packagers publish a moment after the
/// segment's end, and a prefetch that comes too early costs a 404.
const AVAILABILITY_MARGIN: Duration = Duration::from_millis(500);

/// How far ahead of the node's clock a player's may run: players set theirs by the MPD's
/// `UTCTiming`, the node keeps its own. A segment asked for this much before the template
/// says it is complete is still registered; if the origin does not have it yet, the player
/// gets the origin's 404 and retries, as it would without us.
const CLOCK_SKEW: Duration = Duration::from_secs(1);

/// Joins every Representation's swarm, learns its segments, prefetches fresh ones, and keeps
/// live templates ticking. Call on every MPD load.
pub(super) fn learn(shared: &Arc<Shared>, mpd_url: &Url, mpd: &dash::Mpd) {
    if mpd.dynamic {
        shared
            .dash
            .clocks
            .learn(shared, mpd_url, &mpd.utc_timing, crate::clock::wall());
    }
    let now = crate::clock::now();
    for rep in mpd.periods.iter().flat_map(|p| &p.representations) {
        let id = dash::swarm_id(mpd_url, &rep.id);
        let swarm = shared.join(id.clone());
        swarm.lock().manifest_url = Some(mpd_url.clone());
        let target = rep
            .segments
            .iter()
            .map(|s| s.duration)
            .max()
            .or(mpd.max_segment_duration)
            .unwrap_or(Duration::from_secs(2))
            .clamp(Duration::from_millis(100), Duration::from_secs(3600));
        for s in &rep.segments {
            add_routes(shared, &id, &s.resource, false);
        }
        if let Some(f) = &rep.file {
            add_routes(shared, &id, f, true);
        }
        let fresh = swarm.lock().learn_segments(
            now,
            rep.segments.iter().map(|s| {
                let r = &s.resource;
                NewSegment {
                    key: r.key.clone(),
                    url: r.url.clone(),
                    range: r.range,
                    sequence: s.sequence,
                    duration: Some(s.duration),
                }
            }),
            !mpd.dynamic,
            target,
        );
        prefetch(shared, &swarm, fresh, Mode::Prefetch);
        if let Some(live) = &rep.live {
            schedule(shared, &swarm, mpd_url, live.clone());
        }
    }
}

fn add_routes(shared: &Shared, swarm: &SwarmId, r: &dash::Resource, on_demand: bool) {
    for u in std::iter::once(&r.url).chain(&r.alternatives) {
        if on_demand || u != &r.key_url {
            shared.dash.routes.insert(
                segment_key(u, None),
                Route {
                    swarm: swarm.clone(),
                    key_url: r.key_url.clone(),
                    on_demand,
                },
            );
        }
    }
}

/// The URL to key a request by, if it is a DASH URL whose key is not its own. A closed byte
/// range of a `SegmentBase` file is registered as a segment on first sight, so the next viewer
/// asking for it finds it among its neighbours. A request under a CDN alternative makes the
/// swarm fetch that segment from the alternative from now on (the player fell back to it).
pub(super) fn route(shared: &Arc<Shared>, url: &Url, closed: Option<ByteRange>) -> Option<Url> {
    let r = shared.dash.routes.get(&segment_key(url, None))?;
    let swarm = shared.swarms.get(&r.swarm).map(|s| s.value().clone())?;
    let key = segment_key(&r.key_url, closed);
    if r.on_demand {
        let range = closed?;
        let (ended, target) = {
            let st = swarm.lock();
            (st.ended, st.target_duration)
        };
        swarm.lock().learn_segments(
            crate::clock::now(),
            [NewSegment {
                key,
                url: url.clone(),
                range: Some(range),
                sequence: range.offset,
                duration: None,
            }],
            ended,
            target,
        );
    } else if let Some(info) = swarm.lock().segments.get_mut(&key) {
        info.url = url.clone();
    }
    Some(r.key_url)
}

/// A player asked for `url`, which no swarm lists. If the live template of a swarm the node
/// is in names it and it is available (dash.js and Shaka ask at the very moment the template
/// says, which may be before the ticker runs), registers it as the ticker does and returns
/// the swarm and the segment's key; the player's own request then fetches it through the
/// scheduler. Call only for URLs no swarm lists.
pub(super) fn register_requested(
    shared: &Arc<Shared>,
    url: &Url,
) -> Option<(Arc<Swarm>, SegmentKey)> {
    let (id, addr, seg) = {
        let map = shared.dash.live.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().find_map(|(id, e)| {
            // The template's clock is the origin's.
            let now = shared.dash.clocks.origin_now(&e.mpd_url);
            let seg = e.template.borrow().segment_named(url, now, CLOCK_SKEW)?;
            Some((id.clone(), e.swarm_addr, seg))
        })?
    };
    let swarm = shared.swarms.get(&id).map(|s| s.value().clone())?;
    // A swarm left and joined again: its template comes with the next MPD load.
    if Arc::as_ptr(&swarm) as usize != addr {
        return None;
    }
    // Not prefetched: the player's request is the fetch, with the player's deadline.
    register(shared, &swarm, &seg, url);
    tracing::debug!(key = %seg.resource.key, "live segment registered on a player's request");
    Some((swarm, seg.resource.key))
}

/// Learns one live segment into `swarm` (routes for its CDN alternatives, the swarm's list),
/// as fetched from `url`. Returns its key if it was new (for prefetch).
fn register(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    seg: &dash::Segment,
    url: &Url,
) -> Vec<SegmentKey> {
    let target = swarm.lock().target_duration;
    let r = &seg.resource;
    add_routes(shared, &swarm.id, r, false);
    swarm.lock().learn_segments(
        crate::clock::now(),
        [NewSegment {
            key: r.key.clone(),
            url: url.clone(),
            range: r.range,
            sequence: seg.sequence,
            duration: Some(seg.duration),
        }],
        false,
        target,
    )
}

/// Hands `live` (from the MPD at `mpd_url`) to the swarm's ticker, starting one if none runs.
fn schedule(shared: &Arc<Shared>, swarm: &Arc<Swarm>, mpd_url: &Url, live: dash::LiveTemplate) {
    let mut map = shared.dash.live.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, e| !e.template.is_closed());
    let addr = Arc::as_ptr(swarm) as usize;
    if let Some(e) = map.get_mut(&swarm.id) {
        if e.swarm_addr == addr && e.template.send(live.clone()).is_ok() {
            e.mpd_url = mpd_url.clone();
            return;
        }
    }
    let (tx, rx) = watch::channel(live);
    map.insert(
        swarm.id.clone(),
        LiveEntry {
            swarm_addr: addr,
            mpd_url: mpd_url.clone(),
            template: tx,
        },
    );
    tokio::spawn(tick(shared.clone(), swarm.clone(), mpd_url.clone(), rx));
}

/// Registers each next segment of a live Representation when it becomes available, and
/// prefetches it [`AVAILABILITY_MARGIN`] later, until the node leaves the swarm or shuts
/// down, or the period ends.
async fn tick(
    shared: Arc<Shared>,
    swarm: Arc<Swarm>,
    mpd_url: Url,
    mut rx: watch::Receiver<dash::LiveTemplate>,
) {
    let mut next: Option<u64> = None;
    loop {
        let joined = shared
            .swarms
            .get(&swarm.id)
            .is_some_and(|s| Arc::ptr_eq(s.value(), &swarm));
        if !joined || shared.shutdown.is_cancelled() {
            break;
        }
        let t = rx.borrow_and_update().clone();
        let n = next.map_or(t.first_number(), |n| n.max(t.first_number()));
        // Past a guessed cadence's limit: only a newer MPD names more.
        let due = (t.prefetch_limit().is_none_or(|l| n <= l))
            .then(|| t.segment(n).zip(t.available_at(n)))
            .flatten();
        // Availability is on the origin's clock.
        let now = shared.dash.clocks.origin_now(&mpd_url);
        let wait = due
            .as_ref()
            .map(|(_, at)| at.duration_since(now).unwrap_or_default());
        tokio::select! {
            // Past the period's end or the guess: only a new template brings more.
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))) => {}
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            _ = shared.shutdown.cancelled() => break,
        }
        let Some((seg, _)) = due else { continue };
        let mode = match t.prefetch_limit() {
            Some(_) => Mode::Probe,
            None => Mode::Prefetch,
        };
        // Already registered if a player asked first; then its request is fetching it.
        let fresh = register(&shared, &swarm, &seg, &seg.resource.url);
        if !fresh.is_empty() {
            let (shared, swarm) = (shared.clone(), swarm.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(AVAILABILITY_MARGIN) => prefetch(&shared, &swarm, fresh, mode),
                    _ = shared.shutdown.cancelled() => {}
                }
            });
        }
        next = Some(n + 1);
    }
}
