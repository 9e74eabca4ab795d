//! The command policy: which commands a tenant may run, as templates with typed arguments.
//!
//! A command reaches a device only after four layers:
//! 1. `command::parse` splits the string into argv and refuses anything only a shell would
//!    interpret (operators, expansions, globs, control characters) and characters that only
//!    serve to hide what runs (invisible, bidirectional, line separators, non-ASCII spaces).
//!    This layer holds in open mode too.
//! 2. [`Policy::check`] refuses blocked patterns with the reason, whether or not a template
//!    would match: Scalelite's list (recursive deletion, system control, user management,
//!    permission changes, chaining) with chaining, substitution and redirection characters
//!    refused even when quoted into one word — and the ways around it: a program named by a
//!    path (`/sbin/reboot`, `./uptime`) or in capitals (`REBOOT`), wrappers and interpreters
//!    that run another command (`sudo`, `sh -c`, `env`, `xargs`, `python3`), shell builtins
//!    that run their arguments (`eval`, `source`, `.`, `command`, `trap`), non-ASCII look-alike
//!    letters (a Cyrillic `о` in `rebоot`, a fullwidth `；`) and invisible characters in an
//!    argv that did not come through the parser.
//! 3. The argv must match exactly one allow-listed template: fixed words in order, and each
//!    parameter of its declared kind (a container name, a service, a host, a bounded integer).
//!    No parameter may start with `-`, so no caller text becomes an option. An argv that two
//!    templates match is refused: the audit trail must name the one template that ran. A near
//!    miss names the closest template and what differs.
//! 4. The worker single-quotes every word, so the remote shell interprets nothing.
//!
//! What surrounds the argv is policy too ([`Policy::check_extras`]): environment variables,
//! a pseudo-terminal and standard input change what a command does (`LD_PRELOAD` loads a
//! library into `uptime`, `PATH` makes it another program, `BASH_ENV` runs code in any bash
//! script, `SYSTEMD_PAGER` under a pty turns `systemctl status` into a shell). So in templates
//! mode each is refused unless the template that approved the argv declares it (env by name),
//! and names that make programs load code or run commands ([`dangerous_env`]) are refused even
//! when declared; only open mode allows them. The built-in templates declare none.
//!
//! Layer 2 is redundant with layer 4 for quoted chaining characters; they are refused anyway,
//! because Scalelite's callers expect them refused and every refusal is audited: an attempt
//! should show up as a rejection, not as a command that happened to fail.
//!
//! Hosts are strict on purpose: `ping` resolves names through `inet_aton(3)` first, which reads
//! `127.1`, `0x7f000001` or `017700000001` as addresses, so only a canonical dotted quad, a
//! plain IPv6 address or a DNS name of well-formed labels is accepted, and the audit trail
//! shows which address was meant.
//!
//! The default templates are Scalelite's whitelist. A deployment may instead run in `open`
//! mode (layers 1 and 4 only: any argv, each word still reaching the device literally — but
//! the program may be an interpreter or a builtin such as `eval` that runs its arguments),
//! for fleets whose operators are all trusted with a shell.
//!
//! Left out on purpose: path and one-of parameter kinds (no Scalelite template takes a path or
//! a choice: `cat /proc/cpuinfo` is two fixed words, and `bbb-conf --status|--check|--secret`
//! are three templates with names of their own), and a size limit of the policy's own
//! (`command::parse` caps the string and every parameter kind bounds its length).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// A parameter's kind, each with its own validation. No kind accepts a value starting with `-`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// A docker container name or id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
    Container,
    /// A systemd unit: `[A-Za-z0-9][A-Za-z0-9@._:-]{0,127}`.
    Service,
    /// A DNS name (labels of letters, digits and inner hyphens, the last not all digits), an
    /// IPv4 address as four decimal numbers, or an IPv6 address without brackets or zone.
    Host,
    /// A decimal integer from 1 to 10000, without sign or leading zeros.
    Count,
}

impl ParamKind {
    /// What the kind is called in messages.
    pub fn label(self) -> &'static str {
        match self {
            ParamKind::Container => "container name",
            ParamKind::Service => "service name",
            ParamKind::Host => "host name or address",
            ParamKind::Count => "count",
        }
    }

    /// Checks one value; the error completes a sentence about the value ("must ...").
    pub fn validate(self, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.starts_with('-') {
            return Err("must not start with '-' (it would be read as an option)".into());
        }
        match self {
            ParamKind::Container => name_like(value, b"_.-"),
            ParamKind::Service => name_like(value, b"@._:-"),
            ParamKind::Host => validate_host(value),
            ParamKind::Count => {
                let n = if value.len() <= 5
                    && !value.starts_with('0')
                    && value.bytes().all(|b| b.is_ascii_digit())
                {
                    value.parse::<u32>().ok()
                } else {
                    None
                };
                match n {
                    Some(n) if (1..=10_000).contains(&n) => Ok(()),
                    _ => Err(
                        "must be a whole number from 1 to 10000, without sign or leading zeros"
                            .into(),
                    ),
                }
            }
        }
    }
}

/// `[A-Za-z0-9][A-Za-z0-9<extra>]{0,127}`.
fn name_like(value: &str, extra: &[u8]) -> Result<(), String> {
    if value.len() > 128 {
        return Err("must be at most 128 characters".into());
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or a digit".into());
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        let extra: String = extra.iter().map(|&b| b as char).collect();
        return Err(format!("must be letters, digits and {extra:?} only"));
    }
    Ok(())
}

/// A part of a dotted name that `inet_aton(3)` would read as a number (`127`, `0x7f`, `017`).
fn numberish(label: &str) -> bool {
    match label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn validate_host(value: &str) -> Result<(), String> {
    if value.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    if value.len() > 253 {
        return Err("must be a host name of at most 253 characters".into());
    }
    let labels: Vec<&str> = value.split('.').collect();
    // Anything inet_aton would take for an address must be the canonical dotted quad.
    if labels.len() <= 4 && labels.iter().all(|l| numberish(l)) {
        return match value.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => {
                Err("must be an IPv4 address written as four decimal numbers from 0 to 255".into())
            }
        };
    }
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(label_ok) {
        return Err(
            "must be a host name of dot-separated labels (1 to 63 letters, digits or inner \
             hyphens each) or an IP address without brackets"
                .into(),
        );
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(
            "must be a host name whose last label is not all digits, or an IP address".into(),
        );
    }
    Ok(())
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
    /// Environment variables a call may set, by name (none by default). A dangerous name
    /// ([`dangerous_env`]) is refused even when declared.
    pub env: Vec<&'static str>,
    /// A call may ask for a pseudo-terminal (interactive programs behave differently on one:
    /// pagers, colours, prompts).
    pub pty: bool,
    /// A call may send standard input.
    pub stdin: bool,
}

impl Template {
    /// Declares environment variables a call may set.
    pub fn with_env(mut self, names: &[&'static str]) -> Self {
        self.env.extend_from_slice(names);
        self
    }

    /// Declares that a call may run under a pseudo-terminal.
    pub fn with_pty(mut self) -> Self {
        self.pty = true;
        self
    }

    /// Declares that a call may send standard input.
    pub fn with_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// The program, when the template starts with a fixed word (every default one does).
    fn program(&self) -> Option<&'static str> {
        match self.words.first() {
            Some(Word::Fixed { value }) => Some(value),
            _ => None,
        }
    }
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
        env: Vec::new(),
        pty: false,
        stdin: false,
    }
}

/// Environment variables that make a program load code or run a command of the caller's
/// choosing, and so turn any allow-listed command into an arbitrary one. Names are compared
/// in upper case (refusing a harmless lower-case twin costs nothing).
///
/// - the dynamic linker and libc: `LD_*` (`LD_PRELOAD`, `LD_LIBRARY_PATH`, `LD_AUDIT`),
///   `GCONV_PATH`, `GLIBC_TUNABLES`, `MALLOC_*`, `LOCPATH`, `NLSPATH`, `HOSTALIASES`,
///   `RESOLV_HOST_CONF`, and macOS's `DYLD_*`;
/// - where programs are found: `PATH`, `CDPATH`;
/// - shells: `BASH_ENV`, `ENV` (sourced by non-interactive bash and sh), `BASH_*`,
///   `SHELLOPTS`, `BASHOPTS` (`xtrace` with `PS4` runs substitutions), `PS1`…`PS4`,
///   `PROMPT_COMMAND`, `IFS`, `GLOBIGNORE`, `ZDOTDIR`, `SHELL` (what programs spawn for `!`);
/// - programs that other programs run: `*PAGER` (`PAGER`, `MANPAGER`, `SYSTEMD_PAGER`,
///   `GIT_PAGER`), `*EDITOR` (`EDITOR`, `SUDO_EDITOR`), `VISUAL`, `BROWSER`, `*ASKPASS`,
///   `LESS*` (`LESSOPEN` runs a preprocessor), `MORE`, `MANOPT`;
/// - interpreters' start-up code and module paths: `PYTHON*`, `PERL*`, `RUBY*`, `GEM_*`,
///   `NODE_*`, `LUA_*`, `JAVA_TOOL_OPTIONS`, `_JAVA_OPTIONS`, `JDK_JAVA_OPTIONS`, `CLASSPATH`,
///   `PHPRC`, `PHP_INI_SCAN_DIR`, `TCLLIBPATH`;
/// - tools whose configuration runs commands or loads modules: `GIT_*`, `SYSTEMD_*`,
///   `DOCKER_*` (another daemon, credential helpers), `OPENSSL_*` (engines), `KRB5_CONFIG`,
///   and the places configuration is read from: `HOME`, `XDG_*`.
pub fn dangerous_env(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "CDPATH",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "PROMPT_COMMAND",
        "IFS",
        "GLOBIGNORE",
        "ZDOTDIR",
        "SHELL",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        "VISUAL",
        "BROWSER",
        "MORE",
        "MANOPT",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        "TCLLIBPATH",
        "KRB5_CONFIG",
        "HOME",
    ];
    const PREFIXES: &[&str] = &[
        "LD_", "DYLD_", "MALLOC_", "BASH_", "LESS", "PYTHON", "PERL", "RUBY", "GEM_", "NODE_",
        "LUA_", "GIT_", "SYSTEMD_", "DOCKER_", "OPENSSL_", "XDG_",
    ];
    const SUFFIXES: &[&str] = &["PAGER", "EDITOR", "ASKPASS"];
    let name = name.to_ascii_uppercase();
    NAMES.contains(&name.as_str())
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// What an argv or a template call was refused for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A blocked pattern, refused before any template is looked at.
    #[error("blocked: {pattern} ({reason})")]
    Blocked { pattern: String, reason: String },
    /// No template matches; `reason` names the closest template, if any, and what differs.
    #[error("{reason}")]
    NotAllowed {
        closest: Option<&'static str>,
        reason: String,
    },
    /// More than one template matches: none is approved, so the audit names one template.
    #[error(
        "the command matches several templates ({}); the policy is ambiguous, so none runs",
        .0.join(", ")
    )]
    Ambiguous(Vec<&'static str>),
    #[error("unknown template {0:?}; GET /v1/templates lists them")]
    UnknownTemplate(String),
    #[error("argument {name:?} is not a valid {}: {reason}", kind.label())]
    BadArgument {
        name: &'static str,
        kind: ParamKind,
        reason: String,
    },
    #[error("missing argument {0:?}")]
    MissingArgument(&'static str),
    #[error("template {template} takes no argument {name:?}")]
    UnexpectedArgument {
        template: &'static str,
        name: String,
    },
    /// An environment variable that makes programs load code or run commands.
    #[error(
        "environment variable {name} is not allowed: it can make the command load code or run \
         another command (only the open command policy allows it)"
    )]
    DangerousEnv { index: usize, name: String },
    #[error("template {template} does not declare environment variable {name}")]
    EnvNotDeclared {
        index: usize,
        template: &'static str,
        name: String,
    },
    #[error("template {0} does not declare a pseudo-terminal (pty)")]
    PtyNotDeclared(&'static str),
    #[error("template {0} does not declare standard input (stdin_base64)")]
    StdinNotDeclared(&'static str),
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
            PolicyError::DangerousEnv { index, .. } | PolicyError::EnvNotDeclared { index, .. } => {
                format!("env[{index}].key")
            }
            PolicyError::PtyNotDeclared(_) => "pty".into(),
            PolicyError::StdinNotDeclared(_) => "stdin_base64".into(),
            PolicyError::Blocked { .. }
            | PolicyError::NotAllowed { .. }
            | PolicyError::Ambiguous(_) => "command".into(),
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
    /// Open mode: every argv that `command::parse` produced is allowed.
    pub open: bool,
}

const RECURSIVE_DELETION: &str = "recursive deletion - data loss risk";
const DELETION: &str = "file deletion - data loss risk";
const DESTRUCTIVE: &str = "destructive disk or file operation - data loss risk";
const SYSTEM_CONTROL: &str = "system control - service disruption";
const USER_MANAGEMENT: &str = "user management - security risk";
const PERMISSIONS: &str = "permission changes - security risk";
const SHELL: &str = "a shell runs arbitrary commands around the policy";
const WRAPPER: &str = "a wrapper that runs another command around the policy";
const BUILTIN: &str =
    "a shell builtin that runs its arguments as a command, even when they are quoted";
const INTERPRETER: &str = "an interpreter runs arbitrary code around the policy";
const BY_PATH: &str =
    "a program named by a path - templates name programs, a path can hide what actually runs";

/// Character sequences refused in every word, quoted or not, longest first.
const SEQUENCES: &[(&str, &str, &str)] = &[
    ("\n", "\\n", "newline - command chaining, injection risk"),
    (
        "\r",
        "\\r",
        "carriage return - command chaining, injection risk",
    ),
    ("&&", "&&", "command chaining - injection risk"),
    ("||", "||", "command chaining - injection risk"),
    (";", ";", "command chaining - injection risk"),
    ("|", "|", "pipe - command chaining, injection risk"),
    (
        "&",
        "&",
        "background execution - command chaining, injection risk",
    ),
    (
        "$(",
        "$(",
        "command substitution - chaining, injection risk",
    ),
    ("${", "${", "parameter expansion - injection risk"),
    ("`", "`", "command substitution - chaining, injection risk"),
    (">", ">", "redirection - injection risk"),
    ("<", "<", "redirection - injection risk"),
];

const DESTRUCTIVE_PROGRAMS: &[&str] = &[
    "shred", "dd", "wipefs", "rmdir", "unlink", "fdisk", "sfdisk", "parted", "truncate",
];
const SYSTEM_PROGRAMS: &[&str] = &["shutdown", "reboot", "halt", "poweroff", "kexec"];
const SYSTEMCTL_SYSTEM_VERBS: &[&str] = &[
    "reboot",
    "soft-reboot",
    "poweroff",
    "halt",
    "kexec",
    "suspend",
    "hibernate",
    "hybrid-sleep",
    "suspend-then-hibernate",
    "rescue",
    "emergency",
    "isolate",
    "default",
    "exit",
    "switch-root",
];
const USER_PROGRAMS: &[&str] = &[
    "passwd", "useradd", "userdel", "usermod", "adduser", "deluser", "chpasswd", "chage",
    "groupadd", "groupdel", "groupmod", "gpasswd", "vipw", "visudo",
];
const PERMISSION_PROGRAMS: &[&str] = &["chown", "chgrp", "chattr", "setfacl"];
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "rbash",
];
const WRAPPERS: &[&str] = &[
    "sudo",
    "su",
    "doas",
    "pkexec",
    "runuser",
    "env",
    "busybox",
    "toybox",
    "xargs",
    "nohup",
    "timeout",
    "nice",
    "ionice",
    "setsid",
    "stdbuf",
    "chroot",
    "nsenter",
    "unshare",
    "script",
    "watch",
    "flock",
    "taskset",
    "chrt",
    "systemd-run",
    "strace",
    "ltrace",
    "gdb",
    "time",
    "at",
    "batch",
    "parallel",
    "ssh",
];
const BUILTINS: &[&str] = &[
    "eval", "exec", "source", ".", "command", "builtin", "trap", "alias",
];
/// Matched with a version appended too: `python3`, `python3.11`, `perl5.36`.
const INTERPRETERS: &[&str] = &[
    "perl", "python", "ruby", "php", "node", "nodejs", "lua", "awk", "gawk", "mawk", "nawk",
    "tclsh", "expect", "find",
];

fn blocked(pattern: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Blocked {
        pattern: pattern.into(),
        reason: reason.into(),
    }
}

/// A word for an error message: quoted and escaped, at most 40 characters of it.
fn show(word: &str) -> String {
    const MAX: usize = 40;
    if word.chars().count() <= MAX {
        format!("{word:?}")
    } else {
        let head: String = word.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

/// The blocked characters of one word (of a command, or of a template argument's value).
fn screen_word(word: &str, place: &str) -> Result<(), PolicyError> {
    for (sequence, shown, reason) in SEQUENCES {
        if word.contains(sequence) {
            return Err(blocked(*shown, *reason));
        }
    }
    for c in word.chars() {
        if c.is_control() || crate::command::invisible(c) {
            return Err(blocked(
                format!("U+{:04X}", c as u32),
                format!("invisible or control character in {place} - it can disguise a command"),
            ));
        }
        if !c.is_ascii() {
            // The character itself helps (`U+043E о`), unless it is a combining mark that
            // would draw onto the code point.
            let combining = matches!(
                c as u32,
                0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F
            );
            let pattern = if combining {
                format!("U+{:04X}", c as u32)
            } else {
                format!("U+{:04X} {c}", c as u32)
            };
            return Err(blocked(
                pattern,
                format!(
                    "non-ASCII character in {place} - look-alike letters and punctuation can \
                     disguise a command"
                ),
            ));
        }
    }
    Ok(())
}

/// A short option cluster (`-rf`) containing one of `letters`, or the long form.
fn has_flag(args: &[String], letters: &[char], long: &str) -> bool {
    args.iter().any(|a| {
        a == long
            || (a.starts_with('-')
                && !a.starts_with("--")
                && a[1..].chars().any(|c| letters.contains(&c)))
    })
}

/// The program-level blocked patterns: what the program is, however it is named.
fn screen_program(program: &str, args: &[String]) -> Result<(), PolicyError> {
    // `/sbin/reboot`, `./reboot`, `/usr/bin/../sbin/shutdown` and `REBOOT` (on a
    // case-insensitive file system) are still reboot and shutdown.
    let trimmed = program.trim_end_matches('/');
    let name = trimmed
        .rsplit('/')
        .next()
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    let name = name.as_str();
    let versioned = |list: &[&str]| {
        list.iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        })
    };
    if name == "rm" {
        return Err(if has_flag(args, &['r', 'R'], "--recursive") {
            blocked("rm -r", RECURSIVE_DELETION)
        } else {
            blocked("rm", DELETION)
        });
    }
    if DESTRUCTIVE_PROGRAMS.contains(&name) || name.starts_with("mkfs") {
        return Err(blocked(name, DESTRUCTIVE));
    }
    if SYSTEM_PROGRAMS.contains(&name) {
        return Err(blocked(name, SYSTEM_CONTROL));
    }
    if name == "init" || name == "telinit" {
        let pattern = match args.first() {
            Some(level) if level.len() <= 8 => format!("{name} {level}"),
            _ => name.to_owned(),
        };
        return Err(blocked(pattern, SYSTEM_CONTROL));
    }
    if name == "systemctl"
        && let Some(verb) = args
            .iter()
            .find(|a| SYSTEMCTL_SYSTEM_VERBS.contains(&a.as_str()))
    {
        return Err(blocked(format!("systemctl {verb}"), SYSTEM_CONTROL));
    }
    if USER_PROGRAMS.contains(&name) {
        return Err(blocked(name, USER_MANAGEMENT));
    }
    if name == "chmod" {
        let wide_open = args.iter().any(|a| {
            let mode = a.trim_start_matches('0');
            mode == "777" || mode == "7777" || a.contains("+rwx") || a.contains("=rwx")
        });
        return Err(blocked(
            if wide_open { "chmod 777" } else { "chmod" },
            PERMISSIONS,
        ));
    }
    if PERMISSION_PROGRAMS.contains(&name) {
        return Err(blocked(name, PERMISSIONS));
    }
    if SHELLS.contains(&name) {
        let pattern = if has_flag(args, &['c'], "-c") {
            format!("{name} -c")
        } else {
            name.to_owned()
        };
        return Err(blocked(pattern, SHELL));
    }
    if WRAPPERS.contains(&name) {
        return Err(blocked(name, WRAPPER));
    }
    if BUILTINS.contains(&name) {
        return Err(blocked(name, BUILTIN));
    }
    if versioned(INTERPRETERS) {
        return Err(blocked(name, INTERPRETER));
    }
    if program.contains('/') {
        return Err(blocked(show(program), BY_PATH));
    }
    Ok(())
}

/// Every blocked pattern of an argv: its characters, then its program.
fn screen(argv: &[String]) -> Result<(), PolicyError> {
    for (i, word) in argv.iter().enumerate() {
        let place = if i == 0 {
            "the program name".to_owned()
        } else {
            format!("argument {i}")
        };
        screen_word(word, &place)?;
    }
    match argv.split_first() {
        Some((program, args)) => screen_program(program, args),
        None => Ok(()),
    }
}

/// Where and why an argv stopped matching a template.
struct Miss {
    /// How many words matched before the failure.
    depth: usize,
    why: String,
}

/// Whether `argv` is exactly an instance of `words`; if not, how far it got and why.
fn matches(words: &[Word], argv: &[String]) -> Result<(), Miss> {
    let miss = |depth, why| Err(Miss { depth, why });
    let mut i = 0;
    for word in words {
        match word {
            Word::Fixed { value } => match argv.get(i) {
                Some(a) if a == value => i += 1,
                Some(a) => return miss(i, format!("expected {value:?}, not {}", show(a))),
                None => return miss(i, format!("missing {value:?}")),
            },
            Word::Param { name, kind } => match argv.get(i) {
                None => return miss(i, format!("missing {{{name}}}")),
                Some(a) => match kind.validate(a) {
                    Ok(()) => i += 1,
                    Err(why) => return miss(i, format!("{{{name}}} {} {why}", show(a))),
                },
            },
            Word::Option { flag, name, kind } => {
                if argv.get(i).map(String::as_str) == Some(*flag) {
                    match argv.get(i + 1) {
                        None => return miss(i + 1, format!("{flag} needs a value {{{name}}}")),
                        Some(a) => match kind.validate(a) {
                            Ok(()) => i += 2,
                            Err(why) => {
                                return miss(i + 1, format!("{{{name}}} {} {why}", show(a)));
                            }
                        },
                    }
                }
            }
        }
    }
    match argv.get(i) {
        None => Ok(()),
        Some(extra) => miss(i, format!("unexpected {}", show(extra))),
    }
}

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

    /// Checks a parsed argv: in open mode anything (the parser already refused what hides what
    /// runs, and the worker's quoting keeps every word literal); otherwise blocked patterns,
    /// then exactly one template must match.
    pub fn check(&self, argv: &[String]) -> Result<Approved, PolicyError> {
        if self.open {
            return Ok(Approved {
                template: None,
                argv: argv.to_vec(),
            });
        }
        screen(argv)?;
        let t = self.matching(argv)?;
        Ok(Approved {
            template: Some(t.name),
            argv: argv.to_vec(),
        })
    }

    /// The one template `argv` is an instance of, or why there is none.
    fn matching(&self, argv: &[String]) -> Result<&Template, PolicyError> {
        let Some(program) = argv.first() else {
            return Err(PolicyError::NotAllowed {
                closest: None,
                reason: "the command is empty".into(),
            });
        };
        let mut matched = Vec::new();
        let mut closest: Option<(&Template, Miss)> = None;
        for t in &self.templates {
            match matches(&t.words, argv) {
                Ok(()) => matched.push(t),
                Err(miss) if t.program() == Some(program.as_str()) => {
                    if closest
                        .as_ref()
                        .is_none_or(|(_, best)| miss.depth > best.depth)
                    {
                        closest = Some((t, miss));
                    }
                }
                Err(_) => {}
            }
        }
        match (matched.as_slice(), closest) {
            ([t], _) => Ok(t),
            ([], Some((t, miss))) => Err(PolicyError::NotAllowed {
                closest: Some(t.name),
                reason: format!(
                    "no allowed template matches this command; the closest is {} ({}): {}",
                    t.name, t.usage, miss.why
                ),
            }),
            ([], None) => Err(PolicyError::NotAllowed {
                closest: None,
                reason: format!(
                    "no allowed template runs {}; GET /v1/templates lists them",
                    show(program)
                ),
            }),
            (several, _) => Err(PolicyError::Ambiguous(
                several.iter().map(|t| t.name).collect(),
            )),
        }
    }

    /// What surrounds an approved argv: in open mode anything; otherwise no dangerous
    /// environment variable, and env (by name), a pty and stdin only where the template that
    /// approved the argv declares them. Templates are the whole policy.
    pub fn check_extras<'a>(
        &self,
        approved: &Approved,
        env: impl IntoIterator<Item = &'a str>,
        pty: bool,
        stdin: bool,
    ) -> Result<(), PolicyError> {
        if self.open {
            return Ok(());
        }
        let template = approved
            .template
            .and_then(|name| self.templates.iter().find(|t| t.name == name));
        let name = template.map_or("(none)", |t| t.name);
        for (index, var) in env.into_iter().enumerate() {
            if dangerous_env(var) {
                return Err(PolicyError::DangerousEnv {
                    index,
                    name: var.to_owned(),
                });
            }
            if !template.is_some_and(|t| t.env.contains(&var)) {
                return Err(PolicyError::EnvNotDeclared {
                    index,
                    template: name,
                    name: var.to_owned(),
                });
            }
        }
        if pty && !template.is_some_and(|t| t.pty) {
            return Err(PolicyError::PtyNotDeclared(name));
        }
        if stdin && !template.is_some_and(|t| t.stdin) {
            return Err(PolicyError::StdinNotDeclared(name));
        }
        Ok(())
    }

    /// Builds the argv of a template from named arguments, then checks it like any argv (so
    /// the two ways in always agree).
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
        let known = |k: &str| {
            t.words.iter().any(|w| match w {
                Word::Param { name, .. } | Word::Option { name, .. } => *name == k,
                Word::Fixed { .. } => false,
            })
        };
        if let Some(extra) = args.keys().find(|k| !known(k)) {
            return Err(PolicyError::UnexpectedArgument {
                template: t.name,
                name: extra.clone(),
            });
        }
        let value = |name: &'static str, kind: ParamKind| -> Result<Option<String>, PolicyError> {
            let Some(value) = args.get(name) else {
                return Ok(None);
            };
            let bad = |reason| PolicyError::BadArgument { name, kind, reason };
            if let Err(PolicyError::Blocked { pattern, reason }) = screen_word(value, "a value") {
                return Err(bad(format!("contains {pattern}: {reason}")));
            }
            kind.validate(value)
                .map_err(|why| bad(format!("{} {why}", show(value))))?;
            Ok(Some(value.clone()))
        };
        let mut argv = Vec::new();
        for word in &t.words {
            match word {
                Word::Fixed { value } => argv.push((*value).to_owned()),
                Word::Param { name, kind } => {
                    argv.push(value(name, *kind)?.ok_or(PolicyError::MissingArgument(name))?);
                }
                Word::Option { flag, name, kind } => {
                    if let Some(value) = value(name, *kind)? {
                        argv.push((*flag).to_owned());
                        argv.push(value);
                    }
                }
            }
        }
        screen(&argv)?;
        let matched = self.matching(&argv)?;
        if matched.name != t.name {
            return Err(PolicyError::Ambiguous(vec![t.name, matched.name]));
        }
        Ok(Approved {
            template: Some(t.name),
            argv,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_environment_names_are_recognised() {
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "ld_audit",
            "BASH_ENV",
            "ENV",
            "PATH",
            "SYSTEMD_PAGER",
            "PAGER",
            "MANPAGER",
            "GIT_SSH_COMMAND",
            "PS4",
            "PROMPT_COMMAND",
            "SHELLOPTS",
            "IFS",
            "GCONV_PATH",
            "PYTHONPATH",
            "PERL5OPT",
            "RUBYOPT",
            "NODE_OPTIONS",
            "EDITOR",
            "VISUAL",
            "LESSOPEN",
            "MORE",
            "GLIBC_TUNABLES",
            "DOCKER_HOST",
            "HOME",
        ] {
            assert!(dangerous_env(name), "{name}");
        }
        for name in ["LANG", "LC_ALL", "TZ", "TERM", "COLUMNS", "MY_SETTING"] {
            assert!(!dangerous_env(name), "{name}");
        }
    }

    #[test]
    fn env_pty_and_stdin_need_the_template_to_declare_them() {
        let mut policy = Policy::scalelite(false);
        policy.templates.push(
            template("greet", "", vec![fixed("greet")])
                .with_env(&["GREETING", "LD_PRELOAD"])
                .with_pty()
                .with_stdin(),
        );
        let uptime = policy.check(&words(&["uptime"])).unwrap();
        let greet = policy.check(&words(&["greet"])).unwrap();
        assert_eq!(policy.check_extras(&uptime, [], false, false), Ok(()));
        assert_eq!(
            policy
                .check_extras(&uptime, ["GREETING"], false, false)
                .unwrap_err()
                .property(),
            "env[0].key"
        );
        assert_eq!(
            policy.check_extras(&uptime, [], true, false),
            Err(PolicyError::PtyNotDeclared("uptime"))
        );
        assert_eq!(
            policy.check_extras(&uptime, [], false, true),
            Err(PolicyError::StdinNotDeclared("uptime"))
        );
        assert_eq!(
            policy.check_extras(&greet, ["GREETING"], true, true),
            Ok(())
        );
        // Declared or not, a dangerous name is refused outside open mode.
        assert!(matches!(
            policy.check_extras(&greet, ["GREETING", "LD_PRELOAD"], false, false),
            Err(PolicyError::DangerousEnv { index: 1, .. })
        ));
        let open = Policy::scalelite(true);
        let any = open.check(&words(&["anything"])).unwrap();
        assert_eq!(
            open.check_extras(&any, ["LD_PRELOAD", "PATH"], true, true),
            Ok(())
        );
    }

    fn argv(s: &str) -> Vec<String> {
        crate::command::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check(s: &str) -> Result<Approved, PolicyError> {
        Policy::scalelite(false).check(&argv(s))
    }

    #[test]
    fn the_default_templates_are_scalelites_whitelist_and_sound() {
        let policy = Policy::scalelite(false);
        let names: Vec<&str> = policy.templates.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "docker_ps",
                "docker_logs",
                "docker_stats",
                "df",
                "free",
                "uptime",
                "top",
                "systemctl_status",
                "systemctl_is_active",
                "netstat",
                "ss",
                "ping",
                "cpuinfo",
                "meminfo",
                "hostname",
                "bbb_status",
                "bbb_check",
                "bbb_secret",
            ]
        );
        let mut unique = std::collections::BTreeSet::new();
        for t in &policy.templates {
            assert!(unique.insert(t.name), "{} defined twice", t.name);
            // No template's own words trip a blocked pattern.
            let own: Vec<String> = t
                .words
                .iter()
                .filter_map(|w| match w {
                    Word::Fixed { value } => Some((*value).to_owned()),
                    _ => None,
                })
                .collect();
            assert_eq!(screen(&own), Ok(()), "{}", t.name);
            assert!(t.program().is_some(), "{}", t.name);
        }
        assert_eq!(
            policy.templates[1].usage,
            "docker logs {container} [--tail {lines}]"
        );
    }

    #[test]
    fn every_template_accepts_its_canonical_use() {
        let policy = Policy::scalelite(false);
        let mut covered = std::collections::BTreeSet::new();
        for (command, name) in [
            ("docker ps", "docker_ps"),
            ("docker logs web-1", "docker_logs"),
            ("docker logs web-1 --tail 100", "docker_logs"),
            ("docker logs 3f4e5a6b7c8d --tail 1", "docker_logs"),
            ("docker logs web --tail 10000", "docker_logs"),
            ("docker stats --no-stream", "docker_stats"),
            ("df -h", "df"),
            ("free -m", "free"),
            ("uptime", "uptime"),
            ("top -b -n 1", "top"),
            ("systemctl status nginx.service", "systemctl_status"),
            ("systemctl status getty@tty1.service", "systemctl_status"),
            (
                "systemctl is-active getty@tty1.service",
                "systemctl_is_active",
            ),
            ("netstat -tlnp", "netstat"),
            ("ss -tlnp", "ss"),
            ("ping -c 3 example.com", "ping"),
            ("ping -c 3 10.0.0.1", "ping"),
            ("ping -c 3 ::1", "ping"),
            ("ping -c 3 fe80::1", "ping"),
            ("ping -c 3 localhost", "ping"),
            ("ping -c 3 3com.net", "ping"),
            ("cat /proc/cpuinfo", "cpuinfo"),
            ("cat /proc/meminfo", "meminfo"),
            ("hostname", "hostname"),
            ("bbb-conf --status", "bbb_status"),
            ("bbb-conf --check", "bbb_check"),
            ("bbb-conf --secret", "bbb_secret"),
            // Quoting changes nothing once parsed.
            ("'docker' \"logs\" w\\eb", "docker_logs"),
        ] {
            let approved = policy
                .check(&argv(command))
                .unwrap_or_else(|e| panic!("{command}: {e}"));
            assert_eq!(
                (approved.template, approved.argv),
                (Some(name), argv(command))
            );
            covered.insert(name);
        }
        for t in &policy.templates {
            assert!(covered.contains(t.name), "{} untested", t.name);
        }
    }

    #[test]
    fn near_misses_name_the_closest_template_and_what_differs() {
        for (command, closest, why) in [
            ("docker logs", "docker_logs", "missing {container}"),
            (
                "docker logs -f web",
                "docker_logs",
                "must not start with '-'",
            ),
            (
                "docker logs --since=1h web",
                "docker_logs",
                "must not start",
            ),
            ("docker logs web -f", "docker_logs", "unexpected \"-f\""),
            (
                "docker logs web --tail",
                "docker_logs",
                "--tail needs a value",
            ),
            ("docker logs web --tail 0", "docker_logs", "from 1 to 10000"),
            ("docker logs web --tail 99999", "docker_logs", "from 1 to"),
            ("docker logs web --tail 010", "docker_logs", "leading zeros"),
            ("docker logs web --tail +10", "docker_logs", "without sign"),
            ("docker logs web --tail=5", "docker_logs", "unexpected"),
            ("docker rm web", "docker_ps", "expected \"ps\""),
            ("docker stats", "docker_stats", "missing \"--no-stream\""),
            ("ping -c 4 host", "ping", "expected \"3\""),
            ("ping -c 3 -f host", "ping", "must not start with '-'"),
            ("ping -c 3 example.com -f", "ping", "unexpected \"-f\""),
            ("ping -c 3 -oProxyCommand=x", "ping", "must not start"),
            ("ping -c 3 127.1", "ping", "IPv4"),
            ("ping -c 3 0x7f000001", "ping", "IPv4"),
            ("ping -c 3 2130706433", "ping", "IPv4"),
            ("ping -c 3 exa_mple.com", "ping", "labels"),
            ("ping -c 3 a..b", "ping", "labels"),
            ("ping -c 3 host.123", "ping", "last label"),
            ("df -h /", "df", "unexpected \"/\""),
            ("cat /etc/shadow", "cpuinfo", "expected \"/proc/cpuinfo\""),
            (
                "systemctl status -H evil",
                "systemctl_status",
                "must not start",
            ),
            (
                "systemctl status .hidden",
                "systemctl_status",
                "start with a letter",
            ),
            (
                "systemctl restart nginx",
                "systemctl_status",
                "expected \"status\"",
            ),
            ("hostname evil", "hostname", "unexpected \"evil\""),
        ] {
            match check(command) {
                Err(e @ PolicyError::NotAllowed { closest: got, .. }) => {
                    let reason = e.to_string();
                    assert_eq!(got, Some(closest), "{command}: {reason}");
                    assert!(reason.contains(why), "{command}: {reason}");
                    assert!(reason.contains("the closest is"), "{command}: {reason}");
                    assert_eq!(e.property(), "command");
                }
                other => panic!("{command}: {other:?}"),
            }
        }
        match check("echo hello") {
            Err(e @ PolicyError::NotAllowed { closest: None, .. }) => {
                assert!(
                    e.to_string()
                        .starts_with("no allowed template runs \"echo\""),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Policy::scalelite(false).check(&[]),
            Err(PolicyError::NotAllowed { closest: None, .. })
        ));
    }

    #[test]
    fn blocked_patterns_come_first_and_say_why() {
        for (command, pattern, why) in [
            ("rm -rf /", "rm -r", "recursive deletion"),
            ("rm -fr /tmp/x", "rm -r", "recursive deletion"),
            ("rm --recursive x", "rm -r", "recursive deletion"),
            ("rm -R x", "rm -r", "recursive deletion"),
            ("rm x", "rm", "file deletion"),
            ("/bin/rm -rf /", "rm -r", "recursive deletion"),
            ("dd if=/dev/zero of=/dev/sda", "dd", "data loss"),
            ("mkfs.ext4 /dev/sda1", "mkfs.ext4", "data loss"),
            ("truncate -s 0 /var/log/syslog", "truncate", "data loss"),
            ("shutdown -h now", "shutdown", "system control"),
            ("reboot", "reboot", "system control"),
            ("halt", "halt", "system control"),
            ("poweroff", "poweroff", "system control"),
            ("init 0", "init 0", "system control"),
            ("telinit 6", "telinit 6", "system control"),
            ("/sbin/reboot", "reboot", "system control"),
            ("./shutdown -h now", "shutdown", "system control"),
            (
                "/usr/bin/../sbin/shutdown now",
                "shutdown",
                "system control",
            ),
            ("REBOOT", "reboot", "system control"),
            ("systemctl poweroff", "systemctl poweroff", "system control"),
            (
                "systemctl --force reboot",
                "systemctl reboot",
                "system control",
            ),
            (
                "systemctl isolate rescue.target",
                "systemctl isolate",
                "system control",
            ),
            ("passwd root", "passwd", "user management"),
            ("useradd eve", "useradd", "user management"),
            ("userdel bob", "userdel", "user management"),
            ("usermod -aG sudo eve", "usermod", "user management"),
            ("chmod 777 /etc", "chmod 777", "permission changes"),
            ("chmod 0777 /etc", "chmod 777", "permission changes"),
            ("chmod a+rwx /etc", "chmod 777", "permission changes"),
            ("chmod 644 /etc/x", "chmod", "permission changes"),
            ("chown eve /etc", "chown", "permission changes"),
            ("setfacl -m u:eve:rwx /etc", "setfacl", "permission changes"),
            ("sudo id", "sudo", "wrapper"),
            ("su -", "su", "wrapper"),
            ("env X=1 id", "env", "wrapper"),
            ("busybox reboot", "busybox", "wrapper"),
            ("xargs reboot", "xargs", "wrapper"),
            ("nohup uptime", "nohup", "wrapper"),
            ("timeout 5 uptime", "timeout", "wrapper"),
            ("nice uptime", "nice", "wrapper"),
            ("systemd-run reboot", "systemd-run", "wrapper"),
            ("sh -c id", "sh -c", "shell"),
            ("bash -lc uptime", "bash -c", "shell"),
            ("/bin/bash", "bash", "shell"),
            ("eval uptime", "eval", "builtin"),
            ("exec reboot", "exec", "builtin"),
            ("source /tmp/x", "source", "builtin"),
            (". /tmp/x", ".", "builtin"),
            ("command reboot", "command", "builtin"),
            ("builtin eval id", "builtin", "builtin"),
            ("trap reboot EXIT", "trap", "builtin"),
            ("alias ls=reboot", "alias", "builtin"),
            ("python3 -c 'import os'", "python3", "interpreter"),
            ("python3.11 x.py", "python3.11", "interpreter"),
            ("perl -e 1", "perl", "interpreter"),
            ("awk 1", "awk", "interpreter"),
            ("find / -delete", "find", "interpreter"),
            ("/usr/bin/uptime", "\"/usr/bin/uptime\"", "path"),
            ("./uptime", "\"./uptime\"", "path"),
            ("echo 'a;b'", ";", "chaining"),
            ("uptime 'a&&b'", "&&", "chaining"),
            ("uptime 'a||b'", "||", "chaining"),
            ("echo 'a|b'", "|", "pipe"),
            ("uptime 'a&b'", "&", "background"),
            ("echo '$(id)'", "$(", "command substitution"),
            ("uptime '${IFS}'", "${", "parameter expansion"),
            ("uptime '`id`'", "`", "command substitution"),
            ("uptime '>x'", ">", "redirection"),
            ("uptime '<x'", "<", "redirection"),
            (
                "reb\u{043e}ot",
                "U+043E \u{043e}",
                "non-ASCII character in the program name",
            ),
            ("uptime\u{ff1b}reboot", "U+FF1B \u{ff1b}", "non-ASCII"),
            (
                "ping -c 3 ex\u{0430}mple.com",
                "U+0430 \u{0430}",
                "argument 3",
            ),
            ("cat /proc/cpuinfo\u{0301}", "U+0301", "non-ASCII"),
            ("uptime 'a\tb'", "U+0009", "control character in argument 1"),
        ] {
            match check(command) {
                Err(e @ PolicyError::Blocked { .. }) => {
                    let PolicyError::Blocked { pattern: p, reason } = &e else {
                        unreachable!()
                    };
                    assert_eq!(p, pattern, "{command}: {reason}");
                    assert!(reason.contains(why), "{command}: {reason}");
                    assert_eq!(e.property(), "command");
                }
                other => panic!("{command}: {other:?}"),
            }
        }
        // An argv that did not come through the parser: invisible and control characters.
        let policy = Policy::scalelite(false);
        for (bad, pattern) in [
            (words(&["uptime", "a\nreboot"]), "\\n"),
            (words(&["uptime", "a\r"]), "\\r"),
            (words(&["uptime", "a\0"]), "U+0000"),
            (words(&["up\u{200b}time"]), "U+200B"),
            (words(&["\u{202e}toober"]), "U+202E"),
            (words(&["uptime", "\u{feff}"]), "U+FEFF"),
            (words(&["uptime", "\u{a0}"]), "U+00A0"),
            (words(&["uptime", "\u{2028}"]), "U+2028"),
        ] {
            assert!(
                matches!(policy.check(&bad), Err(PolicyError::Blocked { pattern: p, .. }) if p == pattern),
                "{bad:?}: {:?}",
                policy.check(&bad)
            );
        }
        assert_eq!(
            check("rm -rf /").unwrap_err().to_string(),
            "blocked: rm -r (recursive deletion - data loss risk)"
        );
    }

    #[test]
    fn open_mode_trusts_the_caller_but_the_parser_still_refuses_hidden_characters() {
        let open = Policy::scalelite(true);
        for command in ["sh -c 'echo a; echo b'", "eval uptime", "echo héllo"] {
            let approved = open.check(&argv(command)).unwrap();
            assert_eq!((approved.template, approved.argv), (None, argv(command)));
        }
        for hidden in ["echo a\u{200b}", "\u{202e}toober", "echo a\u{2028}b"] {
            assert!(
                matches!(
                    crate::command::parse(hidden),
                    Err(crate::command::CommandError::Invisible(_))
                ),
                "{hidden:?}"
            );
        }
    }

    #[test]
    fn an_argv_two_templates_match_is_refused() {
        let ambiguous = Policy {
            templates: vec![
                template("a", "", vec![fixed("uptime")]),
                template("b", "", vec![fixed("uptime")]),
            ],
            open: false,
        };
        let err = ambiguous.check(&argv("uptime")).unwrap_err();
        assert_eq!(err, PolicyError::Ambiguous(vec!["a", "b"]));
        assert_eq!(err.property(), "command");
        assert!(err.to_string().contains("ambiguous"), "{err}");
        assert_eq!(
            ambiguous.render("a", &BTreeMap::new()),
            Err(PolicyError::Ambiguous(vec!["a", "b"]))
        );
        // A parameter that overlaps a fixed word of another template is ambiguous too.
        let overlapping = Policy {
            templates: vec![
                template(
                    "status",
                    "",
                    vec![
                        fixed("systemctl"),
                        fixed("status"),
                        Word::Param {
                            name: "service",
                            kind: ParamKind::Service,
                        },
                    ],
                ),
                template(
                    "status_nginx",
                    "",
                    vec![fixed("systemctl"), fixed("status"), fixed("nginx")],
                ),
            ],
            open: false,
        };
        assert!(matches!(
            overlapping.check(&argv("systemctl status nginx")),
            Err(PolicyError::Ambiguous(_))
        ));
        assert_eq!(
            overlapping
                .check(&argv("systemctl status ssh"))
                .unwrap()
                .template,
            Some("status")
        );
    }

    #[test]
    fn param_kinds_validate_their_values() {
        use ParamKind::*;
        let ok = |k: ParamKind, v: &str| assert!(k.validate(v).is_ok(), "{k:?} {v:?}");
        let bad = |k: ParamKind, v: &str| assert!(k.validate(v).is_err(), "{k:?} {v:?}");

        ok(Container, "web");
        ok(Container, "a");
        ok(Container, "my_app.web-1");
        ok(Container, &"a".repeat(128));
        bad(Container, &"a".repeat(129));
        bad(Container, "");
        bad(Container, "-f");
        bad(Container, "_web");
        bad(Container, "we b");
        bad(Container, "web:latest");
        bad(Container, "../etc");

        ok(Service, "nginx.service");
        ok(Service, "getty@tty1.service");
        ok(Service, "systemd-journald");
        ok(Service, "dev-disk-by:x.device");
        bad(Service, "-nginx");
        bad(Service, "nginx/../x");
        bad(Service, ".hidden");

        ok(Host, "example.com");
        ok(Host, "localhost");
        ok(Host, "a-b.c-d.example");
        ok(Host, "xn--80ak6aa92e.com");
        ok(Host, "192.168.1.1");
        ok(Host, "0.0.0.0");
        ok(Host, "::1");
        ok(Host, "2001:db8::8a2e:370:7334");
        ok(Host, "::ffff:127.0.0.1");
        ok(Host, "3com.net");
        ok(Host, &format!("{}.com", "a".repeat(63)));
        for refused in [
            "-example.com",
            "example-.com",
            "example..com",
            "a..b",
            ".example.com",
            "example.com.",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "127.1",
            "127.0.1",
            "2130706433",
            "017700000001",
            "0x7f000001",
            "0x7f.0.0.1",
            "0X7F.1",
            "1.2.3.4.5",
            "[::1]",
            "[2001:db8::1]",
            "fe80::1%eth0",
            "host.123",
            "exa_mple.com",
            "a b",
            "a:b",
            "*.example.com",
        ] {
            bad(Host, refused);
        }
        bad(Host, &format!("{}.com", "a".repeat(64)));
        bad(Host, &format!("{}a", "a.".repeat(127)));

        ok(Count, "1");
        ok(Count, "100");
        ok(Count, "10000");
        for refused in [
            "0",
            "10001",
            "99999",
            "-1",
            "+1",
            "01",
            "1e2",
            "0x10",
            " 1",
            "1 ",
            "99999999999999999999",
            "",
        ] {
            bad(Count, refused);
        }
    }

    #[test]
    fn rendering_builds_the_same_argv_the_checker_accepts() {
        let policy = Policy::scalelite(false);
        let approved = policy
            .render(
                "docker_logs",
                &args(&[("container", "web"), ("lines", "50")]),
            )
            .unwrap();
        assert_eq!(approved.argv, ["docker", "logs", "web", "--tail", "50"]);
        assert_eq!(policy.check(&approved.argv).unwrap(), approved);
        let approved = policy
            .render("docker_logs", &args(&[("container", "web")]))
            .unwrap();
        assert_eq!(approved.argv, ["docker", "logs", "web"]);
        assert_eq!(
            policy.render("uptime", &BTreeMap::new()).unwrap().argv,
            ["uptime"]
        );
        assert_eq!(
            policy
                .render("ping", &args(&[("host", "2001:db8::1")]))
                .unwrap()
                .argv,
            ["ping", "-c", "3", "2001:db8::1"]
        );
        // Templates render in open mode as well.
        assert_eq!(
            Policy::scalelite(true)
                .render("hostname", &BTreeMap::new())
                .unwrap()
                .template,
            Some("hostname")
        );
    }

    #[test]
    fn render_errors_name_the_argument() {
        let policy = Policy::scalelite(false);
        let err = policy.render("format_disk", &BTreeMap::new()).unwrap_err();
        assert_eq!(err, PolicyError::UnknownTemplate("format_disk".into()));
        assert_eq!(err.property(), "template");

        let err = policy.render("ping", &BTreeMap::new()).unwrap_err();
        assert_eq!(err, PolicyError::MissingArgument("host"));
        assert_eq!(err.property(), "args.host");

        let err = policy
            .render("uptime", &args(&[("host", "x")]))
            .unwrap_err();
        assert!(matches!(err, PolicyError::UnexpectedArgument { .. }));
        assert_eq!(err.property(), "args.host");
        let err = policy
            .render("docker_logs", &args(&[("container", "web"), ("x", "1")]))
            .unwrap_err();
        assert_eq!(err.property(), "args.x");

        for (template, name, value, why) in [
            ("ping", "host", "-f", "must not start with '-'"),
            ("ping", "host", "", "must not be empty"),
            ("ping", "host", "a;reboot", "contains ;"),
            ("ping", "host", "a\nb", "contains \\n"),
            ("ping", "host", "ex\u{0430}mple.com", "non-ASCII"),
            ("ping", "host", "a\u{200b}", "invisible"),
            ("ping", "host", "127.1", "IPv4"),
            ("ping", "host", "[::1]", "labels"),
            ("docker_logs", "container", "../etc", "start with a letter"),
            ("docker_logs", "container", "web/x", "letters, digits"),
            (
                "systemctl_status",
                "service",
                "--host=evil",
                "must not start",
            ),
        ] {
            let err = policy
                .render(template, &args(&[(name, value)]))
                .unwrap_err();
            assert_eq!(err.property(), format!("args.{name}"), "{value:?}");
            let message = err.to_string();
            assert!(message.contains("is not a valid"), "{message}");
            match err {
                PolicyError::BadArgument { reason, .. } => {
                    assert!(reason.contains(why), "{value:?}: {reason}")
                }
                other => panic!("{value:?}: {other:?}"),
            }
        }
        let err = policy
            .render(
                "docker_logs",
                &args(&[("container", "web"), ("lines", "0")]),
            )
            .unwrap_err();
        assert_eq!(err.property(), "args.lines");
    }

    mod properties {
        //! Property tests of the whole pipeline, `command::parse` then [`Policy::check`], and
        //! of [`Policy::render`] against it.

        use std::net::{Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;

        use super::*;

        fn pipeline(policy: &Policy, line: &str) -> Option<Approved> {
            let argv = crate::command::parse(line).ok()?;
            policy.check(&argv).ok()
        }

        fn container() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}"
        }

        fn service() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9][a-zA-Z0-9@._:-]{0,127}"
        }

        fn host() -> impl Strategy<Value = String> {
            let label = "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?";
            prop_oneof![
                (prop::collection::vec(label, 0..4), "[a-z][a-z0-9]{0,10}").prop_map(
                    |(mut labels, tld)| {
                        labels.push(tld);
                        labels.join(".")
                    }
                ),
                any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
                any::<u128>().prop_map(|n| Ipv6Addr::from(n).to_string()),
            ]
        }

        /// A template call with valid arguments: (template, args, the expected argv).
        fn valid_call()
        -> impl Strategy<Value = (&'static str, BTreeMap<String, String>, Vec<String>)> {
            let plain = prop::sample::select(
                Policy::scalelite(false)
                    .templates
                    .into_iter()
                    .filter(|t| t.words.iter().all(|w| matches!(w, Word::Fixed { .. })))
                    .map(|t| t.name)
                    .collect::<Vec<_>>(),
            )
            .prop_map(|name| {
                let policy = Policy::scalelite(false);
                let t = policy.templates.iter().find(|t| t.name == name).unwrap();
                let argv = t
                    .words
                    .iter()
                    .map(|w| match w {
                        Word::Fixed { value } => (*value).to_owned(),
                        _ => unreachable!(),
                    })
                    .collect();
                (name, BTreeMap::new(), argv)
            });
            let logs = (container(), prop::option::of(1u32..=10_000)).prop_map(|(c, lines)| {
                let mut args = BTreeMap::from([("container".to_owned(), c.clone())]);
                let mut argv = words(&["docker", "logs", &c]);
                if let Some(n) = lines {
                    args.insert("lines".into(), n.to_string());
                    argv.extend(["--tail".to_owned(), n.to_string()]);
                }
                ("docker_logs", args, argv)
            });
            let systemctl = (any::<bool>(), service()).prop_map(|(status, s)| {
                let (name, verb) = if status {
                    ("systemctl_status", "status")
                } else {
                    ("systemctl_is_active", "is-active")
                };
                let args = BTreeMap::from([("service".to_owned(), s.clone())]);
                (name, args, words(&["systemctl", verb, &s]))
            });
            let ping = host().prop_map(|h| {
                let args = BTreeMap::from([("host".to_owned(), h.clone())]);
                ("ping", args, words(&["ping", "-c", "3", &h]))
            });
            prop_oneof![plain, logs, systemctl, ping]
        }

        /// Argument values that are sometimes valid and often not.
        fn any_value() -> impl Strategy<Value = String> {
            prop_oneof![
                container(),
                host(),
                "-[a-zA-Z=-]{0,10}",
                "[0-9]{0,6}",
                "[0-9a-fA-Fx.]{0,12}",
                "[ -~]{0,20}",
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Nothing panics, whatever the input, in either mode.
            #[test]
            fn the_pipeline_never_panics(input in any::<String>(), printable in "[ -~]{0,200}") {
                for policy in [Policy::scalelite(false), Policy::scalelite(true)] {
                    let _ = pipeline(&policy, &input);
                    let _ = pipeline(&policy, &printable);
                }
            }

            /// A chaining, substitution or redirection character is never accepted, wherever it
            /// stands and however it is quoted.
            #[test]
            fn shell_metacharacters_never_pass(
                prefix in prop::collection::vec(any::<char>(), 0..30),
                meta in prop::sample::select(vec![';', '|', '&', '$', '`', '<', '>', '\n']),
                suffix in prop::collection::vec(any::<char>(), 0..30),
                call in valid_call(),
            ) {
                let policy = Policy::scalelite(false);
                let prefix: String = prefix.into_iter().collect();
                let suffix: String = suffix.into_iter().collect();
                let canonical = call.2.join(" ");
                for line in [
                    format!("{prefix}{meta}{suffix}"),
                    format!("{canonical}{meta}{suffix}"),
                    format!("{canonical} '{prefix}{meta}{suffix}'"),
                    format!("{canonical} \"{meta}\""),
                    format!("{canonical}\\{meta}"),
                ] {
                    let accepted = pipeline(&policy, &line);
                    prop_assert!(accepted.is_none(), "{:?}: {:?}", line, accepted);
                }
            }

            /// Invisible characters never pass the parser, in either mode.
            #[test]
            fn invisible_characters_never_parse(
                prefix in "[ -~]{0,20}",
                hidden in prop::sample::select(vec!['\u{200b}', '\u{200e}', '\u{202e}', '\u{2066}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{a0}', '\u{ad}', '\u{e0041}']),
                suffix in "[ -~]{0,20}",
            ) {
                let line = format!("{prefix}{hidden}{suffix}");
                prop_assert!(crate::command::parse(&line).is_err(), "{:?}", line);
            }

            /// Valid invocations are accepted, with exactly their argv, by both ways in.
            #[test]
            fn valid_invocations_are_accepted((name, args, argv) in valid_call()) {
                let policy = Policy::scalelite(false);
                let line = argv.join(" ");
                let expected = Approved { template: Some(name), argv };
                prop_assert_eq!(pipeline(&policy, &line), Some(expected.clone()), "{:?}", line);
                prop_assert_eq!(policy.render(name, &args), Ok(expected));
            }

            /// `render` and `check` agree: what one accepts the other accepts the same way, and
            /// a value one refuses the other refuses too.
            #[test]
            fn render_and_check_agree(
                template in prop::sample::select(vec!["docker_logs", "systemctl_status", "systemctl_is_active", "ping"]),
                value in any_value(),
                lines in prop::option::of(any_value()),
            ) {
                let policy = Policy::scalelite(false);
                let t = policy.templates.iter().find(|t| t.name == template).unwrap();
                let mut argv = Vec::new();
                let mut args = BTreeMap::new();
                for word in &t.words {
                    match word {
                        Word::Fixed { value } => argv.push((*value).to_owned()),
                        Word::Param { name, .. } => {
                            args.insert((*name).to_owned(), value.clone());
                            argv.push(value.clone());
                        }
                        Word::Option { flag, name, .. } => {
                            if let Some(n) = &lines {
                                args.insert((*name).to_owned(), n.clone());
                                argv.extend([(*flag).to_owned(), n.clone()]);
                            }
                        }
                    }
                }
                let rendered = policy.render(template, &args);
                let checked = policy.check(&argv);
                match (&rendered, &checked) {
                    (Ok(r), Ok(c)) => {
                        prop_assert_eq!(r, c);
                        prop_assert_eq!(&r.argv, &argv);
                        prop_assert_eq!(r.template, Some(template));
                    }
                    (Err(_), Err(_)) => {}
                    _ => prop_assert!(false, "render {:?} but check {:?}", rendered, checked),
                }
            }

            /// No parameter takes a value starting with '-', by either way in.
            #[test]
            fn dash_values_are_never_accepted(rest in "[ -~]{0,20}", call in valid_call()) {
                let policy = Policy::scalelite(false);
                let value = format!("-{rest}");
                let (name, args, argv) = call;
                for key in args.keys() {
                    let mut bad = args.clone();
                    bad.insert(key.clone(), value.clone());
                    let refused = matches!(
                        policy.render(name, &bad),
                        Err(PolicyError::BadArgument { name: param, .. }) if param == key
                    );
                    prop_assert!(refused, "{}: {:?}", name, bad);
                    let mut bad_argv = argv.clone();
                    let i = argv.iter().rposition(|w| w == &args[key]).unwrap();
                    bad_argv[i] = value.clone();
                    prop_assert!(policy.check(&bad_argv).is_err(), "{:?}", bad_argv);
                }
            }
        }
    }
}
