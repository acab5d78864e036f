//! Pod volumes as the sandbox kubelet can provide them: `emptyDir` becomes a tmpfs mount
//! (writable by any user, sized by `sizeLimit`); `projected` volumes (what the ServiceAccount
//! admission adds as `kube-api-access-*`) are written as files under the kubelet's root
//! directory and bind-mounted, from `serviceAccountToken` (a TokenRequest bound to the pod),
//! `configMap` and `downwardAPI` sources. Other volume types are refused with a
//! CreateContainerConfigError message rather than silently left out.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ProjectedVolumeSource, Volume};

use super::docker::parse_quantity;

/// What a container mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMounts {
    /// emptyDir volumes: (mount path, size limit in bytes).
    pub tmpfs: Vec<(String, Option<u64>)>,
    /// projected volumes: (volume name, mount path, read-only).
    pub projected: Vec<(String, String, bool)>,
}

/// One file of a projected volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedFile {
    /// Path relative to the volume.
    pub path: String,
    /// Content.
    pub content: Vec<u8>,
    /// File mode.
    pub mode: u32,
}

/// The projected volume's `serviceAccountToken` source: what to ask the API server for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    /// `expirationSeconds` (3600 when unset, as the API defaults it).
    pub expiration_seconds: i64,
    /// The audience, when one is named.
    pub audience: Option<String>,
    /// Where the token goes.
    pub path: String,
}

fn pod_volumes(pod: &Pod) -> Vec<Volume> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.volumes.clone())
        .unwrap_or_default()
}

/// The mounts of `container`, or why the pod cannot run here.
pub fn container_mounts(pod: &Pod, container: &Container) -> Result<ContainerMounts, String> {
    let volumes = pod_volumes(pod);
    let mut mounts = ContainerMounts::default();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.iter().find(|volume| volume.name == mount.name) else {
            return Err(format!(
                "volume \"{}\" is mounted but not defined in the pod",
                mount.name
            ));
        };
        if let Some(empty_dir) = &volume.empty_dir {
            let size = empty_dir
                .size_limit
                .as_ref()
                .and_then(|quantity| parse_quantity(&quantity.0))
                .map(|bytes| bytes as u64);
            mounts.tmpfs.push((mount.mount_path.clone(), size));
        } else if volume.projected.is_some() {
            // A projected volume is read-only whatever the mount says, as on a real node.
            mounts
                .projected
                .push((volume.name.clone(), mount.mount_path.clone(), true));
        } else {
            return Err(format!(
                "volume \"{}\" is neither an emptyDir nor a projected volume; the sandbox kubelet supports only those",
                volume.name
            ));
        }
    }
    Ok(mounts)
}

/// The projected volume `name` of `pod`.
pub fn projected_source(pod: &Pod, name: &str) -> Option<ProjectedVolumeSource> {
    pod_volumes(pod)
        .into_iter()
        .find(|volume| volume.name == name)
        .and_then(|volume| volume.projected)
}

/// The token `source` asks for, if it has a `serviceAccountToken` source.
pub fn token_source(source: &ProjectedVolumeSource) -> Option<TokenSource> {
    source
        .sources
        .iter()
        .flatten()
        .find_map(|projection| projection.service_account_token.as_ref())
        .map(|token| TokenSource {
            expiration_seconds: token.expiration_seconds.unwrap_or(3600),
            audience: token
                .audience
                .clone()
                .filter(|audience| !audience.is_empty()),
            path: token.path.clone(),
        })
}

/// The ConfigMaps `source` reads.
pub fn config_map_names(source: &ProjectedVolumeSource) -> Vec<String> {
    source
        .sources
        .iter()
        .flatten()
        .filter_map(|projection| projection.config_map.as_ref())
        .map(|config_map| config_map.name.clone())
        .collect()
}

/// The files of the projected volume `source` of `pod`, given the token issued for it and the
/// ConfigMaps it names (those found), or why it cannot be made (the kubelet's messages).
pub fn projected_files(
    pod: &Pod,
    source: &ProjectedVolumeSource,
    token: Option<&str>,
    config_maps: &HashMap<String, ConfigMap>,
) -> Result<Vec<ProjectedFile>, String> {
    let default_mode = source.default_mode.unwrap_or(0o644) as u32;
    let mut files = Vec::new();
    for projection in source.sources.iter().flatten() {
        if let Some(requested) = &projection.service_account_token {
            let token = token.ok_or("no token was issued for the projected volume")?;
            files.push(ProjectedFile {
                path: requested.path.clone(),
                content: token.as_bytes().to_vec(),
                mode: default_mode,
            });
        } else if let Some(reference) = &projection.config_map {
            let Some(config_map) = config_maps.get(&reference.name) else {
                if reference.optional == Some(true) {
                    continue;
                }
                return Err(format!("configmap \"{}\" not found", reference.name));
            };
            let data = config_map.data.clone().unwrap_or_default();
            match &reference.items {
                Some(items) => {
                    for item in items {
                        let Some(value) = data.get(&item.key) else {
                            if reference.optional == Some(true) {
                                continue;
                            }
                            return Err(format!(
                                "configmap references non-existent config key: {}",
                                item.key
                            ));
                        };
                        files.push(ProjectedFile {
                            path: item.path.clone(),
                            content: value.as_bytes().to_vec(),
                            mode: item.mode.map_or(default_mode, |mode| mode as u32),
                        });
                    }
                }
                None => {
                    for (key, value) in data {
                        files.push(ProjectedFile {
                            path: key,
                            content: value.into_bytes(),
                            mode: default_mode,
                        });
                    }
                }
            }
        } else if let Some(downward) = &projection.downward_api {
            for item in downward.items.iter().flatten() {
                let Some(field) = &item.field_ref else {
                    return Err(format!(
                        "downwardAPI item {} has no fieldRef; the sandbox kubelet supports fieldRef only",
                        item.path
                    ));
                };
                files.push(ProjectedFile {
                    path: item.path.clone(),
                    content: super::env::pod_field(&field.field_path, pod)?.into_bytes(),
                    mode: item.mode.map_or(default_mode, |mode| mode as u32),
                });
            }
        } else {
            return Err(
                "a projected volume source other than serviceAccountToken, configMap or downwardAPI is not supported by the sandbox kubelet"
                    .to_owned(),
            );
        }
    }
    for file in &files {
        if file.path.starts_with('/') || file.path.split('/').any(|part| part == "..") {
            return Err(format!("invalid projected path {:?}", file.path));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EmptyDirVolumeSource, PodSpec, SecretVolumeSource, Volume, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn mount(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.to_owned(),
            mount_path: path.to_owned(),
            ..VolumeMount::default()
        }
    }

    #[test]
    fn empty_dirs_become_sized_tmpfs_and_other_volumes_are_refused() {
        let pod = Pod {
            spec: Some(PodSpec {
                volumes: Some(vec![
                    Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            medium: None,
                            size_limit: Some(Quantity("64Mi".to_owned())),
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "creds".to_owned(),
                        secret: Some(SecretVolumeSource::default()),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let container = Container {
            volume_mounts: Some(vec![mount("tmp", "/tmp")]),
            ..Container::default()
        };
        assert_eq!(
            container_mounts(&pod, &container).map(|mounts| mounts.tmpfs),
            Ok(vec![("/tmp".to_owned(), Some(64 * 1024 * 1024))])
        );
        let container = Container {
            volume_mounts: Some(vec![mount("creds", "/creds")]),
            ..Container::default()
        };
        assert!(
            container_mounts(&pod, &container)
                .is_err_and(|error| error.contains("neither an emptyDir nor a projected"))
        );
        let container = Container {
            volume_mounts: Some(vec![mount("ghost", "/x")]),
            ..Container::default()
        };
        assert!(
            container_mounts(&pod, &container).is_err_and(|error| error.contains("not defined"))
        );
    }

    fn api_access_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "job", "namespace": "ci", "uid": "u-1" },
            "spec": {
                "containers": [{ "name": "app", "volumeMounts": [
                    { "name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true }] }],
                "volumes": [{ "name": "kube-api-access-x7k2p", "projected": {
                    "defaultMode": 420,
                    "sources": [
                        { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                        { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                        { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
                    ] } }],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn the_api_access_volume_holds_token_ca_and_namespace() {
        let pod = api_access_pod();
        let container = pod.spec.as_ref().expect("spec").containers[0].clone();
        let mounts = container_mounts(&pod, &container).expect("mounts");
        assert_eq!(
            mounts.projected,
            vec![(
                "kube-api-access-x7k2p".to_owned(),
                "/var/run/secrets/kubernetes.io/serviceaccount".to_owned(),
                true
            )]
        );
        let source = projected_source(&pod, "kube-api-access-x7k2p").expect("projected");
        assert_eq!(
            token_source(&source),
            Some(TokenSource {
                expiration_seconds: 3607,
                audience: None,
                path: "token".to_owned()
            })
        );
        assert_eq!(config_map_names(&source), vec!["kube-root-ca.crt"]);
        let root_ca: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "kube-root-ca.crt" },
            "data": { "ca.crt": "-----BEGIN CERTIFICATE-----" },
        }))
        .expect("configmap");
        let config_maps = HashMap::from([("kube-root-ca.crt".to_owned(), root_ca)]);
        let files = projected_files(&pod, &source, Some("tok"), &config_maps).expect("files");
        let summary: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|file| (file.path.as_str(), file.content.as_slice(), file.mode))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("token", b"tok".as_slice(), 0o644),
                ("ca.crt", b"-----BEGIN CERTIFICATE-----".as_slice(), 0o644),
                ("namespace", b"ci".as_slice(), 0o644),
            ]
        );
        assert!(
            projected_files(&pod, &source, Some("tok"), &HashMap::new())
                .is_err_and(|error| error == "configmap \"kube-root-ca.crt\" not found")
        );
        assert!(projected_files(&pod, &source, None, &config_maps).is_err());
    }
}
