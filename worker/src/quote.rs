//! Turning an approved argv into the one string SSH's exec request carries.
//!
//! SSH has no argv: the server hands a single string to the user's shell. Every element is
//! therefore wrapped in single quotes, inside which POSIX shells interpret nothing; a single
//! quote itself is written as `'\''`. The remote shell sees exactly the words the policy
//! approved, and no caller byte can become an operator, expansion or redirection.

/// Quotes one word for a POSIX shell.
pub fn quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The command line for `argv` run with `env` set: `env 'K=V' … 'argv0' 'arg1' …`. Using
/// `env(1)` rather than SSH `env` requests works on every sshd, whatever its `AcceptEnv`.
pub fn command_line(argv: &[String], env: &[(String, String)]) -> String {
    let mut words: Vec<String> = Vec::with_capacity(argv.len() + env.len() + 1);
    if !env.is_empty() {
        words.push("env".into());
        words.extend(env.iter().map(|(k, v)| quote(&format!("{k}={v}"))));
    }
    words.extend(argv.iter().map(|a| quote(a)));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_neutralises_shell_syntax() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(
            quote("$(reboot); `id` | x > y"),
            "'$(reboot); `id` | x > y'"
        );
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn env_goes_through_env_1() {
        let argv = vec!["printenv".to_string(), "A".to_string()];
        assert_eq!(command_line(&argv, &[]), "'printenv' 'A'");
        assert_eq!(
            command_line(&argv, &[("A".into(), "x y".into())]),
            "env 'A=x y' 'printenv' 'A'"
        );
    }

    /// The real proof: a POSIX shell given the quoted line receives the original words.
    #[test]
    fn a_real_shell_receives_the_exact_words() {
        let nasty = [
            "a b", "'", "\"", "$HOME", "`id`", "$(id)", "\\", "*", "\n;\n", "${IFS}", "ünï", "-e",
        ];
        let argv: Vec<String> = std::iter::once("printf".to_string())
            .chain(std::iter::once("%s\\0".to_string()))
            .chain(nasty.iter().map(|s| s.to_string()))
            .collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command_line(&argv, &[]))
            .output()
            .unwrap();
        let words: Vec<&[u8]> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .collect();
        let expected: Vec<&[u8]> = nasty.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(words, expected);
    }
}
