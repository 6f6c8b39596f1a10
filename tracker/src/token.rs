//! Access tokens the content provider signs: swarm scope and expiry, HMAC-SHA256.
//!
//! Format: `v1.<claims>.<mac>`, where `<claims>` is the unpadded base64url of a JSON object
//! `{"swarm": "<id or prefix*>", "exp": <unix secs>, "nbf"?: <unix secs>, "kid"?: "<key id>"}`
//! and `<mac>` the unpadded base64url HMAC-SHA256, under the key `kid` names, of the ASCII text
//! `v1.<claims>`. `docs/security.md` documents it for providers minting tokens themselves.

use crate::policy::{check_pattern, swarm_matches};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
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
}

/// One HMAC key.
#[derive(Clone)]
pub struct Key {
    /// Its id, carried in tokens as `kid`.
    pub kid: String,
    secret: Vec<u8>,
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

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }

    /// Signs `claims` (its `kid` is set to this key's id).
    pub fn mint(&self, claims: &Claims) -> String {
        let claims = Claims {
            kid: Some(self.kid.clone()),
            ..claims.clone()
        };
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!("{PREFIX}{}", B64.encode(json));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            B64.encode(mac.finalize().into_bytes())
        )
    }
}

/// The keys tokens are checked against.
#[derive(Debug, Clone)]
pub struct Keys(Vec<Key>);

impl Keys {
    /// Parses a key file: one `<key id> <base64url secret>` per line; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = KeyFileError::Line { line: i + 1 };
            let (kid, secret) = line.split_once(char::is_whitespace).ok_or(bad)?;
            let secret = B64
                .decode(secret.trim())
                .map_err(|_| KeyFileError::Line { line: i + 1 })?;
            if secret.len() < 16 {
                return Err(KeyFileError::Line { line: i + 1 });
            }
            keys.push(Key {
                kid: kid.to_owned(),
                secret,
            });
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty);
        }
        Ok(Self(keys))
    }

    /// Reads and parses a key file.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
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
        let verified = candidates.into_iter().any(|key| {
            let mut m = key.mac();
            m.update(signing_input.as_bytes());
            // Constant-time comparison.
            m.verify_slice(&mac).is_ok()
        });
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

/// Seconds since the Unix epoch by the system clock (tokens carry wall-clock times).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
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
            .mint(&claims("cdn.example.com/live/*", 1000));
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
        let t = key.mint(&Claims {
            nbf: Some(500),
            ..claims("s", 1000)
        });
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
        let t = keys.get(None).unwrap().mint(&claims("*", u64::MAX));
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
        let foreign = other.get(None).unwrap().mint(&claims("*", u64::MAX));
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
}
