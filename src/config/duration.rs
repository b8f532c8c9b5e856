//! Durations in the config file: `"10s"`, `"250ms"`, `"1m 30s"` (humantime), or a plain
//! integer number of seconds. Environment overrides always arrive as strings, so both forms
//! must be accepted for the same key.

use std::{fmt, time::Duration};

use serde::{Deserializer, de};

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as \"10s\" or \"250ms\", or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("duration must not be negative, got {v}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Ok(Duration::from_secs(secs));
        }
        humantime::parse_duration(v).map_err(|e| {
            E::custom(format!(
                "invalid duration {v:?}: {e} (use e.g. \"10s\" or \"250ms\")"
            ))
        })
    }
}

/// `Option<Duration>` fields: absent, or a duration as above.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "super")] Duration);
        Option::<Wrapper>::deserialize(deserializer).map(|o| o.map(|Wrapper(d)| d))
    }
}
