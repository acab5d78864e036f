//! The runtime Secret's values without ever showing them: env-file parsing, keyed fingerprints,
//! the per-key diff `psctl secrets apply` prints and the per-key report of `psctl secrets check`.
//!
//! Pure, but for `input` (the env file or psctl's environment, read and registered with the
//! redactor) and `cluster` (reading and writing the Secret and the fingerprint key); `report`
//! holds what `apply` and `check` print. Values live in [`SecretString`] and only leave as bytes
//! for the Secret's `data`; every message names keys and line numbers only.

pub mod cluster;
pub mod input;
pub mod report;

use std::collections::BTreeMap;

use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use sha2::Sha256;

/// The Secret holding the fingerprint key, next to the runtime Secret (same namespace, so
/// whoever can read it can read the runtime Secret anyway).
pub const FINGERPRINT_KEY_SECRET: &str = "psctl-fingerprint-key";
/// The data key inside [`FINGERPRINT_KEY_SECRET`].
pub const FINGERPRINT_KEY_FIELD: &str = "key";
/// Annotation on the runtime Secret: when psctl last wrote it (RFC 3339).
pub const APPLIED_AT_ANNOTATION: &str = "psctl.io/applied-at";
/// Annotation on the runtime Secret: who last wrote it (user@host pid).
pub const APPLIED_BY_ANNOTATION: &str = "psctl.io/applied-by";
/// Pod-template annotation `deploy` sets to the Secret's fingerprint, so a changed Secret rolls
/// the pods.
pub const POD_FINGERPRINT_ANNOTATION: &str = "psctl.io/secret-fingerprint";

// ---- env files ----

/// One `KEY=VALUE` from an env file or the process environment.
pub struct Entry {
    pub key: String,
    pub value: SecretString,
    /// 1-based line in the file (0 for the process environment).
    pub line: usize,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("value", &"[redacted]")
            .field("line", &self.line)
            .finish()
    }
}

/// A problem in an env file. Never carries the value, only where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    #[error("line {line}: expected `KEY=VALUE`; the line has no `=`")]
    NoEquals { line: usize },
    /// The text before `=` is not shown: a malformed line may be a pasted value.
    #[error(
        "line {line}: the text before `=` is not a valid Secret key (letters, digits, `_`, `-` and `.`, not starting with a digit)"
    )]
    InvalidKey { line: usize },
    #[error(
        "line {line}: the value of `{key}` opens a {quote} quote that is not closed on that line"
    )]
    UnterminatedQuote {
        line: usize,
        key: String,
        quote: &'static str,
    },
    #[error("line {line}: the value of `{key}` has text after its closing quote")]
    TrailingText { line: usize, key: String },
    #[error("line {line}: `{key}` is already set on line {first}")]
    Duplicate {
        line: usize,
        key: String,
        first: usize,
    },
}

/// A valid Kubernetes Secret key that is also a valid environment variable name prefix:
/// `[A-Za-z_][A-Za-z0-9_.-]*`.
pub fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && key.len() <= 253
}

/// Parses an env file: `KEY=VALUE` per line; blank lines and `#` comments ignored; an optional
/// `export ` prefix; unquoted values are trimmed and end at ` #`; `'single'` quotes are literal;
/// `"double"` quotes understand `\n`, `\t`, `\"` and `\\`. Values never span lines.
pub fn parse_env_file(text: &str) -> Result<Vec<Entry>, EnvFileError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed
            .strip_prefix("export ")
            .map_or(trimmed, str::trim_start);
        let Some((key, rest)) = trimmed.split_once('=') else {
            return Err(EnvFileError::NoEquals { line });
        };
        let key = key.trim();
        if !valid_key(key) {
            return Err(EnvFileError::InvalidKey { line });
        }
        let value = parse_value(rest.trim(), line, key)?;
        if let Some(first) = entries.iter().find(|e| e.key == key) {
            return Err(EnvFileError::Duplicate {
                line,
                key: key.to_owned(),
                first: first.line,
            });
        }
        entries.push(Entry {
            key: key.to_owned(),
            value: SecretString::from(value),
            line,
        });
    }
    Ok(entries)
}

fn parse_value(rest: &str, line: usize, key: &str) -> Result<String, EnvFileError> {
    let unterminated = |quote| EnvFileError::UnterminatedQuote {
        line,
        key: key.to_owned(),
        quote,
    };
    let after_quote = |tail: &str| {
        let tail = tail.trim();
        if tail.is_empty() || tail.starts_with('#') {
            Ok(())
        } else {
            Err(EnvFileError::TrailingText {
                line,
                key: key.to_owned(),
            })
        }
    };
    if let Some(body) = rest.strip_prefix('\'') {
        let end = body.find('\'').ok_or_else(|| unterminated("single"))?;
        after_quote(&body[end + 1..])?;
        return Ok(body[..end].to_owned());
    }
    if let Some(body) = rest.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => {
                    after_quote(&body[index + 1..])?;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, other)) => value.push(other),
                    None => return Err(unterminated("double")),
                },
                other => value.push(other),
            }
        }
        return Err(unterminated("double"));
    }
    let value = match rest.find(" #").or_else(|| rest.find("\t#")) {
        Some(comment) => &rest[..comment],
        None => rest,
    };
    Ok(value.trim().to_owned())
}

// ---- fingerprints ----

/// A keyed fingerprint: the first 12 hex digits of HMAC-SHA256(fingerprint key, name NUL value).
/// Without the key (kept in a Secret) it cannot be brute-forced, even for a short value; the
/// name is mixed in so two keys with the same value do not show the same fingerprint.
pub fn fingerprint(key: &[u8], name: &str, value: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(value);
    hex::encode(&mac.finalize().into_bytes()[..6])
}

/// The fingerprint of a whole Secret (every key and value, in key order): what `deploy` puts on
/// the pod template so that any change rolls the pods.
pub fn secret_fingerprint(key: &[u8], data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for (name, value) in data {
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(&(value.len() as u64).to_be_bytes());
        mac.update(value);
    }
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// A coarse length, enough to spot a truncated paste without narrowing a brute force much.
pub fn length_class(len: usize) -> &'static str {
    match len {
        0 => "empty",
        1..=7 => "<8",
        8..=15 => "8-15",
        16..=31 => "16-31",
        32..=63 => "32-63",
        _ => "64+",
    }
}

// ---- diff ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Changed,
    Unchanged,
    /// In the Secret, not in the input, removed because of `--prune`.
    Removed,
    /// In the Secret, not in the input, kept.
    Kept,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Changed => "changed",
            Self::Unchanged => "unchanged",
            Self::Removed => "removed",
            Self::Kept => "kept",
        }
    }
}

/// One key of the diff: names, classes and fingerprints only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyDiff {
    pub key: String,
    pub change: Change,
    pub required: bool,
    /// Length class of the value the Secret will hold (`None` when removed).
    pub length: Option<&'static str>,
    pub old_fingerprint: Option<String>,
    pub new_fingerprint: Option<String>,
}

/// The Secret's data after the change, and the per-key diff.
#[derive(Debug, Clone)]
pub struct Diff {
    pub keys: Vec<KeyDiff>,
    /// The complete data the Secret will hold.
    pub desired: BTreeMap<String, Vec<u8>>,
}

impl Diff {
    pub fn changes_anything(&self) -> bool {
        self.keys
            .iter()
            .any(|k| matches!(k.change, Change::Added | Change::Changed | Change::Removed))
    }

    pub fn names(&self, change: Change) -> Vec<String> {
        self.keys
            .iter()
            .filter(|k| k.change == change)
            .map(|k| k.key.clone())
            .collect()
    }
}

/// Compares the Secret's current data with the input. Pure.
pub fn diff(
    current: &BTreeMap<String, Vec<u8>>,
    input: &[Entry],
    required: &[String],
    prune: bool,
    key: &[u8],
) -> Diff {
    let mut desired = BTreeMap::new();
    let mut keys = Vec::new();
    for entry in input {
        let value = entry.value.expose_secret().as_bytes().to_vec();
        let old = current.get(&entry.key);
        let change = match old {
            None => Change::Added,
            Some(old) if *old == value => Change::Unchanged,
            Some(_) => Change::Changed,
        };
        keys.push(KeyDiff {
            key: entry.key.clone(),
            change,
            required: required.contains(&entry.key),
            length: Some(length_class(value.len())),
            old_fingerprint: old.map(|old| fingerprint(key, &entry.key, old)),
            new_fingerprint: Some(fingerprint(key, &entry.key, &value)),
        });
        desired.insert(entry.key.clone(), value);
    }
    for (name, old) in current {
        if desired.contains_key(name) {
            continue;
        }
        let old_fingerprint = Some(fingerprint(key, name, old));
        if prune {
            keys.push(KeyDiff {
                key: name.clone(),
                change: Change::Removed,
                required: required.contains(name),
                length: None,
                old_fingerprint,
                new_fingerprint: None,
            });
        } else {
            keys.push(KeyDiff {
                key: name.clone(),
                change: Change::Kept,
                required: required.contains(name),
                length: Some(length_class(old.len())),
                new_fingerprint: old_fingerprint.clone(),
                old_fingerprint,
            });
            desired.insert(name.clone(), old.clone());
        }
    }
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    Diff { keys, desired }
}

// ---- the keys the services read ----

/// One key of the runtime Secret that a service reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownKey {
    pub key: &'static str,
    /// Which service reads it: `poller`, `webhook-worker` or `poller, webhook-worker`.
    pub read_by: &'static str,
    /// What it is for, in a few words.
    pub role: &'static str,
}

/// Every key of the deploy runbook's Secret, and the older name `ENCRYPTION_MASTER_KEY`.
pub const KNOWN_KEYS: [KnownKey; 7] = [
    KnownKey {
        key: "DATABASE_URL",
        read_by: "poller, webhook-worker",
        role: "the problemsolver database",
    },
    KnownKey {
        key: "BINANCE_API_KEY",
        read_by: "poller",
        role: "Binance deposit history",
    },
    KnownKey {
        key: "BINANCE_API_SECRET",
        read_by: "poller",
        role: "signs Binance requests",
    },
    KnownKey {
        key: "WEBHOOK_SECRET",
        read_by: "webhook-worker",
        role: "32-byte key wrapping merchants' signing secrets",
    },
    KnownKey {
        key: "ENCRYPTION_MASTER_KEY",
        read_by: "webhook-worker",
        role: "older name of WEBHOOK_SECRET",
    },
    KnownKey {
        key: "SENTRY_DSN",
        read_by: "poller, webhook-worker",
        role: "error reporting (optional)",
    },
    KnownKey {
        key: "REDIS_URL",
        read_by: "webhook-worker",
        role: "rate limits shared by all replicas (optional)",
    },
];

/// Keys that stand for each other: a required key is satisfied by its alias. The worker prefers
/// `WEBHOOK_SECRET` and refuses to start when both are set to different keys.
pub const ALIASES: [(&str, &str); 1] = [("WEBHOOK_SECRET", "ENCRYPTION_MASTER_KEY")];

/// Which service reads `key` (`None` for a key no service reads).
pub fn read_by(key: &str) -> Option<&'static str> {
    KNOWN_KEYS.iter().find(|k| k.key == key).map(|k| k.read_by)
}

/// `key` and the keys that stand for it, `key` first.
pub fn alternatives(key: &str) -> Vec<&str> {
    let mut names = vec![key];
    for (a, b) in ALIASES {
        if key == a {
            names.push(b);
        } else if key == b {
            names.push(a);
        }
    }
    names
}

/// Required keys that neither `present` nor an alias of them satisfies.
pub fn missing_required(present: &[String], required: &[String]) -> Vec<String> {
    required
        .iter()
        .filter(|k| {
            !alternatives(k)
                .iter()
                .any(|name| present.iter().any(|p| p.as_str() == *name))
        })
        .cloned()
        .collect()
}

// ---- check ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Present,
    Missing,
    Empty,
}

impl KeyState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Missing => "missing",
            Self::Empty => "empty",
        }
    }
}

/// One key of `psctl secrets check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    pub key: String,
    pub required: bool,
    pub state: KeyState,
    pub length: Option<&'static str>,
    pub fingerprint: Option<String>,
    /// Which service reads the key (`None`: no service does).
    pub read_by: Option<&'static str>,
}

/// Every required key (in configuration order; a required key the Secret only holds under its
/// alias is reported under the alias), then any other key the Secret has. Pure.
pub fn check(
    data: &BTreeMap<String, Vec<u8>>,
    required: &[String],
    key: Option<&[u8]>,
) -> Vec<KeyStatus> {
    let status = |name: &str, is_required: bool| {
        let value = data.get(name);
        KeyStatus {
            key: name.to_owned(),
            required: is_required,
            state: match value {
                None => KeyState::Missing,
                Some(v) if v.iter().all(u8::is_ascii_whitespace) => KeyState::Empty,
                Some(_) => KeyState::Present,
            },
            length: value.map(|v| length_class(v.len())),
            fingerprint: value.zip(key).map(|(v, k)| fingerprint(k, name, v)),
            read_by: read_by(name),
        }
    };
    let mut keys: Vec<KeyStatus> = required
        .iter()
        .map(|name| {
            let held = alternatives(name)
                .into_iter()
                .find(|alternative| data.contains_key(*alternative))
                .unwrap_or(name.as_str());
            status(held, true)
        })
        .collect();
    for name in data.keys() {
        if !keys.iter().any(|k| &k.key == name) {
            keys.push(status(name, false));
        }
    }
    keys
}

/// Required keys the data lacks or holds empty (whitespace-only counts as empty).
pub fn unusable_required(data: &BTreeMap<String, Vec<u8>>, required: &[String]) -> Vec<KeyStatus> {
    check(data, required, None)
        .into_iter()
        .filter(|k| k.required && k.state != KeyState::Present)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# runtime secrets\n\
        \n\
        DATABASE_URL=postgres://app:pw@db/app  # inline comment\n\
        export BINANCE_API_KEY = 'k#ey with spaces '\n\
        BINANCE_API_SECRET=\"line1\\nline2 \\\"q\\\"\" # after\n\
        ENCRYPTION_MASTER_KEY=\n";

    fn values(entries: &[Entry]) -> Vec<(String, String, usize)> {
        entries
            .iter()
            .map(|e| (e.key.clone(), e.value.expose_secret().to_owned(), e.line))
            .collect()
    }

    #[test]
    fn env_files_parse_comments_exports_and_quotes() {
        let entries = parse_env_file(FILE).unwrap();
        assert_eq!(
            values(&entries),
            [
                ("DATABASE_URL".into(), "postgres://app:pw@db/app".into(), 3),
                ("BINANCE_API_KEY".into(), "k#ey with spaces ".into(), 4),
                ("BINANCE_API_SECRET".into(), "line1\nline2 \"q\"".into(), 5),
                ("ENCRYPTION_MASTER_KEY".into(), String::new(), 6),
            ]
        );
        assert_eq!(
            values(&parse_env_file("A=x=y#z\r\nB=\"\"\n").unwrap()),
            [
                ("A".into(), "x=y#z".into(), 1),
                ("B".into(), String::new(), 2)
            ]
        );
    }

    #[test]
    fn env_file_errors_cite_the_line_and_never_the_value() {
        let secret = "hunter2-very-secret";
        let cases = [
            (format!("A=1\n{secret}\n"), "line 2: expected `KEY=VALUE`"),
            (
                format!("A='{secret}\n"),
                "line 1: the value of `A` opens a single quote",
            ),
            (
                format!("A=\"{secret}\n"),
                "line 1: the value of `A` opens a double quote",
            ),
            (
                format!("A=\"{secret}\" tail\n"),
                "line 1: the value of `A` has text after",
            ),
            (
                format!("A=1\n\nA={secret}\n"),
                "line 3: `A` is already set on line 1",
            ),
            (
                format!("1A={secret}\n"),
                "line 1: the text before `=` is not a valid Secret key",
            ),
            (
                // A value pasted without its key: nothing of the line may be echoed.
                format!("{secret} and more=x\n"),
                "line 1: the text before `=` is not a valid Secret key",
            ),
        ];
        for (text, expected) in cases {
            let message = parse_env_file(&text).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains(secret), "{message}");
        }
    }

    #[test]
    fn the_debug_form_of_an_entry_hides_the_value() {
        let entries = parse_env_file("A=topsecretvalue\n").unwrap();
        let debug = format!("{entries:?}");
        assert!(!debug.contains("topsecretvalue") && debug.contains("[redacted]"));
    }

    #[test]
    fn fingerprints_depend_on_the_key_the_name_and_the_value() {
        let a = fingerprint(b"k1", "A", b"v");
        assert_eq!(a.len(), 12);
        assert_eq!(a, fingerprint(b"k1", "A", b"v"));
        assert_ne!(a, fingerprint(b"k2", "A", b"v"));
        assert_ne!(a, fingerprint(b"k1", "B", b"v"));
        assert_ne!(a, fingerprint(b"k1", "A", b"w"));
        // Not a bare hash: the unkeyed SHA-256 of the value does not show up.
        use sha2::Digest as _;
        assert!(!hex::encode(Sha256::digest(b"v")).starts_with(&a));
    }

    #[test]
    fn the_secret_fingerprint_changes_with_any_key_or_value() {
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect()
        };
        let base = secret_fingerprint(b"k", &data(&[("A", "1"), ("B", "2")]));
        assert_eq!(base.len(), 16);
        assert_ne!(
            base,
            secret_fingerprint(b"k", &data(&[("A", "1"), ("B", "3")]))
        );
        assert_ne!(
            base,
            secret_fingerprint(b"k", &data(&[("A", "12"), ("B", "")]))
        );
        assert_ne!(base, secret_fingerprint(b"k", &data(&[("A", "1")])));
        assert_eq!(
            base,
            secret_fingerprint(b"k", &data(&[("B", "2"), ("A", "1")]))
        );
    }

    #[test]
    fn length_classes_are_coarse() {
        assert_eq!(
            [0, 5, 8, 20, 40, 64, 500].map(length_class),
            ["empty", "<8", "8-15", "16-31", "32-63", "64+", "64+"]
        );
    }

    fn current() -> BTreeMap<String, Vec<u8>> {
        [("A", "same"), ("B", "old"), ("OLD", "gone")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn the_diff_classifies_every_key_and_keeps_unlisted_ones_unless_pruned() {
        let input = parse_env_file("A=same\nB=new-value\nC=added\n").unwrap();
        let required = vec!["A".to_owned(), "C".to_owned()];
        let diff = super::diff(&current(), &input, &required, false, b"k");
        let summary: Vec<_> = diff
            .keys
            .iter()
            .map(|k| (k.key.as_str(), k.change, k.required))
            .collect();
        assert_eq!(
            summary,
            [
                ("A", Change::Unchanged, true),
                ("B", Change::Changed, false),
                ("C", Change::Added, true),
                ("OLD", Change::Kept, false),
            ]
        );
        let b = &diff.keys[1];
        assert_eq!(b.old_fingerprint, Some(fingerprint(b"k", "B", b"old")));
        assert_eq!(
            b.new_fingerprint,
            Some(fingerprint(b"k", "B", b"new-value"))
        );
        assert_eq!(b.length, Some("8-15"));
        assert_eq!(diff.desired["OLD"], b"gone");
        assert!(diff.changes_anything());
        let pruned = super::diff(&current(), &input, &required, true, b"k");
        assert_eq!(pruned.names(Change::Removed), ["OLD"]);
        assert!(!pruned.desired.contains_key("OLD"));
        let same = parse_env_file("A=same\nB=old\nOLD=gone\n").unwrap();
        assert!(!super::diff(&current(), &same, &[], true, b"k").changes_anything());
    }

    #[test]
    fn check_reports_required_keys_missing_empty_or_present_then_the_rest() {
        let mut data = current();
        data.insert("EMPTY".into(), b"  ".to_vec());
        let required = vec!["EMPTY".to_owned(), "A".to_owned(), "NOPE".to_owned()];
        let keys = check(&data, &required, Some(b"k"));
        let summary: Vec<_> = keys
            .iter()
            .map(|k| (k.key.as_str(), k.state, k.required))
            .collect();
        assert_eq!(
            summary,
            [
                ("EMPTY", KeyState::Empty, true),
                ("A", KeyState::Present, true),
                ("NOPE", KeyState::Missing, true),
                ("B", KeyState::Present, false),
                ("OLD", KeyState::Present, false),
            ]
        );
        assert_eq!(keys[1].fingerprint, Some(fingerprint(b"k", "A", b"same")));
        assert_eq!(keys[2].fingerprint, None);
        let unusable: Vec<_> = unusable_required(&data, &required)
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(unusable, ["EMPTY", "NOPE"]);
    }

    #[test]
    fn the_runbook_secret_satisfies_the_default_keys_and_the_alias_stands_in() {
        let data = |keys: &[&str]| -> BTreeMap<String, Vec<u8>> {
            keys.iter()
                .map(|k| ((*k).to_owned(), b"value".to_vec()))
                .collect()
        };
        let required: Vec<String> = crate::settings::file::DEFAULT_REQUIRED_KEYS
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        // Exactly the deploy runbook's `kubectl create secret` keys.
        let runbook = data(&[
            "DATABASE_URL",
            "BINANCE_API_KEY",
            "BINANCE_API_SECRET",
            "WEBHOOK_SECRET",
            "SENTRY_DSN",
            "REDIS_URL",
        ]);
        assert!(unusable_required(&runbook, &required).is_empty());
        let keys: Vec<String> = runbook.keys().cloned().collect();
        assert!(missing_required(&keys, &required).is_empty());
        let report = check(&runbook, &required, None);
        assert_eq!(report.len(), 6);
        for status in &report {
            let reader = status
                .read_by
                .unwrap_or_else(|| panic!("{} has no reader", status.key));
            assert!(!reader.is_empty());
        }
        let reader = |key: &str| report.iter().find(|k| k.key == key).unwrap().read_by;
        assert_eq!(reader("REDIS_URL"), Some("webhook-worker"));
        assert_eq!(reader("BINANCE_API_SECRET"), Some("poller"));
        assert_eq!(reader("SENTRY_DSN"), Some("poller, webhook-worker"));

        // An older Secret with ENCRYPTION_MASTER_KEY satisfies WEBHOOK_SECRET, reported by its name.
        let older = data(&[
            "DATABASE_URL",
            "BINANCE_API_KEY",
            "BINANCE_API_SECRET",
            "ENCRYPTION_MASTER_KEY",
        ]);
        let report = check(&older, &required, None);
        assert_eq!(report.len(), 4);
        assert!(
            report
                .iter()
                .all(|k| k.required && k.state == KeyState::Present)
        );
        assert!(report.iter().any(|k| k.key == "ENCRYPTION_MASTER_KEY"));
        let keys: Vec<String> = older.keys().cloned().collect();
        assert!(missing_required(&keys, &required).is_empty());
        // And an older configuration requiring ENCRYPTION_MASTER_KEY accepts WEBHOOK_SECRET.
        let old_required = vec!["ENCRYPTION_MASTER_KEY".to_owned()];
        assert!(missing_required(&["WEBHOOK_SECRET".to_owned()], &old_required).is_empty());
        // Neither: missing, under the required name.
        let neither = data(&["DATABASE_URL"]);
        let unusable: Vec<String> = unusable_required(&neither, &required)
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(
            unusable,
            ["BINANCE_API_KEY", "BINANCE_API_SECRET", "WEBHOOK_SECRET"]
        );
        assert_eq!(read_by("SOMETHING_ELSE"), None);
    }
}
