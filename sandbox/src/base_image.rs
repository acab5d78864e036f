//! The base image `psctl-base:bookworm`, made on this machine because no image can be pulled: a
//! root filesystem holding the host's glibc runtime (what dynamically linked Rust binaries
//! need), CA certificates, a non-root user 65532 and `/tmp`, imported with `docker import` and
//! pushed to the sandbox registry. A content hash in a label makes rebuilding idempotent.
//!
//! The sidecar image `psctl-mesh-proxy:1`, which the API server injects into pods of namespaces
//! labelled `sidecar-injection=enabled`, is made the same way from the host's static busybox.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::process::run;
use crate::settings::{BASE_IMAGE, Layout, SIDECAR_IMAGE, Settings};

/// Host files copied into the image (those present; library names resolve through symlinks).
const HOST_FILES: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libm.so.6",
    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
    "/lib/x86_64-linux-gnu/libpthread.so.0",
    "/lib/x86_64-linux-gnu/libdl.so.2",
    "/lib/x86_64-linux-gnu/librt.so.1",
    "/lib/x86_64-linux-gnu/libnss_dns.so.2",
    "/lib/x86_64-linux-gnu/libnss_files.so.2",
    "/lib/x86_64-linux-gnu/libresolv.so.2",
    "/etc/ssl/certs/ca-certificates.crt",
];

const LABEL: &str = "psctl.base.hash";

/// Files written into the image, apart from the host copies.
pub fn generated_files() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        ),
        ("etc/group", "root:x:0:\nnonroot:x:65532:\n"),
        (
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
        ),
        (
            "etc/os-release",
            "PRETTY_NAME=\"psctl base (host glibc runtime, bookworm)\"\nID=psctl-base\n",
        ),
    ]
}

/// Builds (when its content changed) and pushes the base image; returns its registry reference.
pub fn ensure(layout: &Layout, settings: &Settings) -> anyhow::Result<String> {
    let remote = format!("{}/{BASE_IMAGE}", settings.registry());
    let present: Vec<PathBuf> = HOST_FILES
        .iter()
        .map(PathBuf::from)
        .filter(|path| path.exists())
        .collect();
    let hash = content_hash(&present)?;
    let current = run(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{LABEL}\"}}}}"),
            BASE_IMAGE,
        ],
    )
    .map(|out| out.trim().to_owned())
    .unwrap_or_default();
    if current != hash {
        let rootfs = layout.base_image_dir().join("rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
        for dir in [
            "tmp",
            "home/nonroot",
            "etc/ssl/certs",
            "lib64",
            "lib/x86_64-linux-gnu",
            "usr",
        ] {
            std::fs::create_dir_all(rootfs.join(dir))?;
        }
        for source in &present {
            let relative = source.strip_prefix("/").unwrap_or(source);
            let target = rootfs.join(relative);
            // `copy` follows symlinks, which is what turns libc.so.6 into the real file.
            std::fs::copy(source, &target).with_context(|| {
                format!("cannot copy `{}` into the base image", source.display())
            })?;
        }
        for (relative, contents) in generated_files() {
            std::fs::write(rootfs.join(relative), contents)?;
        }
        // Debian's usrmerge layout: /usr/lib and /lib are the same tree.
        std::os::unix::fs::symlink("../lib", rootfs.join("usr/lib")).ok();
        set_mode(&rootfs.join("tmp"), 0o1777)?;
        chown(&rootfs.join("home/nonroot"))?;
        import_rootfs(
            &rootfs,
            &layout.base_image_dir().join("rootfs.tar"),
            &[
                &format!("LABEL {LABEL}={hash}"),
                "ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "USER 65532:65532",
                "WORKDIR /",
            ],
            BASE_IMAGE,
        )?;
        let _ = std::fs::remove_dir_all(&rootfs);
    }
    run("docker", &["tag", BASE_IMAGE, &remote])?;
    run("docker", &["push", "--quiet", &remote])
        .context("cannot push the base image to the sandbox registry")?;
    Ok(remote)
}

/// The static busybox the sidecar runs (Debian's `busybox-static`).
const BUSYBOX: &str = "/bin/busybox";

/// Builds (when busybox changed) and pushes the sidecar image; returns its registry reference.
pub fn ensure_sidecar(layout: &Layout, settings: &Settings) -> anyhow::Result<String> {
    let remote = format!("{}/{SIDECAR_IMAGE}", settings.registry());
    let busybox = PathBuf::from(BUSYBOX);
    let hash = content_hash(std::slice::from_ref(&busybox))
        .context("the sidecar image needs the host's static busybox (`busybox-static`)")?;
    let current = run(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{LABEL}\"}}}}"),
            SIDECAR_IMAGE,
        ],
    )
    .map(|out| out.trim().to_owned())
    .unwrap_or_default();
    if current != hash {
        let dir = layout.base_image_dir().join("sidecar");
        let rootfs = dir.join("rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
        for path in ["bin", "tmp", "var/lib/mesh-proxy/healthz"] {
            std::fs::create_dir_all(rootfs.join(path))?;
        }
        std::fs::copy(&busybox, rootfs.join("bin/busybox"))
            .with_context(|| format!("cannot copy `{BUSYBOX}` into the sidecar image"))?;
        std::fs::write(rootfs.join("var/lib/mesh-proxy/healthz/ready"), "ready\n")?;
        set_mode(&rootfs.join("tmp"), 0o1777)?;
        import_rootfs(
            &rootfs,
            &dir.join("rootfs.tar"),
            &[&format!("LABEL {LABEL}={hash}"), "USER 1337:1337"],
            SIDECAR_IMAGE,
        )?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    run("docker", &["tag", SIDECAR_IMAGE, &remote])?;
    run("docker", &["push", "--quiet", &remote])
        .context("cannot push the sidecar image to the sandbox registry")?;
    Ok(remote)
}

/// Packs `rootfs` into `tarball` (numeric owners kept) and imports it as `image` with the
/// Dockerfile instructions `changes`: an image made without pulling anything.
fn import_rootfs(
    rootfs: &std::path::Path,
    tarball: &std::path::Path,
    changes: &[&str],
    image: &str,
) -> anyhow::Result<()> {
    let rootfs_text = rootfs.display().to_string();
    let tarball_text = tarball.display().to_string();
    run(
        "tar",
        &[
            "--numeric-owner",
            "-C",
            &rootfs_text,
            "-cf",
            &tarball_text,
            ".",
        ],
    )?;
    let mut args = vec!["import"];
    for change in changes {
        args.extend(["--change", change]);
    }
    args.extend([tarball_text.as_str(), image]);
    run("docker", &args)?;
    Ok(())
}

fn content_hash(files: &[PathBuf]) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for path in files {
        hasher.update(path.display().to_string().as_bytes());
        hasher.update(
            std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?,
        );
    }
    for (relative, contents) in generated_files() {
        hasher.update(relative.as_bytes());
        hasher.update(contents.as_bytes());
    }
    Ok(hex::encode(&hasher.finalize()[..12]))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn chown(path: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(65532), Some(65532))
        .with_context(|| format!("cannot chown `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_has_a_non_root_user_65532() {
        let files = generated_files();
        let passwd = files
            .iter()
            .find(|(path, _)| *path == "etc/passwd")
            .unwrap()
            .1;
        assert!(
            passwd
                .lines()
                .any(|line| line.starts_with("nonroot:x:65532:65532:"))
        );
    }

    #[test]
    fn the_hash_changes_with_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lib");
        std::fs::write(&file, "one").unwrap();
        let first = content_hash(std::slice::from_ref(&file)).unwrap();
        assert_eq!(first, content_hash(std::slice::from_ref(&file)).unwrap());
        std::fs::write(&file, "two").unwrap();
        assert_ne!(first, content_hash(&[file]).unwrap());
    }
}
