//! Configuration errors that name the exact field at fault.
//!
//! NOC staff read these in a terminal (`gtmd check`) or in the log after a reload, so every
//! error carries the path of the offending field (`apps[2].targets[0].cluster`) and a message
//! that says what is wrong and, where useful, what would be right.

use std::{fmt, path::PathBuf};

/// At most this many errors are listed: a file with an error in each of 100,000 apps is
/// reported in bounded time and log lines, with a count of the rest.
pub const MAX_LISTED_ERRORS: usize = 100;

/// At most this many warnings are listed (they are logged at start and on every reload).
pub const MAX_LISTED_WARNINGS: usize = 20;

/// One problem in the configuration, at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `zones[0].records[3].value`; empty for file-level errors.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn single(file: impl Into<PathBuf>, error: ConfigError) -> Self {
        Self {
            file: file.into(),
            errors: vec![error],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} error{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

/// Collects errors while validation walks the whole file, so all of them are reported,
/// and warnings: settings that are valid but have no effect (a weight under a policy that
/// does not use weights), which `gtmd check`, the start and a reload report without
/// refusing the file. Both lists are bounded ([`MAX_LISTED_ERRORS`],
/// [`MAX_LISTED_WARNINGS`]): the rest are counted and reported as one line, so a large
/// config with the same mistake everywhere costs neither quadratic time (a lookup scans at
/// most the short list) nor a log flood.
#[derive(Debug, Default)]
pub struct Errors {
    errors: Vec<ConfigError>,
    more_errors: usize,
    warnings: Vec<ConfigError>,
    more_warnings: usize,
}

/// Adds `e` to `list` unless listed already; past `max` entries only counts it.
fn record(list: &mut Vec<ConfigError>, more: &mut usize, max: usize, e: ConfigError) {
    if list.contains(&e) {
        return;
    }
    if list.len() < max {
        list.push(e);
    } else {
        *more += 1;
    }
}

/// The line that stands for the entries not listed.
fn omitted(more: usize, what: &str, max: usize) -> Option<ConfigError> {
    (more > 0).then(|| {
        ConfigError::new(
            "",
            format!("... and {more} more {what} (only the first {max} are listed)"),
        )
    })
}

impl Errors {
    /// Records an error; an identical one already recorded (the same merged probe checked
    /// for several clusters) is not repeated.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        record(
            &mut self.errors,
            &mut self.more_errors,
            MAX_LISTED_ERRORS,
            ConfigError::new(path, message),
        );
    }

    /// Records a warning (once).
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        record(
            &mut self.warnings,
            &mut self.more_warnings,
            MAX_LISTED_WARNINGS,
            ConfigError::new(path, message),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors, with one closing line for those past the listed ones.
    pub fn into_vec(mut self) -> Vec<ConfigError> {
        self.errors
            .extend(omitted(self.more_errors, "errors", MAX_LISTED_ERRORS));
        self.errors
    }

    /// Takes the warnings recorded so far, with one closing line for those not listed.
    pub fn take_warnings(&mut self) -> Vec<ConfigError> {
        let more = std::mem::take(&mut self.more_warnings);
        let mut out = std::mem::take(&mut self.warnings);
        out.extend(omitted(more, "warnings", MAX_LISTED_WARNINGS));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_bounded_deduplicated_and_count_the_rest() {
        let mut e = Errors::default();
        for i in 0..100_000 {
            e.warn(format!("apps[{i}].targets[0].weight"), "is ignored");
            e.warn("apps[0].targets[0].weight", "is ignored");
            e.push(format!("apps[{i}].cluster"), "unknown");
        }
        let w = e.take_warnings();
        assert_eq!(w.len(), MAX_LISTED_WARNINGS + 1);
        assert_eq!(
            w.last().unwrap().to_string(),
            "... and 99980 more warnings (only the first 20 are listed)"
        );
        let errors = e.into_vec();
        assert_eq!(errors.len(), MAX_LISTED_ERRORS + 1);
        assert_eq!(errors[0].to_string(), "apps[0].cluster: unknown");
        assert!(
            errors
                .last()
                .unwrap()
                .message
                .starts_with("... and 99900 more errors")
        );
    }
}
