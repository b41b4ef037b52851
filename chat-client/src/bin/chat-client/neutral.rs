//! Text from others, made safe to print: what could drive the terminal or
//! reorder the line is shown as an escape instead.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1), bidirectional control
/// (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) and line or
/// paragraph separator (U+2028, U+2029) written as a visible escape (`\n`,
/// `\u{1b}`, `\u{202e}`): one message stays one line, cannot move the
/// cursor, change colours or turn the rest of the line around.
pub(crate) fn neutral(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if c.is_control() {
            // `\n`, `\t`, `\r`, `\u{1b}`, `\u{9b}`, ...
            out.extend(c.escape_debug());
        } else {
            out.extend(c.escape_unicode());
        }
    }
    Cow::Owned(out)
}

/// Whether `c` must not reach the terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        for text in [
            "hello!!",
            "是的你是对的，我是中国人",
            "👩‍👩‍👧 emoji with joiners",
            "עברית",
        ] {
            assert!(matches!(neutral(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(
            neutral("two\nlines\u{1b}[2J\u{7f}\u{9b}31m\t你好\r"),
            "two\\nlines\\u{1b}[2J\\u{7f}\\u{9b}31m\\t你好\\r"
        );
    }

    #[test]
    fn bidi_controls_are_escaped() {
        assert_eq!(neutral("abc\u{202E}fed"), "abc\\u{202e}fed");
        for c in [
            '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
            '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}',
        ] {
            let shown = neutral(&format!("x{c}y")).into_owned();
            assert!(!shown.contains(c), "{c:?} passed through");
            assert_eq!(shown, format!("x\\u{{{:x}}}y", u32::from(c)));
        }
    }
}
