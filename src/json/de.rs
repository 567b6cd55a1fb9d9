//! Reading a [`Doc`] through serde_json: the reference reader.
//!
//! Whatever serde_json accepts or refuses as a `serde_json::Value`, this accepts or refuses
//! the same way, with the same error message, because it is serde_json doing the reading:
//! the visitor below mirrors serde_json's own visitor for `Value` method by method, and
//! only writes items instead of building a tree.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Number;

use super::{Builder, Doc};

impl<'de: 'a, 'a> Deserialize<'de> for Doc<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Doc<'a>, D::Error> {
        let mut builder = Builder::default();
        Items(&mut builder).deserialize(deserializer)?;
        Ok(builder.finish())
    }
}

/// Writes one value's items.
struct Items<'b, 'a>(&'b mut Builder<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for Items<'_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Items<'_, 'a> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.0.bool(value);
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.0.number(&value.into());
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.0.unsigned(value);
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        match Number::from_f64(value) {
            Some(number) => self.0.number(&number),
            None => self.0.null(),
        }
        Ok(())
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<(), E> {
        self.0.text(value, false);
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.0.decoded(value.to_string(), false);
        Ok(())
    }

    fn visit_string<E>(self, value: String) -> Result<(), E> {
        self.0.decoded(value, false);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.0.null();
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.null();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.open(false);
        let mut count = 0;
        while seq.next_element_seed(Items(&mut *self.0))?.is_some() {
            count += 1;
        }
        self.0.close(at, count);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.open(true);
        let mut count = 0;
        while map.next_key_seed(Key(&mut *self.0))?.is_some() {
            map.next_value_seed(Items(&mut *self.0))?;
            count += 1;
        }
        self.0.close(at, count);
        Ok(())
    }
}

/// Writes an object key, borrowed from the input when it has no escapes.
struct Key<'b, 'a>(&'b mut Builder<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for Key<'_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Key<'_, 'a> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<(), E> {
        self.0.text(value, true);
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.0.decoded(value.to_string(), true);
        Ok(())
    }

    fn visit_string<E>(self, value: String) -> Result<(), E> {
        self.0.decoded(value, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn refuses_what_value_refuses_with_the_same_message() {
        for text in [r#"{"a":1e999}"#, r#"{"a":"\ud800"}"#, r#"{"a":[1,}"#, r#"{"a" 1}"#, "[\"\u{1}\"]"] {
            let doc = serde_json::from_str::<Doc>(text).expect_err("doc refuses").to_string();
            let value = serde_json::from_str::<Value>(text).expect_err("value refuses").to_string();
            assert_eq!(doc, value, "{text}");
        }
    }
}
