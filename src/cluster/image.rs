//! Image references of running pods: which containers are the application's (a real cluster
//! may add sidecars through admission), and whether they run an expected tag when the
//! reference is pinned by digest (`repo:tag@sha256:…`, `repo@sha256:…`). Pure.

use k8s_openapi::api::core::v1::PodSpec;

/// An image reference split into repository, tag and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Everything before the tag and digest, registry host (and port) included.
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    /// `sha256:…`, when pinned.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    pub fn parse(image: &'a str) -> Self {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (image, None),
        };
        // A `:` after the last `/` is the tag's; one before it is a registry port.
        let name_start = name.rfind('/').map_or(0, |i| i + 1);
        match name[name_start..].rfind(':') {
            Some(colon) => Self {
                repository: &name[..name_start + colon],
                tag: Some(&name[name_start + colon + 1..]),
                digest,
            },
            None => Self {
                repository: name,
                tag: None,
                digest,
            },
        }
    }
}

/// Which repository is the application's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppImage<'a> {
    /// `<registry>/<image>`, exactly.
    Repository(&'a str),
    /// No registry configured (the chart's default repository): any repository whose last
    /// path segments are `<image>`.
    Named(&'a str),
}

impl AppImage<'_> {
    pub fn matches(&self, repository: &str) -> bool {
        match self {
            Self::Repository(expected) => repository == *expected,
            Self::Named(image) => {
                repository == *image
                    || repository
                        .strip_suffix(image)
                        .is_some_and(|head| head.ends_with('/'))
            }
        }
    }

    pub fn describe(&self) -> &str {
        match self {
            Self::Repository(name) | Self::Named(name) => name,
        }
    }
}

/// Checks that every application container of `spec` (containers whose image is `app`'s
/// repository; sidecars and init containers are someone else's) runs `tag`. A reference
/// pinned by digest only passes when `tag_digest` (what the registry says `tag` points at) is
/// that digest. `Err` says why not.
pub fn check_app_tag(
    spec: &PodSpec,
    app: AppImage<'_>,
    tag: &str,
    tag_digest: Option<&str>,
) -> Result<(), String> {
    let mut seen = 0;
    for container in &spec.containers {
        let Some(image) = container.image.as_deref() else {
            continue;
        };
        let reference = ImageRef::parse(image);
        if !app.matches(reference.repository) {
            continue;
        }
        seen += 1;
        match (reference.tag, reference.digest) {
            (Some(t), _) if t == tag => {}
            (None, Some(digest)) if tag_digest == Some(digest) => {}
            (None, Some(digest)) => {
                return Err(format!(
                    "container `{}` is pinned to {digest}, which is not what tag {tag} points at{}",
                    container.name,
                    if tag_digest.is_none() {
                        " (the registry did not say)"
                    } else {
                        ""
                    }
                ));
            }
            (other, _) => {
                return Err(format!(
                    "container `{}` runs tag {} instead of {tag}",
                    container.name,
                    other.unwrap_or("latest")
                ));
            }
        }
    }
    if seen == 0 {
        let images: Vec<String> = spec
            .containers
            .iter()
            .map(|c| format!("{}={}", c.name, c.image.as_deref().unwrap_or("")))
            .collect();
        return Err(format!(
            "no container runs image {} ({})",
            app.describe(),
            images.join(", ")
        ));
    }
    Ok(())
}

/// The image of the first application container, else of the first container.
pub fn app_image(spec: &PodSpec, app: AppImage<'_>) -> Option<String> {
    spec.containers
        .iter()
        .find(|c| {
            c.image
                .as_deref()
                .is_some_and(|i| app.matches(ImageRef::parse(i).repository))
        })
        .or_else(|| spec.containers.first())
        .and_then(|c| c.image.clone())
}

/// True when some application container of `spec` is pinned by digest without a tag.
pub fn app_digest_only(spec: &PodSpec, app: AppImage<'_>) -> bool {
    spec.containers.iter().any(|c| {
        c.image.as_deref().is_some_and(|i| {
            let r = ImageRef::parse(i);
            app.matches(r.repository) && r.tag.is_none() && r.digest.is_some()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4b6f1c2e";

    fn spec(containers: &[(&str, &str)], init: &[(&str, &str)]) -> PodSpec {
        let list = |items: &[(&str, &str)]| {
            items
                .iter()
                .map(|(name, image)| serde_json::json!({"name": name, "image": image}))
                .collect::<Vec<_>>()
        };
        serde_json::from_value(serde_json::json!({
            "containers": list(containers),
            "initContainers": init.iter().map(|(name, image)| serde_json::json!(
                {"name": name, "image": image, "restartPolicy": "Always"})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    const APP: AppImage<'static> = AppImage::Repository("127.0.0.1:5000/problemsolver-poller");

    #[test]
    fn references_split_into_repository_tag_and_digest() {
        let parse = ImageRef::parse;
        assert_eq!(
            parse("127.0.0.1:5000/app:1.2"),
            ImageRef {
                repository: "127.0.0.1:5000/app",
                tag: Some("1.2"),
                digest: None
            }
        );
        assert_eq!(
            parse("127.0.0.1:5000/app"),
            ImageRef {
                repository: "127.0.0.1:5000/app",
                tag: None,
                digest: None
            }
        );
        assert_eq!(
            parse("reg:5000/team/app:v1@sha256:abc"),
            ImageRef {
                repository: "reg:5000/team/app",
                tag: Some("v1"),
                digest: Some("sha256:abc")
            }
        );
        assert_eq!(
            parse("app@sha256:abc"),
            ImageRef {
                repository: "app",
                tag: None,
                digest: Some("sha256:abc")
            }
        );
    }

    #[test]
    fn sidecars_and_native_sidecars_are_not_the_application() {
        let pod = spec(
            &[
                ("poller", "127.0.0.1:5000/problemsolver-poller:1.4.2"),
                ("istio-proxy", "docker.io/istio/proxyv2:1.24.0"),
            ],
            &[("linkerd-proxy", "cr.l5d.io/linkerd/proxy:edge-24.11.8")],
        );
        assert_eq!(check_app_tag(&pod, APP, "1.4.2", None), Ok(()));
        assert_eq!(
            check_app_tag(&pod, APP, "1.4.3", None),
            Err("container `poller` runs tag 1.4.2 instead of 1.4.3".into())
        );
        assert_eq!(
            app_image(&pod, APP).as_deref(),
            Some("127.0.0.1:5000/problemsolver-poller:1.4.2")
        );
    }

    #[test]
    fn digests_are_recognised() {
        let pinned_tag = spec(
            &[(
                "poller",
                "127.0.0.1:5000/problemsolver-poller:1.4.2@sha256:4b6f1c2e",
            )],
            &[],
        );
        assert_eq!(check_app_tag(&pinned_tag, APP, "1.4.2", None), Ok(()));
        assert!(!app_digest_only(&pinned_tag, APP));

        let digest_only = spec(
            &[(
                "poller",
                "127.0.0.1:5000/problemsolver-poller@sha256:4b6f1c2e",
            )],
            &[],
        );
        assert!(app_digest_only(&digest_only, APP));
        assert_eq!(
            check_app_tag(&digest_only, APP, "1.4.2", Some(DIGEST)),
            Ok(())
        );
        assert_eq!(
            check_app_tag(&digest_only, APP, "1.4.2", Some("sha256:0000")),
            Err(
                "container `poller` is pinned to sha256:4b6f1c2e, which is not what tag 1.4.2 points at"
                    .into()
            )
        );
        assert!(
            check_app_tag(&digest_only, APP, "1.4.2", None)
                .unwrap_err()
                .ends_with("(the registry did not say)")
        );
    }

    #[test]
    fn a_pod_without_the_application_image_fails_and_lists_what_it_runs() {
        let pod = spec(&[("proxy", "docker.io/istio/proxyv2:1.24.0")], &[]);
        assert_eq!(
            check_app_tag(&pod, APP, "1.4.2", None),
            Err("no container runs image 127.0.0.1:5000/problemsolver-poller (proxy=docker.io/istio/proxyv2:1.24.0)".into())
        );
    }

    #[test]
    fn without_a_registry_the_image_name_identifies_the_application() {
        let named = AppImage::Named("problemsolver-poller");
        assert!(named.matches("ghcr.io/acme/problemsolver-poller"));
        assert!(named.matches("problemsolver-poller"));
        assert!(!named.matches("ghcr.io/acme/not-problemsolver-poller"));
        assert!(!named.matches("docker.io/istio/proxyv2"));
    }
}
