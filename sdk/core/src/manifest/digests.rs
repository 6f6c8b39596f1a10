//! Where a manifest's provider-signed digest list is published, and its entries keyed as the
//! node keys segments. The list's format and signature are `shoal_proto::signed_list`.

use super::segment_key;
use shoal_proto::signed_list::{parse, Digest, ListError, ProviderKey, SIGNATURE_SUFFIX};
use shoal_proto::SegmentKey;
use url::Url;

/// Verifies `signature_file` over `list` with `key`, reads the list and keys its entries as
/// the node keys segments (URIs resolved against `list_url`, see
/// [`segment_key`]): `(key, (sha256, size))`.
pub fn verified_digests(
    key: &ProviderKey,
    list_url: &Url,
    list: &[u8],
    signature_file: &[u8],
) -> Result<Vec<(SegmentKey, Digest)>, ListError> {
    key.verify(list, signature_file)?;
    let entries = parse(list)?;
    let mut out = Vec::with_capacity(entries.len());
    for (n, e) in entries.into_iter().enumerate() {
        let url = list_url
            .join(&e.uri)
            .map_err(|_| ListError::Uri { entry: n + 1 })?;
        out.push((segment_key(&url, e.range), (e.sha256, e.size)));
    }
    Ok(out)
}

/// The list's URL for a manifest at `manifest`: `suffix` appended to its path, the query kept
/// (it may carry the viewer's CDN token), the fragment dropped.
pub fn list_url(manifest: &Url, suffix: &str) -> Url {
    with_path_suffix(manifest, suffix)
}

/// The signature's URL for a list at `list`.
pub fn signature_url(list: &Url) -> Url {
    with_path_suffix(list, SIGNATURE_SUFFIX)
}

fn with_path_suffix(url: &Url, suffix: &str) -> Url {
    let mut u = url.clone();
    u.set_fragment(None);
    u.set_path(&format!("{}{suffix}", url.path()));
    u
}

/// Whether `suffix` may name a list: non-empty, unreserved URL characters only (so it stays
/// in the path).
pub fn valid_suffix(suffix: &str) -> bool {
    !suffix.is_empty()
        && suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::hls;
    use ed25519_dalek::{Signer, SigningKey};
    use shoal_proto::signed_list::*;

    fn pair(seed: u8) -> (SigningKey, ProviderKey) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let pk = ProviderKey::from_verifying_key(sk.verifying_key());
        (sk, pk)
    }

    fn sign(sk: &SigningKey, list: &[u8]) -> String {
        signature_file(&sk.sign(list))
    }

    const H: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn entries_are_keyed_as_the_playlist_keys_its_segments() {
        let playlist_url = Url::parse("https://cdn.example.com/live/a/stream.m3u8?tok=1").unwrap();
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"700@0\"\n\
            #EXTINF:2,\n#EXT-X-BYTERANGE:1000@700\nmain.mp4\n\
            #EXTINF:2,\n#EXT-X-BYTERANGE:900\nmain.mp4\n\
            #EXTINF:2,\n../b/seg.ts?tok=2\n";
        let hls::Playlist::Media(media) = hls::parse(playlist.as_bytes(), &playlist_url).unwrap()
        else {
            panic!("a media playlist")
        };
        let list_url = list_url(&playlist_url, DEFAULT_SUFFIX);
        assert_eq!(
            list_url.as_str(),
            "https://cdn.example.com/live/a/stream.m3u8.sha256?tok=1"
        );
        assert_eq!(
            signature_url(&list_url).as_str(),
            "https://cdn.example.com/live/a/stream.m3u8.sha256.sig?tok=1"
        );
        let list = format!(
            "{H} 700 init.mp4 700@0\n{H} 1000 main.mp4 1000@700\n{H} 900 main.mp4 900@1700\n\
             {H} 5 https://cdn.example.com/live/b/seg.ts\n"
        );
        let (sk, pk) = pair(3);
        let sig = sign(&sk, list.as_bytes());
        let got = verified_digests(&pk, &list_url, list.as_bytes(), sig.as_bytes()).unwrap();
        let keys: Vec<&SegmentKey> = got.iter().map(|(k, _)| k).collect();
        let init = media.segments[0].init.as_ref().unwrap();
        let want: Vec<&SegmentKey> = std::iter::once(&init.key)
            .chain(media.segments.iter().map(|s| &s.key))
            .collect();
        assert_eq!(keys, want);
        assert_eq!(got[3].1 .1, 5);

        let (other, _) = pair(4);
        let foreign = sign(&other, list.as_bytes());
        assert_eq!(
            verified_digests(&pk, &list_url, list.as_bytes(), foreign.as_bytes()),
            Err(ListError::BadSignature)
        );
    }

    #[test]
    fn suffixes_stay_in_the_path() {
        assert!(valid_suffix(".sha256"));
        assert!(valid_suffix("-digests.txt"));
        for bad in ["", "?x", "/a", "#", " .sha256", ".sha256%2f"] {
            assert!(!valid_suffix(bad), "{bad}");
        }
    }
}
