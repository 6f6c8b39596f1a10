//! The provider-signed digest list's format: the optional second trust anchor
//! (`docs/security.md`).
//!
//! Beside a media playlist (or MPD) at URL `X` the provider publishes `X` + a suffix
//! (default [`DEFAULT_SUFFIX`]), one line per segment:
//!
//! ```text
//! <sha256 hex> <size> <uri>[ <length>@<offset>]
//! ```
//!
//! and at the list's URL + [`SIGNATURE_SUFFIX`] the base64 Ed25519 signature of the list's
//! exact bytes. A node configured with the provider's public key takes digests from a list
//! whose signature verifies, and from nothing else.
//!
//! This module is the format: the key, the signature check and the line syntax. Where a
//! manifest's list is published and how its entries become segment keys is
//! `shoal_core::manifest::digests`; fetching and refreshing is the SDK's.

use crate::ByteRange;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};

/// Suffix appended to the path of the manifest URL to get the list's URL.
pub const DEFAULT_SUFFIX: &str = ".sha256";
/// Suffix appended to the path of the list's URL to get the signature's URL.
pub const SIGNATURE_SUFFIX: &str = ".sig";
/// Largest list read, in bytes.
pub const MAX_LIST_BYTES: u64 = 16 * 1024 * 1024;
/// Longest line of a list, in bytes (without its line end).
pub const MAX_LINE_LEN: usize = 8 * 1024;
/// Most entries in a list.
pub const MAX_ENTRIES: usize = 100_000;
/// Largest signature file read, in bytes (the signature is 88 base64 characters).
pub const MAX_SIGNATURE_BYTES: u64 = 1024;

/// Key-file type word of an Ed25519 public key line (`shoal-tracker token keygen`).
const ED25519: &str = "ed25519";

/// Why a digest list or its signature was refused. None is retryable as it stands: a node
/// fetches the list again (at most once a second) when it misses a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// The signature does not verify under the configured key over the list's bytes.
    #[error("the digest list's signature does not verify with the provider's key")]
    BadSignature,
    /// The signature file is not base64 of 64 bytes.
    #[error("the signature file is not base64 of a 64-byte Ed25519 signature")]
    SignatureEncoding,
    /// The list is not UTF-8.
    #[error("the digest list is not UTF-8")]
    NotUtf8,
    /// The list is longer than [`MAX_LIST_BYTES`].
    #[error("the digest list is larger than {MAX_LIST_BYTES} bytes")]
    TooLarge,
    /// The list has more than [`MAX_ENTRIES`] entries.
    #[error("the digest list has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// An entry's URI does not resolve against the list's URL.
    #[error("digest list entry {entry}: the URI does not resolve against the list's URL")]
    Uri {
        /// 1-based entry number (comments and blank lines not counted).
        entry: usize,
    },
    /// A line does not have the list's form.
    #[error("digest list line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a provider key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Neither `<key id> ed25519 <base64url key>` nor a bare base64 key.
    #[error("expected a public key line `<key id> ed25519 <base64url key>` (the .pub file of `shoal-tracker token keygen --alg ed25519`) or the bare base64 key")]
    Form,
    /// The key decodes but is not a usable Ed25519 public key (wrong length, not a curve
    /// point, or a weak key).
    #[error("not a valid Ed25519 public key")]
    Invalid,
}

/// A content provider's Ed25519 public key, which signs digest lists. Written in config as the
/// key-file line of `shoal-tracker token keygen --alg ed25519` (`<key id> ed25519 <key>`) or
/// the bare base64 key; printed as the bare base64url key.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderKey(VerifyingKey);

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProviderKey({self})")
    }
}

impl std::fmt::Display for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0.as_bytes()))
    }
}

impl std::str::FromStr for ProviderKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.split('#').next().unwrap_or_default();
        let fields: Vec<&str> = s.split_whitespace().collect();
        let b64 = match fields[..] {
            [key] | [_, ED25519, key] => key,
            _ => return Err(KeyError::Form),
        };
        let bytes = decode_base64(b64).ok_or(KeyError::Form)?;
        let bytes = <[u8; 32]>::try_from(bytes).map_err(|_| KeyError::Invalid)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Invalid)?;
        if key.is_weak() {
            return Err(KeyError::Invalid);
        }
        Ok(Self(key))
    }
}

impl TryFrom<String> for ProviderKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ProviderKey> for String {
    fn from(k: ProviderKey) -> String {
        k.to_string()
    }
}

impl ProviderKey {
    /// The key of `verifying` (for tools that hold the private key).
    pub fn from_verifying_key(verifying: VerifyingKey) -> Self {
        Self(verifying)
    }

    /// Checks `signature_file` (see [`signature_file`]) over `list` strictly (no malleable
    /// signatures, no weak keys).
    pub fn verify(&self, list: &[u8], signature_file: &[u8]) -> Result<(), ListError> {
        let text = std::str::from_utf8(signature_file).map_err(|_| ListError::SignatureEncoding)?;
        let bytes = decode_base64(text.trim()).ok_or(ListError::SignatureEncoding)?;
        let sig = Signature::from_slice(&bytes).map_err(|_| ListError::SignatureEncoding)?;
        self.0
            .verify_strict(list, &sig)
            .map_err(|_| ListError::BadSignature)
    }
}

/// Base64 in either alphabet (standard or URL-safe), padded or not.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

/// The signature file's content for `signature`: standard base64 and a newline.
pub fn signature_file(signature: &Signature) -> String {
    format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    )
}

/// A trusted digest: SHA-256 and size in bytes.
pub type Digest = ([u8; 32], u64);

/// One line of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// SHA-256 of the segment's bytes (of its range, for a byte-range segment).
    pub sha256: [u8; 32],
    /// Its size in bytes.
    pub size: u64,
    /// Its URI as written: relative to the list's URL, or absolute.
    pub uri: String,
    /// The byte range of a byte-range segment (its length is `size`).
    pub range: Option<ByteRange>,
}

impl Entry {
    /// The entry as a line of the list (with its newline).
    pub fn line(&self) -> String {
        let mut line = format!("{} {} {}", hex::encode(self.sha256), self.size, self.uri);
        if let Some(r) = self.range {
            line.push_str(&format!(" {}@{}", r.length, r.offset));
        }
        line.push('\n');
        line
    }
}

/// Reads a list (see the module doc and `docs/security.md`). Any line out of form refuses the
/// whole list.
pub fn parse(list: &[u8]) -> Result<Vec<Entry>, ListError> {
    if list.len() as u64 > MAX_LIST_BYTES {
        return Err(ListError::TooLarge);
    }
    let text = std::str::from_utf8(list).map_err(|_| ListError::NotUtf8)?;
    let mut entries = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let bad = |reason| ListError::Line {
            line: i + 1,
            reason,
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() > MAX_LINE_LEN {
            return Err(bad("line too long"));
        }
        let line = line.trim_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if entries.len() == MAX_ENTRIES {
            return Err(ListError::TooManyEntries);
        }
        let fields: Vec<&str> = line.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
        let (hash, size, uri, range) = match fields[..] {
            [h, s, u] => (h, s, u, None),
            [h, s, u, r] => (h, s, u, Some(r)),
            _ => return Err(bad("expected `<sha256> <size> <uri>[ <length>@<offset>]`")),
        };
        let mut sha256 = [0u8; 32];
        if hash.len() != 64 || hex::decode_to_slice(hash, &mut sha256).is_err() {
            return Err(bad("the digest is not 64 hex digits"));
        }
        let size = decimal(size).ok_or_else(|| bad("the size is not a decimal number"))?;
        let range = match range {
            None => None,
            Some(r) => {
                let (length, offset) = r
                    .split_once('@')
                    .and_then(|(l, o)| Some((decimal(l)?, decimal(o)?)))
                    .ok_or_else(|| bad("the byte range is not `<length>@<offset>`"))?;
                if length != size || offset.checked_add(length).is_none() {
                    return Err(bad("the byte range's length differs from the size"));
                }
                Some(ByteRange { offset, length })
            }
        };
        entries.push(Entry {
            sha256,
            size,
            uri: uri.to_owned(),
            range,
        });
    }
    Ok(entries)
}

/// Digits only (no sign, no space), fitting `u64`.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

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
    fn keys_read_the_keygen_line_or_the_bare_key_and_print_bare() {
        let (_, pk) = pair(7);
        let bare = pk.to_string();
        let line = format!("2025-01 ed25519 {bare}\n");
        assert_eq!(line.parse::<ProviderKey>().unwrap(), pk);
        assert_eq!(bare.parse::<ProviderKey>().unwrap(), pk);
        assert_eq!(
            format!("{line} # provider")
                .trim()
                .parse::<ProviderKey>()
                .unwrap(),
            pk
        );
        // Standard alphabet with padding, as other tools print keys.
        let std_b64 = base64::engine::general_purpose::STANDARD.encode(pk.0.as_bytes());
        assert_eq!(std_b64.parse::<ProviderKey>().unwrap(), pk);
        for bad in ["", "k1 hmac abc", "k1 ed25519-private AAAA", "a b c d"] {
            assert_eq!(bad.parse::<ProviderKey>(), Err(KeyError::Form), "{bad}");
        }
        assert_eq!("AAAA".parse::<ProviderKey>(), Err(KeyError::Invalid));
        // The identity point is a weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(
            URL_SAFE_NO_PAD.encode(weak).parse::<ProviderKey>(),
            Err(KeyError::Invalid)
        );
        let json = serde_json::to_string(&pk).unwrap();
        assert_eq!(serde_json::from_str::<ProviderKey>(&json).unwrap(), pk);
    }

    #[test]
    fn a_list_reads_back_what_was_written() {
        let entries = vec![
            Entry {
                sha256: [1; 32],
                size: 1234,
                uri: "init.mp4".into(),
                range: None,
            },
            Entry {
                sha256: [2; 32],
                size: 500,
                uri: "https://cdn.example.com/v/main.ts".into(),
                range: Some(ByteRange {
                    offset: 1000,
                    length: 500,
                }),
            },
        ];
        let text: String = entries.iter().map(Entry::line).collect();
        assert_eq!(parse(text.as_bytes()).unwrap(), entries);
        // Comments, blank lines, CRLF, tabs and runs of spaces are fine.
        let loose = format!("# made by hand\r\n\r\n{H}\t7  a.ts \r\n  \n");
        let e = parse(loose.as_bytes()).unwrap();
        assert_eq!((e.len(), e[0].size, e[0].uri.as_str()), (1, 7, "a.ts"));
        assert_eq!(parse(b"").unwrap(), []);
    }

    #[test]
    fn lines_out_of_form_refuse_the_list() {
        for (line, why) in [
            (format!("{H} 7"), "no uri"),
            (format!("{H} 7 a.ts 7@0 extra"), "five fields"),
            (format!("{} 7 a.ts", &H[1..]), "short digest"),
            (format!("{}g 7 a.ts", &H[1..]), "not hex"),
            (format!("{H} -7 a.ts"), "signed size"),
            (format!("{H} +7 a.ts"), "plus sign"),
            (format!("{H} 99999999999999999999 a.ts"), "size overflows"),
            (format!("{H} 7 a.ts 8@0"), "range length is not the size"),
            (format!("{H} 7 a.ts 7-0"), "range not length@offset"),
            (
                format!("{H} 7 a.ts 7@18446744073709551615"),
                "range overflows",
            ),
        ] {
            let list = format!("{H} 1 ok.ts\n{line}\n");
            assert!(
                matches!(parse(list.as_bytes()), Err(ListError::Line { line: 2, .. })),
                "{why}"
            );
        }
        assert_eq!(parse(b"\xff\xfe"), Err(ListError::NotUtf8));
        let long = format!("{H} 1 {}\n", "a".repeat(MAX_LINE_LEN));
        assert!(matches!(
            parse(long.as_bytes()),
            Err(ListError::Line { line: 1, .. })
        ));
        let many = format!("{H} 1 a.ts\n").repeat(MAX_ENTRIES + 1);
        assert_eq!(parse(many.as_bytes()), Err(ListError::TooManyEntries));
        let huge = vec![b'#'; MAX_LIST_BYTES as usize + 1];
        assert_eq!(parse(&huge), Err(ListError::TooLarge));
    }

    #[test]
    fn only_the_providers_signature_over_the_exact_bytes_verifies() {
        let (sk, pk) = pair(1);
        let (other, _) = pair(2);
        let list = format!("{H} 7 a.ts\n");
        let sig = sign(&sk, list.as_bytes());
        assert_eq!(pk.verify(list.as_bytes(), sig.as_bytes()), Ok(()));
        // Without the newline, URL-safe, unpadded: the same signature.
        let raw = sk.sign(list.as_bytes()).to_bytes();
        assert_eq!(
            pk.verify(list.as_bytes(), URL_SAFE_NO_PAD.encode(raw).as_bytes()),
            Ok(())
        );
        // One byte more (even a trailing newline) is another message.
        let longer = format!("{list}\n");
        assert_eq!(
            pk.verify(longer.as_bytes(), sig.as_bytes()),
            Err(ListError::BadSignature)
        );
        let tampered = list.replacen('7', "8", 1);
        assert_eq!(
            pk.verify(tampered.as_bytes(), sig.as_bytes()),
            Err(ListError::BadSignature)
        );
        let foreign = sign(&other, list.as_bytes());
        assert_eq!(
            pk.verify(list.as_bytes(), foreign.as_bytes()),
            Err(ListError::BadSignature)
        );
        let mut flipped = raw;
        flipped[10] ^= 1;
        let flipped = signature_file(&Signature::from_bytes(&flipped));
        assert_eq!(
            pk.verify(list.as_bytes(), flipped.as_bytes()),
            Err(ListError::BadSignature)
        );
        for junk in [&b""[..], b"not base64!", b"AAAA", b"\xff"] {
            assert_eq!(
                pk.verify(list.as_bytes(), junk),
                Err(ListError::SignatureEncoding)
            );
        }
    }
}
