//! Text that enters the log.
//!
//! Every string in an event ends up in Postgres (read models, audit) and in front of other
//! people (API answers, logs). Postgres refuses NUL in `text`, and control characters only hide
//! what happened (a `\r` that rewrites a terminal line, an escape sequence that recolours it).
//! So text from a *caller* that holds a control character is refused at the edge
//! ([`first_control`]), and text from a *device* (exit-signal names, error messages), which we
//! cannot refuse, is escaped before it is published ([`escape_controls`]).

use std::borrow::Cow;

/// Whether `c` is a control character (Unicode category Cc: C0 including NUL, DEL, C1).
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// The byte offset and value of the first control character of `s`, if any.
pub fn first_control(s: &str) -> Option<(usize, char)> {
    s.char_indices().find(|(_, c)| is_control(*c))
}

/// `s` with every control character written as a visible `\u{..}` escape (and `\` doubled
/// when anything was escaped, so the escape cannot be forged). Unchanged text is borrowed.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if first_control(s).is_none() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes from a device as text: invalid UTF-8 replaced, then control characters escaped.
pub fn escape_bytes(bytes: &[u8]) -> String {
    escape_controls(&String::from_utf8_lossy(bytes)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_is_borrowed_unchanged() {
        assert!(matches!(
            escape_controls("KILL héllo"),
            Cow::Borrowed("KILL héllo")
        ));
        assert_eq!(first_control("uptime"), None);
    }

    #[test]
    fn controls_are_found_and_escaped() {
        assert_eq!(first_control("a\0b"), Some((1, '\0')));
        assert_eq!(first_control("x\u{9b}"), Some((1, '\u{9b}')));
        assert_eq!(escape_controls("a\0b\x1b[31m"), "a\\u{0}b\\u{1b}[31m");
        assert_eq!(escape_controls("\\u{0}\n"), "\\\\u{0}\\u{a}");
        assert_eq!(escape_bytes(b"\xffok\x00"), "\u{fffd}ok\\u{0}");
    }
}
