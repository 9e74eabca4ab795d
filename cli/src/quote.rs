//! Words typed after `--` become one command line the API parses back into the same words.

/// Quotes `words` as a POSIX shell would need them quoted: a word of only safe characters
/// stays bare, anything else goes in single quotes (a single quote as `'\''`). The API's
/// parser undoes exactly this, so each word reaches the device as typed.
pub fn command_line<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::command_line;

    #[test]
    fn safe_words_stay_bare_and_the_rest_is_quoted() {
        assert_eq!(command_line(&["ls", "-la", "/tmp"]), "ls -la /tmp");
        assert_eq!(
            command_line(&["echo", "a b", "it's", "$HOME", ""]),
            r"echo 'a b' 'it'\''s' '$HOME' ''"
        );
    }
}
