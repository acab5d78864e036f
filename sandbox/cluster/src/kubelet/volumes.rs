//! Pod volumes as the sandbox kubelet can provide them: `emptyDir` becomes a tmpfs mount
//! (writable by any user, sized by `sizeLimit`); other volume types are refused with a
//! CreateContainerConfigError message rather than silently left out.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::docker::parse_quantity;

/// The tmpfs mounts (path, size in bytes) for `container`, or why the pod cannot run here.
pub fn tmpfs_mounts(
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, Option<u64>)>, String> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.volumes.clone())
        .unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.iter().find(|volume| volume.name == mount.name) else {
            return Err(format!(
                "volume \"{}\" is mounted but not defined in the pod",
                mount.name
            ));
        };
        let Some(empty_dir) = &volume.empty_dir else {
            return Err(format!(
                "volume \"{}\" is not an emptyDir; the sandbox kubelet supports emptyDir volumes only",
                volume.name
            ));
        };
        let size = empty_dir
            .size_limit
            .as_ref()
            .and_then(|quantity| parse_quantity(&quantity.0))
            .map(|bytes| bytes as u64);
        mounts.push((mount.mount_path.clone(), size));
    }
    Ok(mounts)
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
            tmpfs_mounts(&pod, &container),
            Ok(vec![("/tmp".to_owned(), Some(64 * 1024 * 1024))])
        );
        let container = Container {
            volume_mounts: Some(vec![mount("creds", "/creds")]),
            ..Container::default()
        };
        assert!(
            tmpfs_mounts(&pod, &container)
                .is_err_and(|error| error.contains("emptyDir volumes only"))
        );
        let container = Container {
            volume_mounts: Some(vec![mount("ghost", "/x")]),
            ..Container::default()
        };
        assert!(tmpfs_mounts(&pod, &container).is_err_and(|error| error.contains("not defined")));
    }
}
