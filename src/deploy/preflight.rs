//! The deploy's checks before anything changes, each printed as a check line: the cluster is
//! reachable, the namespace exists, every permission `psctl rbac` lists is granted, the runtime
//! Secret carries every required key (its values registered with the redactor, never shown),
//! and the Secret's fingerprint for the pod template.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;

use super::plan::{DeployPlan, fingerprint_values, missing_keys};
use crate::cluster::{self, ClusterError, is_not_found};
use crate::error::CommandError;
use crate::output::{CheckState, Output};
use crate::settings::Environment;

/// Connects to the environment's cluster and checks the namespace and permissions.
pub async fn preflight_cluster(
    environment: &Environment,
    output: &Output,
) -> Result<kube::Client, CommandError> {
    let client = match cluster::connect_checked(environment).await {
        Ok((client, version)) => {
            output.check(
                CheckState::Ok,
                "cluster reachable",
                &format!(
                    "context {} (Kubernetes {}.{})",
                    crate::cluster::context_label(environment),
                    version.major,
                    version.minor
                ),
            );
            client
        }
        Err(error) => {
            let what = match error {
                ClusterError::Api { .. } => "cluster reachable",
                _ => "cluster",
            };
            output.check(CheckState::Fail, what, &error.to_string());
            return Err(error.into());
        }
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.get(&environment.namespace).await {
        Ok(_) => output.check(CheckState::Ok, "namespace", &environment.namespace),
        Err(error) if is_not_found(&error) => {
            output.check(
                CheckState::Fail,
                "namespace",
                &format!("`{}` does not exist", environment.namespace),
            );
            return Err(CommandError::usage(anyhow::anyhow!(
                "namespace `{}` does not exist",
                environment.namespace
            ))
            .hint(format!(
                "create it with `kubectl create namespace {}`",
                environment.namespace
            )));
        }
        Err(error) => {
            let error =
                ClusterError::api(format!("reading namespace `{}`", environment.namespace))(error);
            output.check(CheckState::Fail, "cluster authorised", &error.to_string());
            return Err(error.into());
        }
    }
    preflight_permissions(&client, environment, output).await?;
    Ok(client)
}

/// Every permission `psctl rbac` lists for the environment, asked of the API server
/// (SelfSubjectAccessReview) before anything changes: a missing one is a configuration error
/// naming each verb and resource, not a 403 halfway through a deploy.
async fn preflight_permissions(
    client: &kube::Client,
    environment: &Environment,
    output: &Output,
) -> Result<(), CommandError> {
    let rules = crate::rbac::environment_rules(environment)?;
    let wanted = crate::rbac::accesses(&rules);
    let missing = match cluster::access::missing(client, &environment.namespace, &wanted).await {
        Ok(missing) => missing,
        Err(error) => {
            output.check(CheckState::Fail, "permissions", &error.to_string());
            return Err(error.into());
        }
    };
    if missing.is_empty() {
        output.check(
            CheckState::Ok,
            "permissions",
            &format!("{} checked", wanted.len()),
        );
        return Ok(());
    }
    output.check(
        CheckState::Fail,
        "permissions",
        &format!("{} of {} missing", missing.len(), wanted.len()),
    );
    Err(CommandError::usage(anyhow::anyhow!(
        "{}",
        crate::rbac::refusal(&environment.namespace, &missing)
    ))
    .hint(format!(
        "a namespace admin can grant them: `psctl rbac --env {} --subject <this identity> | kubectl apply -f -` (see docs/rbac.md)",
        environment.name
    )))
}

/// The runtime Secret exists and carries every required key. Values are registered with the
/// redactor the moment they are read and never printed; only key names are reported.
pub async fn preflight_secret(
    client: &kube::Client,
    environment: &Environment,
    output: &Output,
) -> Result<(), CommandError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &environment.namespace);
    let name = &environment.secret.name;
    let secret = match secrets.get(name).await {
        Ok(secret) => secret,
        Err(error) if is_not_found(&error) => {
            output.check(
                CheckState::Fail,
                "runtime secret",
                &format!("`{name}` does not exist"),
            );
            return Err(CommandError::usage(anyhow::anyhow!("the runtime Secret `{name}` does not exist in `{}`", environment.namespace))
                .hint("create it with `psctl secrets` or `kubectl create secret generic` (never put values on a command line you log)"));
        }
        Err(error) => {
            return Err(ClusterError::api(format!("reading Secret `{name}`"))(error).into());
        }
    };
    let mut keys: Vec<String> = Vec::new();
    for (key, value) in secret.data.iter().flatten() {
        output.redactor().register_bytes(&value.0);
        keys.push(key.clone());
    }
    for (key, value) in secret.string_data.iter().flatten() {
        output.redactor().register(value);
        keys.push(key.clone());
    }
    let missing = missing_keys(&keys, &environment.secret.required_keys);
    if missing.is_empty() {
        output.check(
            CheckState::Ok,
            "runtime secret",
            &format!(
                "`{name}` has all {} required keys",
                environment.secret.required_keys.len()
            ),
        );
        Ok(())
    } else {
        output.check(
            CheckState::Fail,
            "runtime secret",
            &format!("`{name}` lacks {}", missing.join(", ")),
        );
        Err(CommandError::usage(anyhow::anyhow!("the runtime Secret `{name}` lacks required keys: {}", missing.join(", ")))
            .hint("add the missing keys to the Secret; the pods would fail with CreateContainerConfigError"))
    }
}

/// Puts the runtime Secret's keyed fingerprint on every pod template, so that a Secret changed
/// by `psctl secrets apply` rolls the pods on the next deploy (Helm sees a new pod template).
pub async fn with_secret_fingerprint(
    mut plan: DeployPlan,
    client: &kube::Client,
    environment: &Environment,
    output: &Output,
) -> Result<DeployPlan, CommandError> {
    match crate::secrets::cluster::current_fingerprint(client, environment).await? {
        Some(fingerprint) => {
            output.check(
                CheckState::Ok,
                "secret fingerprint",
                &format!("{fingerprint} on the pod template (pods roll when it changes)"),
            );
            for step in &mut plan.steps {
                step.command.add_values(fingerprint_values(&fingerprint));
                step.helm = step.command.display();
                step.values = step.command.values_file();
            }
        }
        None => output.check(
            CheckState::Skip,
            "secret fingerprint",
            "no psctl fingerprint key in the namespace yet (`psctl secrets apply` makes it): a changed Secret does not roll the pods",
        ),
    }
    Ok(plan)
}
