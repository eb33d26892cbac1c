//! JSON bodies parsed strictly: an object that names a key twice is refused, where
//! serde_json alone would keep the last value and the first would silently vanish.

use std::collections::HashSet;

use serde::de::{DeserializeSeed, Error, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Parses `bytes` as one JSON value with no duplicate keys at any depth (and, as
/// serde_json, nothing after it and at most 128 levels of nesting).
pub(crate) fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    check(bytes)?;
    serde_json::from_slice(bytes)
}

/// Checks that `bytes` hold one JSON value with no duplicate keys at any depth, without
/// building it: a typed parse of the same bytes follows.
pub(crate) fn check(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    Strict.deserialize(&mut deserializer)?;
    deserializer.end()
}

/// A JSON value whose objects are checked for duplicate keys.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("a number that is not finite"))
        }
    }

    fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Strict)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(A::Error::custom(format!("duplicate key {shown:?}")));
            }
            map.next_value_seed(Strict)?;
            keys.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let ok = br#"{"task":"embed","input":{"texts":["a",1,2.5,-3,true,null,{"k":[]}]}}"#;
        assert_eq!(
            from_slice(ok).unwrap(),
            serde_json::from_slice::<Value>(ok).unwrap()
        );
        for bad in [
            &br#"{"task":"embed","task":"rank","input":{}}"#[..],
            br#"{"task":"embed","input":{"texts":["a"],"texts":["b"]}}"#,
            br#"[{"a":1,"a":1}]"#,
        ] {
            let err = from_slice(bad).unwrap_err().to_string();
            assert!(err.starts_with("duplicate key"), "{err}");
        }
        assert!(from_slice(b"{} x").is_err(), "trailing characters");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(from_slice(deep.as_bytes()).is_err(), "nesting limit");
    }
}
