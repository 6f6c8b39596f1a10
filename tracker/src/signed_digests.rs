//! `shoal-tracker digests sign`: the provider's tool that writes the signed digest list of a
//! media playlist or a DASH MPD from the files beside it. The format is `shoal_proto::signed_list`'s
//! (`docs/security.md`); the key is an Ed25519 private key file of `token keygen`.

use crate::config::DigestsCommand;
use crate::token::{KeyFileError, Keys};
use sha2::{Digest, Sha256};
use shoal_core::manifest::digests;
use shoal_core::manifest::{dash, hls, ByteRange};
use shoal_proto::signed_list::{self, Entry};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use url::Url;

/// Largest playlist read.
const MAX_PLAYLIST_BYTES: u64 = 16 * 1024 * 1024;

/// Why a list could not be written. None is worth retrying as it stands: each names what to
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key file could not be read or parsed.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// `--kid` names no key of the file.
    #[error("no key {0:?} in the key file")]
    NoSuchKey(String),
    /// The key cannot sign a list: an HMAC secret or an Ed25519 public key.
    #[error("key {0:?} is not an Ed25519 private key: sign with the FILE `token keygen --alg ed25519 --out FILE` wrote, not FILE.pub")]
    NotEd25519Private(String),
    /// The suffix would leave the path (see `shoal_core::manifest::digests::valid_suffix`).
    #[error("suffix {0:?} must be non-empty and hold only letters, digits, `.`, `-`, `_` or `~`")]
    Suffix(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The playlist is not a media playlist this tool can list.
    #[error("{path}: {reason}")]
    Playlist {
        /// The playlist.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A segment (or init section) the playlist names cannot be hashed.
    #[error("segment {uri}: {reason}")]
    Segment {
        /// Its URL as resolved against the playlist.
        uri: String,
        /// Why.
        reason: String,
    },
}

/// What [`sign_playlist`] wrote.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The list (`<playlist><suffix>`).
    pub list: PathBuf,
    /// Its signature (`<list>.sig`).
    pub signature: PathBuf,
    /// Lines in the list: init sections and media segments.
    pub entries: usize,
}

/// Runs `shoal-tracker digests ...` and says what it did.
pub fn run(cmd: &DigestsCommand) -> Result<String, SignError> {
    match cmd {
        DigestsCommand::Sign {
            key_file,
            kid,
            playlist,
            suffix,
        } => {
            let s = sign_playlist(key_file, kid.as_deref(), playlist, suffix)?;
            Ok(format!(
                "wrote {} ({} entries) and {}",
                s.list.display(),
                s.entries,
                s.signature.display()
            ))
        }
    }
}

/// Hashes every init section (`EXT-X-MAP`) and media segment of the media playlist at
/// `playlist` (files relative to it, byte ranges included; `EXT-X-GAP` segments skipped),
/// writes the list to `<playlist><suffix>` and its signature with the Ed25519 private key
/// `kid` of `key_file` (the first key when `None`) to `<list>.sig`. Each file is replaced
/// whole (written aside, then renamed).
pub fn sign_playlist(
    key_file: &Path,
    kid: Option<&str>,
    playlist: &Path,
    suffix: &str,
) -> Result<Signed, SignError> {
    if !digests::valid_suffix(suffix) {
        return Err(SignError::Suffix(suffix.into()));
    }
    let keys = Keys::load_signing(key_file)?;
    let key = keys
        .get(kid)
        .ok_or_else(|| SignError::NoSuchKey(kid.unwrap_or_default().into()))?;
    let entries = entries(playlist, suffix)?;
    let text: String = entries.iter().map(Entry::line).collect();
    let signature = key
        .sign_ed25519(text.as_bytes())
        .ok_or_else(|| SignError::NotEd25519Private(key.kid.clone()))?;
    let list = with_suffix(playlist, suffix);
    let sig_path = with_suffix(&list, signed_list::SIGNATURE_SUFFIX);
    replace(&list, text.as_bytes())?;
    replace(
        &sig_path,
        signed_list::signature_file(&signature).as_bytes(),
    )?;
    Ok(Signed {
        list,
        signature: sig_path,
        entries: entries.len(),
    })
}

/// The list's entries for the playlist at `path`, URIs written relative to the list.
fn entries(path: &Path, suffix: &str) -> Result<Vec<Entry>, SignError> {
    let bad = |reason: String| SignError::Playlist {
        path: path.to_owned(),
        reason,
    };
    let read = |source| SignError::Read {
        path: path.to_owned(),
        source,
    };
    let abs = std::fs::canonicalize(path).map_err(read)?;
    let mut bytes = Vec::new();
    std::fs::File::open(&abs)
        .map_err(read)?
        .take(MAX_PLAYLIST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_PLAYLIST_BYTES {
        return Err(bad(format!("larger than {MAX_PLAYLIST_BYTES} bytes")));
    }
    let url = Url::from_file_path(&abs).map_err(|()| bad("not an absolute path".into()))?;
    let list_url = digests::list_url(&url, suffix);
    if dash::is_mpd(&bytes) {
        return mpd_entries(&bytes, &url, &list_url).map_err(bad);
    }
    let media = match hls::parse(&bytes, &url) {
        Ok(hls::Playlist::Media(m)) => m,
        Ok(hls::Playlist::Master(_)) => {
            return Err(bad(
                "a master playlist: sign each media playlist it lists".into()
            ))
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in media.segments.iter().filter(|s| !s.gap) {
        let init = s.init.as_ref().map(|i| (&i.url, i.range));
        for (u, range) in init.into_iter().chain([(&s.url, s.range)]) {
            if seen.insert((u.clone(), range)) {
                out.push(entry(&list_url, u, range)?);
            }
        }
    }
    Ok(out)
}

/// The entries of an MPD: every Representation's initialization segment and the media
/// segments it lists now (all of them for a static MPD; the current window of a live one, so
/// run again as it moves), each under the URL its swarm keys it by (the smallest of its CDN
/// alternatives, which must then be the file beside the MPD). `SegmentBase` Representations
/// are refused: the player chooses their byte ranges, so no list can name them.
fn mpd_entries(bytes: &[u8], url: &Url, list_url: &Url) -> Result<Vec<Entry>, String> {
    let mpd = dash::parse(bytes, url, crate::clock::wall()).map_err(|e| e.to_string())?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for rep in mpd.periods.iter().flat_map(|p| &p.representations) {
        if rep.addressing == dash::Addressing::Base {
            return Err(format!(
                "Representation {:?} uses SegmentBase: players choose its byte ranges, so no \
                 list can name them (segment it with a SegmentTemplate or SegmentList, or serve \
                 it to nodes without digest_list_key)",
                rep.id
            ));
        }
        let init = rep.init.iter();
        for r in init.chain(rep.segments.iter().map(|s| &s.resource)) {
            if seen.insert((r.key_url.clone(), r.range)) {
                let e = entry(list_url, &r.key_url, r.range).map_err(|e| e.to_string())?;
                out.push(e);
            }
        }
    }
    if out.is_empty() {
        return Err("the MPD lists no segment".into());
    }
    Ok(out)
}

/// Hashes the file `url` names (its `range` only, if any).
fn entry(list_url: &Url, url: &Url, range: Option<ByteRange>) -> Result<Entry, SignError> {
    let bad = |reason: String| SignError::Segment {
        uri: url.to_string(),
        reason,
    };
    let path = url
        .to_file_path()
        .map_err(|()| bad("not a file beside the playlist (an absolute URL?)".into()))?;
    let mut file = std::fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
    let mut hasher = Sha256::new();
    let size = match range {
        Some(r) => {
            file.seek(SeekFrom::Start(r.offset))
                .map_err(|e| bad(e.to_string()))?;
            let n = std::io::copy(
                &mut (&mut file).take(r.length),
                &mut HashWriter(&mut hasher),
            )
            .map_err(|e| bad(e.to_string()))?;
            if n != r.length {
                return Err(bad(format!(
                    "the file ends inside the byte range {}@{}",
                    r.length, r.offset
                )));
            }
            n
        }
        None => std::io::copy(&mut file, &mut HashWriter(&mut hasher))
            .map_err(|e| bad(e.to_string()))?,
    };
    let uri = list_url
        .make_relative(url)
        .unwrap_or_else(|| url.to_string());
    Ok(Entry {
        sha256: hasher.finalize().into(),
        size,
        uri,
        range,
    })
}

/// Feeds what is written into a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `bytes` to a file beside `path`, then renames it over `path`: a reader sees the
/// old file or the new one, never half of one.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), SignError> {
    let write = |source| SignError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = with_suffix(path, ".tmp");
    std::fs::write(&tmp, bytes).map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)
}
