//! Blocked patterns: what is refused before any template is looked at, with the reason.
//!
//! Scalelite's list (recursive deletion, system control, user management, permission changes,
//! chaining) with chaining, substitution and redirection characters refused even when quoted
//! into one word — and the ways around it: a program named by a path (`/sbin/reboot`,
//! `./uptime`) or in capitals (`REBOOT`), wrappers and interpreters that run another command
//! (`sudo`, `sh -c`, `env`, `xargs`, `python3`), shell builtins that run their arguments
//! (`eval`, `source`, `.`, `command`, `trap`), non-ASCII look-alike letters (a Cyrillic `о` in
//! `rebоot`, a fullwidth `；`) and invisible characters in an argv that did not come through
//! the parser. The same screen refuses a tenant's template whose own words trip it, so no
//! template can allow-list a blocked program.
//!
//! Also here: [`dangerous_env`], the environment variables no template may declare.

use super::PolicyError;

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

pub(super) fn blocked(pattern: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Blocked {
        pattern: pattern.into(),
        reason: reason.into(),
    }
}

/// A word for an error message: quoted and escaped, at most 40 characters of it.
pub(super) fn show(word: &str) -> String {
    const MAX: usize = 40;
    if word.chars().count() <= MAX {
        format!("{word:?}")
    } else {
        let head: String = word.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

/// The blocked characters of one word (of a command, or of a template argument's value).
pub(super) fn screen_word(word: &str, place: &str) -> Result<(), PolicyError> {
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
pub(super) fn screen(argv: &[String]) -> Result<(), PolicyError> {
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
