//! A short upper-case code (ISO country, continent) kept inline: locating a client on the
//! query path must not allocate, and MaxMind's codes are two letters.

use std::{fmt, ops::Deref};

/// Up to [`Code::MAX`] ASCII bytes, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    bytes: [u8; Code::MAX],
    len: u8,
}

impl Code {
    pub const MAX: usize = 7;

    /// The code in upper case; `None` if it is longer than [`Code::MAX`] or not ASCII
    /// (no real country or continent code is).
    pub fn new(s: &str) -> Option<Self> {
        if s.len() > Self::MAX || !s.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; Self::MAX];
        for (b, c) in bytes.iter_mut().zip(s.bytes()) {
            *b = c.to_ascii_uppercase();
        }
        Some(Self {
            bytes,
            len: s.len() as u8,
        })
    }
}

impl Deref for Code {
    type Target = str;

    fn deref(&self) -> &str {
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_cases_and_rejects_what_no_code_is() {
        assert_eq!(Code::new("de").as_deref(), Some("DE"));
        assert_eq!(Code::new("").as_deref(), Some(""));
        assert_eq!(Code::new("toolongcode"), None);
        assert_eq!(Code::new("dé"), None);
    }
}
