//! The `ServiceAccount` admission plugin of kube-apiserver
//! (`plugin/pkg/admission/serviceaccount`), on pod CREATE: the pod runs as `default` unless it
//! names a ServiceAccount, that ServiceAccount must exist, and, unless automounting is turned off
//! (the pod's `automountServiceAccountToken` wins over the ServiceAccount's), every container
//! gets the projected volume `kube-api-access-<random>` mounted read-only at
//! [`TOKEN_MOUNT_PATH`]: a bound token the kubelet requests for the pod, the cluster's CA from
//! the `kube-root-ca.crt` ConfigMap, and the namespace. Pure: the handler passes the pod and the
//! ServiceAccount it found.

use serde_json::{Value, json};

/// Where containers find the token, `ca.crt` and `namespace`.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime the projected token asks for: an hour and seven seconds, the value kube-apiserver
/// recognises as a kubelet's default request (and extends; see [`crate::auth`]).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The projected files' mode (0644), as the plugin sets it.
const DEFAULT_MODE: i64 = 0o644;

/// The ServiceAccount `pod` runs as, its default (`default`) written into the spec, in the
/// deprecated `serviceAccount` field too (the v1 conversion copies it there).
pub fn service_account_name(pod: &mut Value) -> String {
    let name = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .or_else(|| {
            pod.pointer("/spec/serviceAccount")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
        })
        .unwrap_or("default")
        .to_owned();
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("serviceAccountName".to_owned(), json!(name));
        spec.insert("serviceAccount".to_owned(), json!(name));
    }
    name
}

/// Whether the token is mounted: the pod's `automountServiceAccountToken` when set, else the
/// ServiceAccount's, else yes.
pub fn should_automount(pod: &Value, account: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// The projected volume named `name`, as the plugin builds it.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": DEFAULT_MODE,
            "sources": [
                { "serviceAccountToken": { "expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token" } },
                { "configMap": { "name": crate::handlers::ROOT_CA_CONFIG_MAP, "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
            ],
        },
    })
}

/// Admits `pod` as the ServiceAccount `account` (already looked up): mounts the token volume
/// into every init and app container that has nothing at [`TOKEN_MOUNT_PATH`] yet, reusing a
/// `kube-api-access-*` volume the pod already has, else adding one named with `suffix`. True
/// when the pod changed.
pub fn mount_token(pod: &mut Value, account: &Value, suffix: &str) -> bool {
    if !should_automount(pod, account) {
        return false;
    }
    let existing = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.get("name").and_then(Value::as_str))
        .find(|name| name.starts_with(VOLUME_PREFIX))
        .map(str::to_owned);
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mount = json!({ "name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH });
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for container in containers {
            let mounted = container
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|mount| {
                    mount.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)
                });
            if mounted {
                continue;
            }
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(mounts) = mounts.as_array_mut() {
                mounts.push(mount.clone());
                needs_volume = true;
            }
        }
    }
    if needs_volume
        && existing.is_none()
        && let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
    {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(token_volume(&volume_name));
        }
    }
    needs_volume
}

/// Five characters of Kubernetes' name generator alphabet (no vowels, no confusable digits).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({ "metadata": { "name": "p" }, "spec": spec })
    }

    #[test]
    fn default_account_is_written_into_both_fields() {
        let mut unnamed = pod(json!({ "containers": [{ "name": "app" }] }));
        assert_eq!(service_account_name(&mut unnamed), "default");
        assert_eq!(unnamed["spec"]["serviceAccountName"], "default");
        assert_eq!(unnamed["spec"]["serviceAccount"], "default");
        let mut named = pod(json!({ "serviceAccountName": "ci", "containers": [] }));
        assert_eq!(service_account_name(&mut named), "ci");
        assert_eq!(named["spec"]["serviceAccount"], "ci");
    }

    #[test]
    fn every_container_gets_the_projected_token_volume() {
        let mut admitted = pod(json!({
            "initContainers": [{ "name": "init" }],
            "containers": [{ "name": "app", "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }] }, { "name": "side" }],
            "volumes": [{ "name": "tmp", "emptyDir": {} }],
        }));
        assert!(mount_token(&mut admitted, &json!({}), "abcde"));
        let volumes = admitted["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[1], token_volume("kube-api-access-abcde"));
        assert_eq!(
            volumes[1]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        assert_eq!(volumes[1]["projected"]["defaultMode"], 420);
        for path in [
            "/spec/initContainers/0/volumeMounts/0",
            "/spec/containers/0/volumeMounts/1",
            "/spec/containers/1/volumeMounts/0",
        ] {
            assert_eq!(
                admitted.pointer(path),
                Some(
                    &json!({ "name": "kube-api-access-abcde", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH })
                ),
                "{path}"
            );
        }
        // Admitted twice (an update re-validated), nothing is added again.
        assert!(!mount_token(&mut admitted, &json!({}), "zzzzz"));
        assert_eq!(
            admitted["spec"]["volumes"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn the_pod_setting_wins_over_the_service_account() {
        let off = json!({ "automountServiceAccountToken": false });
        let on = json!({ "automountServiceAccountToken": true });
        let mut plain = pod(json!({ "containers": [{ "name": "app" }] }));
        assert!(!mount_token(&mut plain.clone(), &off, "abcde"));
        assert!(mount_token(&mut plain, &on, "abcde"));
        let mut pod_off = pod(
            json!({ "automountServiceAccountToken": false, "containers": [{ "name": "app" }] }),
        );
        assert!(!mount_token(&mut pod_off, &on, "abcde"));
        assert!(pod_off["spec"].get("volumes").is_none());
        let mut pod_on =
            pod(json!({ "automountServiceAccountToken": true, "containers": [{ "name": "app" }] }));
        assert!(mount_token(&mut pod_on, &off, "abcde"));
    }

    #[test]
    fn a_container_with_its_own_mount_there_keeps_it() {
        let mut own = pod(json!({
            "containers": [{ "name": "app", "volumeMounts": [{ "name": "mine", "mountPath": TOKEN_MOUNT_PATH }] }],
            "volumes": [{ "name": "mine", "emptyDir": {} }],
        }));
        assert!(!mount_token(&mut own, &json!({}), "abcde"));
        assert_eq!(own["spec"]["volumes"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn suffixes_use_the_name_generator_alphabet() {
        let suffix = random_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }
}
