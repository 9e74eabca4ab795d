//! The command policy: which commands a tenant may run, as templates with typed arguments.
//!
//! Modules: [`kinds`] (parameter kinds and their validation), [`blocked`] (blocked patterns and
//! dangerous environment names), [`syntax`] (the template syntax, its parser and the built-in
//! file `builtin.templates`), [`matching`] (which one template an argv is an instance of), and
//! this facade, [`Policy`], which the exec use case asks.
//!
//! A command reaches a device only after four layers:
//! 1. `command::parse` splits the string into argv and refuses anything only a shell would
//!    interpret (operators, expansions, globs, control characters) and characters that only
//!    serve to hide what runs (invisible, bidirectional, line separators, non-ASCII spaces).
//!    This layer holds in open mode too.
//! 2. [`Policy::check`] refuses blocked patterns ([`blocked`]) with the reason, whether or not a template
//!    would match: Scalelite's list (recursive deletion, system control, user management,
//!    permission changes, chaining) with chaining, substitution and redirection characters
//!    refused even when quoted into one word — and the ways around it: a program named by a
//!    path (`/sbin/reboot`, `./uptime`) or in capitals (`REBOOT`), wrappers and interpreters
//!    that run another command (`sudo`, `sh -c`, `env`, `xargs`, `python3`), shell builtins
//!    that run their arguments (`eval`, `source`, `.`, `command`, `trap`), non-ASCII look-alike
//!    letters (a Cyrillic `о` in `rebоot`, a fullwidth `；`) and invisible characters in an
//!    argv that did not come through the parser.
//! 3. The argv must match exactly one allow-listed template ([`matching`]): fixed words in order, and each
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
//! The default templates are Scalelite's whitelist, described in `builtin.templates` and
//! parsed once per process; a tenant's owner may add templates of the tenant's own, which only
//! that tenant's requests match ([`Policy::with_tenant`]). A deployment may instead run in
//! [`CommandPolicy::Open`] mode (layers 1 and 4 only: any argv, each word still reaching the device literally — but
//! the program may be an interpreter or a builtin such as `eval` that runs its arguments),
//! for fleets whose operators are all trusted with a shell.
//!
//! Left out on purpose: path and one-of parameter kinds (no Scalelite template takes a path or
//! a choice: `cat /proc/cpuinfo` is two fixed words, and `bbb-conf --status|--check|--secret`
//! are three templates with names of their own), and a size limit of the policy's own
//! (`command::parse` caps the string and every parameter kind bounds its length).

pub mod blocked;
pub mod kinds;
pub mod matching;
pub mod syntax;
pub mod tenants;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

pub use blocked::dangerous_env;
use blocked::{screen, screen_word, show};
pub use kinds::ParamKind;
pub use syntax::{Extras, InvalidTemplate, Origin, Template, Word};

/// How commands are judged (`SSHQ_COMMAND_POLICY`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandPolicy {
    /// Blocked patterns, then exactly one allow-listed template; env, pty and stdin only where
    /// that template declares them.
    #[default]
    Templates,
    /// Any argv `command::parse` produced; each word still reaches the device literally.
    Open,
}

/// The built-in templates, as written in `builtin.templates`.
const BUILTIN: &str = include_str!("builtin.templates");

/// The built-in set, parsed once per process. The file is part of the binary and a unit test
/// parses it, so a failure here is a build that never passed its tests.
static BUILTIN_TEMPLATES: LazyLock<Vec<Template>> = LazyLock::new(|| {
    syntax::parse_file(BUILTIN, Origin::Builtin)
        .unwrap_or_else(|e| panic!("api/src/policy/builtin.templates: {e}"))
});

/// What an argv or a template call was refused for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A blocked pattern, refused before any template is looked at.
    #[error("blocked: {pattern} ({reason})")]
    Blocked { pattern: String, reason: String },
    /// No template matches; `reason` names the closest template, if any, and what differs.
    #[error("{reason}")]
    NotAllowed {
        closest: Option<String>,
        reason: String,
    },
    /// More than one template matches: none is approved, so the audit names one template.
    #[error(
        "the command matches several templates ({}); the policy is ambiguous, so none runs",
        .0.join(", ")
    )]
    Ambiguous(Vec<String>),
    #[error("unknown template {0:?}; GET /v1/templates lists them")]
    UnknownTemplate(String),
    #[error("argument {name:?} is not a valid {}: {reason}", kind.label())]
    BadArgument {
        name: String,
        kind: ParamKind,
        reason: String,
    },
    #[error("missing argument {0:?}")]
    MissingArgument(String),
    #[error("template {template} takes no argument {name:?}")]
    UnexpectedArgument { template: String, name: String },
    /// An environment variable that makes programs load code or run commands.
    #[error(
        "environment variable {name} is not allowed: it can make the command load code or run \
         another command (only the open command policy allows it)"
    )]
    DangerousEnv { index: usize, name: String },
    #[error("template {template} does not declare environment variable {name}")]
    EnvNotDeclared {
        index: usize,
        template: String,
        name: String,
    },
    #[error("template {0} does not declare a pseudo-terminal (pty)")]
    PtyNotDeclared(String),
    #[error("template {0} does not declare standard input (stdin_base64)")]
    StdinNotDeclared(String),
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
    pub template: Option<String>,
    pub argv: Vec<String>,
}

/// The templates one request is judged against, and the mode.
#[derive(Clone, Debug)]
pub struct Policy {
    pub mode: CommandPolicy,
    /// The built-in templates, then the tenant's own (if any), in the order they were added.
    pub templates: Vec<Template>,
}

impl Policy {
    /// The built-in set (Scalelite's whitelist) in the given mode.
    pub fn builtin(mode: CommandPolicy) -> Self {
        Self {
            mode,
            templates: BUILTIN_TEMPLATES.clone(),
        }
    }

    /// This policy with a tenant's own templates added after the built-ins. Names are unique
    /// across both (the API refuses a tenant template named like a built-in), so a request
    /// names one template either way.
    pub fn with_tenant(&self, tenant: impl IntoIterator<Item = Template>) -> Self {
        let mut templates = self.templates.clone();
        templates.extend(tenant);
        Self {
            mode: self.mode,
            templates,
        }
    }
}

impl Policy {
    /// Checks a parsed argv: in open mode anything (the parser already refused what hides what
    /// runs, and the worker's quoting keeps every word literal); otherwise blocked patterns,
    /// then exactly one template must match.
    pub fn check(&self, argv: &[String]) -> Result<Approved, PolicyError> {
        if self.mode == CommandPolicy::Open {
            return Ok(Approved {
                template: None,
                argv: argv.to_vec(),
            });
        }
        screen(argv)?;
        let t = matching::one_match(&self.templates, argv)?;
        Ok(Approved {
            template: Some(t.name.clone()),
            argv: argv.to_vec(),
        })
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
        if self.mode == CommandPolicy::Open {
            return Ok(());
        }
        let template = approved
            .template
            .as_deref()
            .and_then(|name| self.templates.iter().find(|t| t.name == name));
        let name = template.map_or("(none)", |t| t.name.as_str());
        for (index, var) in env.into_iter().enumerate() {
            if dangerous_env(var) {
                return Err(PolicyError::DangerousEnv {
                    index,
                    name: var.to_owned(),
                });
            }
            if !template.is_some_and(|t| t.env.iter().any(|e| e == var)) {
                return Err(PolicyError::EnvNotDeclared {
                    index,
                    template: name.to_owned(),
                    name: var.to_owned(),
                });
            }
        }
        if pty && !template.is_some_and(|t| t.pty) {
            return Err(PolicyError::PtyNotDeclared(name.to_owned()));
        }
        if stdin && !template.is_some_and(|t| t.stdin) {
            return Err(PolicyError::StdinNotDeclared(name.to_owned()));
        }
        Ok(())
    }

    /// Whether the output of an approved argv is sensitive: its template is marked so. In open
    /// mode no template approved it, so the argv counts as sensitive when it is an instance
    /// of a sensitive template all the same (`bbb-conf --secret` stays sensitive however it
    /// was allowed).
    pub fn sensitive(&self, approved: &Approved) -> bool {
        match approved.template.as_deref() {
            Some(name) => self.templates.iter().any(|t| t.name == name && t.sensitive),
            None => self.templates.iter().any(|t| {
                t.sensitive && matching::one_match(std::slice::from_ref(t), &approved.argv).is_ok()
            }),
        }
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
        if let Some(extra) = args.keys().find(|k| !t.params().any(|p| p == k.as_str())) {
            return Err(PolicyError::UnexpectedArgument {
                template: t.name.clone(),
                name: extra.clone(),
            });
        }
        let value = |name: &str, kind: ParamKind| -> Result<Option<String>, PolicyError> {
            let Some(value) = args.get(name) else {
                return Ok(None);
            };
            let bad = |reason| PolicyError::BadArgument {
                name: name.to_owned(),
                kind,
                reason,
            };
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
                Word::Fixed { value } => argv.push(value.clone()),
                Word::Param { name, kind } => {
                    argv.push(
                        value(name, *kind)?
                            .ok_or_else(|| PolicyError::MissingArgument(name.clone()))?,
                    );
                }
                Word::Option { flag, name, kind } => {
                    if let Some(value) = value(name, *kind)? {
                        argv.push(flag.clone());
                        argv.push(value);
                    }
                }
            }
        }
        screen(&argv)?;
        let matched = matching::one_match(&self.templates, &argv)?;
        if matched.name != t.name {
            return Err(PolicyError::Ambiguous(vec![
                t.name.clone(),
                matched.name.clone(),
            ]));
        }
        Ok(Approved {
            template: Some(t.name.clone()),
            argv,
        })
    }
}
