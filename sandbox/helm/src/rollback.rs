//! `helm rollback`, done the way Helm does it but without the engine's rollback entry point,
//! which fails on every call in this engine build ("unable to get waiter: wait strategy not
//! set": it never sets Helm v4's wait strategy and takes no options to do so). Helm's rollback
//! re-deploys the chart and values recorded in the target revision as a new revision; here the
//! target revision is read from Helm's release storage (the Secret
//! `sh.helm.release.v1.<name>.v<N>`: base64 of gzipped release JSON), its chart is written back
//! to a temporary directory and the engine's upgrade deploys it with exactly the recorded values.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn file_data(file: &Value, what: &str) -> Result<(PathBuf, Vec<u8>)> {
    let name = file
        .get("name")
        .and_then(Value::as_str)
        .with_context(|| format!("a {what} file without a name"))?;
    let relative = Path::new(name);
    // The names come from the cluster: never let one escape the temporary chart directory.
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!("refusing the {what} file name `{name}`");
    }
    let data =
        match file.get("data") {
            Some(Value::String(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .with_context(|| format!("{what} file `{name}` is not base64"))?,
            _ => Vec::new(),
        };
    Ok((relative.to_path_buf(), data))
}

/// The files of the chart recorded in a release, relative to the chart directory.
pub fn chart_files(release: &Value) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let chart = release
        .get("chart")
        .context("the release record has no chart")?;
    let metadata = chart
        .get("metadata")
        .context("the recorded chart has no metadata")?;
    if metadata
        .get("dependencies")
        .and_then(Value::as_array)
        .is_some_and(|d| !d.is_empty())
    {
        bail!(
            "the recorded chart has dependencies, which Helm's storage does not keep; roll back \
             by upgrading to the old chart version instead"
        );
    }
    let mut files = vec![(
        PathBuf::from("Chart.yaml"),
        crate::yaml::to_string(metadata)?.into_bytes(),
    )];
    if let Some(values) = chart.get("values").filter(|v| !v.is_null()) {
        files.push((
            PathBuf::from("values.yaml"),
            crate::yaml::to_string(values)?.into_bytes(),
        ));
    }
    if let Some(Value::String(schema)) = chart.get("schema") {
        let schema = base64::engine::general_purpose::STANDARD
            .decode(schema)
            .context("the recorded values schema is not base64")?;
        files.push((PathBuf::from("values.schema.json"), schema));
    }
    for (key, what) in [("templates", "template"), ("files", "chart")] {
        for file in chart
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            files.push(file_data(file, what)?);
        }
    }
    Ok(files)
}

/// Writes the recorded chart into `dir`.
pub fn write_chart(release: &Value, dir: &Path) -> Result<()> {
    for (relative, data) in chart_files(release)? {
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn recorded() -> Value {
        json!({
            "name": "web", "version": 2, "config": {"image": {"tag": "one"}},
            "chart": {
                "metadata": {"apiVersion": "v2", "name": "web", "version": "0.1.0"},
                "values": {"image": {"tag": ""}},
                "schema": b64("{\"type\":\"object\"}"),
                "templates": [{"name": "templates/cm.yaml", "data": b64("kind: ConfigMap\n")}],
                "files": [{"name": "rules/alerts.yaml", "data": b64("groups: []\n")}]
            }
        })
    }

    #[test]
    fn rebuilds_the_recorded_chart() {
        let dir = tempfile::tempdir().unwrap();
        write_chart(&recorded(), dir.path()).unwrap();
        let chart: crate::yaml::Value =
            crate::yaml::from_str(&std::fs::read_to_string(dir.path().join("Chart.yaml")).unwrap())
                .unwrap();
        assert_eq!(chart["name"], crate::yaml::Value::from("web"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("templates/cm.yaml")).unwrap(),
            "kind: ConfigMap\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("rules/alerts.yaml")).unwrap(),
            "groups: []\n"
        );
        assert!(dir.path().join("values.schema.json").exists());
        assert!(dir.path().join("values.yaml").exists());
    }

    #[test]
    fn refuses_paths_that_escape_and_charts_with_dependencies() {
        let mut escaping = recorded();
        escaping["chart"]["templates"][0]["name"] = json!("../../etc/x");
        assert!(chart_files(&escaping).is_err());
        let mut absolute = recorded();
        absolute["chart"]["files"][0]["name"] = json!("/etc/x");
        assert!(chart_files(&absolute).is_err());
        let mut dependent = recorded();
        dependent["chart"]["metadata"]["dependencies"] = json!([{"name": "sub"}]);
        assert!(chart_files(&dependent).is_err());
    }
}
