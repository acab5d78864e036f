//! `psctl rbac [--subject S]`: prints the least-privilege Role (and RoleBinding) psctl and Helm
//! need in the environment. Resolve → plan (the rules, from `crate::rbac`) → print; nothing is
//! sent to the cluster.

use anyhow::Context as _;

use crate::cli::RbacArgs;
use crate::error::{CommandResult, ExitStatus};
use crate::output::{Output, Render, Style};
use crate::rbac::{self, Permissions, Subject};
use crate::settings::GlobalSettings;

/// The table form is the YAML itself: it is what an operator pipes to `kubectl apply -f -`.
struct Printed {
    yaml: String,
    permissions: Permissions,
}

impl serde::Serialize for Printed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.permissions.serialize(serializer)
    }
}

impl Render for Printed {
    fn render_table(&self, _style: &Style) -> String {
        self.yaml.clone()
    }
}

pub fn run(args: RbacArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let RbacArgs { subject } = args;
    let subject = subject.as_deref().map(Subject::parse).transpose()?;
    let environment = global.environment()?;
    let rules = rbac::environment_rules(&environment)?;
    let permissions = rbac::permissions(&environment.namespace, rules, subject.as_ref());
    let yaml = rbac::render_yaml(&environment.name, &environment.namespace, &permissions);
    output
        .data(&Printed { yaml, permissions })
        .context("writing the permissions")?;
    Ok(ExitStatus::Success)
}
