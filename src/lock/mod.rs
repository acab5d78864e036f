//! The deploy lock: a coordination.k8s.io/v1 Lease (`psctl-deploy`) held for the duration of a
//! mutating command and renewed in the background. Taking it is a pure decision over the Lease
//! as read ([`decide`]) followed by an optimistic write (resourceVersion), so two operators
//! cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use crate::cluster::{ClusterError, is_not_found};
use crate::error::{Classify, ExitStatus};

/// The Lease name every psctl mutating command contends for.
pub const LEASE_NAME: &str = "psctl-deploy";
/// How long a holder that stopped renewing keeps the lock.
pub const LEASE_SECONDS: i32 = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it.
    Create,
    /// Free or expired (or already ours): take it, guarded by this resourceVersion.
    Take { resource_version: Option<String> },
    /// Held by someone else whose lease is still fresh.
    Refuse {
        holder: String,
        since: String,
        lease_seconds: i32,
    },
}

/// Decides what to do given the Lease as read (`None` = absent).
pub fn decide(existing: Option<&Lease>, me: &str, now: Timestamp) -> Decision {
    let Some(lease) = existing else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let resource_version = lease.metadata.resource_version.clone();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return Decision::Take { resource_version };
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    let fresh = renewed.is_some_and(|renewed| now.as_second() < renewed.as_second() + duration);
    if fresh {
        let since = spec
            .acquire_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "an unknown time".to_owned());
        Decision::Refuse {
            holder,
            since,
            lease_seconds: spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS),
        }
    } else {
        Decision::Take { resource_version }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another psctl operation holds the deploy lock: `{holder}` since {since}")]
    Held {
        holder: String,
        since: String,
        lease_seconds: i32,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl Classify for LockError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Held { .. } => ExitStatus::Usage,
            Self::Cluster(error) => error.exit_status(),
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Held { .. } => vec![
                format!(
                    "wait for it to finish; a holder that died releases the lock after {LEASE_SECONDS}s without renewal"
                ),
                format!("inspect it with `kubectl get lease {LEASE_NAME} -o yaml`"),
            ],
            Self::Cluster(error) => error.hints(),
        }
    }
}

/// A held lock; renewed in the background until [`DeployLock::release`] (or drop, which stops
/// renewing so the Lease expires).
pub struct DeployLock {
    api: Api<Lease>,
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
}

/// `user@host pid N`: enough to find the operator or CI job holding the lock.
pub fn holder_identity(operation: &str) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{user}@{host} pid {} ({operation})", std::process::id())
}

fn lease_object(me: &str, now: Timestamp, resource_version: Option<String>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.to_owned()),
            resource_version,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(me.to_owned()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(LEASE_SECONDS),
            ..LeaseSpec::default()
        }),
    }
}

impl DeployLock {
    /// Takes the Lease in `namespace` for `me`, or says who holds it.
    pub async fn acquire(
        client: &kube::Client,
        namespace: &str,
        me: &str,
    ) -> Result<Self, LockError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let existing = match api.get(LEASE_NAME).await {
            Ok(lease) => Some(lease),
            Err(error) if is_not_found(&error) => None,
            Err(error) => {
                return Err(
                    ClusterError::api(format!("reading Lease `{LEASE_NAME}`"))(error).into(),
                );
            }
        };
        let now = Timestamp::now();
        let result = match decide(existing.as_ref(), me, now) {
            Decision::Refuse {
                holder,
                since,
                lease_seconds,
            } => {
                return Err(LockError::Held {
                    holder,
                    since,
                    lease_seconds,
                });
            }
            Decision::Create => {
                api.create(&PostParams::default(), &lease_object(me, now, None))
                    .await
            }
            Decision::Take { resource_version } => {
                api.replace(
                    LEASE_NAME,
                    &PostParams::default(),
                    &lease_object(me, now, resource_version),
                )
                .await
            }
        };
        if let Err(error) = result {
            // 409: someone else wrote the Lease between our read and our write.
            if matches!(&error, kube::Error::Api(status) if status.code == 409) {
                let holder = api
                    .get(LEASE_NAME)
                    .await
                    .ok()
                    .and_then(|l| l.spec.and_then(|s| s.holder_identity))
                    .unwrap_or_else(|| "another psctl".to_owned());
                return Err(LockError::Held {
                    holder,
                    since: "just now".to_owned(),
                    lease_seconds: LEASE_SECONDS,
                });
            }
            return Err(ClusterError::api(format!("taking Lease `{LEASE_NAME}`"))(error).into());
        }
        let renewal = tokio::spawn(renew(api.clone(), me.to_owned()));
        Ok(Self {
            api,
            holder: me.to_owned(),
            renewal,
        })
    }

    /// Stops renewing and deletes the Lease if it is still ours.
    pub async fn release(self) -> Result<(), ClusterError> {
        self.renewal.abort();
        let lease = match self.api.get(LEASE_NAME).await {
            Ok(lease) => lease,
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => {
                return Err(ClusterError::api(format!("reading Lease `{LEASE_NAME}`"))(
                    error,
                ));
            }
        };
        if lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            != Some(self.holder.as_str())
        {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(LEASE_NAME, &params).await {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(ClusterError::api(format!("releasing Lease `{LEASE_NAME}`"))(error)),
        }
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

async fn renew(api: Api<Lease>, me: String) {
    let period = Duration::from_secs(u64::try_from(LEASE_SECONDS / 3).unwrap_or(20));
    loop {
        tokio::time::sleep(period).await;
        let Ok(mut lease) = api.get(LEASE_NAME).await else {
            continue;
        };
        let Some(spec) = lease.spec.as_mut() else {
            continue;
        };
        if spec.holder_identity.as_deref() != Some(me.as_str()) {
            tracing::warn!(
                "the deploy lock was taken over by {:?}",
                spec.holder_identity
            );
            return;
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(error) = api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "cannot renew the deploy lock");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + second).unwrap()
    }

    fn lease(holder: &str, acquired: i64, renewed: i64) -> Lease {
        let mut lease = lease_object(holder, at(acquired), Some("7".into()));
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(at(renewed)));
        }
        lease
    }

    #[test]
    fn an_absent_lease_is_created() {
        assert_eq!(decide(None, "me", at(0)), Decision::Create);
    }

    #[test]
    fn a_fresh_lease_of_someone_else_is_refused_naming_them() {
        let held = lease("ci@runner pid 9 (deploy)", 0, 50);
        assert_eq!(
            decide(Some(&held), "me", at(100)),
            Decision::Refuse {
                holder: "ci@runner pid 9 (deploy)".into(),
                since: at(0).to_string(),
                lease_seconds: LEASE_SECONDS,
            }
        );
    }

    #[test]
    fn an_expired_or_own_or_released_lease_is_taken_with_its_version() {
        let take = Decision::Take {
            resource_version: Some("7".into()),
        };
        assert_eq!(decide(Some(&lease("other", 0, 10)), "me", at(71)), take);
        assert_eq!(decide(Some(&lease("me", 0, 70)), "me", at(71)), take);
        assert_eq!(decide(Some(&lease("", 0, 70)), "me", at(71)), take);
    }
}
