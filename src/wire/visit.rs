//! Pieces of the serde visitors that read JSON without building it (the
//! request's scan, the answer's skim).

/// The visitor methods for every value that is neither an array nor an
/// object: each reads as `$value`. serde_json has checked it before.
macro_rules! scalars_read_as {
    ($value:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// `Deserialize` for `$ty`: whatever the value, `$visitor` visits it.
macro_rules! deserialize_with {
    ($ty:ty, $visitor:expr) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any($visitor)
            }
        }
    };
}

pub(crate) use {deserialize_with, scalars_read_as};
