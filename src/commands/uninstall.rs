//! `psctl uninstall`: remove a component's Helm release. Resolve → plan (`uninstall::plan`,
//! printed under `--dry-run`) → refuse production without `--force-production` → confirm →
//! take the deploy Lease, refuse under the kill switch → read the history under the Lease and
//! plan again → execute (`uninstall::execute`) → audit (and its Kubernetes Event) → report.

use anyhow::Context as _;

use super::support;
use crate::cli::UninstallArgs;
use crate::cluster;
use crate::error::{CommandResult, ExitStatus};
use crate::helm::storage::read_revisions;
use crate::output::{Output, Render};
use crate::settings::GlobalSettings;
use crate::uninstall;

pub async fn run(args: UninstallArgs, global: &GlobalSettings, output: &Output) -> CommandResult {
    let UninstallArgs {
        component,
        force_production,
        timeout,
    } = args;
    let environment = global.environment()?;
    let component = environment.component(&component)?.clone();
    let helm = support::helm_target(&environment);
    if global.dry_run {
        // A preview: what runs now when the cluster answers, the plan from configuration when
        // it does not.
        let history = match cluster::connect(&environment).await {
            Ok(client) => read_revisions(
                &client,
                &environment.namespace,
                std::slice::from_ref(&component.release),
            )
            .await
            .map_err(|error| format!("{:#}", error.error())),
            Err(error) => Err(error.to_string()),
        };
        let history = match history {
            Ok(history) => Some(history),
            Err(error) => {
                output.warn(format!(
                    "the release history was not read ({error}); the plan shows no current revision"
                ));
                None
            }
        };
        let plan = uninstall::plan(&environment, &component, &helm, history.as_deref())?;
        if let Err(refusal) =
            uninstall::guard_production(&environment, &component, force_production)
        {
            output.warn(format!(
                "{refusal}; the real run is refused without --force-production"
            ));
        }
        output.data(&plan).context("writing the plan")?;
        return Ok(ExitStatus::Success);
    }
    uninstall::guard_production(&environment, &component, force_production)?;
    let client = cluster::connect(&environment).await?;
    let history = read_revisions(
        &client,
        &environment.namespace,
        std::slice::from_ref(&component.release),
    )
    .await?;
    let plan = uninstall::plan(&environment, &component, &helm, Some(&history))?;
    output.info(plan.render_table(&output.style()).trim_end());
    support::confirm(
        global,
        &format!(
            "uninstall `{}` from `{}`? It stops serving until deployed again",
            component.release, environment.name
        ),
    )?;
    let audit = support::open_audit(global, &environment, output).await?;
    let audit = crate::events::publishing(audit, &client, &environment, output);
    let held =
        support::take_lock(&client, &environment, "uninstall", audit.as_ref(), output).await?;
    let held = support::require_kill_switch_off(held, &client, &environment, &[&component]).await?;
    // Read again under the Lease: what is recorded is what this operator removes.
    let plan = match read_revisions(
        &client,
        &environment.namespace,
        std::slice::from_ref(&component.release),
    )
    .await
    .and_then(|history| {
        uninstall::plan(&environment, &component, &helm, Some(&history)).map_err(Into::into)
    }) {
        Ok(plan) => plan,
        Err(error) => {
            let _ = held.release().await;
            return Err(error);
        }
    };
    let result = uninstall::execute(&client, &environment, &plan, timeout, output).await;
    let outcome = crate::audit::outcome::of(&result);
    support::audit(
        audit.as_ref(),
        output,
        &environment,
        uninstall::audit_note(&plan, outcome),
    )
    .await;
    if let Err(error) = held.release().await {
        output.warn(format!("the deploy lock was not released cleanly: {error}"));
    }
    output.data(&plan).context("writing the uninstall report")?;
    result?;
    output.info(format!("bring it back with: {}", plan.redeploy));
    Ok(ExitStatus::Success)
}
