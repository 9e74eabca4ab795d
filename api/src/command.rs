//! Parsing a command string into argv, refusing anything a shell would interpret.
//!
//! The worker quotes every word, so nothing a caller writes is ever executed as shell syntax.
//! This parser makes that visible at the door instead of surprising the caller later: a
//! command whose meaning depends on a shell (an operator, a redirection, an expansion, a glob,
//! a substitution) is rejected with the reason, rather than silently passed as literal words.
//! Quotes work as in a POSIX shell, so `grep 'a b' /etc/hosts` is the argv
//! `["grep", "a b", "/etc/hosts"]`; inside single quotes everything is literal.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("the command is empty")]
    Empty,
    #[error("the command is longer than {0} bytes")]
    TooLong(usize),
    #[error("control character {0:?} is not allowed in a command")]
    Control(char),
    #[error(
        "{0:?} would be interpreted by a shell ({1}); commands run without a shell, quote it if it is meant literally"
    )]
    ShellSyntax(char, &'static str),
    #[error("unterminated {0} quote")]
    Unterminated(&'static str),
    #[error("a trailing backslash escapes nothing")]
    TrailingBackslash,
}

pub const MAX_COMMAND_BYTES: usize = 8192;

fn meaning(c: char) -> Option<&'static str> {
    Some(match c {
        ';' | '&' | '|' => "command chaining",
        '<' | '>' => "redirection",
        '$' => "expansion",
        '`' => "command substitution",
        '(' | ')' => "subshell",
        '*' | '?' | '[' | ']' => "globbing",
        '{' | '}' => "brace expansion",
        '~' => "home directory expansion",
        '#' => "comment",
        '!' => "history expansion",
        _ => return None,
    })
}

/// Splits `command` into words the way a POSIX shell would, refusing shell syntax.
pub fn parse(command: &str) -> Result<Vec<String>, CommandError> {
    if command.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLong(MAX_COMMAND_BYTES));
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c.is_control() && c != '\t' {
            return Err(CommandError::Control(c));
        }
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(CommandError::Unterminated("single")),
                        Some('\'') => break,
                        Some(c) if c.is_control() && c != '\t' => {
                            return Err(CommandError::Control(c));
                        }
                        Some(c) => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(CommandError::Unterminated("double")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) if c.is_control() && c != '\t' => {
                                return Err(CommandError::Control(c));
                            }
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(CommandError::Unterminated("double")),
                        },
                        Some(c @ ('$' | '`')) => {
                            return Err(CommandError::ShellSyntax(c, meaning(c).unwrap()));
                        }
                        Some(c) if c.is_control() && c != '\t' => {
                            return Err(CommandError::Control(c));
                        }
                        Some(c) => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    None => return Err(CommandError::TrailingBackslash),
                    Some(c) if c.is_control() && c != '\t' => return Err(CommandError::Control(c)),
                    Some(c) => word.push(c),
                }
            }
            // `=` and `-` are fine anywhere; `#` and `~` only matter at a word's start in a
            // shell, but refusing them unquoted everywhere keeps the rule simple to state.
            c => {
                if let Some(why) = meaning(c) {
                    return Err(CommandError::ShellSyntax(c, why));
                }
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(CommandError::Empty);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<String> {
        parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn plain_and_quoted_words() {
        assert_eq!(ok("uptime"), ["uptime"]);
        assert_eq!(ok("  df   -h "), ["df", "-h"]);
        assert_eq!(ok("grep 'a b' /etc/hosts"), ["grep", "a b", "/etc/hosts"]);
        assert_eq!(
            ok(r#"echo "x \"y\" \$z" 'a;b|c'"#),
            ["echo", "x \"y\" $z", "a;b|c"]
        );
        assert_eq!(ok(r"echo a\ b"), ["echo", "a b"]);
        assert_eq!(ok("echo ''"), ["echo", ""]);
        assert_eq!(ok("env A=1 printenv A"), ["env", "A=1", "printenv", "A"]);
    }

    #[test]
    fn shell_syntax_is_refused() {
        for bad in [
            "uptime; reboot",
            "a && b",
            "a || b",
            "a | b",
            "a & b",
            "a > f",
            "a < f",
            "echo $(id)",
            "echo `id`",
            "echo $HOME",
            "echo ${IFS}",
            "ls *",
            "ls ?",
            "ls [a]",
            "echo {a,b}",
            "ls ~",
            "a # c",
            "(a)",
            "echo \"$(id)\"",
            "echo \"`id`\"",
            "!!",
        ] {
            assert!(
                matches!(parse(bad), Err(CommandError::ShellSyntax(..))),
                "{bad:?} -> {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn malformed_commands_are_refused() {
        assert_eq!(parse(""), Err(CommandError::Empty));
        assert_eq!(parse("   "), Err(CommandError::Empty));
        assert_eq!(parse("echo 'a"), Err(CommandError::Unterminated("single")));
        assert_eq!(parse("echo \"a"), Err(CommandError::Unterminated("double")));
        assert_eq!(parse("echo a\\"), Err(CommandError::TrailingBackslash));
        assert_eq!(parse("echo a\nreboot"), Err(CommandError::Control('\n')));
        assert_eq!(parse("echo 'a\nb'"), Err(CommandError::Control('\n')));
        assert_eq!(parse("echo a\0"), Err(CommandError::Control('\0')));
        assert!(matches!(
            parse(&"a".repeat(MAX_COMMAND_BYTES + 1)),
            Err(CommandError::TooLong(_))
        ));
    }
}
