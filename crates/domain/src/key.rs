//! API keys. A key is shown once, when minted; only its SHA-256 is stored. Keys are
//! 190 bits of randomness, so a fast hash is enough (no password stretching needed),
//! and lookups by hash stay cheap on every request.

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Server-to-server: full access to the API.
    Private,
    /// Browser: may only open calls to its listed assistants, from allowed origins.
    Public,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Private => "private",
            KeyKind::Public => "public",
        }
    }

    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "private" => Some(KeyKind::Private),
            "public" => Some(KeyKind::Public),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Private => "vg_sk_",
            KeyKind::Public => "vg_pk_",
        }
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub kind: KeyKind,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    /// For public keys: the assistants this key may open calls to.
    pub assistant_ids: Vec<String>,
    #[serde(with = "crate::clock::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "crate::clock::rfc3339_ms::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
    /// The hex SHA-256 of the key; never serialized.
    #[serde(skip)]
    pub hash: String,
}

/// A key just minted: the record and the secret, which is shown this once.
#[derive(Debug, Clone)]
pub struct MintedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// Mints a new key of `kind`.
pub fn mint(name: &str, kind: KeyKind, assistant_ids: Vec<String>) -> MintedKey {
    let secret = format!("{}{}", kind.prefix(), random_token());
    let key = ApiKey {
        id: crate::clock::new_id(),
        name: name.to_string(),
        kind,
        prefix: secret[..12].to_string(),
        assistant_ids,
        created_at: crate::clock::now_ms(),
        revoked_at: None,
        hash: hash_secret(&secret),
    };
    MintedKey { key, secret }
}

/// 32 random characters from `[A-Za-z0-9]` (about 190 bits).
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    // 256 is a multiple of 62 plus 8; rejecting would remove the slight bias, but at
    // 190 bits the bias is irrelevant to guessing.
    bytes.iter().map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char).collect()
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// True when `s` has the shape of a key we mint (so garbage skips the database).
pub fn looks_like_key(s: &str) -> bool {
    (s.starts_with("vg_sk_") || s.starts_with("vg_pk_")) && s.len() == 38 && s[6..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_look_like_keys_and_hash_stably() {
        let m = mint("ci", KeyKind::Public, vec![]);
        assert!(m.secret.starts_with("vg_pk_"));
        assert!(looks_like_key(&m.secret));
        assert_eq!(m.key.hash, hash_secret(&m.secret));
        assert_ne!(m.key.hash, m.secret);
        assert!(!looks_like_key("vg_sk_' OR 1=1 --aaaaaaaaaaaaaaaaaaaaaa"));
        let json = serde_json::to_string(&m.key).unwrap();
        assert!(!json.contains(&m.key.hash), "the hash never leaves the server");
    }
}
