//! Configuration errors that name the exact field at fault.
//!
//! NOC staff read these in a terminal (`gtmd check`) or in the log after a reload, so every
//! error carries the path of the offending field (`apps[2].targets[0].cluster`) and a message
//! that says what is wrong and, where useful, what would be right.

use std::{fmt, path::PathBuf};

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
/// refusing the file.
#[derive(Debug, Default)]
pub struct Errors {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Errors {
    /// Records an error; an identical one already recorded (the same merged probe checked
    /// for several clusters) is not repeated.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let e = ConfigError::new(path, message);
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    /// Records a warning (once).
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let w = ConfigError::new(path, message);
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        self.errors
    }

    /// Takes the warnings recorded so far.
    pub fn take_warnings(&mut self) -> Vec<ConfigError> {
        std::mem::take(&mut self.warnings)
    }
}
