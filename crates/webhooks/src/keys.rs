//! Per-owner webhook secrets, derived from one key so a deployment stores one secret:
//! `whsec_` + base64(HMAC-SHA256(key, "offpath webhook secret v1\n" + owner)). While a
//! key is rotated, deliveries carry a signature under the previous key's secret too, so
//! receivers that still hold the old secret keep verifying until they fetch the new one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Fewest bytes a key must have.
pub(crate) const MIN_KEY_BYTES: usize = 32;

/// A key that cannot sign.
#[derive(Debug, thiserror::Error)]
#[error(
    "a webhook key must be at least {MIN_KEY_BYTES} bytes (it has {0}); generate one with `openssl rand -base64 32`"
)]
pub struct KeyError(pub usize);

/// The current key and, during a rotation, the previous one.
#[derive(Clone)]
pub struct WebhookKeys {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKeys(..)")
    }
}

impl WebhookKeys {
    /// Keys from their text (used as bytes, whatever their encoding).
    pub fn new(current: &str, previous: Option<&str>) -> Result<Self, KeyError> {
        let key = |text: &str| {
            if text.len() < MIN_KEY_BYTES {
                Err(KeyError(text.len()))
            } else {
                Ok(text.as_bytes().to_vec())
            }
        };
        Ok(WebhookKeys {
            current: key(current)?,
            previous: previous.filter(|p| !p.is_empty()).map(key).transpose()?,
        })
    }

    /// A fresh random key (32 bytes, base64), for a local run that has none.
    pub fn generate() -> String {
        STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// The owner's signing secret under the current key, as `GET /webhooks/secret`
    /// hands it out.
    pub fn secret(&self, owner: &str) -> String {
        Self::derive(&self.current, owner)
    }

    /// The `webhook-signature` header of a delivery: `v1,<base64>` under the owner's
    /// current secret, followed by one under the previous key's secret while rotating.
    pub fn signature(&self, owner: &str, id: &str, timestamp: i64, body: &str) -> String {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .map(|key| {
                let secret = Self::derive(key, owner);
                let signer = standardwebhooks::Webhook::new(&secret)
                    .expect("a derived secret is valid base64");
                signer
                    .sign(id, timestamp, body.as_bytes())
                    .expect("a body given as text is UTF-8")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A tag over `data` for `owner` and `purpose` under the current key (the listing
    /// signs its cursors with it): HMAC-SHA256 of `offpath <purpose> v1`, the owner and
    /// the data, its first 16 bytes.
    pub fn tag(&self, purpose: &str, owner: &str, data: &[u8]) -> Vec<u8> {
        Self::tag_mac(&self.current, purpose, owner, data)
            .finalize()
            .into_bytes()[..16]
            .to_vec()
    }

    /// True when `tag` is [`Self::tag`] of the same input under the current or (while
    /// rotating) the previous key; compared in constant time.
    pub fn verify_tag(&self, purpose: &str, owner: &str, data: &[u8], tag: &[u8]) -> bool {
        tag.len() == 16
            && std::iter::once(&self.current)
                .chain(self.previous.as_ref())
                .any(|key| {
                    Self::tag_mac(key, purpose, owner, data)
                        .verify_truncated_left(tag)
                        .is_ok()
                })
    }

    fn tag_mac(key: &[u8], purpose: &str, owner: &str, data: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(format!("offpath {purpose} v1\n").as_bytes());
        mac.update(owner.as_bytes());
        mac.update(b"\n");
        mac.update(data);
        mac
    }

    fn derive(key: &[u8], owner: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"offpath webhook secret v1\n");
        mac.update(owner.as_bytes());
        format!("whsec_{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, timestamp: i64, signature: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        headers
    }

    #[test]
    fn secrets_are_per_owner_and_signatures_verify_through_a_rotation() {
        let old = WebhookKeys::new(&"a".repeat(32), None).unwrap();
        assert_ne!(old.secret("alice"), old.secret("bob"));
        assert!(old.secret("alice").starts_with("whsec_"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let body = r#"{"type":"job.succeeded"}"#;
        let rotating = WebhookKeys::new(&"b".repeat(32), Some(&"a".repeat(32))).unwrap();
        let signature = rotating.signature("alice", "msg_1", now, body);
        assert_eq!(signature.split(' ').count(), 2);
        for secret in [old.secret("alice"), rotating.secret("alice")] {
            let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
            verifier
                .verify(body.as_bytes(), &headers("msg_1", now, &signature))
                .unwrap();
        }
        let bob = standardwebhooks::Webhook::new(&rotating.secret("bob")).unwrap();
        assert!(
            bob.verify(body.as_bytes(), &headers("msg_1", now, &signature))
                .is_err()
        );
        assert!(WebhookKeys::new("short", None).is_err());
    }
}
