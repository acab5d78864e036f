//! Revision selection: which Helm revision a rollback should return to. Pure functions over a
//! release's history.

use super::storage::{ReleaseStatus, Revision};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("release `{release}` has no revisions")]
    NoHistory { release: String },
    #[error("release `{release}` has no revision {wanted}; existing: {existing}")]
    NoSuchRevision {
        release: String,
        wanted: u32,
        existing: String,
    },
    #[error("revision {wanted} of `{release}` is the current revision")]
    AlreadyCurrent { release: String, wanted: u32 },
    #[error("release `{release}` has no earlier successfully deployed revision to roll back to")]
    NothingToRollBackTo { release: String },
}

impl crate::error::Classify for SelectError {
    fn exit_status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Usage
    }

    fn hints(&self) -> Vec<String> {
        vec!["`psctl history <component>` lists the revisions and their status".to_owned()]
    }
}

/// The revisions of one release, out of a list read for several.
pub fn of_release(history: &[Revision], release: &str) -> Vec<Revision> {
    history
        .iter()
        .filter(|r| r.release == release)
        .cloned()
        .collect()
}

/// The revision currently in charge: the highest-numbered one.
pub fn current(history: &[Revision]) -> Option<&Revision> {
    history.iter().max_by_key(|r| r.revision)
}

/// The last revision that is `deployed` now: the one to return to if a change fails.
pub fn deployed(history: &[Revision]) -> Option<&Revision> {
    history
        .iter()
        .filter(|r| r.status == ReleaseStatus::Deployed)
        .max_by_key(|r| r.revision)
}

/// Chooses the rollback target. With `wanted`, it must exist and not be current. Without, it is
/// the newest revision before the current one that was deployed successfully (`deployed` or
/// `superseded`), skipping failed and pending ones: not blindly current−1.
pub fn rollback_target<'a>(
    release: &str,
    history: &'a [Revision],
    wanted: Option<u32>,
) -> Result<&'a Revision, SelectError> {
    let current = current(history).ok_or_else(|| SelectError::NoHistory {
        release: release.to_owned(),
    })?;
    if let Some(wanted) = wanted {
        let target = history
            .iter()
            .find(|r| r.revision == wanted)
            .ok_or_else(|| SelectError::NoSuchRevision {
                release: release.to_owned(),
                wanted,
                existing: history
                    .iter()
                    .map(|r| r.revision.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if target.revision == current.revision && current.status == ReleaseStatus::Deployed {
            return Err(SelectError::AlreadyCurrent {
                release: release.to_owned(),
                wanted,
            });
        }
        return Ok(target);
    }
    history
        .iter()
        .filter(|r| r.revision < current.revision)
        .filter(|r| {
            matches!(
                r.status,
                ReleaseStatus::Deployed | ReleaseStatus::Superseded
            )
        })
        .max_by_key(|r| r.revision)
        .ok_or_else(|| SelectError::NothingToRollBackTo {
            release: release.to_owned(),
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rev(revision: u32, status: ReleaseStatus) -> Revision {
        Revision {
            release: "r".into(),
            revision,
            status,
            chart: "c-0.1.0".into(),
            app_version: "1".into(),
            image_tag: format!("t{revision}"),
            updated: String::new(),
            description: String::new(),
        }
    }

    use ReleaseStatus::*;

    #[test]
    fn the_default_target_skips_failed_revisions() {
        let history = [
            rev(1, Superseded),
            rev(2, Superseded),
            rev(3, Failed),
            rev(4, Deployed),
        ];
        assert_eq!(rollback_target("r", &history, None).unwrap().revision, 2);
    }

    #[test]
    fn after_a_failed_upgrade_the_target_is_the_still_deployed_revision() {
        let history = [rev(1, Superseded), rev(2, Deployed), rev(3, Failed)];
        assert_eq!(rollback_target("r", &history, None).unwrap().revision, 2);
        assert_eq!(deployed(&history).unwrap().revision, 2);
    }

    #[test]
    fn pending_revisions_are_never_targets() {
        let history = [rev(1, Superseded), rev(2, PendingUpgrade), rev(3, Deployed)];
        assert_eq!(rollback_target("r", &history, None).unwrap().revision, 1);
    }

    #[test]
    fn an_explicit_target_must_exist_and_not_be_current() {
        let history = [rev(1, Superseded), rev(2, Deployed)];
        assert_eq!(rollback_target("r", &history, Some(1)).unwrap().revision, 1);
        assert_eq!(
            rollback_target("r", &history, Some(7))
                .unwrap_err()
                .to_string(),
            "release `r` has no revision 7; existing: 1, 2"
        );
        assert!(matches!(
            rollback_target("r", &history, Some(2)),
            Err(SelectError::AlreadyCurrent { .. })
        ));
    }

    #[test]
    fn nothing_to_return_to() {
        assert!(matches!(
            rollback_target("r", &[], None),
            Err(SelectError::NoHistory { .. })
        ));
        assert!(matches!(
            rollback_target("r", &[rev(1, Deployed)], None),
            Err(SelectError::NothingToRollBackTo { .. })
        ));
    }
}
