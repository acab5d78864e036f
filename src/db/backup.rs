//! Backups: `pg_dump --format=custom` into a directory, a SHA-256 of the file, a `pg_restore
//! --list` verification, a sidecar manifest, and pruning of psctl's own backups past retention.
//!
//! The manifest is what makes a file "psctl's": pruning only ever deletes a dump whose manifest
//! says psctl wrote it, so a DBA's hand-made dump in the same directory is never touched.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tools::{Tool, ToolError, run_tool};
use super::url::DatabaseUrl;

/// Marks a manifest written by psctl (and its schema version).
pub const MANIFEST_KIND: &str = "psctl-backup/v1";
const MANIFEST_SUFFIX: &str = ".manifest.json";

/// The sidecar `<dump>.manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    /// File name of the dump, relative to the manifest's directory.
    pub file: String,
    /// `host:port/database` of the source (never the credentials).
    pub source: String,
    pub database: String,
    pub created_at: DateTime<Utc>,
    pub size_bytes: u64,
    pub sha256: String,
    /// Newest migration applied in the source when the dump was taken (0: none).
    pub schema_version: i64,
    /// Number of entries `pg_restore --list` reported.
    pub toc_entries: usize,
    pub pg_dump_version: String,
}

/// The printed result of a backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupResult {
    pub file: PathBuf,
    pub manifest: PathBuf,
    pub size_bytes: u64,
    pub duration_seconds: f64,
    pub sha256: String,
    pub toc_entries: usize,
    pub pruned: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot create backup directory `{}`", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("cannot read `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backup `{}` failed verification: {reason}", path.display())]
    Verification { path: PathBuf, reason: String },
    #[error("`{}` has no psctl manifest (`{}`); restore only verified psctl backups", file.display(), manifest.display())]
    NoManifest { file: PathBuf, manifest: PathBuf },
    #[error("manifest `{}` is not a psctl backup manifest: {reason}", path.display())]
    BadManifest { path: PathBuf, reason: String },
}

/// `psctl-<database>-<UTC timestamp>.dump`: sortable, and unique per second per database.
pub fn backup_file_name(database: &str, at: DateTime<Utc>) -> String {
    format!("psctl-{database}-{}.dump", at.format("%Y%m%dT%H%M%SZ"))
}

pub fn manifest_path(dump: &Path) -> PathBuf {
    let mut name = dump
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(MANIFEST_SUFFIX);
    dump.with_file_name(name)
}

/// The `pg_dump` argv (no connection details: those travel in the environment).
pub fn pg_dump_args(file: &Path) -> Vec<String> {
    vec![
        "--format=custom".to_owned(),
        "--no-password".to_owned(),
        format!("--file={}", file.display()),
    ]
}

/// Takes, verifies and describes one backup of `url` in `dir`, then prunes past `retention`.
pub async fn backup(
    url: &DatabaseUrl,
    dir: &Path,
    schema_version: i64,
    retention: Option<Duration>,
) -> Result<BackupResult, BackupError> {
    std::fs::create_dir_all(dir).map_err(|source| BackupError::CreateDir {
        dir: dir.to_owned(),
        source,
    })?;
    let started = Instant::now();
    let created_at = Utc::now();
    let file = dir.join(backup_file_name(&url.database(), created_at));
    // Write under a temporary name so a crash never leaves a plausible-looking partial dump.
    let partial = file.with_extension("dump.partial");
    create_private(&partial)?;
    let output = run_tool(Tool::PgDump, &pg_dump_args(&partial), url).await;
    if let Err(error) = output {
        let _ = std::fs::remove_file(&partial);
        return Err(error.into());
    }
    std::fs::rename(&partial, &file).map_err(|source| BackupError::Io {
        path: partial.clone(),
        source,
    })?;
    let (size_bytes, sha256) = hash_file(&file).await?;
    let toc_entries = verify_listing(&file, url).await?;
    let pg_dump_version = super::tools::version(Tool::PgDump)
        .await
        .unwrap_or_default();
    let manifest = Manifest {
        kind: MANIFEST_KIND.to_owned(),
        file: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source: url.label(),
        database: url.database(),
        created_at,
        size_bytes,
        sha256: sha256.clone(),
        schema_version,
        toc_entries,
        pg_dump_version,
    };
    let manifest_file = manifest_path(&file);
    write_manifest(&manifest_file, &manifest)?;
    let pruned = match retention {
        Some(retention) => prune(dir, Utc::now(), retention, &file)?,
        None => Vec::new(),
    };
    Ok(BackupResult {
        file,
        manifest: manifest_file,
        size_bytes,
        duration_seconds: started.elapsed().as_secs_f64(),
        sha256,
        toc_entries,
        pruned,
    })
}

/// Creates `path` empty and readable by this user only (0600, whatever the umask), so the dump
/// `pg_dump` then writes into it is never readable by others, not even while it is written.
fn create_private(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let io = |source| BackupError::Io {
        path: path.to_owned(),
        source,
    };
    // A partial file left by a crash may have other permissions: start afresh.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io(error)),
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let mut text = serde_json::to_string_pretty(manifest).map_err(|error| BackupError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(error),
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| BackupError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Size and SHA-256 (hex) of a file, hashed off the async runtime.
pub async fn hash_file(path: &Path) -> Result<(u64, String), BackupError> {
    let owned = path.to_owned();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            size += read as u64;
            hasher.update(&buffer[..read]);
        }
        Ok((size, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(|error| BackupError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(error),
    })?;
    result.map_err(|source| BackupError::Io {
        path: path.to_owned(),
        source,
    })
}

/// `pg_restore --list` must read the whole table of contents; returns how many entries it has.
pub async fn verify_listing(file: &Path, url: &DatabaseUrl) -> Result<usize, BackupError> {
    let args = vec!["--list".to_owned(), file.display().to_string()];
    let listing = run_tool(Tool::PgRestore, &args, url).await?;
    // An empty database has no entries, but a readable archive always has its header.
    if !listing.contains("; Archive created at") {
        return Err(BackupError::Verification {
            path: file.to_owned(),
            reason: "pg_restore --list did not show an archive header".to_owned(),
        });
    }
    let entries = count_toc_entries(&listing);
    Ok(entries)
}

/// Entries of a `pg_restore --list` listing: the lines that are not `;` comments.
pub fn count_toc_entries(listing: &str) -> usize {
    listing
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with(';'))
        .count()
}

/// Reads the manifest next to `dump` and checks the file against it.
pub async fn verify_against_manifest(dump: &Path) -> Result<Manifest, BackupError> {
    let manifest_file = manifest_path(dump);
    let manifest = read_manifest(&manifest_file)?.ok_or_else(|| BackupError::NoManifest {
        file: dump.to_owned(),
        manifest: manifest_file.clone(),
    })?;
    let (size, sha256) = hash_file(dump).await?;
    if sha256 != manifest.sha256 || size != manifest.size_bytes {
        return Err(BackupError::Verification {
            path: dump.to_owned(),
            reason: format!(
                "checksum mismatch: file has sha256 {sha256} ({size} bytes), manifest says {} ({} bytes)",
                manifest.sha256, manifest.size_bytes
            ),
        });
    }
    Ok(manifest)
}

/// `Ok(None)` when there is no manifest; an error when there is one psctl cannot read.
pub fn read_manifest(path: &Path) -> Result<Option<Manifest>, BackupError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BackupError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|error| BackupError::BadManifest {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if manifest.kind != MANIFEST_KIND {
        return Err(BackupError::BadManifest {
            path: path.to_owned(),
            reason: format!("kind is `{}`", manifest.kind),
        });
    }
    Ok(Some(manifest))
}

/// The dumps (by manifest) older than `retention` at `now`, except `keep`. Pure: the caller lists
/// the directory. A manifest naming a file outside its directory is ignored.
pub fn select_expired(
    manifests: &[(PathBuf, Manifest)],
    now: DateTime<Utc>,
    retention: Duration,
    keep: &Path,
) -> Vec<(PathBuf, PathBuf)> {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return Vec::new();
    };
    manifests
        .iter()
        .filter(|(_, manifest)| now.signed_duration_since(manifest.created_at) > retention)
        .filter(|(_, manifest)| !manifest.file.contains('/') && !manifest.file.contains(".."))
        .filter_map(|(manifest_path, manifest)| {
            let dump = manifest_path.with_file_name(&manifest.file);
            (dump != keep).then(|| (dump, manifest_path.clone()))
        })
        .collect()
}

/// Deletes psctl's expired backups in `dir`; returns the dump files removed.
pub fn prune(
    dir: &Path,
    now: DateTime<Utc>,
    retention: Duration,
    keep: &Path,
) -> Result<Vec<PathBuf>, BackupError> {
    let entries = std::fs::read_dir(dir).map_err(|source| BackupError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut manifests = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| BackupError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(MANIFEST_SUFFIX))
        {
            // A manifest psctl cannot parse is not psctl's to delete.
            if let Ok(Some(manifest)) = read_manifest(&path) {
                manifests.push((path, manifest));
            }
        }
    }
    let mut removed = Vec::new();
    for (dump, manifest) in select_expired(&manifests, now, retention, keep) {
        match std::fs::remove_file(&dump) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(BackupError::Io { path: dump, source }),
        }
        std::fs::remove_file(&manifest).map_err(|source| BackupError::Io {
            path: manifest.clone(),
            source,
        })?;
        removed.push(dump);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(file: &str, created_at: DateTime<Utc>) -> Manifest {
        Manifest {
            kind: MANIFEST_KIND.to_owned(),
            file: file.to_owned(),
            source: "h:5432/app".to_owned(),
            database: "app".to_owned(),
            created_at,
            size_bytes: 1,
            sha256: "00".to_owned(),
            schema_version: 4,
            toc_entries: 3,
            pg_dump_version: "pg_dump (PostgreSQL) 15".to_owned(),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn file_names_sort_by_time_and_manifests_sit_beside_them() {
        let name = backup_file_name("app", at("2026-11-23T10:05:09Z"));
        assert_eq!(name, "psctl-app-20261123T100509Z.dump");
        assert_eq!(
            manifest_path(Path::new("/b/x.dump")),
            Path::new("/b/x.dump.manifest.json")
        );
    }

    #[test]
    fn a_dump_file_is_created_private_even_over_a_leftover() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dump.partial");
        std::fs::write(&path, "old partial").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_private(&path).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), 0);
    }

    #[test]
    fn pg_dump_argv_carries_no_connection_details() {
        let args = pg_dump_args(Path::new("/b/x.dump"));
        assert_eq!(
            args,
            ["--format=custom", "--no-password", "--file=/b/x.dump"]
        );
    }

    #[test]
    fn only_expired_psctl_backups_are_selected_and_never_the_new_one() {
        let now = at("2026-11-23T00:00:00Z");
        let manifests = vec![
            (
                PathBuf::from("/b/old.dump.manifest.json"),
                manifest("old.dump", at("2026-10-01T00:00:00Z")),
            ),
            (
                PathBuf::from("/b/new.dump.manifest.json"),
                manifest("new.dump", at("2026-11-20T00:00:00Z")),
            ),
            (
                PathBuf::from("/b/escape.manifest.json"),
                manifest("../etc/passwd", at("2020-01-01T00:00:00Z")),
            ),
            (
                PathBuf::from("/b/keep.dump.manifest.json"),
                manifest("keep.dump", at("2020-01-01T00:00:00Z")),
            ),
        ];
        let expired = select_expired(
            &manifests,
            now,
            Duration::from_secs(30 * 86_400),
            Path::new("/b/keep.dump"),
        );
        assert_eq!(
            expired,
            vec![(
                PathBuf::from("/b/old.dump"),
                PathBuf::from("/b/old.dump.manifest.json")
            )]
        );
    }

    #[test]
    fn pruning_leaves_foreign_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("psctl-app-1.dump");
        std::fs::write(&old, b"x").unwrap();
        write_manifest(
            &manifest_path(&old),
            &manifest("psctl-app-1.dump", at("2020-01-01T00:00:00Z")),
        )
        .unwrap();
        let foreign = dir.path().join("dba-handmade.dump");
        std::fs::write(&foreign, b"y").unwrap();
        std::fs::write(dir.path().join("notes.manifest.json"), b"{not json").unwrap();
        let removed = prune(
            dir.path(),
            Utc::now(),
            Duration::from_secs(86_400),
            Path::new("/none"),
        )
        .unwrap();
        assert_eq!(removed, vec![old.clone()]);
        assert!(!old.exists() && !manifest_path(&old).exists());
        assert!(foreign.exists());
        assert!(dir.path().join("notes.manifest.json").exists());
    }

    #[test]
    fn toc_listing_counts_entries_not_comments() {
        let listing = ";\n; Archive created at 2026-11-23\n;\n215; 1259 16390 TABLE public invoices app\n\
                       3345; 0 16390 TABLE DATA public invoices app\n\n";
        assert_eq!(count_toc_entries(listing), 2);
    }

    #[tokio::test]
    async fn a_tampered_file_fails_the_manifest_check() {
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("psctl-app-2.dump");
        std::fs::write(&dump, b"original").unwrap();
        let (size, sha256) = hash_file(&dump).await.unwrap();
        let mut m = manifest("psctl-app-2.dump", Utc::now());
        (m.size_bytes, m.sha256) = (size, sha256);
        write_manifest(&manifest_path(&dump), &m).unwrap();
        assert_eq!(verify_against_manifest(&dump).await.unwrap(), m);
        std::fs::write(&dump, b"0riginal").unwrap();
        let error = verify_against_manifest(&dump)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("checksum mismatch"), "{error}");
        std::fs::remove_file(manifest_path(&dump)).unwrap();
        assert!(matches!(
            verify_against_manifest(&dump).await,
            Err(BackupError::NoManifest { .. })
        ));
    }
}
