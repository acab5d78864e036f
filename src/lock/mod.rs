//! The deploy lock: a coordination.k8s.io/v1 Lease (`psctl-deploy`) held for the duration of a
//! mutating command and renewed in the background. Taking it is a pure decision over the Lease
//! as read ([`decide`]) followed by an optimistic write (resourceVersion), so two operators
//! cannot both win.
//!
//! Expiry is judged the way client-go's leader election judges it: by how long *this* process
//! has watched the Lease stay unchanged (same resourceVersion, renewTime and holder), counted on
//! its own monotonic clock, never by comparing our wall clock with another host's `renewTime`.
//! A holder on this host whose pid no longer exists is dead: its Lease is taken over at once.

pub mod identity;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

pub use identity::{Identity, holder_identity, identity};

use crate::cluster::{ClusterError, is_not_found};
use crate::error::{Classify, ExitStatus};

/// The Lease name every psctl mutating command contends for.
pub const LEASE_NAME: &str = "psctl-deploy";
/// How long a holder that stopped renewing keeps the lock.
pub const LEASE_SECONDS: i32 = 60;
/// The longest `acquire` watches an unrenewed Lease before giving up; a Lease whose duration
/// is longer than this is refused (the holder's lease is not ours to shorten).
pub const MAX_WATCH: Duration = Duration::from_secs(LEASE_SECONDS as u64 + 5);
/// How often a watched Lease is read again.
const POLL: Duration = Duration::from_secs(2);

/// What this process has seen of the Lease while deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// How long (our monotonic clock) the Lease has stayed exactly as first read.
    pub unchanged_for: Duration,
    /// The Lease changed (renewed, or taken by someone else) while we watched it.
    pub changed: bool,
}

/// The holder's process as far as this host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderProcess {
    /// The holder names this host and its pid exists.
    AliveHere,
    /// The holder names this host and its pid does not exist.
    DeadHere,
    /// Another host, or a holder identity psctl cannot read.
    Unknown,
}

impl HolderProcess {
    /// Looks the holder up: only a holder on this very host can be known dead.
    pub fn of(holder: &str) -> Self {
        let Some(holder) = Identity::parse(holder) else {
            return Self::Unknown;
        };
        if holder.host != Identity::current().host {
            return Self::Unknown;
        }
        if identity::process_exists(holder.pid) {
            Self::AliveHere
        } else {
            Self::DeadHere
        }
    }
}

/// Why a held Lease is taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeoverReason {
    /// Its holder's process no longer exists on this host.
    HolderDead,
    /// Nobody renewed it for its whole duration while we watched.
    Expired { unchanged_secs: u64 },
}

/// Why a held Lease is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The holder's process is running on this host.
    AliveHere,
    /// The holder renewed it (or someone took it) while we watched.
    Renewed,
    /// Its duration is longer than psctl waits.
    TooLongToWait,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it.
    Create,
    /// Free (or already ours): take it, guarded by this resourceVersion.
    Take { resource_version: Option<String> },
    /// Held by a holder that is dead or gone silent: take it and record the takeover.
    TakeOver {
        resource_version: Option<String>,
        holder: String,
        reason: TakeoverReason,
    },
    /// Held by someone else who is (or may still be) alive.
    Refuse {
        holder: String,
        since: String,
        lease_seconds: i32,
        reason: RefuseReason,
    },
    /// Held, not renewed so far: read it again; it expires if unchanged for `remaining` more.
    Wait { holder: String, remaining: Duration },
}

/// Decides what to do given the Lease as read (`None` = absent), what we have seen of it and
/// what this host knows of its holder's process. Pure: `seen` and `process` carry every
/// observation of time and of the host.
pub fn decide(
    existing: Option<&Lease>,
    me: &str,
    seen: Seen,
    process: HolderProcess,
    max_watch: Duration,
) -> Decision {
    let Some(lease) = existing else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let resource_version = lease.metadata.resource_version.clone();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return Decision::Take { resource_version };
    }
    let lease_seconds = spec
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .unwrap_or(LEASE_SECONDS);
    let refuse = |reason| Decision::Refuse {
        holder: holder.clone(),
        since: spec
            .acquire_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "an unknown time".to_owned()),
        lease_seconds,
        reason,
    };
    match process {
        HolderProcess::DeadHere => {
            return Decision::TakeOver {
                resource_version,
                holder,
                reason: TakeoverReason::HolderDead,
            };
        }
        HolderProcess::AliveHere => return refuse(RefuseReason::AliveHere),
        HolderProcess::Unknown => {}
    }
    if seen.changed {
        return refuse(RefuseReason::Renewed);
    }
    let duration = Duration::from_secs(u64::try_from(lease_seconds).unwrap_or(0));
    if seen.unchanged_for >= duration {
        return Decision::TakeOver {
            resource_version,
            holder,
            reason: TakeoverReason::Expired {
                unchanged_secs: seen.unchanged_for.as_secs(),
            },
        };
    }
    if duration > max_watch {
        return refuse(RefuseReason::TooLongToWait);
    }
    Decision::Wait {
        holder,
        remaining: duration - seen.unchanged_for,
    }
}

/// What a watched Lease looked like: any change to these is a sign of life.
fn fingerprint(lease: Option<&Lease>) -> Option<(Option<String>, Option<String>, Option<String>)> {
    lease.map(|lease| {
        let spec = lease.spec.as_ref();
        (
            lease.metadata.resource_version.clone(),
            spec.and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string()),
            spec.and_then(|s| s.holder_identity.clone()),
        )
    })
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another psctl operation holds the deploy lock: `{holder}` since {since} ({})", reason.explain(*lease_seconds))]
    Held {
        holder: String,
        since: String,
        lease_seconds: i32,
        reason: RefuseReason,
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
            Self::Held { lease_seconds, .. } => vec![
                format!(
                    "wait for it to finish; a holder on this host that died is replaced at once, one elsewhere once psctl has seen its Lease unrenewed for {lease_seconds}s"
                ),
                format!("inspect it with `kubectl get lease {LEASE_NAME} -o yaml`"),
            ],
            Self::Cluster(error) => error.hints(),
        }
    }
}

impl RefuseReason {
    fn explain(self, lease_seconds: i32) -> String {
        match self {
            Self::AliveHere => "its process is running on this host".to_owned(),
            Self::Renewed => "it renewed the Lease while psctl watched".to_owned(),
            Self::TooLongToWait => {
                format!("its Lease lasts {lease_seconds}s without renewal, longer than psctl waits")
            }
        }
    }
}

/// A takeover of the Lease from a dead or silent holder, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    pub previous_holder: String,
    pub reason: TakeoverReason,
}

impl Takeover {
    /// One line for stderr and the audit trail.
    pub fn describe(&self) -> String {
        match &self.reason {
            TakeoverReason::HolderDead => format!(
                "took over the deploy lock from `{}`: that process no longer exists on this host",
                self.previous_holder
            ),
            TakeoverReason::Expired { unchanged_secs } => format!(
                "took over the deploy lock from `{}`: its Lease was not renewed for {unchanged_secs}s",
                self.previous_holder
            ),
        }
    }
}

/// A held lock; renewed in the background until [`DeployLock::release`] (or drop, which stops
/// renewing so the Lease expires).
pub struct DeployLock {
    api: Api<Lease>,
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
    /// Set when the Lease was taken from a dead or silent holder: the caller audits it.
    pub takeover: Option<Takeover>,
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
    /// Takes the Lease in `namespace` for `me`, or says who holds it. A Lease held by a silent
    /// holder elsewhere is watched (up to [`MAX_WATCH`], `waiting` is told once) until it has
    /// stayed unchanged for its duration.
    pub async fn acquire(
        client: &kube::Client,
        namespace: &str,
        me: &str,
        waiting: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Self, LockError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let mut first_seen: Option<(_, Instant)> = None;
        let mut announced = false;
        loop {
            let existing = match api.get(LEASE_NAME).await {
                Ok(lease) => Some(lease),
                Err(error) if is_not_found(&error) => None,
                Err(error) => {
                    return Err(
                        ClusterError::api(format!("reading Lease `{LEASE_NAME}`"))(error).into(),
                    );
                }
            };
            let observed = fingerprint(existing.as_ref());
            let seen = match &first_seen {
                None => {
                    first_seen = Some((observed, Instant::now()));
                    Seen::default()
                }
                Some((first, at)) if *first == observed => Seen {
                    unchanged_for: at.elapsed(),
                    changed: false,
                },
                Some(_) => Seen {
                    unchanged_for: Duration::ZERO,
                    changed: true,
                },
            };
            let process = existing
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_deref())
                .map_or(HolderProcess::Unknown, HolderProcess::of);
            let now = Timestamp::now();
            let (result, takeover) = match decide(existing.as_ref(), me, seen, process, MAX_WATCH) {
                Decision::Refuse {
                    holder,
                    since,
                    lease_seconds,
                    reason,
                } => {
                    return Err(LockError::Held {
                        holder,
                        since,
                        lease_seconds,
                        reason,
                    });
                }
                Decision::Wait { holder, remaining } => {
                    if !announced {
                        waiting(format!(
                            "the deploy lock is held by `{holder}` on another host; watching whether it is renewed \
                             (taken over if unchanged for {}s more)",
                            remaining.as_secs()
                        ));
                        announced = true;
                    }
                    tokio::time::sleep(POLL.min(remaining)).await;
                    continue;
                }
                Decision::Create => (
                    api.create(&PostParams::default(), &lease_object(me, now, None))
                        .await,
                    None,
                ),
                Decision::Take { resource_version } => (
                    api.replace(
                        LEASE_NAME,
                        &PostParams::default(),
                        &lease_object(me, now, resource_version),
                    )
                    .await,
                    None,
                ),
                Decision::TakeOver {
                    resource_version,
                    holder,
                    reason,
                } => (
                    api.replace(
                        LEASE_NAME,
                        &PostParams::default(),
                        &lease_object(me, now, resource_version),
                    )
                    .await,
                    Some(Takeover {
                        previous_holder: holder,
                        reason,
                    }),
                ),
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
                        reason: RefuseReason::Renewed,
                    });
                }
                return Err(
                    ClusterError::api(format!("taking Lease `{LEASE_NAME}`"))(error).into(),
                );
            }
            let renewal = tokio::spawn(renew(api.clone(), me.to_owned()));
            return Ok(Self {
                api,
                holder: me.to_owned(),
                renewal,
                takeover,
            });
        }
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

    fn lease(holder: &str) -> Lease {
        lease_object(holder, at(0), Some("7".into()))
    }

    fn watched(seconds: u64) -> Seen {
        Seen {
            unchanged_for: Duration::from_secs(seconds),
            changed: false,
        }
    }

    fn decide_for(lease: &Lease, seen: Seen, process: HolderProcess) -> Decision {
        decide(Some(lease), "me", seen, process, MAX_WATCH)
    }

    const OTHER: &str = "ci@runner pid 9 (deploy)";

    #[test]
    fn an_absent_lease_is_created() {
        assert_eq!(
            decide(
                None,
                "me",
                Seen::default(),
                HolderProcess::Unknown,
                MAX_WATCH
            ),
            Decision::Create
        );
    }

    #[test]
    fn an_own_or_released_lease_is_taken_with_its_version() {
        let take = Decision::Take {
            resource_version: Some("7".into()),
        };
        for holder in ["me", ""] {
            assert_eq!(
                decide_for(&lease(holder), Seen::default(), HolderProcess::Unknown),
                take
            );
        }
    }

    #[test]
    fn a_dead_holder_on_this_host_is_taken_over_at_once() {
        assert_eq!(
            decide_for(&lease(OTHER), Seen::default(), HolderProcess::DeadHere),
            Decision::TakeOver {
                resource_version: Some("7".into()),
                holder: OTHER.into(),
                reason: TakeoverReason::HolderDead,
            }
        );
    }

    #[test]
    fn a_live_holder_on_this_host_is_refused_at_once() {
        assert_eq!(
            decide_for(&lease(OTHER), Seen::default(), HolderProcess::AliveHere),
            Decision::Refuse {
                holder: OTHER.into(),
                since: at(0).to_string(),
                lease_seconds: LEASE_SECONDS,
                reason: RefuseReason::AliveHere,
            }
        );
    }

    #[test]
    fn a_holder_elsewhere_is_watched_not_judged_by_its_renew_time() {
        // The Lease says it was renewed long ago by our clock; that proves nothing, since the
        // other host's clock may differ: watch it for its whole duration first.
        let mut stale = lease(OTHER);
        stale.spec.as_mut().unwrap().renew_time = Some(MicroTime(at(-86_400)));
        assert_eq!(
            decide_for(&stale, Seen::default(), HolderProcess::Unknown),
            Decision::Wait {
                holder: OTHER.into(),
                remaining: Duration::from_secs(60),
            }
        );
        assert_eq!(
            decide_for(&stale, watched(45), HolderProcess::Unknown),
            Decision::Wait {
                holder: OTHER.into(),
                remaining: Duration::from_secs(15),
            }
        );
        assert_eq!(
            decide_for(&stale, watched(60), HolderProcess::Unknown),
            Decision::TakeOver {
                resource_version: Some("7".into()),
                holder: OTHER.into(),
                reason: TakeoverReason::Expired { unchanged_secs: 60 },
            }
        );
    }

    #[test]
    fn a_lease_renewed_while_watched_is_refused_whatever_its_renew_time() {
        let mut future = lease(OTHER);
        future.spec.as_mut().unwrap().renew_time = Some(MicroTime(at(86_400)));
        let changed = Seen {
            unchanged_for: Duration::ZERO,
            changed: true,
        };
        assert!(matches!(
            decide_for(&future, changed, HolderProcess::Unknown),
            Decision::Refuse {
                reason: RefuseReason::Renewed,
                ..
            }
        ));
    }

    #[test]
    fn a_lease_longer_than_psctl_waits_is_refused_until_it_expires() {
        let mut long = lease(OTHER);
        long.spec.as_mut().unwrap().lease_duration_seconds = Some(600);
        assert!(matches!(
            decide_for(&long, watched(10), HolderProcess::Unknown),
            Decision::Refuse {
                reason: RefuseReason::TooLongToWait,
                lease_seconds: 600,
                ..
            }
        ));
        assert!(matches!(
            decide_for(&long, watched(600), HolderProcess::Unknown),
            Decision::TakeOver { .. }
        ));
    }

    #[test]
    fn a_holder_process_is_known_only_on_this_host() {
        let me = Identity::current();
        assert_eq!(
            HolderProcess::of(&holder_identity("x")),
            HolderProcess::AliveHere
        );
        let dead = Identity {
            pid: 4_194_305,
            ..me.clone()
        };
        assert_eq!(
            HolderProcess::of(&format!("{dead} (deploy)")),
            HolderProcess::DeadHere
        );
        let elsewhere = Identity {
            host: format!("{}-elsewhere", me.host),
            pid: 4_194_305,
            ..me
        };
        assert_eq!(
            HolderProcess::of(&elsewhere.to_string()),
            HolderProcess::Unknown
        );
        assert_eq!(HolderProcess::of("unknown"), HolderProcess::Unknown);
    }

    #[test]
    fn a_refusal_explains_itself() {
        let error = LockError::Held {
            holder: OTHER.into(),
            since: "2026-01-01T00:00:00Z".into(),
            lease_seconds: 60,
            reason: RefuseReason::AliveHere,
        };
        assert_eq!(
            error.to_string(),
            "another psctl operation holds the deploy lock: `ci@runner pid 9 (deploy)` since 2026-01-01T00:00:00Z (its process is running on this host)"
        );
        let takeover = Takeover {
            previous_holder: OTHER.into(),
            reason: TakeoverReason::HolderDead,
        };
        assert!(
            takeover
                .describe()
                .contains("no longer exists on this host")
        );
    }
}
