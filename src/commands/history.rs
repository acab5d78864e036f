//! `psctl history [COMPONENT]`: Helm revisions read straight from Helm's release Secrets, one
//! list call for every component.

use serde::Serialize;

use crate::cli::HistoryArgs;
use crate::cluster;
use crate::error::{CommandError, CommandResult, ExitStatus};
use crate::helm::storage::Revision;
use crate::helm::storage::read_revisions;
use crate::output::{Output, Render, Style, table};
use crate::settings::GlobalSettings;

/// The `-o json` schema: an array of revisions, oldest first.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct History(pub Vec<Revision>);

impl Render for History {
    fn render_table(&self, _style: &Style) -> String {
        let several = self.0.iter().any(|r| r.release != self.0[0].release);
        let mut header = vec![
            "REVISION",
            "STATUS",
            "CHART",
            "APP VERSION",
            "IMAGE TAG",
            "UPDATED",
            "DESCRIPTION",
        ];
        if several {
            header.insert(0, "RELEASE");
        }
        table::render(
            &header,
            self.0.iter().map(|r| {
                let mut row = vec![
                    r.revision.to_string(),
                    r.status.to_string(),
                    r.chart.clone(),
                    r.app_version.clone(),
                    r.image_tag.clone(),
                    r.updated.clone(),
                    r.description.clone(),
                ];
                if several {
                    row.insert(0, r.release.clone());
                }
                row
            }),
        )
    }
}

pub async fn run(args: HistoryArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let HistoryArgs { component } = args;
    let environment = global.environment()?;
    let releases: Vec<String> = match &component {
        Some(name) => vec![environment.component(name)?.release.clone()],
        None => environment.releases(),
    };
    let client = cluster::connect(&environment).await?;
    let revisions = read_revisions(&client, &environment.namespace, &releases).await?;
    output.detail(format!(
        "history: 1 API request, {} revisions",
        revisions.len()
    ));
    if revisions.is_empty() {
        output.warn(format!(
            "no Helm revisions for {} in namespace `{}`",
            releases.join(", "),
            environment.namespace
        ));
    }
    output
        .data(&History(revisions))
        .map_err(|e| CommandError::usage(anyhow::Error::new(e).context("writing the history")))?;
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::storage::tests::{encode_like_helm, release_json};
    use crate::helm::storage::{self, decode_secrets};
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use std::collections::BTreeMap;

    fn helm_secret(release: &str, version: u32, status: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(storage::secret_name(release, version));
        let payload = encode_like_helm(&release_json(
            release,
            version,
            status,
            &format!("1.{version}"),
        ));
        secret.data = Some(BTreeMap::from([(
            "release".to_owned(),
            ByteString(payload),
        )]));
        secret
    }

    #[test]
    fn history_is_oldest_first_and_filtered_by_release() {
        let secrets = vec![
            helm_secret("problemsolver-webhook", 10, "deployed"),
            helm_secret("problemsolver-webhook", 2, "superseded"),
            helm_secret("problemsolver-poller", 1, "deployed"),
            helm_secret("problemsolver-webhook", 9, "failed"),
        ];
        let revisions = decode_secrets(secrets, &["problemsolver-webhook".to_owned()]).unwrap();
        let seen: Vec<_> = revisions
            .iter()
            .map(|r| (r.revision, r.status.as_str()))
            .collect();
        assert_eq!(seen, [(2, "superseded"), (9, "failed"), (10, "deployed")]);
    }

    #[test]
    fn json_is_an_array_with_the_documented_fields() {
        let revisions = decode_secrets(
            vec![helm_secret("problemsolver-webhook", 1, "deployed")],
            &["problemsolver-webhook".to_owned()],
        )
        .unwrap();
        let json = serde_json::to_value(History(revisions)).unwrap();
        let first = &json.as_array().unwrap()[0];
        for key in [
            "revision",
            "status",
            "chart",
            "app_version",
            "image_tag",
            "updated",
            "description",
        ] {
            assert!(first.get(key).is_some(), "missing {key} in {first}");
        }
        assert_eq!(first["image_tag"], "1.1");
    }

    #[test]
    fn the_table_shows_every_column() {
        let revisions = decode_secrets(
            vec![helm_secret("problemsolver-webhook", 3, "deployed")],
            &["problemsolver-webhook".to_owned()],
        )
        .unwrap();
        let text = History(revisions).render_table(&Style::PLAIN);
        let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "REVISION",
                "STATUS",
                "CHART",
                "APP",
                "VERSION",
                "IMAGE",
                "TAG",
                "UPDATED",
                "DESCRIPTION"
            ]
        );
        assert!(text.contains("webhook-worker-0.1.0") && text.contains("Upgrade complete"));
    }
}
