//! Templates as text: the syntax a template is written in, and the file of built-in ones.
//!
//! A template is words separated by spaces, as a person would type the command:
//!
//! ```text
//! docker logs {container} [--tail {lines:count}]
//! ```
//!
//! - a plain word is fixed: the argv must hold exactly that word there;
//! - `{name:kind}` is a parameter of a kind ([`ParamKind::keyword`]: `container`, `service`,
//!   `host`, `count`); `{kind}` alone is short for `{kind:kind}`;
//! - `[--flag {name:kind}]` is an optional `--flag value` pair.
//!
//! The first word is the program and must be fixed. Fixed words are printable ASCII without
//! quotes, backslashes, braces or brackets (quoting is the command parser's business, and a
//! template names what reaches the device after it), and neither they nor the program may trip
//! a blocked pattern.
//!
//! The built-in set (`builtin.templates`) is a list of such templates, each under a name, with
//! what a call may use besides its argv on indented lines below it:
//!
//! ```text
//! # Comments and blank lines are ignored.
//! docker_logs: docker logs {container} [--tail {lines:count}]
//!     description: A container's logs, optionally only the last lines
//!     env: LANG TZ        (names a call may set; none by default)
//!     pty                 (a call may ask for a pseudo-terminal)
//!     stdin               (a call may send standard input)
//!     sensitive           (the output may hold secrets: owners and administrators only)
//! ```
//!
//! A tenant's templates (`POST /v1/templates`) use the same template syntax and the same
//! checks, through [`Template::define`], so the file and the API cannot disagree.

use serde::Serialize;

use super::blocked::{dangerous_env, screen, screen_word};
use super::kinds::ParamKind;

/// One word of a template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Word {
    Fixed {
        value: String,
    },
    Param {
        name: String,
        kind: ParamKind,
    },
    /// An optional `--flag value` pair.
    Option {
        flag: String,
        name: String,
        kind: ParamKind,
    },
}

/// Where a template comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The deployment's built-in set: every tenant may run it, nobody can remove it.
    Builtin,
    /// Added by the tenant's owner; only that tenant's callers see and run it.
    Tenant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Template {
    pub name: String,
    pub description: String,
    /// As a person would write it: `docker logs {container} [--tail {lines}]`.
    pub usage: String,
    pub words: Vec<Word>,
    /// Environment variables a call may set, by name (none by default). A dangerous name
    /// ([`dangerous_env`]) is never accepted in a declaration.
    pub env: Vec<String>,
    /// A call may ask for a pseudo-terminal (interactive programs behave differently on one:
    /// pagers, colours, prompts).
    pub pty: bool,
    /// A call may send standard input.
    pub stdin: bool,
    pub origin: Origin,
    /// Its output may hold secrets (`bbb-conf --secret`): published on `<p>.sec.…` instead of
    /// `<p>.out.…`, and shown over REST only to roles that may see secrets (owner,
    /// administrator); others get `output_redacted: true` and no output.
    pub sensitive: bool,
}

/// Why a template definition was refused, and which property of it is at fault (`name`,
/// `template`, `description`, `env[1]`), so the API can name it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{property}: {reason}")]
pub struct InvalidTemplate {
    pub property: String,
    pub reason: String,
}

fn invalid(property: impl Into<String>, reason: impl Into<String>) -> InvalidTemplate {
    InvalidTemplate {
        property: property.into(),
        reason: reason.into(),
    }
}

/// What a template may use besides its argv.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    pub env: Vec<String>,
    pub pty: bool,
    pub stdin: bool,
    /// The output is sensitive (see [`Template::sensitive`]).
    pub sensitive: bool,
}

const MAX_NAME: usize = 64;
const MAX_TEMPLATE: usize = 512;
const MAX_WORDS: usize = 32;
const MAX_DESCRIPTION: usize = 500;
const MAX_ENV: usize = 16;

impl Template {
    /// A template from its parts, checked: the name, the syntax, the program, the declared
    /// environment names. Both the built-in file and the API define templates through here.
    pub fn define(
        name: &str,
        template: &str,
        description: &str,
        extras: Extras,
        origin: Origin,
    ) -> Result<Template, InvalidTemplate> {
        check_name(name)?;
        if description.chars().count() > MAX_DESCRIPTION
            || description.chars().any(char::is_control)
        {
            return Err(invalid(
                "description",
                format!("a description is at most {MAX_DESCRIPTION} characters on one line"),
            ));
        }
        let words = parse_words(template).map_err(|reason| invalid("template", reason))?;
        if extras.env.len() > MAX_ENV {
            return Err(invalid(
                "env",
                format!("a template declares at most {MAX_ENV} environment variables"),
            ));
        }
        for (i, var) in extras.env.iter().enumerate() {
            let well_formed = (1..=128).contains(&var.len())
                && var.bytes().enumerate().all(|(i, b)| {
                    b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
                });
            if !well_formed {
                return Err(invalid(
                    format!("env[{i}]"),
                    "environment variable names are letters, digits and '_', not starting with \
                     a digit",
                ));
            }
            if dangerous_env(var) {
                return Err(invalid(
                    format!("env[{i}]"),
                    format!(
                        "{var} can make the command load code or run another command; no \
                         template may declare it"
                    ),
                ));
            }
            if extras.env[..i].contains(var) {
                return Err(invalid(
                    format!("env[{i}]"),
                    format!("{var} is declared twice"),
                ));
            }
        }
        let usage = words
            .iter()
            .map(|w| match w {
                Word::Fixed { value } => value.clone(),
                Word::Param { name, .. } => format!("{{{name}}}"),
                Word::Option { flag, name, .. } => format!("[{flag} {{{name}}}]"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Template {
            name: name.to_owned(),
            description: description.to_owned(),
            usage,
            words,
            env: extras.env,
            pty: extras.pty,
            stdin: extras.stdin,
            origin,
            sensitive: extras.sensitive,
        })
    }

    /// The program: the first word, fixed in every template ([`parse_words`] sees to it).
    pub fn program(&self) -> &str {
        match self.words.first() {
            Some(Word::Fixed { value }) => value,
            _ => unreachable!("parse_words refuses a template that does not start with a word"),
        }
    }

    /// The names of its parameters, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.words.iter().filter_map(|w| match w {
            Word::Param { name, .. } | Word::Option { name, .. } => Some(name.as_str()),
            Word::Fixed { .. } => None,
        })
    }
}

/// A template's name: 1 to 64 lower-case letters, digits and `_`, starting with a letter (it
/// is also a subject token, so nothing else may be in it).
pub fn check_name(name: &str) -> Result<(), InvalidTemplate> {
    let name_ok = (1..=MAX_NAME).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if name_ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!(
                "a template name is 1 to {MAX_NAME} lower-case letters, digits and '_', \
                 starting with a letter"
            ),
        ))
    }
}

/// `{name}` or `{name:kind}`, without the braces.
fn parse_param(inner: &str) -> Result<(String, ParamKind), String> {
    let (name, kind) = match inner.split_once(':') {
        Some((name, kind)) => (name, kind),
        None => (inner, inner),
    };
    let name_ok = (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        return Err(format!(
            "parameter {{{inner}}}: a parameter name is 1 to 32 lower-case letters, digits and \
             '_', starting with a letter"
        ));
    }
    let kind = ParamKind::from_keyword(kind).ok_or_else(|| {
        let known: Vec<&str> = ParamKind::ALL.iter().map(|k| k.keyword()).collect();
        format!(
            "parameter {{{inner}}}: unknown kind {kind:?} (the kinds are {}; write \
             {{name:kind}})",
            known.join(", ")
        )
    })?;
    Ok((name.to_owned(), kind))
}

/// A fixed word: printable ASCII, nothing the command parser would have consumed, nothing
/// blocked.
fn parse_fixed(word: &str) -> Result<String, String> {
    if let Some(c) = word
        .chars()
        .find(|c| !c.is_ascii_graphic() || "{}[]'\"\\".contains(*c))
    {
        return Err(format!(
            "word {word:?}: {c:?} is not allowed in a fixed word (printable ASCII without \
             quotes, backslashes, braces or brackets)"
        ));
    }
    if let Err(e) = screen_word(word, "a fixed word") {
        return Err(format!("word {word:?}: {e}"));
    }
    Ok(word.to_owned())
}

/// The words of a template written in the syntax above.
pub fn parse_words(text: &str) -> Result<Vec<Word>, String> {
    if text.len() > MAX_TEMPLATE {
        return Err(format!("a template is at most {MAX_TEMPLATE} bytes"));
    }
    let mut words = Vec::new();
    let mut tokens = text.split(' ').filter(|t| !t.is_empty());
    while let Some(token) = tokens.next() {
        if let Some(flag) = token.strip_prefix('[') {
            let param = tokens.next().unwrap_or("");
            let Some(param) = param.strip_suffix(']') else {
                return Err(format!(
                    "optional group [{flag} ...: write an option as [--flag {{name:kind}}]"
                ));
            };
            if !flag.starts_with('-') {
                return Err(format!(
                    "optional group [{flag} {param}]: the first word must be an option \
                     starting with '-'"
                ));
            }
            let flag = parse_fixed(flag)?;
            let Some(inner) = param.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
                return Err(format!(
                    "optional group [{flag} {param}]: the second word must be a parameter \
                     {{name:kind}}"
                ));
            };
            let (name, kind) = parse_param(inner)?;
            words.push(Word::Option { flag, name, kind });
        } else if let Some(rest) = token.strip_prefix('{') {
            let Some(inner) = rest.strip_suffix('}') else {
                return Err(format!("parameter {token}: missing the closing brace"));
            };
            let (name, kind) = parse_param(inner)?;
            words.push(Word::Param { name, kind });
        } else {
            words.push(Word::Fixed {
                value: parse_fixed(token)?,
            });
        }
    }
    if text.chars().any(|c| c.is_whitespace() && c != ' ') {
        return Err("words are separated by spaces only".into());
    }
    if words.len() > MAX_WORDS {
        return Err(format!("a template has at most {MAX_WORDS} words"));
    }
    let Some(Word::Fixed { value: program }) = words.first() else {
        return Err("a template starts with the program, a fixed word".into());
    };
    if program.contains('=') {
        return Err("the program name cannot contain '='".into());
    }
    let own: Vec<String> = words
        .iter()
        .filter_map(|w| match w {
            Word::Fixed { value } => Some(value.clone()),
            _ => None,
        })
        .collect();
    if let Err(e) = screen(&own) {
        return Err(format!("the template's own words are refused: {e}"));
    }
    let mut names = Vec::new();
    for word in &words {
        if let Word::Param { name, .. } | Word::Option { name, .. } = word {
            if names.contains(&name) {
                return Err(format!("parameter {{{name}}} appears twice"));
            }
            names.push(name);
        }
    }
    Ok(words)
}

/// Parses a file of named templates (the format in the module doc). Errors name the line.
pub fn parse_file(text: &str, origin: Origin) -> Result<Vec<Template>, String> {
    struct Pending {
        line: usize,
        name: String,
        template: String,
        description: String,
        extras: Extras,
    }
    let finish = |p: Pending, done: &mut Vec<Template>| -> Result<(), String> {
        if done.iter().any(|t| t.name == p.name) {
            return Err(format!(
                "line {}: template {} defined twice",
                p.line, p.name
            ));
        }
        let t = Template::define(&p.name, &p.template, &p.description, p.extras, origin)
            .map_err(|e| format!("line {}: template {}: {e}", p.line, p.name))?;
        done.push(t);
        Ok(())
    };
    let mut done = Vec::new();
    let mut pending: Option<Pending> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            let Some(p) = pending.as_mut() else {
                return Err(format!(
                    "line {line}: an indented line belongs under a template"
                ));
            };
            let (key, value) = trimmed.split_once(':').unwrap_or((trimmed, ""));
            let value = value.trim();
            match (key, value) {
                ("description", _) => p.description = value.to_owned(),
                ("env", _) => {
                    p.extras.env = value.split_whitespace().map(str::to_owned).collect();
                }
                ("pty", "") => p.extras.pty = true,
                ("stdin", "") => p.extras.stdin = true,
                ("sensitive", "") => p.extras.sensitive = true,
                _ => {
                    return Err(format!(
                        "line {line}: {trimmed:?} is not description: ..., env: ..., pty, stdin \
                         or sensitive"
                    ));
                }
            }
            continue;
        }
        let Some((name, template)) = raw.split_once(':') else {
            return Err(format!("line {line}: expected name: template"));
        };
        if let Some(p) = pending.take() {
            finish(p, &mut done)?;
        }
        pending = Some(Pending {
            line,
            name: name.trim().to_owned(),
            template: template.trim().to_owned(),
            description: String::new(),
            extras: Extras::default(),
        });
    }
    if let Some(p) = pending.take() {
        finish(p, &mut done)?;
    }
    Ok(done)
}
