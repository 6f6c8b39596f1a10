//! Access tokens the content provider signs: swarm scope and expiry, HMAC-SHA256 or Ed25519.
//!
//! Format: `v1.<claims>.<sig>`, where `<claims>` is the unpadded base64url of a JSON object
//! `{"swarm": "<id or prefix*>", "exp": <unix secs>, "nbf"?: <unix secs>, "kid"?: "<key id>"}`
//! and `<sig>` the unpadded base64url HMAC-SHA256 or Ed25519 signature, under the key `kid`
//! names, of the ASCII text `v1.<claims>`. The algorithm is the key's, never the token's: a
//! token cannot choose how it is checked. An Ed25519 tracker holds only the public key.
//! `docs/security.md` documents it for providers minting tokens themselves.

use crate::policy::{check_pattern, swarm_matches};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shoal_proto::SwarmId;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 2048;
const PREFIX: &str = "v1.";

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The swarm id it is for, or a prefix of swarm ids ending in `*`.
    pub swarm: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before this time, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Which key signed it; when absent, every configured key is tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// Why a token was refused. [`TokenError::code`] is the `error` of the 401 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token, while the tracker requires one.
    #[error("this tracker requires an access token from the content provider; the app must pass one to the node")]
    Missing,
    /// Not a `v1.<claims>.<mac>` token.
    #[error("the access token is malformed: {0}")]
    Malformed(&'static str),
    /// The MAC does not verify under the key it names (or under any key).
    #[error("the access token's signature does not verify: it was not signed with a key this tracker holds, or it was altered")]
    BadSignature,
    /// `exp` has passed.
    #[error("the access token expired at {exp} (now {now}, seconds since the Unix epoch); get a fresh one from the content provider")]
    Expired {
        /// The token's expiry.
        exp: u64,
        /// The tracker's clock.
        now: u64,
    },
    /// `nbf` is still ahead.
    #[error(
        "the access token is not valid before {nbf} (now {now}, seconds since the Unix epoch)"
    )]
    NotYetValid {
        /// The token's start.
        nbf: u64,
        /// The tracker's clock.
        now: u64,
    },
    /// The token is for other swarms.
    #[error("the access token is for swarm {scope:?}, not for {swarm:?}")]
    WrongSwarm {
        /// What the token covers.
        scope: String,
        /// The swarm asked for.
        swarm: String,
    },
}

impl TokenError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Malformed(_) => "token_malformed",
            Self::BadSignature => "token_bad_signature",
            Self::Expired { .. } => "token_expired",
            Self::NotYetValid { .. } => "token_not_yet_valid",
            Self::WrongSwarm { .. } => "token_wrong_swarm",
        }
    }
}

/// Why the key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It could not be read.
    #[error("cannot read the access-token key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `<key id> <base64url secret>` with a secret of at least 16 bytes.
    #[error("access-token key file, line {line}: expected \"<key id> <base64url secret of at least 16 bytes>\"")]
    Line {
        /// 1-based line number.
        line: usize,
    },
    /// No key in the file.
    #[error("the access-token key file holds no key")]
    Empty,
    /// An Ed25519 private key where only public keys belong (the tracker's key file).
    #[error("access-token key file, line {line}: an Ed25519 private key; give the tracker the public key (the .pub file of `token keygen --alg ed25519`)")]
    PrivateKey {
        /// 1-based line number.
        line: usize,
    },
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The key is an Ed25519 public key: it verifies tokens, it cannot sign them.
    #[error("key {0:?} is an Ed25519 public key and cannot sign; mint with the private key file")]
    VerifyOnly(String),
}

/// Signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Alg {
    /// HMAC-SHA256 with a shared secret: whoever verifies can also mint.
    Hmac,
    /// Ed25519: the provider signs with a private key, trackers hold only the public key.
    Ed25519,
}

#[derive(Clone)]
enum Material {
    Hmac(Vec<u8>),
    Ed25519Public(VerifyingKey),
    Ed25519Private(SigningKey),
}

/// One key: an HMAC secret, an Ed25519 public key, or an Ed25519 private key.
#[derive(Clone)]
pub struct Key {
    /// Its id, carried in tokens as `kid`.
    pub kid: String,
    material: Material,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Key").field("kid", &self.kid).finish()
    }
}

impl Key {
    /// A fresh random 256-bit key, as a key-file line `<kid> <secret>`.
    pub fn generate_line(kid: &str) -> String {
        format!("{kid} {}", B64.encode(rand::random::<[u8; 32]>()))
    }

    /// A fresh Ed25519 key pair as key-file lines: (`<kid> ed25519-private <seed>` for the
    /// provider's minting, `<kid> ed25519 <public key>` for trackers).
    pub fn generate_ed25519_lines(kid: &str) -> (String, String) {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        (
            format!("{kid} {ED25519_PRIVATE} {}", B64.encode(key.to_bytes())),
            format!(
                "{kid} {ED25519} {}",
                B64.encode(key.verifying_key().to_bytes())
            ),
        )
    }

    /// The key's algorithm.
    pub fn alg(&self) -> Alg {
        match self.material {
            Material::Hmac(_) => Alg::Hmac,
            Material::Ed25519Public(_) | Material::Ed25519Private(_) => Alg::Ed25519,
        }
    }

    fn mac(secret: &[u8]) -> HmacSha256 {
        HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length")
    }

    /// Signs `claims` (its `kid` is set to this key's id).
    pub fn mint(&self, claims: &Claims) -> Result<String, MintError> {
        let claims = Claims {
            kid: Some(self.kid.clone()),
            ..claims.clone()
        };
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!("{PREFIX}{}", B64.encode(json));
        let sig = match &self.material {
            Material::Hmac(secret) => {
                let mut mac = Self::mac(secret);
                mac.update(signing_input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Material::Ed25519Private(key) => key.sign(signing_input.as_bytes()).to_vec(),
            Material::Ed25519Public(_) => return Err(MintError::VerifyOnly(self.kid.clone())),
        };
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }

    /// The Ed25519 signature of `message`, when this is an Ed25519 private key (signed digest
    /// lists are signed with the key files of `token keygen --alg ed25519`).
    pub fn sign_ed25519(&self, message: &[u8]) -> Option<ed25519_dalek::Signature> {
        match &self.material {
            Material::Ed25519Private(key) => Some(key.sign(message)),
            Material::Hmac(_) | Material::Ed25519Public(_) => None,
        }
    }

    /// Whether `sig` signs `input` under this key (HMAC compared in constant time; Ed25519
    /// verified strictly, refusing malleable signatures and weak keys).
    fn verifies(&self, input: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            Material::Hmac(secret) => {
                let mut m = Self::mac(secret);
                m.update(input);
                m.verify_slice(sig).is_ok()
            }
            Material::Ed25519Public(key) => verify_ed25519(key, input, sig),
            Material::Ed25519Private(key) => verify_ed25519(&key.verifying_key(), input, sig),
        }
    }
}

fn verify_ed25519(key: &VerifyingKey, input: &[u8], sig: &[u8]) -> bool {
    ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| key.verify_strict(input, &s).is_ok())
}

/// Key-file type word of an Ed25519 public key line.
const ED25519: &str = "ed25519";
/// Key-file type word of an Ed25519 private key line.
const ED25519_PRIVATE: &str = "ed25519-private";

/// The keys tokens are checked against.
#[derive(Debug, Clone)]
pub struct Keys(Vec<Key>);

impl Keys {
    /// Parses a tracker's key file: one key per line, `<key id> <base64url HMAC secret>` or
    /// `<key id> ed25519 <base64url public key>`; `#` starts a comment. Ed25519 private keys
    /// are refused: a tracker verifies, it never holds what signs.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        Self::parse_lines(text, false)
    }

    /// Parses a provider's key file for minting: HMAC secrets and Ed25519 private keys
    /// (`<key id> ed25519-private <base64url seed>`).
    pub fn parse_signing(text: &str) -> Result<Self, KeyFileError> {
        Self::parse_lines(text, true)
    }

    fn parse_lines(text: &str, signing: bool) -> Result<Self, KeyFileError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = || KeyFileError::Line { line: i + 1 };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let material = match fields[..] {
                [_, secret] => {
                    let secret = B64.decode(secret).map_err(|_| bad())?;
                    if secret.len() < 16 {
                        return Err(bad());
                    }
                    Material::Hmac(secret)
                }
                [_, ED25519, public] => {
                    let bytes = B64.decode(public).map_err(|_| bad())?;
                    let bytes = <[u8; 32]>::try_from(bytes).map_err(|_| bad())?;
                    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
                    if key.is_weak() {
                        return Err(bad());
                    }
                    Material::Ed25519Public(key)
                }
                [_, ED25519_PRIVATE, seed] => {
                    if !signing {
                        return Err(KeyFileError::PrivateKey { line: i + 1 });
                    }
                    let bytes = B64.decode(seed).map_err(|_| bad())?;
                    let bytes = <[u8; 32]>::try_from(bytes).map_err(|_| bad())?;
                    Material::Ed25519Private(SigningKey::from_bytes(&bytes))
                }
                _ => return Err(bad()),
            };
            keys.push(Key {
                kid: fields[0].to_owned(),
                material,
            });
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty);
        }
        Ok(Self(keys))
    }

    /// Reads and parses a tracker's key file (see [`Keys::parse`]).
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        Self::parse(&read_key_file(path)?)
    }

    /// Reads and parses a provider's key file for minting (see [`Keys::parse_signing`]).
    pub fn load_signing(path: &Path) -> Result<Self, KeyFileError> {
        Self::parse_signing(&read_key_file(path)?)
    }

    /// The key with id `kid`, or the first key when `kid` is `None`.
    pub fn get(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.0.iter().find(|k| k.kid == kid),
            None => self.0.first(),
        }
    }

    /// Checks `token` for `swarm` at `now` (seconds since the Unix epoch): form, signature,
    /// validity period, then scope, so a valid token replayed into another swarm is told apart
    /// from a forged one.
    pub fn verify(&self, token: &str, swarm: &SwarmId, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("longer than 2048 bytes"));
        }
        let rest = token
            .strip_prefix(PREFIX)
            .ok_or(TokenError::Malformed("it does not start with \"v1.\""))?;
        let (claims_b64, mac_b64) = rest
            .split_once('.')
            .ok_or(TokenError::Malformed("expected v1.<claims>.<signature>"))?;
        let json = B64
            .decode(claims_b64)
            .map_err(|_| TokenError::Malformed("the claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&json)
            .map_err(|_| TokenError::Malformed("the claims are not the expected JSON object"))?;
        let mac = B64
            .decode(mac_b64)
            .map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
        let signing_input = &token[..PREFIX.len() + claims_b64.len()];
        let candidates: Vec<&Key> = match &claims.kid {
            Some(kid) => self.0.iter().filter(|k| &k.kid == kid).collect(),
            None => self.0.iter().collect(),
        };
        let verified = candidates
            .into_iter()
            .any(|key| key.verifies(signing_input.as_bytes(), &mac));
        if !verified {
            return Err(TokenError::BadSignature);
        }
        if now >= claims.exp {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if let Some(nbf) = claims.nbf.filter(|nbf| now < *nbf) {
            return Err(TokenError::NotYetValid { nbf, now });
        }
        if check_pattern(&claims.swarm).is_err() || !swarm_matches(&claims.swarm, swarm.as_str()) {
            return Err(TokenError::WrongSwarm {
                scope: claims.swarm,
                swarm: swarm.to_string(),
            });
        }
        Ok(claims)
    }
}

fn read_key_file(path: &Path) -> Result<String, KeyFileError> {
    std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Seconds since the Unix epoch by the system clock (tokens carry wall-clock times).
pub fn unix_now() -> u64 {
    crate::clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::parse(&format!(
            "# provider keys\n{}\n{}\n",
            Key::generate_line("k1"),
            Key::generate_line("k2")
        ))
        .unwrap()
    }

    fn swarm(s: &str) -> SwarmId {
        SwarmId::new(s).unwrap()
    }

    fn claims(scope: &str, exp: u64) -> Claims {
        Claims {
            swarm: scope.into(),
            exp,
            nbf: None,
            kid: None,
        }
    }

    #[test]
    fn a_minted_token_verifies_for_its_swarms_until_it_expires() {
        let keys = keys();
        let t = keys
            .get(Some("k2"))
            .unwrap()
            .mint(&claims("cdn.example.com/live/*", 1000))
            .unwrap();
        let c = keys
            .verify(&t, &swarm("cdn.example.com/live/720p.m3u8"), 999)
            .unwrap();
        assert_eq!(c.kid.as_deref(), Some("k2"));
        assert_eq!(
            keys.verify(&t, &swarm("cdn.example.com/live/720p.m3u8"), 1000)
                .unwrap_err()
                .code(),
            "token_expired"
        );
        let e = keys
            .verify(&t, &swarm("cdn.example.com/vod/a.m3u8"), 999)
            .unwrap_err();
        assert_eq!(e.code(), "token_wrong_swarm");
        assert!(e.to_string().contains("cdn.example.com/vod/a.m3u8"), "{e}");
    }

    #[test]
    fn exact_scope_and_not_before() {
        let keys = keys();
        let key = keys.get(None).unwrap();
        let t = key
            .mint(&Claims {
                nbf: Some(500),
                ..claims("s", 1000)
            })
            .unwrap();
        assert_eq!(
            keys.verify(&t, &swarm("s"), 499).unwrap_err().code(),
            "token_not_yet_valid"
        );
        keys.verify(&t, &swarm("s"), 500).unwrap();
        assert_eq!(
            keys.verify(&t, &swarm("s2"), 500).unwrap_err().code(),
            "token_wrong_swarm"
        );
    }

    #[test]
    fn forged_altered_and_foreign_tokens_are_refused() {
        let keys = keys();
        let s = swarm("s");
        let t = keys
            .get(None)
            .unwrap()
            .mint(&claims("*", u64::MAX))
            .unwrap();
        keys.verify(&t, &s, 0).unwrap();
        // Widen nothing, change the expiry: the MAC no longer matches.
        let (_, mac) = t.rsplit_once('.').unwrap();
        let forged_claims = B64.encode(br#"{"swarm":"*","exp":99999999999,"kid":"k1"}"#);
        let forged = format!("v1.{forged_claims}.{mac}");
        assert_eq!(
            keys.verify(&forged, &s, 0).unwrap_err().code(),
            "token_bad_signature"
        );
        let other = Keys::parse(&Key::generate_line("k1")).unwrap();
        let foreign = other
            .get(None)
            .unwrap()
            .mint(&claims("*", u64::MAX))
            .unwrap();
        assert_eq!(
            keys.verify(&foreign, &s, 0).unwrap_err().code(),
            "token_bad_signature"
        );
        for junk in [
            "",
            "v2.a.b",
            "v1.",
            "v1.!!.x",
            "v1.e30.AAAA",
            "v1.bm90IGpzb24.AAAA",
        ] {
            assert_eq!(
                keys.verify(junk, &s, 0).unwrap_err().code(),
                "token_malformed",
                "{junk}"
            );
        }
    }

    #[test]
    fn key_files_are_checked() {
        assert!(matches!(
            Keys::parse("# nothing\n"),
            Err(KeyFileError::Empty)
        ));
        assert!(matches!(
            Keys::parse("k1 c2hvcnQ\n"),
            Err(KeyFileError::Line { line: 1 })
        ));
        assert!(format!("{:?}", keys()).contains("k1"));
        let line = Key::generate_line("k");
        let secret = line.split_once(' ').unwrap().1;
        assert!(!format!("{:?}", Keys::parse(&line).unwrap()).contains(secret));
    }

    /// A provider's signing key and the tracker's verify-only key file from one key pair.
    fn ed25519_pair(kid: &str) -> (Key, Keys) {
        let (private, public) = Key::generate_ed25519_lines(kid);
        let signing = Keys::parse_signing(&private).unwrap();
        let key = signing.get(None).unwrap().clone();
        assert_eq!(key.alg(), Alg::Ed25519);
        (key, Keys::parse(&public).unwrap())
    }

    #[test]
    fn ed25519_tokens_verify_with_the_public_key_only() {
        let (signer, tracker) = ed25519_pair("e1");
        let live = swarm("cdn.example.com/live/720p.m3u8");
        let t = signer
            .mint(&claims("cdn.example.com/live/*", 1000))
            .unwrap();
        assert_eq!(
            tracker.verify(&t, &live, 999).unwrap().kid.as_deref(),
            Some("e1")
        );
        assert_eq!(
            tracker.verify(&t, &live, 1000).unwrap_err().code(),
            "token_expired"
        );
        // Replayed into another swarm: the signature holds, the scope does not.
        let e = tracker
            .verify(&t, &swarm("cdn.example.com/vod/a.m3u8"), 999)
            .unwrap_err();
        assert_eq!(e.code(), "token_wrong_swarm");
        // The tracker's key cannot sign.
        assert!(matches!(
            tracker.get(None).unwrap().mint(&claims("*", 1)),
            Err(MintError::VerifyOnly(_))
        ));
    }

    #[test]
    fn ed25519_forgeries_and_hmac_tokens_are_refused() {
        let (signer, tracker) = ed25519_pair("k1");
        let s = swarm("s");
        let t = signer.mint(&claims("s", u64::MAX)).unwrap();
        tracker.verify(&t, &s, 0).unwrap();
        // Widened claims under the original signature.
        let (_, sig) = t.rsplit_once('.').unwrap();
        let widened = B64.encode(br#"{"swarm":"*","exp":18446744073709551615,"kid":"k1"}"#);
        let forged = format!("v1.{widened}.{sig}");
        assert_eq!(
            tracker.verify(&forged, &s, 0).unwrap_err().code(),
            "token_bad_signature"
        );
        // One flipped signature bit.
        let mut raw = B64.decode(sig).unwrap();
        raw[0] ^= 1;
        let flipped = format!("{}.{}", t.rsplit_once('.').unwrap().0, B64.encode(raw));
        assert_eq!(
            tracker.verify(&flipped, &s, 0).unwrap_err().code(),
            "token_bad_signature"
        );
        // Another provider's key pair, same kid.
        let (stranger, _) = ed25519_pair("k1");
        let foreign = stranger.mint(&claims("s", u64::MAX)).unwrap();
        assert_eq!(
            tracker.verify(&foreign, &s, 0).unwrap_err().code(),
            "token_bad_signature"
        );
        // An HMAC token with the same kid: the key decides the algorithm, not the token.
        let hmac = Keys::parse(&Key::generate_line("k1")).unwrap();
        let h = hmac
            .get(None)
            .unwrap()
            .mint(&claims("s", u64::MAX))
            .unwrap();
        assert_eq!(
            tracker.verify(&h, &s, 0).unwrap_err().code(),
            "token_bad_signature"
        );
    }

    #[test]
    fn a_tracker_key_file_refuses_private_keys_and_mixes_algorithms() {
        let (private, public) = Key::generate_ed25519_lines("e1");
        assert!(matches!(
            Keys::parse(&private),
            Err(KeyFileError::PrivateKey { line: 1 })
        ));
        assert!(!format!("{:?}", Keys::parse_signing(&private).unwrap())
            .contains(private.rsplit_once(' ').unwrap().1));
        let both = Keys::parse(&format!("{}\n{public}\n", Key::generate_line("h1"))).unwrap();
        assert_eq!(both.get(Some("h1")).unwrap().alg(), Alg::Hmac);
        assert_eq!(both.get(Some("e1")).unwrap().alg(), Alg::Ed25519);
        for bad in [
            "e1 ed25519 AAAA",
            "e1 ed25519",
            "e1 rsa AAAA",
            "e1 ed25519-private AAAA",
        ] {
            assert!(Keys::parse_signing(bad).is_err(), "{bad}");
        }
    }
}
