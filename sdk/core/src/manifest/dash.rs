//! MPEG-DASH MPDs: a byte-preserving rewrite into the proxy's URL form and a read-only model
//! of every Representation's segments.
//!
//! The rewrite ([`rewrite`]) is a streaming quick-xml pass that splices new values in at the
//! byte spans of `BaseURL`, `Location`/`PatchLocation` text, the URL attributes of
//! `SegmentTemplate`/`SegmentURL`/`Initialization`/`RepresentationIndex`, and HTTP
//! `UTCTiming@value`; every other byte is the origin's. The model ([`parse`]) is our own,
//! read from a small element tree: dash-mpd-core's serde model drops unmodelled elements,
//! and we need only addressing, BaseURLs and timing (see `docs/dash.md`).

pub mod clock;
mod live;
mod model;
mod rewrite;
pub mod template;
mod xml;

pub use live::{LiveTemplate, GUESSED_SEGMENTS};
pub use model::{Addressing, Mpd, Period, Representation, Resource, Segment, MAX_SEGMENTS};

use super::{swarm_id_for, UrlMapper};
use sha2::{Digest, Sha256};
use shoal_proto::{SwarmId, MAX_SWARM_ID_LEN};
use std::borrow::Cow;
use std::time::SystemTime;
use url::Url;

/// Why an MPD is passed through unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DashError {
    /// The body is not valid UTF-8 (MPDs are UTF-8 in practice).
    #[error("MPD is not valid UTF-8")]
    NotUtf8,
    /// The body is not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// The root element is not `MPD`.
    #[error("root element is `{0}`, not MPD")]
    NotMpd(String),
    /// No `Period`.
    #[error("MPD has no Period")]
    NoPeriod,
    /// An attribute the model needs is missing.
    #[error("{element} without {attribute}")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute has a value the model cannot use.
    #[error("{element}@{attribute}: bad value `{value}`")]
    BadAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
        /// The value (cut to 64 characters).
        value: String,
    },
    /// A template cannot be expanded.
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    /// A URL that does not resolve against its base.
    #[error("unresolvable URL `{0}`")]
    BadUrl(String),
    /// A URL in segment information that Representations on different hosts inherit (a
    /// root-relative template under BaseURLs on two CDNs) means a different resource under
    /// each, and no one rewritten value reaches each through the proxy.
    #[error("URL `{0}` means different origin URLs under the BaseURLs that inherit it")]
    AmbiguousUrl(String),
    /// A Representation lists more than [`MAX_SEGMENTS`] segments.
    #[error("more than {MAX_SEGMENTS} segments in a Representation")]
    TooManySegments,
    /// A `SegmentTimeline` repeats with `r="-1"` without anything to stop it.
    #[error("open-ended SegmentTimeline repeat in a static MPD without a period end")]
    OpenTimeline,
}

impl DashError {
    /// A low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            DashError::NotUtf8 => "not_utf8",
            DashError::Xml(_) => "not_xml",
            DashError::NotMpd(_) => "not_mpd",
            DashError::NoPeriod => "no_period",
            DashError::MissingAttribute { .. } => "missing_attribute",
            DashError::BadAttribute { .. } => "bad_attribute",
            DashError::Template(_) => "template",
            DashError::BadUrl(_) => "bad_url",
            DashError::AmbiguousUrl(_) => "ambiguous_url",
            DashError::TooManySegments => "too_many_segments",
            DashError::OpenTimeline => "open_timeline",
        }
    }
}

/// The result of [`process`]: the body for the player and what it describes.
#[derive(Debug)]
pub struct Processed<'a> {
    /// The rewritten MPD, or the original bytes when it did not parse.
    pub body: Cow<'a, [u8]>,
    /// The model, or why the body was passed through unchanged.
    pub mpd: Result<Mpd, DashError>,
}

/// What the proxy does with an MPD: parse it and, if it parses, rewrite it; if not, pass it
/// through unchanged with a warning (the caller counts the failure). `now` places live
/// windows. Never fails.
pub fn process<'a>(
    bytes: &'a [u8],
    mpd_url: &Url,
    mapper: &UrlMapper,
    now: SystemTime,
) -> Processed<'a> {
    let result = std::str::from_utf8(bytes)
        .map_err(|_| DashError::NotUtf8)
        .and_then(|text| {
            let mpd = model::build(&xml::read_tree(text)?, mpd_url, now)?;
            Ok((rewrite::rewrite(text, mpd_url, mapper)?, mpd))
        });
    match result {
        Ok((body, mpd)) => Processed {
            body: Cow::Owned(body.into_bytes()),
            mpd: Ok(mpd),
        },
        Err(e) => {
            tracing::warn!(url = %mpd_url, error = %e, "MPD passed through unchanged");
            Processed {
                body: Cow::Borrowed(bytes),
                mpd: Err(e),
            }
        }
    }
}

/// Parses an MPD into the model; `now` places live windows (ignored for static MPDs).
pub fn parse(bytes: &[u8], mpd_url: &Url, now: SystemTime) -> Result<Mpd, DashError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DashError::NotUtf8)?;
    model::build(&xml::read_tree(text)?, mpd_url, now)
}

/// Rewrites absolute URLs on allow-listed origins into the proxy's URL form; relative ones
/// stay unless they would resolve elsewhere through the proxy. Every byte outside the
/// rewritten values is kept. `Err` only for text that is not well-formed XML.
pub fn rewrite(text: &str, mpd_url: &Url, mapper: &UrlMapper) -> Result<String, DashError> {
    rewrite::rewrite(text, mpd_url, mapper)
}

/// Whether a body looks like an MPD: an XML document whose root element is `MPD`.
pub fn is_mpd(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    String::from_utf8_lossy(head).contains("<MPD")
}

/// The swarm of one Representation: the MPD's canonical URL (see [`swarm_id_for`]) plus `#`
/// and the Representation id; hashed when too long.
pub fn swarm_id(mpd_url: &Url, representation_id: &str) -> SwarmId {
    let base = swarm_id_for(mpd_url);
    let id: String = representation_id
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    let joined = format!("{}#{id}", base.as_str());
    let fallback = || {
        let h = format!("sha256-{}", hex::encode(Sha256::digest(joined.as_bytes())));
        SwarmId::new(h).expect("hex digest is a valid id")
    };
    if joined.len() > MAX_SWARM_ID_LEN {
        return fallback();
    }
    SwarmId::new(joined.as_str()).unwrap_or_else(|_| fallback())
}
