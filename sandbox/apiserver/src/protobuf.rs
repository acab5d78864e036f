//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`): the `k8s\0` magic,
//! a `runtime.Unknown` envelope naming the kind, and the object itself, decoded with `k8s-pb` and
//! converted to the JSON form the store keeps. Helm's release storage writes Secrets this way and
//! client-go may send `DeleteOptions` this way, and kubectl's `auth can-i`, `auth whoami` and
//! `create token` send their reviews and TokenRequests this way; answers are always JSON.

use base64::Engine as _;
use k8s_pb::api::authentication::v1::{SelfSubjectReview, TokenRequest};
use k8s_pb::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use k8s_pb::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_pb::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Time};
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

const MAGIC: &[u8] = b"k8s\0";

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

fn time(value: &Time) -> Value {
    let seconds = value.seconds.unwrap_or_default();
    chrono::DateTime::from_timestamp(seconds, 0).map_or(Value::Null, |time| {
        json!(time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
    })
}

fn insert_string(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(value) = value.as_ref().filter(|value| !value.is_empty()) {
        map.insert(key.to_owned(), json!(value));
    }
}

fn metadata(meta: &ObjectMeta) -> Value {
    let mut map = Map::new();
    insert_string(&mut map, "name", &meta.name);
    insert_string(&mut map, "generateName", &meta.generate_name);
    insert_string(&mut map, "namespace", &meta.namespace);
    insert_string(&mut map, "uid", &meta.uid);
    insert_string(&mut map, "resourceVersion", &meta.resource_version);
    if let Some(generation) = meta.generation {
        map.insert("generation".to_owned(), json!(generation));
    }
    if let Some(created) = &meta.creation_timestamp {
        map.insert("creationTimestamp".to_owned(), time(created));
    }
    if let Some(deleted) = &meta.deletion_timestamp {
        map.insert("deletionTimestamp".to_owned(), time(deleted));
    }
    if !meta.labels.is_empty() {
        map.insert("labels".to_owned(), json!(meta.labels));
    }
    if !meta.annotations.is_empty() {
        map.insert("annotations".to_owned(), json!(meta.annotations));
    }
    if !meta.owner_references.is_empty() {
        let owners: Vec<Value> = meta
            .owner_references
            .iter()
            .map(|owner| {
                let mut entry = json!({ "apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid });
                if let Some(controller) = owner.controller {
                    entry["controller"] = json!(controller);
                }
                if let Some(block) = owner.block_owner_deletion {
                    entry["blockOwnerDeletion"] = json!(block);
                }
                entry
            })
            .collect();
        map.insert("ownerReferences".to_owned(), json!(owners));
    }
    if !meta.finalizers.is_empty() {
        map.insert("finalizers".to_owned(), json!(meta.finalizers));
    }
    Value::Object(map)
}

fn encode_bytes(data: &std::collections::BTreeMap<String, Vec<u8>>) -> Value {
    Value::Object(
        data.iter()
            .map(|(key, bytes)| {
                (
                    key.clone(),
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
                )
            })
            .collect(),
    )
}

/// Decodes a protobuf object body into its JSON form. Secrets, ConfigMaps, Namespaces and
/// ServiceAccounts (what Helm and kubectl's typed `create` commands send) are understood;
/// other kinds are a 415 so the client knows to send JSON.
pub fn decode_object(body: &[u8]) -> Result<Value, ApiError> {
    let unknown = envelope(body)?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let decode_error = |error: prost::DecodeError| {
        ApiError::bad_request(format!("cannot decode the protobuf {kind}: {error}"))
    };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => {
            let secret = Secret::decode(raw.as_slice()).map_err(decode_error)?;
            let mut object = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": metadata(&secret.metadata.unwrap_or_default()) });
            if !secret.data.is_empty() {
                object["data"] = encode_bytes(&secret.data);
            }
            if !secret.string_data.is_empty() {
                object["stringData"] = json!(secret.string_data);
            }
            if let Some(kind) = secret.r#type.filter(|kind| !kind.is_empty()) {
                object["type"] = json!(kind);
            }
            if let Some(immutable) = secret.immutable {
                object["immutable"] = json!(immutable);
            }
            Ok(object)
        }
        ("v1", "ConfigMap") => {
            let config_map = ConfigMap::decode(raw.as_slice()).map_err(decode_error)?;
            let mut object = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(&config_map.metadata.unwrap_or_default()) });
            if !config_map.data.is_empty() {
                object["data"] = json!(config_map.data);
            }
            if !config_map.binary_data.is_empty() {
                object["binaryData"] = encode_bytes(&config_map.binary_data);
            }
            if let Some(immutable) = config_map.immutable {
                object["immutable"] = json!(immutable);
            }
            Ok(object)
        }
        ("v1", "Namespace") => {
            let namespace = Namespace::decode(raw.as_slice()).map_err(decode_error)?;
            let mut object = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata(&namespace.metadata.unwrap_or_default()) });
            if let Some(spec) = namespace.spec.filter(|spec| !spec.finalizers.is_empty()) {
                object["spec"] = json!({ "finalizers": spec.finalizers });
            }
            Ok(object)
        }
        ("v1", "ServiceAccount") => {
            let account = ServiceAccount::decode(raw.as_slice()).map_err(decode_error)?;
            let mut object = json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(&account.metadata.unwrap_or_default()) });
            if let Some(automount) = account.automount_service_account_token {
                object["automountServiceAccountToken"] = json!(automount);
            }
            Ok(object)
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            let request = TokenRequest::decode(raw.as_slice()).map_err(decode_error)?;
            let spec = request.spec.unwrap_or_default();
            let mut object = json!({ "apiVersion": api_version, "kind": kind, "spec": { "audiences": spec.audiences } });
            if let Some(seconds) = spec.expiration_seconds {
                object["spec"]["expirationSeconds"] = json!(seconds);
            }
            if let Some(bound) = spec.bound_object_ref {
                object["spec"]["boundObjectRef"] = json!({ "kind": bound.kind, "apiVersion": bound.api_version, "name": bound.name, "uid": bound.u_id });
            }
            Ok(object)
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            SelfSubjectReview::decode(raw.as_slice()).map_err(decode_error)?;
            Ok(json!({ "apiVersion": api_version, "kind": kind }))
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let review = SelfSubjectAccessReview::decode(raw.as_slice()).map_err(decode_error)?;
            let spec = review.spec.unwrap_or_default();
            let mut object = json!({ "apiVersion": api_version, "kind": kind, "spec": {} });
            if let Some(attributes) = spec.resource_attributes {
                object["spec"]["resourceAttributes"] = json!({
                    "namespace": attributes.namespace, "verb": attributes.verb, "group": attributes.group,
                    "version": attributes.version, "resource": attributes.resource,
                    "subresource": attributes.subresource, "name": attributes.name,
                });
            }
            if let Some(attributes) = spec.non_resource_attributes {
                object["spec"]["nonResourceAttributes"] =
                    json!({ "path": attributes.path, "verb": attributes.verb });
            }
            Ok(object)
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let review = SelfSubjectRulesReview::decode(raw.as_slice()).map_err(decode_error)?;
            let namespace = review.spec.unwrap_or_default().namespace;
            Ok(
                json!({ "apiVersion": api_version, "kind": kind, "spec": { "namespace": namespace } }),
            )
        }
        _ => Err(ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf ({api_version} {kind}: only v1 Secret, ConfigMap, Namespace and ServiceAccount, TokenRequest and the self reviews are decoded; send JSON)"
        ))),
    }
}

/// Decodes a protobuf `DeleteOptions` body into its JSON form.
pub fn decode_delete_options(body: &[u8]) -> Result<Value, ApiError> {
    let unknown = envelope(body)?;
    let options =
        DeleteOptions::decode(unknown.raw.unwrap_or_default().as_slice()).map_err(|error| {
            ApiError::bad_request(format!("cannot decode the protobuf DeleteOptions: {error}"))
        })?;
    let mut object = json!({ "kind": "DeleteOptions", "apiVersion": "v1" });
    if let Some(grace) = options.grace_period_seconds {
        object["gracePeriodSeconds"] = json!(grace);
    }
    if let Some(policy) = options.propagation_policy {
        object["propagationPolicy"] = json!(policy);
    }
    if let Some(orphan) = options.orphan_dependents {
        object["orphanDependents"] = json!(orphan);
    }
    if let Some(preconditions) = options.preconditions {
        object["preconditions"] =
            json!({ "uid": preconditions.uid, "resourceVersion": preconditions.resource_version });
    }
    if !options.dry_run.is_empty() {
        object["dryRun"] = json!(options.dry_run);
    }
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
    use super::*;

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
        let other = encode_envelope("apps/v1", "Deployment", &Secret::default());
        assert_eq!(decode_object(&other).expect_err("unsupported").code, 415);
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
