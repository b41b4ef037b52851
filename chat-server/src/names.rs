//! Names of clients and of rooms: which are allowed, and when two are the
//! same name.
//!
//! A name is taken as the client sent it, normalised to NFC (so `é` typed as
//! one character or as `e` plus a combining accent is one name), then
//! checked: 1 to `max_chars` characters (Unicode scalar values), each a
//! letter or digit of any script (`char::is_alphanumeric`), a combining mark
//! (not first: it would attach to nothing), or one of `_ - .`. Whitespace,
//! controls, bidi controls, zero-width and other invisible characters,
//! punctuation, symbols and emoji are refused, so a name cannot reorder or
//! hide the text shown around it.
//!
//! Two names are the same when their keys are equal: NFC of the full
//! Unicode case folding of the NFC form, so `Alice`, `alice` and `ALICE`
//! collide, and so do `Straße` and `STRASSE`. The name shown is the holder's
//! NFC form, as it asked for it.

use std::fmt;
use std::hash::{Hash, Hasher};

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// A valid name: the form shown and the key it is compared by.
#[derive(Clone, Debug)]
pub(crate) struct Name {
    /// NFC, as the holder asked for it.
    shown: Box<str>,
    /// NFC(case fold(shown)): equal keys are the same name.
    key: Box<str>,
}

impl Name {
    /// The name `raw` stands for, if it is a valid name of at most
    /// `max_chars` characters.
    pub(crate) fn parse(raw: &str, max_chars: usize) -> Result<Name, NameError> {
        let shown: String = raw.nfc().collect();
        if shown.is_empty() {
            return Err(NameError::Empty);
        }
        let chars = shown.chars().count();
        if chars > max_chars {
            return Err(NameError::TooLong {
                chars,
                max: max_chars,
            });
        }
        if let Some((i, ch)) = shown
            .chars()
            .enumerate()
            .find(|&(i, ch)| !allowed(ch, i == 0))
        {
            return Err(NameError::Char { ch, at: i + 1 });
        }
        let key = key(&shown);
        Ok(Name {
            shown: shown.into(),
            key: key.into(),
        })
    }

    /// The form shown to others (NFC).
    pub(crate) fn as_str(&self) -> &str {
        &self.shown
    }

    /// The key names are compared by: use it for maps and comparisons.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By key, the order `ListRooms` answers in.
impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The name the server assigns: `guest-N`. Always valid for the default
/// limit (at most 26 characters); the caller skips the taken ones.
pub(crate) fn guest(n: u64) -> Name {
    let shown = format!("guest-{n}");
    Name {
        key: shown.clone().into(),
        shown: shown.into(),
    }
}

/// Whether `name` has the form of the names the server assigns
/// (`guest-` and digits, in any case): those are not for accounts.
pub(crate) fn is_guest(name: &Name) -> bool {
    name.key()
        .strip_prefix("guest-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a name was refused. The `Display` text is the `detail` of a
/// `Refused`: a sentence for a person, naming a refused character by its
/// code point (`U+202E`), never by the character itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameError {
    /// Nothing, or nothing after normalisation.
    Empty,
    /// More than `max` characters.
    TooLong {
        /// Characters in the NFC form.
        chars: usize,
        /// The most allowed.
        max: usize,
    },
    /// A character that is not allowed there.
    Char {
        /// The character.
        ch: char,
        /// Its position in the NFC form, counting characters from 1.
        at: usize,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("a name cannot be empty"),
            NameError::TooLong { chars, max } => write!(
                f,
                "names are at most {max} characters (this one has {chars})"
            ),
            NameError::Char { ch, at } if at == 1 && is_combining_mark(ch) => write!(
                f,
                "U+{:04X} (a combining mark) cannot begin a name",
                u32::from(ch)
            ),
            NameError::Char { ch, at } => {
                write!(f, "U+{:04X}", u32::from(ch))?;
                if let Some(kind) = kind(ch) {
                    write!(f, " ({kind})")?;
                }
                write!(
                    f,
                    " is not allowed in a name (character {at}); names take letters, \
                     digits, combining marks, `_`, `-` and `.`"
                )
            }
        }
    }
}

impl std::error::Error for NameError {}

/// Whether `ch` may be in a name (`first`: as its first character).
fn allowed(ch: char, first: bool) -> bool {
    if invisible(ch) {
        return false;
    }
    ch.is_alphanumeric() || matches!(ch, '_' | '-' | '.') || (!first && is_combining_mark(ch))
}

/// Default-ignorable code points (Unicode's DerivedCoreProperties): they
/// show as nothing, so "alice" plus one of them would look like "alice".
/// Most are format controls, refused anyway; these are the letters and
/// marks among them (Hangul fillers, variation selectors, the combining
/// grapheme joiner, Khmer inherent vowels), plus the format ones for the
/// error's wording.
fn invisible(ch: char) -> bool {
    matches!(
        ch,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// What kind of refused character `ch` is, when a word helps.
fn kind(ch: char) -> Option<&'static str> {
    Some(match ch {
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => "a bidirectional control",
        _ if ch.is_whitespace() => "whitespace",
        _ if ch.is_control() => "a control character",
        _ if invisible(ch) => "an invisible character",
        _ => return None,
    })
}

/// The comparison key of an NFC name: NFC of its full case folding.
fn key(nfc: &str) -> String {
    caseless::default_case_fold_str(nfc).nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 32;

    fn ok(raw: &str) -> Name {
        Name::parse(raw, MAX).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
    }

    fn err(raw: &str) -> NameError {
        match Name::parse(raw, MAX) {
            Ok(name) => panic!("{raw:?} accepted as {name:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn names_of_any_script() {
        for raw in [
            "张三",
            "alice",
            "Zoë",
            "नमस्ते",
            "مرحبا",
            "Ελένη",
            "Юлия",
            "田中_太郎",
            "ש.ל-1",
            "x",
            "007",
            "a.b-c_d",
            "_",
            "..",
        ] {
            let name = ok(raw);
            assert_eq!(name.as_str(), raw);
            assert_eq!(name.to_string(), raw);
        }
        // Devanagari and Arabic with their combining marks (vowel signs,
        // virama, harakat) are names.
        assert!("नमस्ते".chars().any(is_combining_mark));
        let arabic = "مُحَمَّد";
        assert!(arabic.chars().any(is_combining_mark));
        assert_eq!(ok(arabic).as_str(), arabic);
    }

    #[test]
    fn case_does_not_make_another_name() {
        let alice = ok("Alice");
        assert_eq!(alice, ok("alice"));
        assert_eq!(alice, ok("ALICE"));
        assert_eq!(alice.key(), "alice");
        // Each keeps the spelling it was asked with.
        assert_eq!(ok("ALICE").as_str(), "ALICE");
        // Full folding: ß is ss.
        assert_eq!(ok("Straße"), ok("STRASSE"));
        assert_eq!(ok("Straße").key(), "strasse");
        assert_eq!(ok("ΣΊΣΥΦΟΣ"), ok("σίσυφος"));
        assert_ne!(ok("alice"), ok("alicia"));
        assert_eq!(
            std::collections::HashSet::from([ok("Alice"), ok("aLiCe")]).len(),
            1
        );
    }

    #[test]
    fn composed_and_decomposed_are_one_name() {
        let composed = "caf\u{e9}";
        let decomposed = "cafe\u{301}";
        let (a, b) = (ok(composed), ok(decomposed));
        assert_eq!(a, b);
        assert_eq!(a.as_str(), composed);
        assert_eq!(b.as_str(), composed, "the shown form is NFC");
        // A decomposed capital folds to the same key as well.
        assert_eq!(ok("CAFE\u{301}"), a);
        assert_eq!(ok("CAFE\u{301}").as_str(), "CAF\u{c9}");
    }

    #[test]
    fn the_length_counts_characters_after_nfc() {
        let longest = "张".repeat(MAX);
        assert_eq!(ok(&longest).as_str(), longest);
        assert_eq!(
            err(&"张".repeat(MAX + 1)),
            NameError::TooLong { chars: 33, max: 32 }
        );
        // 32 decomposed é are 64 characters typed, 32 after NFC.
        assert_eq!(ok(&"e\u{301}".repeat(MAX)).as_str().chars().count(), MAX);
        assert_eq!(
            Name::parse("abcdef", 5),
            Err(NameError::TooLong { chars: 6, max: 5 })
        );
        assert!(Name::parse("abcde", 5).is_ok());
        assert!(Name::parse("a", 1).is_ok());
    }

    #[test]
    fn empty_is_refused() {
        assert_eq!(err(""), NameError::Empty);
        assert_eq!(err("").to_string(), "a name cannot be empty");
    }

    #[test]
    fn invisible_and_reordering_characters_are_refused() {
        let cases = [
            ("ab\u{202E}cd", '\u{202E}', 3),  // right-to-left override
            ("\u{2066}ab", '\u{2066}', 1),    // left-to-right isolate
            ("ab\u{2069}", '\u{2069}', 3),    // pop directional isolate
            ("a\u{200E}", '\u{200E}', 2),     // left-to-right mark
            ("a\u{061C}b", '\u{061C}', 2),    // Arabic letter mark
            ("a\u{200B}b", '\u{200B}', 2),    // zero width space
            ("a\u{200D}b", '\u{200D}', 2),    // zero width joiner
            ("a\u{FEFF}", '\u{FEFF}', 2),     // byte order mark
            ("a\u{00AD}b", '\u{00AD}', 2),    // soft hyphen
            ("alice\u{FE0F}", '\u{FE0F}', 6), // variation selector (a mark)
            ("a\u{034F}b", '\u{034F}', 2),    // combining grapheme joiner
            ("\u{3164}", '\u{3164}', 1),      // Hangul filler (a letter)
        ];
        for (raw, ch, at) in cases {
            assert_eq!(err(raw), NameError::Char { ch, at }, "{raw:?}");
        }
    }

    #[test]
    fn whitespace_controls_punctuation_and_emoji_are_refused() {
        let cases = [
            ("a b", ' ', 2),
            ("a\tb", '\t', 2),
            ("a\u{3000}b", '\u{3000}', 2), // ideographic space
            ("a\u{a0}", '\u{a0}', 2),      // no-break space
            ("bell\u{7}", '\u{7}', 5),
            ("a\nb", '\n', 2),
            ("\u{1b}[31m", '\u{1b}', 1),
            ("a\u{85}", '\u{85}', 2),
            ("hi!", '!', 3),
            ("a@b", '@', 2),
            ("a/b", '/', 2),
            ("a:b", ':', 2),
            ("a,b", ',', 2),
            ("a+b", '+', 2),
            ("x😀", '😀', 2),
            ("♥", '♥', 1),
            ("你好。", '。', 3),
        ];
        for (raw, ch, at) in cases {
            assert_eq!(err(raw), NameError::Char { ch, at }, "{raw:?}");
        }
    }

    #[test]
    fn a_combining_mark_cannot_come_first() {
        assert_eq!(
            err("\u{301}abc"),
            NameError::Char {
                ch: '\u{301}',
                at: 1
            }
        );
        assert_eq!(
            err("\u{94D}न"),
            NameError::Char {
                ch: '\u{94D}',
                at: 1
            }
        );
        // Second, it is fine.
        assert_eq!(ok("x\u{301}").as_str(), "x\u{301}");
    }

    #[test]
    fn errors_read_well_and_never_carry_the_character() {
        let text = err("ab\u{202E}cd").to_string();
        assert_eq!(
            text,
            "U+202E (a bidirectional control) is not allowed in a name (character 3); \
             names take letters, digits, combining marks, `_`, `-` and `.`"
        );
        assert!(!text.contains('\u{202E}'));
        assert!(
            err("a b")
                .to_string()
                .starts_with("U+0020 (whitespace) is not allowed in a name (character 2)")
        );
        assert!(
            err("a\u{7}")
                .to_string()
                .starts_with("U+0007 (a control character)")
        );
        assert!(
            err("a\u{200B}")
                .to_string()
                .starts_with("U+200B (an invisible character)")
        );
        assert!(err("x😀").to_string().starts_with("U+1F600 is not allowed"));
        assert_eq!(
            err("\u{301}a").to_string(),
            "U+0301 (a combining mark) cannot begin a name"
        );
        assert_eq!(
            err(&"a".repeat(40)).to_string(),
            "names are at most 32 characters (this one has 40)"
        );
        for raw in ["\u{1b}[2J", "\u{202E}x", "a\u{0}b", "a\u{2066}"] {
            let text = err(raw).to_string();
            assert!(
                text.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "{text:?}"
            );
        }
    }

    #[test]
    fn guest_names_are_valid_names() {
        for n in [0, 1, 42, u64::MAX] {
            let name = guest(n);
            assert_eq!(name.as_str(), format!("guest-{n}"));
            let parsed = ok(name.as_str());
            assert_eq!(parsed, name);
            assert_eq!(parsed.key(), name.key());
        }
        // Someone may ask for a spelling that collides with one.
        assert_eq!(ok("GUEST-7"), guest(7));
    }

    #[test]
    fn rooms_sort_by_key() {
        let mut rooms = [ok("beta"), ok("Alpha"), ok("ZULU"), ok("lobby")];
        rooms.sort();
        let shown: Vec<&str> = rooms.iter().map(Name::as_str).collect();
        assert_eq!(shown, ["Alpha", "beta", "lobby", "ZULU"]);
    }

    #[test]
    fn huge_input_is_refused_without_trouble() {
        let raw = "x".repeat(70_000);
        assert_eq!(
            err(&raw),
            NameError::TooLong {
                chars: 70_000,
                max: 32
            }
        );
    }
}
