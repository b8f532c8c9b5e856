//! Booleans and numbers that must be written as booleans and numbers.
//!
//! The `config` crate's own deserializer converts freely: `drain = "yes"` and `drain = 1`
//! become `true`, `weight = "50"` becomes 50, while a string where a duration's number is
//! expected is refused. An operator who quotes a number or writes `"no"` should learn it
//! from `gtmd check`, not from the traffic. So every boolean and numeric field goes
//! through these functions, which look at the value's own type (`deserialize_any`) and
//! refuse any other, with the field's path added by the `config` crate.
//!
//! Environment overrides keep working: they are parsed with `try_parsing`, so
//! `GTMD__SERVER__MAX_UDP_PAYLOAD=1400` arrives as the integer 1400 and
//! `GTMD__ADMIN__ENABLED=false` as the boolean false (only `true`/`false`, any case).

use std::{fmt, marker::PhantomData};

use serde::{Deserialize, Deserializer, de};

/// An integer type a field can have, with its range for the error message.
pub trait Int: Sized + TryFrom<i64> + TryFrom<u64> {
    const RANGE: &'static str;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            const RANGE: &'static str = concat!("0..=", stringify!($t), "::MAX");
        }
    )*};
}
int!(u8, u16, u32, u64, usize);

struct IntVisitor<T>(PhantomData<T>);

impl<T: Int> IntVisitor<T> {
    fn range<E: de::Error>(v: impl fmt::Display) -> E {
        E::custom(format!("{v} is out of range {}", T::RANGE))
    }
}

impl<T: Int> de::Visitor<'_> for IntVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer (without quotes)")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| Self::range(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| Self::range(v))
    }
}

struct BoolVisitor;

impl de::Visitor<'_> for BoolVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("true or false (without quotes)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

struct FloatVisitor;

impl de::Visitor<'_> for FloatVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number (without quotes)")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
}

/// A boolean field: `true` or `false`, nothing else.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(BoolVisitor)
}

/// An integer field: an integer in the type's range, nothing else.
pub fn int<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(IntVisitor(PhantomData))
}

/// A number field (integers are numbers too).
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(FloatVisitor)
}

struct Bool(bool);
impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bool(d).map(Bool)
    }
}

struct Integer<T>(T);
impl<'de, T: Int> Deserialize<'de> for Integer<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int(d).map(Integer)
    }
}

struct Float(f64);
impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        float(d).map(Float)
    }
}

/// An optional boolean field (use with `#[serde(default)]`).
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<Bool>::deserialize(d)?.map(|b| b.0))
}

/// An optional integer field (use with `#[serde(default)]`).
pub fn opt_int<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<Integer<T>>::deserialize(d)?.map(|i| i.0))
}

/// An optional number field (use with `#[serde(default)]`).
pub fn opt_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Option::<Float>::deserialize(d)?.map(|f| f.0))
}
