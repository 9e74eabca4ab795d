//! Text from a device's byte streams: UTF-8 decoded across chunk (or frame) boundaries, for
//! live output over server-sent events and for recordings.

/// Decodes one output stream's bytes as UTF-8 across chunk boundaries: a character split
/// between two chunks comes out whole with the second; bytes that can never be UTF-8 become
/// U+FFFD.
#[derive(Default)]
pub struct Utf8Carry {
    tail: Vec<u8>,
}

impl Utf8Carry {
    pub fn push(&mut self, data: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.tail);
        bytes.extend_from_slice(data);
        let mut text = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).expect("checked"));
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // An incomplete character at the end: wait for the next chunk.
                        None => {
                            self.tail = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        text
    }

    /// Whatever is left when the stream ends (an incomplete character for ever).
    pub fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.tail)).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Carry;
    use proptest::prelude::*;

    #[test]
    fn a_character_split_across_chunks_comes_out_whole() {
        let mut carry = Utf8Carry::default();
        let euro = "€".as_bytes();
        assert_eq!(carry.push(&[b'a', euro[0]]), "a");
        assert_eq!(carry.push(&euro[1..2]), "");
        assert_eq!(carry.push(&[euro[2], b'b']), "€b");
        assert_eq!(carry.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut carry = Utf8Carry::default();
        assert_eq!(carry.push(b"x\xffy"), "x\u{fffd}y");
        assert_eq!(carry.push(b"\xe2\x82"), "");
        assert_eq!(carry.finish(), "\u{fffd}");
    }

    proptest! {
        /// However valid text is cut into chunks, the chunks decode to the text.
        #[test]
        fn any_split_of_valid_text_decodes_to_the_text(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut carry = Utf8Carry::default();
            let mut out = String::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                out.push_str(&carry.push(&bytes[from..cut]));
                from = cut;
            }
            out.push_str(&carry.finish());
            prop_assert_eq!(out, text);
        }
    }
}
