//! Who is acting: `user@host pid N`, the one identity the deploy Lease and the audit trail
//! record. Every part always has a value, so a holder can be found (and, on its own host,
//! known dead) from the identity alone.

use std::fmt;

/// A process: its user, host and pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub host: String,
    pub pid: u32,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} pid {}", self.user, self.host, self.pid)
    }
}

impl Identity {
    /// This process.
    pub fn current() -> Self {
        Self {
            user: user_name(&Sources::read()),
            host: host_name(),
            pid: std::process::id(),
        }
    }

    /// Reads `user@host pid N` back from a Lease holder or audit row (anything after the pid,
    /// such as ` (deploy)`, is ignored). `None` when the text does not have that shape.
    pub fn parse(text: &str) -> Option<Self> {
        let (user_host, rest) = text.split_once(" pid ")?;
        let (user, host) = user_host.rsplit_once('@')?;
        let pid = rest.split_whitespace().next()?.parse().ok()?;
        (!user.is_empty() && !host.is_empty()).then(|| Self {
            user: user.to_owned(),
            host: host.to_owned(),
            pid,
        })
    }
}

/// `user@host pid N`: who is running this psctl, for the audit trail.
pub fn identity() -> String {
    Identity::current().to_string()
}

/// The deploy Lease holder: the identity and what it is doing, `user@host pid N (deploy)`.
pub fn holder_identity(operation: &str) -> String {
    format!("{} ({operation})", Identity::current())
}

/// What the user name is chosen from.
#[derive(Debug, Default)]
struct Sources {
    /// The login uid (`/proc/self/loginuid`): who logged in, even under `sudo`.
    login_uid: Option<u32>,
    uid: Option<u32>,
    env_user: Option<String>,
    env_logname: Option<String>,
    /// `/etc/passwd`.
    passwd: String,
}

impl Sources {
    fn read() -> Self {
        let login_uid = std::fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            // (uid_t)-1: no login session (a daemon, a container).
            .filter(|uid| *uid != u32::MAX);
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| {
                    line.strip_prefix("Uid:")
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|uid| uid.parse().ok())
                })
            });
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            login_uid,
            uid,
            env_user: env("USER"),
            env_logname: env("LOGNAME"),
            passwd: std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        }
    }
}

/// The login name, else `$USER`, else `$LOGNAME`, else the name of our uid, else `uid:N`.
fn user_name(sources: &Sources) -> String {
    let name_of = |uid: u32| {
        sources.passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse::<u32>().ok()?;
            (id == uid && !name.is_empty()).then(|| name.to_owned())
        })
    };
    sources
        .login_uid
        .and_then(name_of)
        .or_else(|| sources.env_user.clone())
        .or_else(|| sources.env_logname.clone())
        .or_else(|| sources.uid.and_then(name_of))
        .or_else(|| sources.uid.map(|uid| format!("uid:{uid}")))
        .unwrap_or_else(|| "uid:unknown".to_owned())
}

/// The kernel's host name, else `/etc/hostname`, else `$HOSTNAME`.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|text| !text.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Whether the process `pid` exists on this host.
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";

    #[test]
    fn the_user_is_the_login_name_then_user_then_logname_then_the_uid() {
        let mut sources = Sources {
            login_uid: Some(1000),
            uid: Some(0),
            env_user: Some("root".into()),
            env_logname: Some("logname".into()),
            passwd: PASSWD.into(),
        };
        assert_eq!(user_name(&sources), "alice", "sudo keeps who logged in");
        sources.login_uid = None;
        assert_eq!(user_name(&sources), "root");
        sources.env_user = None;
        assert_eq!(user_name(&sources), "logname");
        sources.env_logname = None;
        assert_eq!(user_name(&sources), "root", "the name of the uid");
        sources.passwd = String::new();
        assert_eq!(user_name(&sources), "uid:0");
        sources.uid = None;
        assert_eq!(user_name(&sources), "uid:unknown");
    }

    #[test]
    fn the_current_identity_always_names_user_host_and_pid() {
        let me = Identity::current();
        assert!(!me.user.is_empty() && me.user != "unknown");
        assert!(!me.host.is_empty());
        assert_eq!(me.pid, std::process::id());
        assert_eq!(Identity::parse(&identity()), Some(me.clone()));
        assert_eq!(
            Identity::parse(&holder_identity("deploy")),
            Some(me),
            "the operation suffix is ignored"
        );
    }

    #[test]
    fn identities_parse_back_or_not_at_all() {
        assert_eq!(
            Identity::parse("ci@runner-7 pid 42 (deploy)"),
            Some(Identity {
                user: "ci".into(),
                host: "runner-7".into(),
                pid: 42
            })
        );
        for bad in ["garbage", "ci@ pid 1", "@h pid 1", "ci@h pid x", "ci@h"] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_process_exists_and_an_impossible_pid_does_not() {
        assert!(process_exists(std::process::id()));
        // Above Linux's pid_max limit (2^22).
        assert!(!process_exists(4_194_304 + 1));
    }
}
