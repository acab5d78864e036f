//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`): the `k8s\0` magic,
//! a `runtime.Unknown` envelope naming the kind, and the object itself, converted to the JSON form
//! the store keeps. kubectl's typed commands (`create deployment`, `create service`, `create
//! role`, `auth can-i`, `create token`...), Helm's release storage and client-go's `DeleteOptions`
//! send bodies this way.
//!
//! Decoding is driven by one table, `protobuf_schema.json`, written by
//! `tools/protobuf_schema.py` from `k8s-pb` (tags and wire types) and `k8s-openapi` (JSON names):
//! every message reachable from the kinds the server decodes. It converts as kube-apiserver does
//! when it decodes into the Go type and serves JSON: unknown tags are skipped, an empty string is
//! an absent field (Go's `omitempty`) unless the field is required, the types Go marshals by hand
//! (`Time`, `MicroTime`, `Duration`, `IntOrString`, `Quantity`, `RawExtension`, `FieldsV1`, the
//! CRD schema unions) take their JSON spelling, and embedded structs are flattened. Zero numbers
//! and `false` are kept: on the wire a Go pointer set to zero and a plain field look alike.
use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine as _;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use serde_json::{Map, Value, json};

use crate::status::ApiError;

const MAGIC: &[u8] = b"k8s\0";

/// Deeper nesting than this is refused, as prost refuses it (`RECURSION_LIMIT`).
const MAX_DEPTH: usize = 100;

fn envelope(body: &[u8]) -> Result<Unknown, ApiError> {
    let payload = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request(
            "protobuf body does not start with the Kubernetes magic prefix `k8s\\0`",
        )
    })?;
    Unknown::decode(payload).map_err(|error| {
        ApiError::bad_request(format!(
            "cannot decode the protobuf envelope (runtime.Unknown): {error}"
        ))
    })
}

/// The wire type of a field's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldKind {
    String,
    Bool,
    Int32,
    Int64,
    Double,
    Bytes,
    Message,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cardinality {
    One,
    Repeated,
    /// `map<string, kind>`: entries are messages of key 1 and value 2.
    Map,
}

/// Messages whose Go types marshal to JSON by hand rather than field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    Time,
    MicroTime,
    Duration,
    RawJson,
    IntOrString,
    Quantity,
    Items,
    SchemaOrArray,
    SchemaOrBool,
    SchemaOrStrings,
}

#[derive(Debug)]
struct Field {
    /// Empty for a Go struct embedded without a name: its fields are the parent's.
    json: String,
    kind: FieldKind,
    cardinality: Cardinality,
    required: bool,
    message: Option<String>,
}

#[derive(Debug, Default)]
struct MessageSchema {
    fields: HashMap<u32, Field>,
    special: Option<Special>,
}

#[derive(Debug)]
struct Schema {
    /// `apps/v1/Deployment` → `api.apps.v1.Deployment`.
    kinds: HashMap<String, String>,
    messages: HashMap<String, MessageSchema>,
}

fn parse_schema(text: &str) -> Result<Schema, String> {
    let document: Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let kinds = document["kinds"]
        .as_object()
        .ok_or("no kinds")?
        .iter()
        .map(|(kind, message)| {
            (
                kind.clone(),
                message.as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut messages = HashMap::new();
    for (name, entry) in document["messages"].as_object().ok_or("no messages")? {
        let special = match entry["special"].as_str() {
            None => None,
            Some("time") => Some(Special::Time),
            Some("microtime") => Some(Special::MicroTime),
            Some("duration") => Some(Special::Duration),
            Some("raw_json") => Some(Special::RawJson),
            Some("int_or_string") => Some(Special::IntOrString),
            Some("quantity") => Some(Special::Quantity),
            Some("items") => Some(Special::Items),
            Some("schema_or_array") => Some(Special::SchemaOrArray),
            Some("schema_or_bool") => Some(Special::SchemaOrBool),
            Some("schema_or_strings") => Some(Special::SchemaOrStrings),
            Some(other) => return Err(format!("{name}: unknown special {other}")),
        };
        let mut fields = HashMap::new();
        for field in entry["fields"].as_array().into_iter().flatten() {
            let tag = field[0].as_u64().ok_or_else(|| format!("{name}: no tag"))?;
            let kind = match field[2].as_str() {
                Some("string") => FieldKind::String,
                Some("bool") => FieldKind::Bool,
                Some("int32") => FieldKind::Int32,
                Some("int64") => FieldKind::Int64,
                Some("double") => FieldKind::Double,
                Some("bytes") => FieldKind::Bytes,
                Some("message") => FieldKind::Message,
                other => return Err(format!("{name}.{tag}: unknown kind {other:?}")),
            };
            let cardinality = match field[3].as_str() {
                Some("one") => Cardinality::One,
                Some("repeated") => Cardinality::Repeated,
                Some("map") => Cardinality::Map,
                other => return Err(format!("{name}.{tag}: unknown cardinality {other:?}")),
            };
            let tag = u32::try_from(tag).map_err(|error| error.to_string())?;
            fields.insert(
                tag,
                Field {
                    json: field[1].as_str().unwrap_or_default().to_owned(),
                    kind,
                    cardinality,
                    required: field[4].as_bool().unwrap_or_default(),
                    message: field[5].as_str().map(str::to_owned),
                },
            );
        }
        messages.insert(name.clone(), MessageSchema { fields, special });
    }
    Ok(Schema { kinds, messages })
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        parse_schema(include_str!("protobuf_schema.json"))
            .unwrap_or_else(|error| panic!("protobuf_schema.json is invalid: {error}"))
    })
}

fn wire_error(message: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("cannot decode the protobuf {message}: {error}"))
}

/// One value as read from the wire, before it is placed in the JSON object.
fn read_scalar(
    kind: FieldKind,
    wire: WireType,
    buf: &mut &[u8],
    context: &str,
) -> Result<Value, ApiError> {
    let expected = match kind {
        FieldKind::Bool | FieldKind::Int32 | FieldKind::Int64 => WireType::Varint,
        FieldKind::Double => WireType::SixtyFourBit,
        FieldKind::String | FieldKind::Bytes | FieldKind::Message => WireType::LengthDelimited,
    };
    if wire != expected {
        return Err(wire_error(
            context,
            format!("wire type {wire:?}, expected {expected:?}"),
        ));
    }
    Ok(match kind {
        FieldKind::Bool => json!(decode_varint(buf).map_err(|e| wire_error(context, e))? != 0),
        // Negative int32s are sign-extended to ten bytes on the wire; truncating is the decoding.
        #[allow(clippy::cast_possible_truncation)]
        FieldKind::Int32 => json!(decode_varint(buf).map_err(|e| wire_error(context, e))? as i32),
        #[allow(clippy::cast_possible_wrap)]
        FieldKind::Int64 => json!(decode_varint(buf).map_err(|e| wire_error(context, e))? as i64),
        FieldKind::Double => {
            if buf.remaining() < 8 {
                return Err(wire_error(context, "truncated double"));
            }
            json!(buf.get_f64_le())
        }
        FieldKind::String | FieldKind::Bytes | FieldKind::Message => {
            let bytes = read_bytes(buf, context)?;
            match kind {
                FieldKind::String => {
                    json!(std::str::from_utf8(bytes).map_err(|error| wire_error(context, error))?)
                }
                _ => json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            }
        }
    })
}

fn read_bytes<'a>(buf: &mut &'a [u8], context: &str) -> Result<&'a [u8], ApiError> {
    let length = decode_varint(buf).map_err(|error| wire_error(context, error))?;
    let length = usize::try_from(length).map_err(|error| wire_error(context, error))?;
    if length > buf.len() {
        return Err(wire_error(context, "length past the end of the body"));
    }
    let (bytes, rest) = buf.split_at(length);
    *buf = rest;
    Ok(bytes)
}

/// Reads one value of a field: a scalar, or a nested message decoded with its own schema.
fn read_value(
    field: &Field,
    kind: FieldKind,
    message: Option<&str>,
    wire: WireType,
    buf: &mut &[u8],
    depth: usize,
) -> Result<Value, ApiError> {
    if kind != FieldKind::Message {
        return read_scalar(kind, wire, buf, &field.json);
    }
    let name = message.unwrap_or_default();
    if wire != WireType::LengthDelimited {
        return Err(wire_error(
            name,
            format!("wire type {wire:?} for a message"),
        ));
    }
    let bytes = read_bytes(buf, name)?;
    decode_message(name, bytes, depth + 1)
}

/// The JSON form of one message of the table.
fn decode_message(name: &str, mut bytes: &[u8], depth: usize) -> Result<Value, ApiError> {
    if depth > MAX_DEPTH {
        return Err(wire_error(name, "nested too deeply"));
    }
    let schema = schema()
        .messages
        .get(name)
        .ok_or_else(|| ApiError::internal(format!("no protobuf schema for {name}")))?;
    let mut object = Map::new();
    let mut inline: Vec<Value> = Vec::new();
    let mut present: HashMap<u32, Value> = HashMap::new();
    while !bytes.is_empty() {
        let (tag, wire) = decode_key(&mut bytes).map_err(|error| wire_error(name, error))?;
        let Some(field) = schema.fields.get(&tag) else {
            skip_field(wire, tag, &mut bytes, DecodeContext::default())
                .map_err(|error| wire_error(name, error))?;
            continue;
        };
        match field.cardinality {
            Cardinality::One => {
                let value = read_value(
                    field,
                    field.kind,
                    field.message.as_deref(),
                    wire,
                    &mut bytes,
                    depth,
                )?;
                present.insert(tag, value);
            }
            Cardinality::Repeated => {
                let list = present.entry(tag).or_insert_with(|| json!([]));
                let packed = wire == WireType::LengthDelimited
                    && matches!(
                        field.kind,
                        FieldKind::Int32 | FieldKind::Int64 | FieldKind::Bool
                    );
                let values = if packed {
                    let mut packed_bytes = read_bytes(&mut bytes, &field.json)?;
                    let mut values = Vec::new();
                    while !packed_bytes.is_empty() {
                        values.push(read_scalar(
                            field.kind,
                            WireType::Varint,
                            &mut packed_bytes,
                            &field.json,
                        )?);
                    }
                    values
                } else {
                    vec![read_value(
                        field,
                        field.kind,
                        field.message.as_deref(),
                        wire,
                        &mut bytes,
                        depth,
                    )?]
                };
                if let Value::Array(list) = list {
                    list.extend(values);
                }
            }
            Cardinality::Map => {
                if wire != WireType::LengthDelimited {
                    return Err(wire_error(name, format!("map entry of wire type {wire:?}")));
                }
                let mut entry = read_bytes(&mut bytes, &field.json)?;
                let (mut key, mut value) = (String::new(), Value::Null);
                while !entry.is_empty() {
                    let (entry_tag, entry_wire) =
                        decode_key(&mut entry).map_err(|error| wire_error(name, error))?;
                    match entry_tag {
                        1 => {
                            key = read_scalar(
                                FieldKind::String,
                                entry_wire,
                                &mut entry,
                                &field.json,
                            )?
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        }
                        2 => {
                            value = read_value(
                                field,
                                field.kind,
                                field.message.as_deref(),
                                entry_wire,
                                &mut entry,
                                depth,
                            )?;
                        }
                        _ => {
                            skip_field(entry_wire, entry_tag, &mut entry, DecodeContext::default())
                                .map_err(|error| wire_error(name, error))?
                        }
                    }
                }
                if value.is_null() {
                    // An entry without a value is the value type's zero.
                    value = match field.kind {
                        FieldKind::Message => json!({}),
                        _ => json!(""),
                    };
                }
                let map = present.entry(tag).or_insert_with(|| json!({}));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
        }
    }
    if let Some(special) = schema.special {
        return special_json(special, name, &present);
    }
    for (tag, value) in present {
        let field = &schema.fields[&tag];
        if field.json.is_empty() {
            inline.push(value);
            continue;
        }
        let omitted = match &value {
            Value::String(text) => text.is_empty() && !field.required,
            Value::Null => true,
            _ => false,
        };
        if !omitted {
            object.insert(field.json.clone(), value);
        }
    }
    for embedded in inline {
        if let Value::Object(embedded) = embedded {
            object.extend(embedded);
        }
    }
    Ok(Value::Object(object))
}

/// The hand-written JSON of the types that have one.
fn special_json(
    special: Special,
    name: &str,
    present: &HashMap<u32, Value>,
) -> Result<Value, ApiError> {
    let field = |tag: u32| present.get(&tag);
    let integer = |tag: u32| field(tag).and_then(Value::as_i64).unwrap_or_default();
    Ok(match special {
        // The zero time is Go's `null`: the field is left out.
        Special::Time | Special::MicroTime => {
            let (seconds, nanos) = (integer(1), integer(2));
            if seconds == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let nanos = u32::try_from(nanos).map_err(|error| wire_error(name, error))?;
            let time = chrono::DateTime::from_timestamp(seconds, nanos)
                .ok_or_else(|| wire_error(name, "time out of range"))?;
            if special == Special::Time {
                json!(time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            } else {
                json!(time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            }
        }
        Special::Duration => json!(go_duration(integer(1))),
        Special::RawJson => {
            let raw = field(1).and_then(Value::as_str).unwrap_or_default();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|error| wire_error(name, error))?;
            if raw.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&raw).map_err(|error| wire_error(name, error))?
        }
        Special::IntOrString => {
            if integer(1) == 1 {
                field(3).cloned().unwrap_or_else(|| json!(""))
            } else {
                json!(integer(2))
            }
        }
        Special::Quantity => field(1).cloned().unwrap_or_else(|| json!("0")),
        Special::Items => field(1).cloned().unwrap_or_else(|| json!([])),
        Special::SchemaOrArray => field(1)
            .or_else(|| field(2))
            .cloned()
            .unwrap_or(Value::Null),
        Special::SchemaOrBool => field(2)
            .or_else(|| field(1))
            .cloned()
            .unwrap_or(json!(false)),
        Special::SchemaOrStrings => field(1)
            .or_else(|| field(2))
            .cloned()
            .unwrap_or(Value::Null),
    })
}

/// Go's `time.Duration.String()`: `1h2m3s`, `1.5s`, `300ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    let mut out = sign.to_owned();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

/// `value / scale` with the fraction's trailing zeros removed (`1500, 1000` → `1.5`).
fn fraction(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let fraction = format!("{rest:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// Decodes a protobuf object body into its JSON form: any kind of the table (every built-in kind
/// the server serves, the reviews and TokenRequest). Other kinds (custom resources, which
/// kube-apiserver serves only as JSON and YAML) are a 415, so the client knows to send JSON.
pub fn decode_object(body: &[u8]) -> Result<Value, ApiError> {
    let unknown = envelope(body)?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let Some(message) = schema().kinds.get(&format!("{api_version}/{kind}")) else {
        return Err(ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf ({api_version} {kind} has no protobuf form here; send JSON)"
        )));
    };
    let raw = unknown.raw.unwrap_or_default();
    let mut object = decode_message(message, &raw, 0)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

/// Decodes a protobuf `DeleteOptions` body into its JSON form.
pub fn decode_delete_options(body: &[u8]) -> Result<Value, ApiError> {
    let unknown = envelope(body)?;
    let mut object = decode_message(
        "apimachinery.pkg.apis.meta.v1.DeleteOptions",
        &unknown.raw.unwrap_or_default(),
        0,
    )?;
    object["kind"] = json!("DeleteOptions");
    object["apiVersion"] = json!("v1");
    Ok(object)
}

/// Encodes a message in the Kubernetes protobuf envelope (for tests and tools that need to
/// speak protobuf to the server).
pub fn encode_envelope(api_version: &str, kind: &str, message: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(message.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

#[cfg(test)]
mod tests {
    use k8s_pb::api::apps::v1::{
        Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
    };
    use k8s_pb::api::core::v1::{
        ConfigMapKeySelector, Container, ContainerPort, EnvVar, EnvVarSource, HttpGetAction,
        LocalObjectReference, Namespace, PodSpec, PodTemplateSpec, Probe, ProbeHandler,
        ResourceRequirements, Secret, Service, ServicePort, ServiceSpec,
    };
    use k8s_pb::api::rbac::v1::{PolicyRule, Role};
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{
        DeleteOptions, LabelSelector, ObjectMeta, Time,
    };
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;

    fn meta(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: Some(name.to_owned()),
            // What Go's marshaller writes for fields it always writes: present and empty.
            generate_name: Some(String::new()),
            namespace: Some(String::new()),
            creation_timestamp: Some(Time::default()),
            ..ObjectMeta::default()
        })
    }

    fn int_or_string_text(text: &str) -> Option<IntOrString> {
        Some(IntOrString {
            r#type: Some(1),
            int_val: Some(0),
            str_val: Some(text.to_owned()),
        })
    }

    fn int_or_string_number(number: i32) -> Option<IntOrString> {
        Some(IntOrString {
            r#type: Some(0),
            int_val: Some(number),
            str_val: Some(String::new()),
        })
    }

    /// What `kubectl create deployment web --image=... --replicas=0` sends, and more.
    #[test]
    fn deployment_decodes_with_nested_messages_inline_structs_and_special_types() {
        let labels: std::collections::BTreeMap<String, String> =
            [("app".to_owned(), "web".to_owned())].into_iter().collect();
        let container = Container {
            name: Some("app".to_owned()),
            image: Some("registry/web:1".to_owned()),
            image_pull_policy: Some(String::new()),
            stdin: Some(false),
            ports: vec![ContainerPort {
                name: Some("http".to_owned()),
                container_port: Some(8080),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }],
            resources: Some(ResourceRequirements {
                limits: [(
                    "memory".to_owned(),
                    Quantity {
                        string: Some("128Mi".to_owned()),
                    },
                )]
                .into_iter()
                .collect(),
                ..ResourceRequirements::default()
            }),
            env: vec![EnvVar {
                name: Some("MODE".to_owned()),
                value: Some(String::new()),
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        local_object_reference: Some(LocalObjectReference {
                            name: Some("settings".to_owned()),
                        }),
                        key: Some("mode".to_owned()),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
            }],
            readiness_probe: Some(Probe {
                handler: Some(ProbeHandler {
                    http_get: Some(HttpGetAction {
                        path: Some("/ready".to_owned()),
                        port: int_or_string_number(8080),
                        ..HttpGetAction::default()
                    }),
                    ..ProbeHandler::default()
                }),
                period_seconds: Some(5),
                ..Probe::default()
            }),
            ..Container::default()
        };
        let deployment = Deployment {
            metadata: meta("web"),
            spec: Some(DeploymentSpec {
                replicas: Some(0),
                selector: Some(LabelSelector {
                    match_labels: labels.clone(),
                    ..LabelSelector::default()
                }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels,
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        ..PodSpec::default()
                    }),
                }),
                strategy: Some(DeploymentStrategy {
                    r#type: Some(String::new()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable: int_or_string_number(0),
                        max_surge: int_or_string_text("25%"),
                    }),
                }),
                ..DeploymentSpec::default()
            }),
            status: Some(Default::default()),
        };
        let object =
            decode_object(&encode_envelope("apps/v1", "Deployment", &deployment)).expect("decodes");
        assert_eq!(object["apiVersion"], "apps/v1");
        assert_eq!(object["kind"], "Deployment");
        assert_eq!(
            object["metadata"],
            json!({ "name": "web" }),
            "empty strings and the zero time are absent"
        );
        assert_eq!(object["spec"]["replicas"], 0, "an explicit zero is kept");
        assert_eq!(
            object["spec"]["selector"],
            json!({ "matchLabels": { "app": "web" } })
        );
        assert_eq!(
            object["spec"]["strategy"],
            json!({ "rollingUpdate": { "maxUnavailable": 0, "maxSurge": "25%" } })
        );
        assert_eq!(object["status"], json!({}));
        let container = &object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["name"], "app");
        assert!(
            container.get("imagePullPolicy").is_none(),
            "left for defaulting: {container}"
        );
        assert_eq!(
            container["ports"],
            json!([{ "name": "http", "containerPort": 8080, "protocol": "TCP" }])
        );
        assert_eq!(
            container["resources"],
            json!({ "limits": { "memory": "128Mi" } })
        );
        assert_eq!(
            container["env"],
            json!([{ "name": "MODE", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "mode" } } }])
        );
        assert_eq!(
            container["readinessProbe"],
            json!({ "httpGet": { "path": "/ready", "port": 8080 }, "periodSeconds": 5 })
        );
    }

    #[test]
    fn service_and_role_decode() {
        let service = Service {
            metadata: meta("web"),
            spec: Some(ServiceSpec {
                r#type: Some("ClusterIP".to_owned()),
                ports: vec![ServicePort {
                    name: Some("80-8080".to_owned()),
                    port: Some(80),
                    target_port: int_or_string_number(8080),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                }],
                selector: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let object = decode_object(&encode_envelope("v1", "Service", &service)).expect("decodes");
        assert_eq!(object["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(object["spec"]["selector"]["app"], "web");
        assert!(object.get("status").is_none());

        let role = Role {
            metadata: meta("reader"),
            rules: vec![PolicyRule {
                verbs: vec!["get".to_owned(), "list".to_owned()],
                api_groups: vec![String::new()],
                resources: vec!["pods".to_owned()],
                ..PolicyRule::default()
            }],
        };
        let object = decode_object(&encode_envelope(
            "rbac.authorization.k8s.io/v1",
            "Role",
            &role,
        ))
        .expect("decodes");
        assert_eq!(
            object["rules"],
            json!([{ "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"] }]),
            "empty strings inside lists are values, not absent fields"
        );
    }

    #[test]
    fn unknown_tags_are_skipped_and_truncated_bodies_refused() {
        let mut raw = Namespace {
            metadata: meta("team"),
            ..Namespace::default()
        }
        .encode_to_vec();
        // Field 99, varint 1: a field a newer client knows and this release does not.
        raw.extend([0x98, 0x06, 0x01]);
        let unknown = Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("v1".to_owned()),
                kind: Some("Namespace".to_owned()),
            }),
            raw: Some(raw.clone()),
            ..Unknown::default()
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        assert_eq!(
            decode_object(&body).expect("decodes")["metadata"]["name"],
            "team"
        );

        let truncated = Unknown {
            raw: Some(raw[..raw.len() - 4].to_vec()),
            ..unknown
        };
        let mut body = MAGIC.to_vec();
        body.extend(truncated.encode_to_vec());
        assert_eq!(decode_object(&body).expect_err("truncated").code, 400);
    }

    #[test]
    fn every_builtin_kind_served_has_a_protobuf_form() {
        for resource in crate::resources::builtin() {
            let key = format!("{}/{}", resource.api_version(), resource.kind);
            assert!(
                schema().kinds.contains_key(&key),
                "{key} has no protobuf schema"
            );
        }
        for message in schema().kinds.values() {
            assert!(schema().messages.contains_key(message), "{message}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(-60_000_000_000), "-1m0s");
    }

    #[test]
    fn secret_round_trips_to_json_with_base64_data() {
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: Some("sh.helm.release.v1.web.v1".to_owned()),
                labels: [("owner".to_owned(), "helm".to_owned())]
                    .into_iter()
                    .collect(),
                ..ObjectMeta::default()
            }),
            data: [("release".to_owned(), b"payload".to_vec())]
                .into_iter()
                .collect(),
            r#type: Some("helm.sh/release.v1".to_owned()),
            ..Secret::default()
        };
        let object = decode_object(&encode_envelope("v1", "Secret", &secret)).expect("decodes");
        assert_eq!(object["metadata"]["name"], "sh.helm.release.v1.web.v1");
        assert_eq!(object["metadata"]["labels"]["owner"], "helm");
        assert_eq!(object["data"]["release"], "cGF5bG9hZA==");
        assert_eq!(object["type"], "helm.sh/release.v1");
    }

    #[test]
    fn missing_magic_and_unknown_kinds_are_refused() {
        assert_eq!(decode_object(b"{}").expect_err("no magic").code, 400);
        let custom = encode_envelope(
            "monitoring.coreos.com/v1",
            "PrometheusRule",
            &Secret::default(),
        );
        assert_eq!(decode_object(&custom).expect_err("unsupported").code, 415);
    }

    #[test]
    fn namespace_decodes() {
        let namespace = Namespace {
            metadata: Some(ObjectMeta {
                name: Some("team".to_owned()),
                ..ObjectMeta::default()
            }),
            ..Namespace::default()
        };
        let object =
            decode_object(&encode_envelope("v1", "Namespace", &namespace)).expect("decodes");
        assert_eq!(object["kind"], "Namespace");
        assert_eq!(object["metadata"]["name"], "team");
    }

    #[test]
    fn delete_options_decode() {
        let options = DeleteOptions {
            propagation_policy: Some("Orphan".to_owned()),
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        let json = decode_delete_options(&encode_envelope("v1", "DeleteOptions", &options))
            .expect("decodes");
        assert_eq!(json["propagationPolicy"], "Orphan");
        assert_eq!(json["gracePeriodSeconds"], 0);
    }
}
