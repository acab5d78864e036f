//! The hash chain of `ops_audit`: the canonical serialisation of a row, its hash (SHA-256, or
//! HMAC-SHA256 under `PSCTL_AUDIT_HMAC_KEY`), and the verifier that walks the rows in id order
//! and names the first one that does not fit. Pure: no database access here.
//!
//! Canonical form (version 1): the line `psctl-audit-v1`, then a JSON array of the row's fields
//! in a fixed order, with `details` written with object keys sorted at every depth and the
//! timestamp as RFC 3339 UTC with microseconds (PostgreSQL's precision), so the bytes hashed at
//! insert time are the bytes recomputed from what the database returns.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

const CANONICAL_PREFIX: &str = "psctl-audit-v1\n";

/// The environment variable holding the chain's HMAC key.
pub const HMAC_KEY_ENV: &str = "PSCTL_AUDIT_HMAC_KEY";

/// The fields of one audit row that the hash covers.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub os_user: String,
    pub kube_identity: String,
    pub environment: String,
    pub action: String,
    pub target: String,
    pub from_state: String,
    pub to_state: String,
    pub outcome: String,
    pub details: Value,
    pub prev_hash: Option<Vec<u8>>,
}

/// How row hashes are computed. `Debug` never shows the key.
#[derive(Clone)]
pub enum ChainKey {
    Sha256,
    Hmac(Vec<u8>),
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm())
    }
}

impl ChainKey {
    /// HMAC when `value` is a non-empty key, plain SHA-256 otherwise.
    pub fn from_env_value(value: Option<String>) -> Self {
        match value {
            Some(key) if !key.is_empty() => Self::Hmac(key.into_bytes()),
            _ => Self::Sha256,
        }
    }

    /// Reads [`HMAC_KEY_ENV`].
    pub fn from_env() -> Self {
        Self::from_env_value(std::env::var(HMAC_KEY_ENV).ok())
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Hmac(_) => "hmac-sha256",
        }
    }

    pub fn hash(&self, row: &ChainedRow) -> Vec<u8> {
        let bytes = canonical_bytes(row);
        match self {
            Self::Sha256 => Sha256::digest(&bytes).to_vec(),
            Self::Hmac(key) => {
                // HMAC accepts keys of any length, so this cannot fail.
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                    return Sha256::digest(&bytes).to_vec();
                };
                mac.update(&bytes);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }
}

/// The exact bytes hashed for `row`.
pub fn canonical_bytes(row: &ChainedRow) -> Vec<u8> {
    let mut out = String::from(CANONICAL_PREFIX);
    out.push('[');
    out.push_str(&row.id.to_string());
    for field in [
        &format_timestamp(row.at),
        &row.os_user,
        &row.kube_identity,
        &row.environment,
        &row.action,
        &row.target,
        &row.from_state,
        &row.to_state,
        &row.outcome,
    ] {
        out.push(',');
        push_json_string(&mut out, field);
    }
    out.push(',');
    push_canonical_json(&mut out, &row.details);
    out.push(',');
    match &row.prev_hash {
        Some(hash) => push_json_string(&mut out, &hex::encode(hash)),
        None => out.push_str("null"),
    }
    out.push(']');
    out.into_bytes()
}

/// RFC 3339 UTC with exactly six fractional digits.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn push_json_string(out: &mut String, text: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// JSON with object keys sorted at every depth and no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    push_canonical_json(&mut out, value);
    out
}

fn push_canonical_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => push_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_canonical_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_json_string(out, key);
                out.push(':');
                push_canonical_json(out, &map[key.as_str()]);
            }
            out.push('}');
        }
    }
}

/// Why a row breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// The stored hash is not the hash of the row's contents: the row was altered.
    HashMismatch,
    /// `prev_hash` is not the previous row's hash: a row was removed, inserted or reordered.
    PrevHashMismatch,
    /// The first row links to a predecessor that is not there.
    MissingPredecessor,
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HashMismatch => "stored hash does not match the row's contents (row altered)",
            Self::PrevHashMismatch => "prev_hash does not match the previous row's hash (row removed, inserted or reordered)",
            Self::MissingPredecessor => "the oldest row links to a predecessor that is not in the table",
        })
    }
}

/// The first row that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub id: i64,
    pub reason: BreakReason,
}

/// Walks rows in id order; stops caring after the first break (later rows would all cascade).
#[derive(Debug)]
pub struct ChainVerifier {
    key: ChainKey,
    previous: Option<Vec<u8>>,
    first: bool,
    rows: u64,
    broken: Option<ChainBreak>,
}

impl ChainVerifier {
    pub fn new(key: ChainKey) -> Self {
        Self {
            key,
            previous: None,
            first: true,
            rows: 0,
            broken: None,
        }
    }

    /// Feeds the next row (by ascending id) with its stored hash.
    pub fn push(&mut self, row: &ChainedRow, stored_hash: &[u8]) {
        self.rows += 1;
        if self.broken.is_some() {
            return;
        }
        let link_ok = if self.first {
            row.prev_hash.is_none()
        } else {
            row.prev_hash == self.previous
        };
        if !link_ok {
            let reason = if self.first {
                BreakReason::MissingPredecessor
            } else {
                BreakReason::PrevHashMismatch
            };
            self.broken = Some(ChainBreak { id: row.id, reason });
        } else if self.key.hash(row) != stored_hash {
            self.broken = Some(ChainBreak {
                id: row.id,
                reason: BreakReason::HashMismatch,
            });
        }
        self.first = false;
        self.previous = Some(stored_hash.to_vec());
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The first break, if any.
    pub fn finish(self) -> Option<ChainBreak> {
        self.broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(id: i64, prev_hash: Option<Vec<u8>>) -> ChainedRow {
        ChainedRow {
            id,
            at: DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            os_user: "alice".into(),
            kube_identity: "psctl-sandbox/admin".into(),
            environment: "sandbox".into(),
            action: "deploy".into(),
            target: "problemsolver-webhook".into(),
            from_state: "rev 3".into(),
            to_state: "rev 4".into(),
            outcome: "succeeded".into(),
            details: json!({"tag": "1.4.2", "a": [1, {"z": true, "b": null}]}),
            prev_hash,
        }
    }

    fn chain(key: &ChainKey, count: i64) -> Vec<(ChainedRow, Vec<u8>)> {
        let mut rows = Vec::new();
        let mut previous = None;
        for id in 1..=count {
            let r = row(id, previous.clone());
            let hash = key.hash(&r);
            previous = Some(hash.clone());
            rows.push((r, hash));
        }
        rows
    }

    fn verify(key: ChainKey, rows: &[(ChainedRow, Vec<u8>)]) -> Option<ChainBreak> {
        let mut verifier = ChainVerifier::new(key);
        for (r, h) in rows {
            verifier.push(r, h);
        }
        verifier.finish()
    }

    #[test]
    fn canonical_form_is_fixed_and_sorts_keys() {
        let text = String::from_utf8(canonical_bytes(&row(7, Some(vec![0xab, 0x01])))).unwrap();
        assert_eq!(
            text,
            "psctl-audit-v1\n[7,\"2026-11-23T10:00:00.123456Z\",\"alice\",\"psctl-sandbox/admin\",\"sandbox\",\
             \"deploy\",\"problemsolver-webhook\",\"rev 3\",\"rev 4\",\"succeeded\",\
             {\"a\":[1,{\"b\":null,\"z\":true}],\"tag\":\"1.4.2\"},\"ab01\"]"
        );
    }

    #[test]
    fn key_order_in_details_does_not_change_the_hash() {
        let mut a = row(1, None);
        let mut b = row(1, None);
        a.details = serde_json::from_str(r#"{"x":1,"y":{"p":2,"q":3}}"#).unwrap();
        b.details = serde_json::from_str(r#"{"y":{"q":3,"p":2},"x":1}"#).unwrap();
        assert_eq!(ChainKey::Sha256.hash(&a), ChainKey::Sha256.hash(&b));
    }

    #[test]
    fn an_intact_chain_verifies() {
        for key in [ChainKey::Sha256, ChainKey::Hmac(b"k3y".to_vec())] {
            assert_eq!(verify(key.clone(), &chain(&key, 5)), None);
        }
    }

    #[test]
    fn an_altered_row_is_named() {
        let mut rows = chain(&ChainKey::Sha256, 5);
        rows[2].0.outcome = "failed".into();
        assert_eq!(
            verify(ChainKey::Sha256, &rows),
            Some(ChainBreak {
                id: 3,
                reason: BreakReason::HashMismatch
            })
        );
    }

    #[test]
    fn a_removed_row_breaks_the_link_of_its_successor() {
        let mut rows = chain(&ChainKey::Sha256, 5);
        rows.remove(1);
        assert_eq!(
            verify(ChainKey::Sha256, &rows),
            Some(ChainBreak {
                id: 3,
                reason: BreakReason::PrevHashMismatch
            })
        );
        let mut rows = chain(&ChainKey::Sha256, 3);
        rows.remove(0);
        assert_eq!(
            verify(ChainKey::Sha256, &rows),
            Some(ChainBreak {
                id: 2,
                reason: BreakReason::MissingPredecessor
            })
        );
    }

    #[test]
    fn the_wrong_key_fails_at_the_first_row() {
        let rows = chain(&ChainKey::Hmac(b"right".to_vec()), 3);
        assert_eq!(
            verify(ChainKey::Hmac(b"wrong".to_vec()), &rows).map(|b| b.id),
            Some(1)
        );
        assert_eq!(verify(ChainKey::Sha256, &rows).map(|b| b.id), Some(1));
    }

    #[test]
    fn the_key_is_never_shown() {
        assert_eq!(
            format!("{:?}", ChainKey::from_env_value(Some("topsecret".into()))),
            "hmac-sha256"
        );
        assert_eq!(
            ChainKey::from_env_value(Some(String::new())).algorithm(),
            "sha256"
        );
    }
}
