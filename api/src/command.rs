//! Parsing a command string into argv, refusing anything a shell would interpret.
//!
//! The worker quotes every word, so nothing a caller writes is ever executed as shell syntax.
//! This parser makes that visible at the door instead of surprising the caller later: a
//! command whose meaning depends on a shell (an operator, a redirection, an expansion, a glob,
//! a substitution) is rejected with the reason, rather than silently passed as literal words.
//! Quotes work as in a POSIX shell, so `grep 'a b' /etc/hosts` is the argv
//! `["grep", "a b", "/etc/hosts"]`; inside single quotes everything is literal.
//!
//! Characters that only serve to hide what runs are refused too, quoted or not and in every
//! policy mode (open mode included): invisible format characters (zero-width spaces and
//! joiners, the soft hyphen, the byte order mark), bidirectional overrides and isolates, the
//! line and paragraph separators U+2028/U+2029, and non-ASCII spaces (a no-break space looks
//! like a word break and is none). Printable non-ASCII text (`echo héllo`) stays allowed here;
//! the template policy refuses it separately, as a look-alike risk.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("the command is empty")]
    Empty,
    #[error("the command is longer than {0} bytes")]
    TooLong(usize),
    #[error("control character {0:?} is not allowed in a command")]
    Control(char),
    #[error(
        "invisible character U+{:04X} is not allowed in a command: it can hide what runs",
        *.0 as u32
    )]
    Invisible(char),
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

/// Invisible format characters (Unicode category Cf: zero-width spaces and joiners, the soft
/// hyphen, bidirectional overrides and isolates, the byte order mark, tag characters), the line
/// and paragraph separators, and every non-ASCII space. None of them shows what it does.
pub fn invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    ) || (!c.is_ascii() && c.is_whitespace())
}

/// Splits `command` into words the way a POSIX shell would, refusing shell syntax.
pub fn parse(command: &str) -> Result<Vec<String>, CommandError> {
    if command.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLong(MAX_COMMAND_BYTES));
    }
    if let Some(c) = command.chars().find(|&c| invisible(c)) {
        return Err(CommandError::Invisible(c));
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

    #[test]
    fn invisible_characters_are_refused_quoted_or_not() {
        for (bad, c) in [
            ("r\u{200b}eboot", '\u{200b}'),
            ("echo 'a\u{200c}b'", '\u{200c}'),
            ("echo \"\u{200d}\"", '\u{200d}'),
            ("\u{202e}toober", '\u{202e}'),
            ("echo \u{2066}a\u{2069}", '\u{2066}'),
            ("\u{feff}uptime", '\u{feff}'),
            ("up\u{ad}time", '\u{ad}'),
            ("up\u{2060}time", '\u{2060}'),
            ("echo a\u{2028}reboot", '\u{2028}'),
            ("echo 'a\u{2029}b'", '\u{2029}'),
            ("uptime\u{a0}reboot", '\u{a0}'),
            ("uptime\u{3000}reboot", '\u{3000}'),
            ("echo \\\u{200b}", '\u{200b}'),
            ("echo \u{e0001}", '\u{e0001}'),
        ] {
            assert_eq!(parse(bad), Err(CommandError::Invisible(c)), "{bad:?}");
        }
        assert_eq!(
            CommandError::Invisible('\u{202e}').to_string(),
            "invisible character U+202E is not allowed in a command: it can hide what runs"
        );
    }

    #[test]
    fn printable_non_ascii_text_is_kept() {
        assert_eq!(ok("echo héllo"), ["echo", "héllo"]);
        assert_eq!(ok("echo '日本語 テキスト'"), ["echo", "日本語 テキスト"]);
        assert_eq!(ok("echo \"ünïcödé\" 😀"), ["echo", "ünïcödé", "😀"]);
        // A combining accent is visible on its letter; only the policy refuses it.
        assert_eq!(ok("echo e\u{301}"), ["echo", "e\u{301}"]);
    }
}
