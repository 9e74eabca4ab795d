//! The command policy: which commands a tenant may run, as templates with typed arguments.
//!
//! A command reaches a device only after four layers:
//! 1. `command::parse` splits the string into argv and refuses anything only a shell would
//!    interpret (operators, expansions, globs, control characters).
//! 2. [`Policy::check`] refuses blocked patterns with the reason (Scalelite's list: recursive
//!    deletion, system control, user management, permission changes, chaining — and the ways
//!    around them: paths to the program, wrappers such as `sudo` or `sh -c`, look-alike and
//!    invisible characters), whether or not a template would match.
//! 3. The argv must match one allow-listed template exactly: fixed words in order, and each
//!    parameter of its declared kind (a container name, a service, a host, a bounded integer).
//!    No parameter may start with `-`, so no caller text becomes an option.
//! 4. The worker single-quotes every word, so the remote shell interprets nothing.
//!
//! The default templates are Scalelite's whitelist. A deployment may instead run in `open`
//! mode (layers 1 and 4 only: any argv, each word still reaching the device literally — but
//! the program may be an interpreter or a builtin such as `eval` that runs its arguments),
//! for fleets whose operators are all trusted with a shell.

use std::collections::BTreeMap;

use serde::Serialize;

/// A parameter's kind, each with its own validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// A docker container name or id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
    Container,
    /// A systemd unit: `[A-Za-z0-9][A-Za-z0-9@._:-]{0,127}`.
    Service,
    /// A DNS name or an IP address.
    Host,
    /// A decimal integer from 1 to 10000.
    Count,
}

impl ParamKind {
    fn accepts(self, value: &str) -> bool {
        let first_ok = value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
        match self {
            ParamKind::Container => {
                first_ok
                    && value.len() <= 128
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            }
            ParamKind::Service => {
                first_ok
                    && value.len() <= 128
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"@._:-".contains(&b))
            }
            ParamKind::Host => {
                (first_ok || value.starts_with('['))
                    && value.len() <= 253
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            }
            ParamKind::Count => {
                value.len() <= 5
                    && value
                        .parse::<u32>()
                        .is_ok_and(|n| (1..=10_000).contains(&n))
                    && !value.starts_with('0')
            }
        }
    }
}

/// One word of a template.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Word {
    Fixed {
        value: &'static str,
    },
    Param {
        name: &'static str,
        kind: ParamKind,
    },
    /// An optional `--flag value` pair.
    Option {
        flag: &'static str,
        name: &'static str,
        kind: ParamKind,
    },
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Template {
    pub name: &'static str,
    pub description: &'static str,
    /// As a person would write it: `docker logs {container} [--tail {lines}]`.
    pub usage: String,
    pub words: Vec<Word>,
}

fn fixed(value: &'static str) -> Word {
    Word::Fixed { value }
}

fn template(name: &'static str, description: &'static str, words: Vec<Word>) -> Template {
    let usage = words
        .iter()
        .map(|w| match w {
            Word::Fixed { value } => (*value).to_owned(),
            Word::Param { name, .. } => format!("{{{name}}}"),
            Word::Option { flag, name, .. } => format!("[{flag} {{{name}}}]"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    Template {
        name,
        description,
        usage,
        words,
    }
}

/// What an argv or a template call was refused for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("blocked: {pattern} ({reason})")]
    Blocked {
        pattern: String,
        reason: &'static str,
    },
    #[error("no allowed template matches this command{}", .closest.map(|c| format!("; closest: {c}")).unwrap_or_default())]
    NotAllowed { closest: Option<&'static str> },
    #[error("unknown template {0:?}; GET /v1/templates lists them")]
    UnknownTemplate(String),
    #[error("argument {name:?} is not a valid {kind:?}")]
    BadArgument { name: &'static str, kind: ParamKind },
    #[error("missing argument {0:?}")]
    MissingArgument(&'static str),
    #[error("template {template} takes no argument {name:?}")]
    UnexpectedArgument {
        template: &'static str,
        name: String,
    },
}

impl PolicyError {
    /// The request property at fault, for the error body.
    pub fn property(&self) -> String {
        match self {
            PolicyError::UnknownTemplate(_) => "template".into(),
            PolicyError::BadArgument { name, .. } | PolicyError::MissingArgument(name) => {
                format!("args.{name}")
            }
            PolicyError::UnexpectedArgument { name, .. } => format!("args.{name}"),
            _ => "command".into(),
        }
    }
}

/// An argv the policy approved, and by which template (`None` in open mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub template: Option<&'static str>,
    pub argv: Vec<String>,
}

pub struct Policy {
    pub templates: Vec<Template>,
    /// Open mode: every argv that passes the blocked patterns is allowed.
    pub open: bool,
}

const WRAPPERS: &[&str] = &[
    "sudo", "su", "doas", "env", "sh", "bash", "dash", "zsh", "ksh", "csh", "fish", "busybox",
    "xargs", "nohup", "timeout", "nice", "ionice", "exec", "eval", "setsid", "stdbuf", "chroot",
    "nsenter", "script", "watch", "find", "awk", "perl", "python", "python3", "ruby", "ssh",
];

impl Policy {
    /// Scalelite's whitelist.
    pub fn scalelite(open: bool) -> Self {
        use ParamKind::*;
        let templates = vec![
            template(
                "docker_ps",
                "List running containers",
                vec![fixed("docker"), fixed("ps")],
            ),
            template(
                "docker_logs",
                "A container's logs, optionally only the last lines",
                vec![
                    fixed("docker"),
                    fixed("logs"),
                    Word::Param {
                        name: "container",
                        kind: Container,
                    },
                    Word::Option {
                        flag: "--tail",
                        name: "lines",
                        kind: Count,
                    },
                ],
            ),
            template(
                "docker_stats",
                "Container resource usage, once",
                vec![fixed("docker"), fixed("stats"), fixed("--no-stream")],
            ),
            template("df", "Disk usage", vec![fixed("df"), fixed("-h")]),
            template("free", "Memory usage", vec![fixed("free"), fixed("-m")]),
            template("uptime", "Uptime and load", vec![fixed("uptime")]),
            template(
                "top",
                "One batch snapshot of processes",
                vec![fixed("top"), fixed("-b"), fixed("-n"), fixed("1")],
            ),
            template(
                "systemctl_status",
                "A service's status",
                vec![
                    fixed("systemctl"),
                    fixed("status"),
                    Word::Param {
                        name: "service",
                        kind: Service,
                    },
                ],
            ),
            template(
                "systemctl_is_active",
                "Whether a service is active",
                vec![
                    fixed("systemctl"),
                    fixed("is-active"),
                    Word::Param {
                        name: "service",
                        kind: Service,
                    },
                ],
            ),
            template(
                "netstat",
                "Listening TCP sockets",
                vec![fixed("netstat"), fixed("-tlnp")],
            ),
            template(
                "ss",
                "Listening TCP sockets",
                vec![fixed("ss"), fixed("-tlnp")],
            ),
            template(
                "ping",
                "Three pings",
                vec![
                    fixed("ping"),
                    fixed("-c"),
                    fixed("3"),
                    Word::Param {
                        name: "host",
                        kind: Host,
                    },
                ],
            ),
            template(
                "cpuinfo",
                "CPU information",
                vec![fixed("cat"), fixed("/proc/cpuinfo")],
            ),
            template(
                "meminfo",
                "Memory information",
                vec![fixed("cat"), fixed("/proc/meminfo")],
            ),
            template("hostname", "The host's name", vec![fixed("hostname")]),
            template(
                "bbb_status",
                "BigBlueButton status",
                vec![fixed("bbb-conf"), fixed("--status")],
            ),
            template(
                "bbb_check",
                "BigBlueButton configuration check",
                vec![fixed("bbb-conf"), fixed("--check")],
            ),
            template(
                "bbb_secret",
                "BigBlueButton shared secret",
                vec![fixed("bbb-conf"), fixed("--secret")],
            ),
        ];
        Self { templates, open }
    }

    /// Blocked patterns, checked before anything else so the refusal says why.
    fn blocked(argv: &[String]) -> Result<(), PolicyError> {
        let block = |pattern: &str, reason| {
            Err(PolicyError::Blocked {
                pattern: pattern.to_owned(),
                reason,
            })
        };
        for word in argv {
            if let Some(c) = word.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
                return block(
                    &format!("{c:?}"),
                    "non-ASCII or invisible characters, a way to disguise a command",
                );
            }
            for chain in [";", "&&", "||", "|", "&", "$(", "`", ">", "<", "\n"] {
                if word.contains(chain) {
                    return block(chain, "command chaining or redirection - injection risk");
                }
            }
        }
        let Some(program) = argv.first() else {
            return Ok(());
        };
        // `/sbin/reboot`, `./reboot`, `/usr/bin/../sbin/shutdown` are still reboot and shutdown.
        let name = program.rsplit('/').next().unwrap_or(program);
        let args = &argv[1..];
        let has = |flags: &[&str]| {
            args.iter().any(|a| {
                flags.contains(&a.as_str())
                    || (a.starts_with('-')
                        && !a.starts_with("--")
                        && flags.iter().any(|f| f.len() == 2 && a.contains(&f[1..])))
            })
        };
        match name {
            "rm" if has(&["-r", "-R", "--recursive"]) => {
                block("rm -r", "recursive deletion - data loss risk")
            }
            "rm" | "shred" | "dd" | "mkfs" | "wipefs" => block(name, "data loss risk"),
            "shutdown" | "reboot" | "halt" | "poweroff" | "init" | "telinit" => {
                block(name, "system control - service disruption")
            }
            "systemctl"
                if args.iter().any(|a| {
                    ["reboot", "poweroff", "halt", "kexec", "rescue", "emergency"]
                        .contains(&a.as_str())
                }) =>
            {
                block(
                    "systemctl reboot/poweroff/halt",
                    "system control - service disruption",
                )
            }
            "passwd" | "useradd" | "userdel" | "usermod" | "chpasswd" | "adduser" | "deluser"
            | "groupadd" | "visudo" => block(name, "user management - security risk"),
            "chmod" if args.iter().any(|a| a.ends_with("777")) => {
                block("chmod 777", "permission changes - security risk")
            }
            "chown" | "chgrp" | "chattr" => block(name, "permission changes - security risk"),
            _ if WRAPPERS.contains(&name) => block(
                name,
                "a wrapper that runs another command around the policy",
            ),
            _ if name != program && program.contains("..") => {
                block(program, "path traversal in the program name")
            }
            _ => Ok(()),
        }
    }

    /// Checks a parsed argv: in open mode anything (the worker's quoting still keeps every
    /// word literal); otherwise blocked patterns, then an exact template match.
    pub fn check(&self, argv: &[String]) -> Result<Approved, PolicyError> {
        if self.open {
            return Ok(Approved {
                template: None,
                argv: argv.to_vec(),
            });
        }
        Self::blocked(argv)?;
        let mut closest = None;
        for t in &self.templates {
            if matches(&t.words, argv) {
                return Ok(Approved {
                    template: Some(t.name),
                    argv: argv.to_vec(),
                });
            }
            if let (Some(Word::Fixed { value }), Some(first)) = (t.words.first(), argv.first()) {
                if value == first && closest.is_none() {
                    closest = Some(t.name);
                }
            }
        }
        Err(PolicyError::NotAllowed { closest })
    }

    /// Builds the argv of a template from named arguments (then checks it like any argv).
    pub fn render(
        &self,
        name: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<Approved, PolicyError> {
        let t = self
            .templates
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| PolicyError::UnknownTemplate(name.to_owned()))?;
        let mut argv = Vec::new();
        let mut used = 0;
        for word in &t.words {
            match word {
                Word::Fixed { value } => argv.push((*value).to_owned()),
                Word::Param { name, kind } => {
                    let value = args.get(*name).ok_or(PolicyError::MissingArgument(name))?;
                    if !kind.accepts(value) {
                        return Err(PolicyError::BadArgument { name, kind: *kind });
                    }
                    argv.push(value.clone());
                    used += 1;
                }
                Word::Option { flag, name, kind } => {
                    if let Some(value) = args.get(*name) {
                        if !kind.accepts(value) {
                            return Err(PolicyError::BadArgument { name, kind: *kind });
                        }
                        argv.push((*flag).to_owned());
                        argv.push(value.clone());
                        used += 1;
                    }
                }
            }
        }
        if used != args.len() {
            let known: Vec<&str> = t
                .words
                .iter()
                .filter_map(|w| match w {
                    Word::Param { name, .. } | Word::Option { name, .. } => Some(*name),
                    Word::Fixed { .. } => None,
                })
                .collect();
            let extra = args
                .keys()
                .find(|k| !known.contains(&k.as_str()))
                .cloned()
                .unwrap_or_default();
            return Err(PolicyError::UnexpectedArgument {
                template: t.name,
                name: extra,
            });
        }
        Self::blocked(&argv)?;
        Ok(Approved {
            template: Some(t.name),
            argv,
        })
    }
}

/// Whether `argv` is exactly an instance of `words`.
fn matches(words: &[Word], argv: &[String]) -> bool {
    let mut i = 0;
    for word in words {
        match word {
            Word::Fixed { value } => {
                if argv.get(i).map(String::as_str) != Some(*value) {
                    return false;
                }
                i += 1;
            }
            Word::Param { kind, .. } => {
                if !argv.get(i).is_some_and(|a| kind.accepts(a)) {
                    return false;
                }
                i += 1;
            }
            Word::Option { flag, kind, .. } => {
                if argv.get(i).map(String::as_str) == Some(*flag) {
                    if !argv.get(i + 1).is_some_and(|a| kind.accepts(a)) {
                        return false;
                    }
                    i += 2;
                }
            }
        }
    }
    i == argv.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        crate::command::parse(s).unwrap()
    }

    #[test]
    fn every_template_accepts_its_canonical_use() {
        let policy = Policy::scalelite(false);
        for (command, name) in [
            ("docker ps", "docker_ps"),
            ("docker logs web-1", "docker_logs"),
            ("docker logs web-1 --tail 100", "docker_logs"),
            ("docker stats --no-stream", "docker_stats"),
            ("df -h", "df"),
            ("free -m", "free"),
            ("uptime", "uptime"),
            ("top -b -n 1", "top"),
            ("systemctl status nginx.service", "systemctl_status"),
            (
                "systemctl is-active getty@tty1.service",
                "systemctl_is_active",
            ),
            ("netstat -tlnp", "netstat"),
            ("ss -tlnp", "ss"),
            ("ping -c 3 example.com", "ping"),
            ("ping -c 3 10.0.0.1", "ping"),
            ("cat /proc/cpuinfo", "cpuinfo"),
            ("cat /proc/meminfo", "meminfo"),
            ("hostname", "hostname"),
            ("bbb-conf --status", "bbb_status"),
            ("bbb-conf --check", "bbb_check"),
            ("bbb-conf --secret", "bbb_secret"),
        ] {
            let approved = policy
                .check(&argv(command))
                .unwrap_or_else(|e| panic!("{command}: {e}"));
            assert_eq!(
                (approved.template, approved.argv),
                (Some(name), argv(command))
            );
        }
    }

    #[test]
    fn near_misses_are_refused_with_the_closest_template() {
        let policy = Policy::scalelite(false);
        for command in [
            "docker logs",
            "docker logs -f web",
            "docker logs web --tail 0",
            "docker logs web --tail 99999",
            "ping -c 4 host",
            "ping -c 3 -f host",
            "df -h /",
            "cat /etc/shadow",
            "systemctl status -H evil",
        ] {
            assert!(
                matches!(
                    policy.check(&argv(command)),
                    Err(PolicyError::NotAllowed { .. })
                ),
                "{command}"
            );
        }
        assert_eq!(
            policy.check(&argv("docker rm web")),
            Err(PolicyError::NotAllowed {
                closest: Some("docker_ps")
            })
        );
    }

    #[test]
    fn blocked_patterns_say_why() {
        let open = Policy::scalelite(false);
        for (command, reason) in [
            ("rm -rf /", "recursive deletion"),
            ("rm -fr /tmp/x", "recursive deletion"),
            ("/sbin/reboot", "system control"),
            ("./shutdown -h now", "system control"),
            ("systemctl poweroff", "system control"),
            ("passwd root", "user management"),
            ("useradd eve", "user management"),
            ("chmod 777 /etc", "permission changes"),
            ("chown eve /etc", "permission changes"),
            ("sudo id", "wrapper"),
            ("sh -c id", "wrapper"),
            ("env X=1 id", "wrapper"),
            ("echo 'a;b'", "chaining"),
            ("echo 'a|b'", "chaining"),
            ("echo '$(id)'", "chaining"),
            ("reb\u{043e}ot", "non-ASCII"),
            ("echo 'a\u{200b}'", "non-ASCII"),
        ] {
            match open.check(&argv(command)) {
                Err(PolicyError::Blocked { reason: r, .. }) => {
                    assert!(r.contains(reason), "{command}: {r}")
                }
                other => panic!("{command}: {other:?}"),
            }
        }
        assert!(matches!(
            open.check(&argv("echo hello")),
            Err(PolicyError::NotAllowed { .. })
        ));
        assert!(
            Policy::scalelite(true)
                .check(&argv("sh -c 'echo a; echo b'"))
                .is_ok(),
            "open mode"
        );
    }

    #[test]
    fn rendering_builds_the_same_argv_the_checker_accepts() {
        let policy = Policy::scalelite(false);
        let args: BTreeMap<String, String> = [
            ("container".to_owned(), "web".to_owned()),
            ("lines".to_owned(), "50".to_owned()),
        ]
        .into();
        let approved = policy.render("docker_logs", &args).unwrap();
        assert_eq!(approved.argv, ["docker", "logs", "web", "--tail", "50"]);
        assert_eq!(
            policy.check(&approved.argv).unwrap().template,
            Some("docker_logs")
        );
        let bad: BTreeMap<String, String> = [("container".to_owned(), "-v".to_owned())].into();
        assert_eq!(
            policy.render("docker_logs", &bad).unwrap_err().property(),
            "args.container"
        );
        let extra: BTreeMap<String, String> = [
            ("container".to_owned(), "web".to_owned()),
            ("x".to_owned(), "1".to_owned()),
        ]
        .into();
        assert!(matches!(
            policy.render("docker_logs", &extra),
            Err(PolicyError::UnexpectedArgument { .. })
        ));
        assert!(matches!(
            policy.render("nope", &BTreeMap::new()),
            Err(PolicyError::UnknownTemplate(_))
        ));
        assert!(matches!(
            policy.render("ping", &BTreeMap::new()),
            Err(PolicyError::MissingArgument("host"))
        ));
    }
}
