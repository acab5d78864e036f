//! The `<service>_build_info{version,commit} 1` gauge: which build is running, for dashboards
//! and for joining onto other series (`* on(pod) group_left(version, commit) …`). The commit
//! comes from each binary's build script (`BUILD_GIT_COMMIT`, see services/core/build/).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The labels of the build-info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
}

/// Registers `<prefix>_build_info{version, commit}` with the constant value 1.
pub fn register(registry: &mut Registry, prefix: &str, version: &str, commit: &str) {
    let family = Family::<BuildLabels, Gauge>::default();
    family
        .get_or_create(&BuildLabels {
            version: version.to_owned(),
            commit: commit.to_owned(),
        })
        .set(1);
    registry.register(
        format!("{prefix}_build_info"),
        "The running build: version and git commit as labels; always 1",
        family,
    );
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn exposes_one_series_with_version_and_commit() {
        let mut registry = Registry::default();
        register(&mut registry, "webhook_worker", "0.1.0", "0123456789ab");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(&"# TYPE webhook_worker_build_info gauge"),
            "{text}"
        );
        let samples: Vec<&&str> = lines.iter().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [&"webhook_worker_build_info{version=\"0.1.0\",commit=\"0123456789ab\"} 1"],
            "{text}"
        );
    }
}
