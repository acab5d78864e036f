//! `psctl-sandbox env`: the shell `export` lines that point psctl, kubectl and Helm at the sandbox.

use crate::settings::{Layout, Settings};

/// The variables, in print order.
pub fn variables(layout: &Layout, settings: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("KUBECONFIG", layout.kubeconfig().display().to_string()),
        ("PSCTL_CONFIG", layout.psctl_config().display().to_string()),
        ("PSCTL_ENV", "sandbox".to_owned()),
        ("PSCTL_SANDBOX_DIR", layout.root.display().to_string()),
        ("DATABASE_URL", settings.database_url_host()),
        ("PROMETHEUS_URL", settings.prometheus_url()),
        ("ALERTMANAGER_URL", settings.alertmanager_url()),
        ("PSCTL_REGISTRY", settings.registry()),
        ("HELM", layout.helm().display().to_string()),
        ("KUBECTL", layout.kubectl().display().to_string()),
    ]
}

/// `export NAME='value'` lines, single-quoted for any POSIX shell.
pub fn export_lines(variables: &[(&str, String)]) -> String {
    variables
        .iter()
        .map(|(name, value)| format!("export {name}='{}'\n", value.replace('\'', r"'\''")))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn exports_cover_the_contract_and_quote_values() {
        let layout = Layout::new(PathBuf::from("/state/it's"));
        let text = export_lines(&variables(&layout, &Settings::default()));
        for name in [
            "KUBECONFIG",
            "PSCTL_CONFIG",
            "PSCTL_ENV",
            "DATABASE_URL",
            "PROMETHEUS_URL",
            "PSCTL_REGISTRY",
            "HELM",
            "KUBECTL",
        ] {
            assert!(
                text.contains(&format!("export {name}=")),
                "{name} missing from:\n{text}"
            );
        }
        assert!(
            text.contains("export KUBECONFIG='/state/it'\\''s/kubeconfig'"),
            "{text}"
        );
        assert!(text.contains("export PSCTL_ENV='sandbox'"));
        assert!(
            text.contains(
                "export DATABASE_URL='postgres://postgres@127.0.0.1:55433/problemsolver'"
            )
        );
    }
}
