//! User-supplied chart values: `-f` files merged in order, then `--set` / `--set-string`
//! expressions, following Helm's own precedence and `strvals` syntax (`a.b=c,d[0]=e`,
//! `list={x,y}`, `\,` and `\.` escapes). The result is the JSON object handed to the engine.
//! No I/O apart from reading the values files named on the command line.

use serde_json::{Map, Value};
use std::path::Path;

/// What can be wrong with user-supplied values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValuesError {
    #[error("failed to parse {file}: {reason}")]
    File { file: String, reason: String },
    #[error("failed parsing --set data: key `{expression}` has no value (expected key=value)")]
    MissingValue { expression: String },
    #[error("failed parsing --set data: `{expression}`: {reason}")]
    Syntax { expression: String, reason: String },
}

/// Whether `--set` values are typed (`--set`) or always strings (`--set-string`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typing {
    Typed,
    Strings,
}

/// Reads a values file (YAML or JSON) into a JSON object. An empty file is an empty object.
pub fn read_file(path: &Path) -> Result<Map<String, Value>, ValuesError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ValuesError::File {
        file: file.clone(),
        reason: error.to_string(),
    })?;
    parse_document(&file, &text)
}

/// Parses a values document; `name` is only used in errors.
pub fn parse_document(name: &str, text: &str) -> Result<Map<String, Value>, ValuesError> {
    let yaml: crate::yaml::Value =
        crate::yaml::from_str(text).map_err(|error| ValuesError::File {
            file: name.to_string(),
            reason: error.to_string(),
        })?;
    match serde_json::to_value(yaml) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ValuesError::File {
            file: name.to_string(),
            reason: "the top level must be a map of values".to_string(),
        }),
        Err(error) => Err(ValuesError::File {
            file: name.to_string(),
            reason: error.to_string(),
        }),
    }
}

/// Deep-merges `overlay` into `base`: maps merge key by key, anything else replaces.
pub fn merge(base: &mut Map<String, Value>, overlay: Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => merge(existing, incoming),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Splits on `separator` outside `{}` lists, honouring backslash escapes (kept in the output
/// so later stages can still see them).
fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            c if c == separator && depth == 0 => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Helm's typing of `--set` scalars: booleans, `null`, integers without a leading zero;
/// everything else stays a string.
fn typed_scalar(raw: &str, typing: Typing) -> Value {
    if typing == Typing::Strings {
        return Value::String(raw.to_string());
    }
    if raw.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if raw.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if raw.eq_ignore_ascii_case("null") {
        return Value::Null;
    }
    let leading_zero = raw.len() > 1 && raw.starts_with('0');
    if !leading_zero && let Ok(number) = raw.parse::<i64>() {
        return Value::from(number);
    }
    Value::String(raw.to_string())
}

fn parse_value(raw: &str, typing: Typing) -> Value {
    if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        if inner.is_empty() {
            return Value::Array(Vec::new());
        }
        return Value::Array(
            split_unescaped(inner, ',')
                .iter()
                .map(|item| typed_scalar(&unescape(item), typing))
                .collect(),
        );
    }
    typed_scalar(&unescape(raw), typing)
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn parse_key(expression: &str, key: &str) -> Result<Vec<Segment>, ValuesError> {
    let syntax = |reason: &str| ValuesError::Syntax {
        expression: expression.to_string(),
        reason: reason.to_string(),
    };
    let mut segments = Vec::new();
    for part in split_unescaped(key, '.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part.as_str(), ""),
        };
        if name.is_empty() && segments.is_empty() && rest.is_empty() {
            return Err(syntax("empty key"));
        }
        if !name.is_empty() {
            segments.push(Segment::Key(unescape(name)));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let close = stripped.find(']').ok_or_else(|| syntax("unclosed `[`"))?;
            let index: usize = stripped[..close]
                .parse()
                .map_err(|_| syntax("list index must be a non-negative integer"))?;
            // Helm caps indexes to keep a typo from allocating a huge list.
            if index > 65_536 {
                return Err(syntax("list index is larger than 65536"));
            }
            segments.push(Segment::Index(index));
            rest = &stripped[close + 1..];
        }
        if !rest.is_empty() {
            return Err(syntax("unexpected text after `]`"));
        }
    }
    if segments.is_empty() {
        return Err(syntax("empty key"));
    }
    Ok(segments)
}

fn assign(target: &mut Value, path: &[Segment], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *target = value;
        return;
    };
    match first {
        Segment::Key(key) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(map) = target {
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                assign(slot, rest, value);
            }
        }
        Segment::Index(index) => {
            if !target.is_array() {
                *target = Value::Array(Vec::new());
            }
            if let Value::Array(list) = target {
                if list.len() <= *index {
                    list.resize(index + 1, Value::Null);
                }
                assign(&mut list[*index], rest, value);
            }
        }
    }
}

/// Applies one `--set`-style argument (possibly several comma-separated assignments).
pub fn apply_set(
    values: &mut Map<String, Value>,
    argument: &str,
    typing: Typing,
) -> Result<(), ValuesError> {
    let mut root = Value::Object(std::mem::take(values));
    let outcome = (|| {
        for assignment in split_unescaped(argument, ',') {
            if assignment.is_empty() {
                continue;
            }
            let parts = split_unescaped(&assignment, '=');
            if parts.len() < 2 {
                return Err(ValuesError::MissingValue {
                    expression: unescape(&assignment),
                });
            }
            let key = &parts[0];
            // The value is everything after the first unescaped `=`.
            let raw = &assignment[key.len() + 1..];
            let path = parse_key(&assignment, key)?;
            assign(&mut root, &path, parse_value(raw, typing));
        }
        Ok(())
    })();
    if let Value::Object(map) = root {
        *values = map;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(args: &[(&str, Typing)]) -> Result<Value, ValuesError> {
        let mut values = Map::new();
        for (argument, typing) in args {
            apply_set(&mut values, argument, *typing)?;
        }
        Ok(Value::Object(values))
    }

    #[test]
    fn typed_values_follow_helm() {
        let got = set(&[("a=1,b=true,c=null,d=007,e=x,f=-3,g=1.5", Typing::Typed)]).unwrap();
        assert_eq!(
            got,
            json!({"a": 1, "b": true, "c": null, "d": "007", "e": "x", "f": -3, "g": "1.5"})
        );
    }

    #[test]
    fn set_string_keeps_strings() {
        let got = set(&[("image.tag=123,flag=true", Typing::Strings)]).unwrap();
        assert_eq!(got, json!({"image": {"tag": "123"}, "flag": "true"}));
    }

    #[test]
    fn nested_keys_lists_and_escapes() {
        let got = set(&[
            (r"podAnnotations.psctl\.io/fingerprint=abc", Typing::Typed),
            ("list={a,b,3}", Typing::Typed),
            ("items[1].name=x", Typing::Typed),
            (r"msg=a\,b", Typing::Typed),
            ("url=http://h/?a=b", Typing::Typed),
        ])
        .unwrap();
        assert_eq!(
            got,
            json!({
                "podAnnotations": {"psctl.io/fingerprint": "abc"},
                "list": ["a", "b", 3],
                "items": [null, {"name": "x"}],
                "msg": "a,b",
                "url": "http://h/?a=b",
            })
        );
    }

    #[test]
    fn later_set_overrides_earlier() {
        let got = set(&[("a.b=1", Typing::Typed), ("a.b=2,a.c=3", Typing::Typed)]).unwrap();
        assert_eq!(got, json!({"a": {"b": 2, "c": 3}}));
    }

    #[test]
    fn missing_value_is_an_error_naming_the_key() {
        let error = set(&[("image.tag", Typing::Typed)]).unwrap_err();
        assert_eq!(
            error,
            ValuesError::MissingValue {
                expression: "image.tag".to_string()
            }
        );
        assert!(set(&[("a[x]=1", Typing::Typed)]).is_err());
        assert!(set(&[("a[1=1", Typing::Typed)]).is_err());
    }

    #[test]
    fn files_merge_deeply_and_later_wins() {
        let mut base = parse_document(
            "a",
            "image:\n  repository: r\n  tag: one\nreplicaCount: 1\n",
        )
        .unwrap();
        let overlay = parse_document("b", "image:\n  tag: two\n").unwrap();
        merge(&mut base, overlay);
        assert_eq!(
            Value::Object(base),
            json!({"image": {"repository": "r", "tag": "two"}, "replicaCount": 1})
        );
        assert!(parse_document("c", "").unwrap().is_empty());
        assert!(parse_document("d", "- a\n").is_err());
    }
}
