//! The rules every text a person writes into the shop follows, whichever aggregate keeps it:
//! it is stored in Unicode normal form C (so the NFC and NFD spellings of one word are one
//! word to search, to filter and to compare), it holds no control characters (a NUL, for one,
//! cannot be stored in PostgreSQL's text), a required text holds something a person can see,
//! and lengths count what a person sees (extended grapheme clusters), not code points.

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
use unicode_segmentation::UnicodeSegmentation;

use crate::ids::FieldError;

/// The text in normal form C.
pub fn nfc(text: String) -> String {
    match is_nfc_quick(text.chars()) {
        IsNormalized::Yes => text,
        IsNormalized::No | IsNormalized::Maybe => text.nfc().collect(),
    }
}

/// How many characters a person sees in `text` (extended grapheme clusters).
pub fn visible_length(text: &str) -> usize {
    text.graphemes(true).count()
}

/// Whether `c` shows nothing by itself: white space, and the format characters that render as
/// nothing (zero-width space and joiners, the soft hyphen, the byte order mark, bidirectional
/// marks, variation selectors, tags).
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// What a text field may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextRule {
    /// The field's name in the API, for the error.
    pub field: &'static str,
    /// The most visible characters it may have.
    pub max: usize,
    /// Whether line breaks and tabs are allowed (a description, an address).
    pub multiline: bool,
}

impl TextRule {
    /// Checks a text that must show something.
    pub fn check_required(&self, text: &str) -> Result<(), FieldError> {
        self.check_controls(text)?;
        if text.chars().all(is_invisible) {
            return Err(FieldError::new(
                self.field,
                "must contain a visible character (it is empty, or only spaces and invisible characters)",
            ));
        }
        self.check_length(text)
    }

    /// Checks a text that may be empty.
    pub fn check_optional(&self, text: &str) -> Result<(), FieldError> {
        self.check_controls(text)?;
        self.check_length(text)
    }

    fn check_controls(&self, text: &str) -> Result<(), FieldError> {
        let allowed = |c: char| self.multiline && matches!(c, '\n' | '\r' | '\t');
        match text
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && !allowed(*c))
        {
            None => Ok(()),
            Some((at, c)) => Err(FieldError::new(
                self.field,
                format!(
                    "must not contain control characters; found U+{:04X} at character {}{}",
                    u32::from(c),
                    at + 1,
                    if self.multiline {
                        " (line breaks and tabs are allowed)"
                    } else {
                        ""
                    }
                ),
            )),
        }
    }

    fn check_length(&self, text: &str) -> Result<(), FieldError> {
        // Graphemes never outnumber chars, so most texts need no segmentation.
        if text.chars().count() <= self.max {
            return Ok(());
        }
        let length = visible_length(text);
        if length > self.max {
            return Err(FieldError::new(
                self.field,
                format!("must be at most {} characters, got {length}", self.max),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: TextRule = TextRule {
        field: "name",
        max: 3,
        multiline: false,
    };
    const DESCRIPTION: TextRule = TextRule {
        field: "description",
        max: 20,
        multiline: true,
    };

    #[test]
    fn the_nfd_spelling_of_a_word_becomes_its_nfc_spelling() {
        let nfd = "Cafe\u{301}".to_owned();
        assert_eq!(nfc(nfd), "Café");
        assert_eq!(nfc("Café".to_owned()), "Café");
    }

    #[test]
    fn lengths_count_what_a_person_sees() {
        // "é" as e + combining accent, a flag of two code points, a family of seven.
        assert_eq!(visible_length("e\u{301}"), 1);
        assert_eq!(visible_length("🇮🇹"), 1);
        assert_eq!(visible_length("👨‍👩‍👧‍👦"), 1);
        assert!(NAME.check_required("e\u{301}🇮🇹👨‍👩‍👧‍👦").is_ok());
        let error = NAME.check_required("abcd").unwrap_err();
        assert_eq!(error.field, "name");
        assert!(
            error.message.contains("at most 3 characters, got 4"),
            "{error}"
        );
    }

    #[test]
    fn control_characters_are_refused_naming_the_field_and_where() {
        let error = NAME.check_required("a\u{0}b").unwrap_err();
        assert_eq!(error.field, "name");
        assert!(error.message.contains("U+0000 at character 2"), "{error}");
        assert!(NAME.check_required("a\nb").is_err());
        assert!(NAME.check_required("a\u{9c}").is_err(), "C1 controls too");
        assert!(DESCRIPTION.check_optional("one\ntwo\tthree").is_ok());
        assert!(DESCRIPTION.check_optional("one\u{0}").is_err());
    }

    #[test]
    fn a_text_of_invisible_characters_only_is_not_a_name() {
        for blank in [
            "",
            "   ",
            "\u{200B}",
            "\u{FEFF}\u{200D}",
            "\u{3000}",
            "\u{2060}",
        ] {
            let error = NAME.check_required(blank).unwrap_err();
            assert!(error.message.contains("visible"), "{blank:?}: {error}");
        }
        assert!(NAME.check_required("\u{200B}a").is_ok());
        assert!(DESCRIPTION.check_optional("").is_ok());
    }
}
