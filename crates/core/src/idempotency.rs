//! Idempotency rules (IETF httpapi Idempotency-Key draft, Stripe practice).
//!
//! A key is 1-255 printable ASCII characters. With a key, the job id is derived from
//! (owner, key), so one conditional put both creates the job and detects the duplicate.
//! The request hash tells a replay (same body) from key reuse (another body).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::id::JobId;
use crate::json::JsonText;
use crate::webhook::{EventKind, Webhook};

/// Longest accepted idempotency key.
pub const MAX_KEY_LEN: usize = 255;

/// Why an idempotency key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The key is empty.
    #[error("the Idempotency-Key header is empty; send 1-255 printable ASCII characters")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("the Idempotency-Key header is {0} characters long; the limit is 255")]
    TooLong(usize),
    /// The key holds a character outside printable ASCII.
    #[error("the Idempotency-Key header may hold only printable ASCII characters (0x20-0x7E)")]
    NotPrintable,
}

/// Checks an idempotency key from raw header bytes.
pub fn validate_key(raw: &[u8]) -> Result<&str, KeyError> {
    if raw.is_empty() {
        return Err(KeyError::Empty);
    }
    if raw.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(raw.len()));
    }
    if !raw.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(KeyError::NotPrintable);
    }
    // Printable ASCII is valid UTF-8.
    std::str::from_utf8(raw).map_err(|_| KeyError::NotPrintable)
}

/// The job id for an owner's idempotency key. Owners cannot collide: each part is
/// length-prefixed before hashing.
pub fn job_id_for_key(owner: &str, key: &str) -> JobId {
    let mut hasher = Sha256::new();
    hasher.update(b"offpath.job-id.v1\0");
    for part in [owner, key] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    JobId::from_digest(bytes)
}

/// The hash that identifies a request's content: task, input, ttl and, when there is
/// one, the webhook and its events. The input is hashed as the job stores it, in its
/// type's own serialisation, so key order, white space and defaults spelt out do not
/// matter.
pub fn request_hash(
    task: &str,
    input: &JsonText,
    ttl_seconds: Option<u64>,
    webhook: Option<&Webhook>,
) -> String {
    /// The hashed text: fields in this order, the webhook only when there is one.
    #[derive(Serialize)]
    struct Canonical<'a> {
        task: &'a str,
        input: &'a RawValue,
        ttl_seconds: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        webhook: Option<CanonicalWebhook<'a>>,
    }
    #[derive(Serialize)]
    struct CanonicalWebhook<'a> {
        url: &'a str,
        events: &'a BTreeSet<EventKind>,
    }
    let canonical = Canonical {
        task,
        input: input.as_raw(),
        ttl_seconds,
        webhook: webhook.map(|w| CanonicalWebhook {
            url: &w.url,
            events: &w.events,
        }),
    };
    let text = serde_json::to_string(&canonical).expect("the canonical request serialises");
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_checked() {
        assert_eq!(validate_key(b"abc-123").unwrap(), "abc-123");
        assert_eq!(validate_key(b""), Err(KeyError::Empty));
        assert_eq!(validate_key(&[b'a'; 256]), Err(KeyError::TooLong(256)));
        assert!(validate_key(&[b'a'; 255]).is_ok());
        assert_eq!(validate_key(b"a\tb"), Err(KeyError::NotPrintable));
        assert_eq!(validate_key("é".as_bytes()), Err(KeyError::NotPrintable));
    }

    #[test]
    fn ids_depend_on_owner_and_key() {
        let a = job_id_for_key("alice", "k1");
        assert_eq!(a, job_id_for_key("alice", "k1"));
        assert_ne!(a, job_id_for_key("bob", "k1"));
        assert_ne!(a, job_id_for_key("alice", "k2"));
        // length prefixes keep ("ab","c") apart from ("a","bc")
        assert_ne!(job_id_for_key("ab", "c"), job_id_for_key("a", "bc"));
    }

    #[test]
    fn request_hash_covers_every_part() {
        let one = JsonText::of(&json!({"texts": ["a"]})).unwrap();
        let other = JsonText::of(&json!({"texts": ["b"]})).unwrap();
        assert_eq!(
            request_hash("embed", &one, None, None),
            request_hash("embed", &one.clone(), None, None)
        );
        assert_ne!(
            request_hash("embed", &one, None, None),
            request_hash("embed", &other, None, None)
        );
        assert_ne!(
            request_hash("embed", &one, None, None),
            request_hash("rank", &one, None, None)
        );
        assert_ne!(
            request_hash("embed", &one, None, None),
            request_hash("embed", &one, Some(60), None)
        );
        let webhook = Webhook::new(
            "https://example.com/h",
            [crate::EventKind::Completed].into(),
        );
        assert_ne!(
            request_hash("embed", &one, None, None),
            request_hash("embed", &one, None, Some(&webhook))
        );
    }
}
