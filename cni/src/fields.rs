//! The field names of a `Deserialize` struct, as its derive announces them.
//!
//! A derived `Deserialize` for a struct calls `deserialize_struct(name, FIELDS, ..)`; a
//! deserializer that only records `FIELDS` learns the keys the struct accepts (renames
//! applied, through `try_from`/`from` proxies too), so unknown keys can be refused
//! without repeating the list by hand or reading serde's error text.

use serde::de::{self, Deserialize, Visitor};
use serde::forward_to_deserialize_any;

/// The keys struct `T` accepts; `None` when `T` is not a struct.
pub fn of<'de, T: Deserialize<'de>>() -> Option<&'static [&'static str]> {
    let mut seen = None;
    // Always fails: the recorder stops at the first call, which is all it needs.
    let _ = T::deserialize(Recorder { seen: &mut seen });
    seen
}

struct Recorder<'a> {
    seen: &'a mut Option<&'static [&'static str]>,
}

impl<'de> de::Deserializer<'de> for Recorder<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Self::Error> {
        *self.seen = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Plain {
        ip_masq: bool,
        #[serde(rename = "type")]
        kind: String,
    }

    #[derive(Deserialize)]
    #[serde(try_from = "Plain")]
    #[allow(dead_code)]
    struct Proxied(bool);

    impl TryFrom<Plain> for Proxied {
        type Error = String;
        fn try_from(p: Plain) -> Result<Self, String> {
            Ok(Proxied(p.ip_masq))
        }
    }

    #[test]
    fn records_struct_fields_through_proxies() {
        assert_eq!(super::of::<Plain>(), Some(&["ipMasq", "type"][..]));
        assert_eq!(super::of::<Proxied>(), Some(&["ipMasq", "type"][..]));
        assert_eq!(super::of::<serde_json::Value>(), None);
        assert_eq!(super::of::<u32>(), None);
    }
}
