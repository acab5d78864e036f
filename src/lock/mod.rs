//! The deploy lock: a coordination.k8s.io/v1 Lease (`psctl-deploy`) held for the duration of a
//! mutating command and renewed in the background. Taking it is a pure decision over the Lease
//! as read ([`decide`]) followed by an optimistic write (resourceVersion), so two operators
//! cannot both win.
//!
//! Expiry is judged the way client-go's leader election judges it: by how long *this* process
//! has watched the Lease stay unchanged (same resourceVersion, renewTime and holder), counted on
//! its own monotonic clock, never by comparing our wall clock with another host's `renewTime`.
//! A holder on this host whose pid no longer exists is dead: its Lease is taken over at once.
//!
//! Fencing: the holder keeps reading the Lease (every [`POLL`]) and renews it every third of
//! its duration, each write guarded by the resourceVersion it read. When the Lease names
//! someone else (a takeover, or the kill switch's override), a renewal is refused with a
//! conflict it cannot resolve, or no renewal succeeded for [`RENEW_DEADLINE`] (shorter than the
//! Lease, as client-go's `renewDeadline` is, so the holder stops before anyone may take over),
//! the Lease is *lost*: [`LeaseGuard::check`] then fails and the operation stops at its next
//! safe point without touching the cluster again.

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
/// How often a watched Lease is read again, and how often a holder reads its own Lease.
pub const POLL: Duration = Duration::from_secs(2);
/// How often the holder writes a new `renewTime`.
const RENEW_EVERY: Duration = Duration::from_secs(LEASE_SECONDS as u64 / 3);
/// A holder that could not renew for this long (its monotonic clock) gives the Lease up: it is
/// shorter than [`LEASE_SECONDS`], so the holder stops before a watcher may take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(LEASE_SECONDS as u64 * 2 / 3);

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
    /// The kill switch took it from a live holder: an emergency stop does not wait.
    Override,
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
    #[error("{0}; stopped before changing anything else")]
    Lost(Lost),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Why this process no longer holds the deploy Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The Lease names another holder: a takeover, or the kill switch's override.
    TakenBy { holder: String },
    /// No renewal succeeded for `secs` seconds (at least [`RENEW_DEADLINE`]).
    Unrenewed { secs: u64, problem: String },
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TakenBy { holder } => {
                write!(f, "the deploy lock was taken over by `{holder}`")
            }
            Self::Unrenewed { secs, problem } => write!(
                f,
                "the deploy lock could not be renewed for {secs}s ({problem}); another psctl may hold it now"
            ),
        }
    }
}

impl Classify for LockError {
    /// Lost to another holder: exit 2, like a Lease refused at the start (another operation owns
    /// the environment now). Lost because the API server did not answer: exit 3.
    fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Held { .. } | Self::Lost(Lost::TakenBy { .. }) => ExitStatus::Usage,
            Self::Lost(Lost::Unrenewed { .. }) => ExitStatus::Unreachable,
            Self::Cluster(error) => error.exit_status(),
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            Self::Lost(Lost::TakenBy { holder }) if holder.contains("(kill-switch)") => vec![
                "the kill switch stopped this operation; see `psctl status`".to_owned(),
                "when it is safe, `psctl kill-switch off` restores the replica counts; then run this command again".to_owned(),
            ],
            Self::Lost(_) => vec![
                "see `psctl status` and `psctl audit` for what the new holder did".to_owned(),
                format!("inspect the Lease with `kubectl get lease {LEASE_NAME} -o yaml`"),
            ],
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
            TakeoverReason::Override => format!(
                "overrode the deploy lock held by `{}`: it stops at its next safe point",
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
    /// `None` for a nested hold (see [`DeployLock::acquire`]): the outer hold renews and
    /// releases.
    renewal: Option<tokio::task::JoinHandle<()>>,
    lost: tokio::sync::watch::Receiver<Option<Lost>>,
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
        if let Some(nested) = Self::nested(&api, me) {
            nested.check().map_err(LockError::Lost)?;
            return Ok(nested);
        }
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
            return Ok(Self::held(api, me, takeover));
        }
    }

    fn held(api: Api<Lease>, me: &str, takeover: Option<Takeover>) -> Self {
        let (lost_tx, lost) = tokio::sync::watch::channel(None);
        let renewal = tokio::spawn(renew(api.clone(), me.to_owned(), lost_tx));
        held_here()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((namespace_of(&api), lost.clone()));
        Self {
            api,
            holder: me.to_owned(),
            renewal: Some(renewal),
            lost,
            takeover,
        }
    }

    /// This process already holds the Lease of `namespace` (`psctl run` holds it for the whole
    /// run and runs each step in-process): the step shares that hold and its fencing.
    fn nested(api: &Api<Lease>, me: &str) -> Option<Self> {
        let namespace = namespace_of(api);
        let lost = held_here()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .rev()
            .find(|(held, _)| *held == namespace)
            .map(|(_, lost)| lost.clone())?;
        Some(Self {
            api: api.clone(),
            holder: me.to_owned(),
            renewal: None,
            lost,
            takeover: None,
        })
    }

    /// The kill switch's way in: takes the Lease whoever holds it (a live holder included),
    /// each write guarded by the resourceVersion just read. A previous live holder is named in
    /// [`DeployLock::takeover`] (reason [`TakeoverReason::Override`]) and loses the Lease at its
    /// next read (within [`POLL`]).
    pub async fn acquire_override(
        client: &kube::Client,
        namespace: &str,
        me: &str,
    ) -> Result<Self, LockError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        if let Some(nested) = Self::nested(&api, me) {
            return Ok(nested);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
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
            let previous = existing
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty() && h != me);
            let result = match &existing {
                None => {
                    api.create(&PostParams::default(), &lease_object(me, now, None))
                        .await
                }
                Some(lease) => {
                    api.replace(
                        LEASE_NAME,
                        &PostParams::default(),
                        &lease_object(me, now, lease.metadata.resource_version.clone()),
                    )
                    .await
                }
            };
            match result {
                Ok(_) => {
                    let takeover = previous.map(|holder| {
                        let reason = match HolderProcess::of(&holder) {
                            HolderProcess::DeadHere => TakeoverReason::HolderDead,
                            _ => TakeoverReason::Override,
                        };
                        Takeover {
                            previous_holder: holder,
                            reason,
                        }
                    });
                    return Ok(Self::held(api, me, takeover));
                }
                // The holder renewed between our read and our write: read again.
                Err(kube::Error::Api(status))
                    if (status.code == 409 || status.code == 404) && attempt < 10 => {}
                Err(error) => {
                    return Err(
                        ClusterError::api(format!("taking Lease `{LEASE_NAME}`"))(error).into(),
                    );
                }
            }
        }
    }

    /// What the operation checks at its safe points.
    pub fn guard(&self) -> LeaseGuard {
        LeaseGuard {
            lost: self.lost.clone(),
            _never: None,
        }
    }

    /// `Err` once the Lease is lost (see [`LeaseGuard::check`]).
    pub fn check(&self) -> Result<(), Lost> {
        self.guard().check()
    }

    /// Stops renewing and deletes the Lease if it is still ours (a nested hold leaves both to
    /// the outer one).
    pub async fn release(mut self) -> Result<(), ClusterError> {
        let Some(renewal) = self.renewal.take() else {
            return Ok(());
        };
        renewal.abort();
        self.forget();
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

impl DeployLock {
    /// Removes this hold from the process's list of held Leases.
    fn forget(&self) {
        held_here()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(_, lost)| !lost.same_channel(&self.lost));
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
            self.forget();
        }
    }
}

type HeldLeases = std::sync::Mutex<Vec<(String, tokio::sync::watch::Receiver<Option<Lost>>)>>;

/// The Leases this process holds, by namespace, with their fencing channel.
fn held_here() -> &'static HeldLeases {
    static HELD: std::sync::OnceLock<HeldLeases> = std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
}

fn namespace_of(api: &Api<Lease>) -> String {
    api.namespace().unwrap_or_default().to_owned()
}

/// The fencing token of a held Lease: cheap to clone and to check, handed to the parts of an
/// operation that decide whether to make the next change.
#[derive(Clone)]
pub struct LeaseGuard {
    lost: tokio::sync::watch::Receiver<Option<Lost>>,
    /// Only for [`LeaseGuard::unfenced`]: the sender nobody uses, kept so `lost()` pends.
    _never: Option<std::sync::Arc<tokio::sync::watch::Sender<Option<Lost>>>>,
}

impl LeaseGuard {
    /// `Ok` while the Lease is ours; the reason once it is lost (it never comes back). As an
    /// error: `LockError::Lost`.
    pub fn check(&self) -> Result<(), Lost> {
        match &*self.lost.borrow() {
            None => Ok(()),
            Some(lost) => Err(lost.clone()),
        }
    }

    /// Completes when the Lease is lost (never, while it is held): race a long wait with it.
    pub async fn lost(&self) -> Lost {
        let mut lost = self.lost.clone();
        let seen = lost
            .wait_for(Option::is_some)
            .await
            .map(|value| (*value).clone());
        match seen {
            Ok(Some(lost)) => lost,
            // The renewal task ended without a loss (the lock was released): wait forever.
            Ok(None) | Err(_) => std::future::pending().await,
        }
    }

    /// A guard that is never lost, for code paths that run without the Lease (tests).
    pub fn unfenced() -> Self {
        let (sender, lost) = tokio::sync::watch::channel(None);
        Self {
            lost,
            _never: Some(std::sync::Arc::new(sender)),
        }
    }
}

/// What one read of our own Lease means for the holder. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewStep {
    /// Still ours; nothing to write yet.
    Keep,
    /// Still ours and due: write a new renewTime.
    Renew,
    /// Lost.
    Lost(Lost),
}

/// Decides from one read (`Ok(holder)` of the Lease, `Err(problem)` when it could not be read
/// or is gone) and the time since our last successful renewal. Pure.
pub fn renew_step(
    read: Result<Option<&str>, &str>,
    me: &str,
    since_renewed: Duration,
) -> RenewStep {
    match read {
        Ok(Some(holder)) if holder == me => {
            if since_renewed >= RENEW_DEADLINE {
                // Ours on paper, but a watcher may already have judged it expired.
                RenewStep::Lost(Lost::Unrenewed {
                    secs: since_renewed.as_secs(),
                    problem: "no renewal succeeded in time".to_owned(),
                })
            } else if since_renewed >= RENEW_EVERY {
                RenewStep::Renew
            } else {
                RenewStep::Keep
            }
        }
        Ok(Some(holder)) => RenewStep::Lost(Lost::TakenBy {
            holder: holder.to_owned(),
        }),
        Ok(None) => RenewStep::Lost(Lost::TakenBy {
            holder: "nobody (the Lease was deleted or released)".to_owned(),
        }),
        Err(problem) if since_renewed >= RENEW_DEADLINE => RenewStep::Lost(Lost::Unrenewed {
            secs: since_renewed.as_secs(),
            problem: problem.to_owned(),
        }),
        Err(_) => RenewStep::Keep,
    }
}

async fn renew(api: Api<Lease>, me: String, lost: tokio::sync::watch::Sender<Option<Lost>>) {
    let mut renewed = Instant::now();
    let mut last_problem = String::new();
    loop {
        tokio::time::sleep(POLL).await;
        let read = match api.get(LEASE_NAME).await {
            Ok(lease) => Ok(Some(lease)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => {
                last_problem = error.to_string();
                Err(())
            }
        };
        let holder = read.as_ref().map(|lease| {
            lease.as_ref().map(|l| {
                l.spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    .unwrap_or_default()
            })
        });
        let step = renew_step(
            holder.map_err(|_| last_problem.as_str()),
            &me,
            renewed.elapsed(),
        );
        match step {
            RenewStep::Keep => {}
            RenewStep::Lost(reason) => {
                tracing::warn!("{reason}");
                let _ = lost.send(Some(reason));
                return;
            }
            RenewStep::Renew => {
                let Ok(Some(mut lease)) = read else { continue };
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                }
                // Guarded by the resourceVersion just read: a conflict means someone wrote the
                // Lease since, and the next read says who.
                match api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => renewed = Instant::now(),
                    Err(error) => {
                        tracing::warn!(%error, "cannot renew the deploy lock");
                        last_problem = error.to_string();
                    }
                }
            }
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
    fn a_holder_renews_on_schedule_and_loses_the_lease_to_another_name_at_once() {
        let me = "ops@vm pid 1 (deploy)";
        assert_eq!(
            renew_step(Ok(Some(me)), me, Duration::from_secs(3)),
            RenewStep::Keep
        );
        assert_eq!(renew_step(Ok(Some(me)), me, RENEW_EVERY), RenewStep::Renew);
        assert_eq!(
            renew_step(Ok(Some(OTHER)), me, Duration::from_secs(1)),
            RenewStep::Lost(Lost::TakenBy {
                holder: OTHER.into()
            })
        );
        assert!(matches!(
            renew_step(Ok(None), me, Duration::ZERO),
            RenewStep::Lost(Lost::TakenBy { .. })
        ));
    }

    #[test]
    fn failed_renewals_lose_the_lease_before_a_watcher_may_take_it() {
        let me = "ops@vm pid 1 (deploy)";
        assert!(RENEW_DEADLINE < Duration::from_secs(LEASE_SECONDS as u64));
        assert_eq!(
            renew_step(Err("503"), me, RENEW_DEADLINE - Duration::from_secs(1)),
            RenewStep::Keep
        );
        assert_eq!(
            renew_step(Err("503"), me, RENEW_DEADLINE),
            RenewStep::Lost(Lost::Unrenewed {
                secs: RENEW_DEADLINE.as_secs(),
                problem: "503".into()
            })
        );
        // Readable and still ours, but not renewed in time: a watcher may have judged it
        // expired, so it is given up all the same.
        assert!(matches!(
            renew_step(Ok(Some(me)), me, RENEW_DEADLINE),
            RenewStep::Lost(Lost::Unrenewed { .. })
        ));
    }

    #[test]
    fn a_lost_lease_maps_to_its_exit_code_and_names_the_kill_switch() {
        let taken = LockError::Lost(Lost::TakenBy {
            holder: "ops@vm pid 2 (kill-switch)".into(),
        });
        assert_eq!(taken.exit_status(), ExitStatus::Usage);
        assert!(
            taken
                .hints()
                .iter()
                .any(|h| h.contains("psctl kill-switch off"))
        );
        assert_eq!(
            taken.to_string(),
            "the deploy lock was taken over by `ops@vm pid 2 (kill-switch)`; stopped before changing anything else"
        );
        let unrenewed = LockError::Lost(Lost::Unrenewed {
            secs: 40,
            problem: "503".into(),
        });
        assert_eq!(unrenewed.exit_status(), ExitStatus::Unreachable);
    }

    #[tokio::test]
    async fn an_unfenced_guard_is_never_lost() {
        let guard = LeaseGuard::unfenced();
        assert!(guard.check().is_ok());
        let waited = tokio::time::timeout(Duration::from_millis(20), guard.lost()).await;
        assert!(waited.is_err(), "lost() completed for an unfenced guard");
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
