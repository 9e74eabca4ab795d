//! Matching: which one template an argv is an instance of, or the closest and what differs.
//!
//! The argv must match exactly one template: fixed words in order, and each parameter of its
//! declared kind. An argv that two templates match is refused: the audit trail must name the
//! one template that ran. A near miss names the closest template (one running the same
//! program) and where it stopped matching.

use super::PolicyError;
use super::blocked::show;
use super::syntax::{Template, Word};

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
                if argv.get(i) == Some(flag) {
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

/// The one template `argv` is an instance of, or why there is none.
pub(super) fn one_match<'a>(
    templates: &'a [Template],
    argv: &[String],
) -> Result<&'a Template, PolicyError> {
    let Some(program) = argv.first() else {
        return Err(PolicyError::NotAllowed {
            closest: None,
            reason: "the command is empty".into(),
        });
    };
    let mut matched = Vec::new();
    let mut closest: Option<(&Template, Miss)> = None;
    for t in templates {
        match matches(&t.words, argv) {
            Ok(()) => matched.push(t),
            Err(miss) if t.program() == program => {
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
            closest: Some(t.name.clone()),
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
            several.iter().map(|t| t.name.clone()).collect(),
        )),
    }
}
