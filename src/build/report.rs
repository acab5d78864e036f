//! What `psctl build` prints: the plan under `--dry-run`, and the report of every image (its
//! local image ID, registry digest, pinned reference, push and scan results). Pure rendering.

use serde::Serialize;

use super::BuildPlan;
use crate::output::{Render, Style, table};

impl Render for BuildPlan {
    fn render_table(&self, _style: &Style) -> String {
        let mut text = format!(
            "build plan for `{}`: tag {} (revision {}{}), registry {}, tool {}, runtime base {}\n",
            self.environment,
            self.tag,
            self.revision,
            if self.dirty { ", dirty work tree" } else { "" },
            self.registry,
            self.tool.name(),
            self.runtime_base
                .as_deref()
                .unwrap_or("the Dockerfile's default"),
        );
        match &self.cargo {
            Some(cargo) => text.push_str(&format!("  {}\n", cargo.display())),
            None => text.push_str("  prebuilt binaries: no cargo build\n"),
        }
        for image in &self.images {
            text.push_str(&format!(
                "  stage {} -> {}/\n  {}\n",
                image.binary.display(),
                image.context.display(),
                image.build.display()
            ));
            match &image.scan {
                Some(scan) => text.push_str(&format!("  {}\n", scan.display())),
                None => text.push_str("  scan: skipped (no trivy or grype on PATH)\n"),
            }
            text.push_str(&format!(
                "  refuse if {} exists with other content, else {}\n",
                image.reference,
                image.push.display()
            ));
        }
        text
    }
}

/// One image's result.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub component: String,
    /// `<registry>/<image>:<tag>`.
    pub reference: String,
    /// The local image ID (the image configuration digest).
    pub image_id: String,
    /// The manifest digest in the registry.
    pub digest: Option<String>,
    /// `<registry>/<image>@<digest>`: what to pull or deploy to pin this exact image.
    pub pinned: Option<String>,
    /// `pushed`, `already_present`, `refused`, `not_pushed`.
    pub push: String,
    /// `passed`, `findings`, `error`, or `skipped: …`.
    pub scan: String,
}

/// The `-o json` result of a build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub environment: String,
    pub tag: String,
    pub revision: String,
    pub images: Vec<ImageResult>,
}

impl Render for BuildReport {
    fn render_table(&self, _style: &Style) -> String {
        table::render(
            &["COMPONENT", "IMAGE", "DIGEST", "PUSH", "SCAN"],
            self.images.iter().map(|i| {
                [
                    i.component.clone(),
                    i.reference.clone(),
                    i.digest.clone().unwrap_or_else(|| "-".to_owned()),
                    i.push.replace('_', " "),
                    i.scan.clone(),
                ]
            }),
        )
    }
}
