//! The common case of [`validate_envelope`](super::validate_envelope) in one pass: the
//! envelope read into borrowed fields (no document is built, no string copied), every
//! check of the full validator made on them. It only ever says "valid"; anything it does
//! not find exactly as a valid envelope has it (an escaped string, a missing or mistyped
//! field, duplicate keys, bad JSON) sends the envelope to the full validator, which finds
//! and names the fault. Members it does not check are skipped, as a worker ignores them.

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{check_timelimit, BASE64};
use crate::celery::isotime::check_iso8601;
use base64::Engine as _;

/// Whether `bytes` is certainly a valid task envelope.
pub(super) fn accepts(bytes: &[u8]) -> bool {
    // UTF-8 checked once for the whole text (the full parse would refuse it otherwise);
    // the parse below then reads it as text and checks no string again.
    std::str::from_utf8(bytes).is_ok_and(|text| {
        text.trim_ascii_start().starts_with('{') && serde_json::from_str::<Envelope>(text).is_ok_and(|e| e.valid())
    })
}

/// A member read as `T` only if it is an object (a derived struct would also take a list),
/// in the same pass as the rest of the envelope.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Members<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(members)).map(Obj)
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// A member kept as its text, `Some` also when it is `null`.
type Raw<'a> = Option<&'a RawValue>;

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Raw<'de>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "content-type", borrow)]
    content_type: Option<&'a str>,
    #[serde(rename = "content-encoding", default, borrow, deserialize_with = "present")]
    content_encoding: Raw<'a>,
    #[serde(borrow)]
    headers: Option<Obj<Headers<'a>>>,
    #[serde(borrow)]
    properties: Option<Obj<Properties<'a>>>,
    #[serde(borrow)]
    body: Option<&'a str>,
}

#[derive(Deserialize)]
struct Headers<'a> {
    #[serde(borrow)]
    task: Option<&'a str>,
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(default, borrow, deserialize_with = "present")]
    retries: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    eta: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    expires: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    timelimit: Raw<'a>,
}

#[derive(Deserialize)]
struct Properties<'a> {
    #[serde(borrow)]
    delivery_tag: Option<&'a str>,
    #[serde(borrow)]
    delivery_info: Option<Obj<DeliveryInfo<'a>>>,
    #[serde(default, borrow, deserialize_with = "present")]
    priority: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    body_encoding: Raw<'a>,
}

#[derive(Deserialize)]
struct DeliveryInfo<'a> {
    #[serde(borrow)]
    exchange: Option<&'a str>,
    #[serde(borrow)]
    routing_key: Option<&'a str>,
}

impl Envelope<'_> {
    fn valid(&self) -> bool {
        let (Some(Obj(headers)), Some(Obj(properties)), Some(body)) = (&self.headers, &self.properties, self.body)
        else {
            return false;
        };
        let Some(Obj(info)) = &properties.delivery_info else { return false };
        let base64 = match properties.body_encoding.map(RawValue::get) {
            None | Some("null") => false,
            Some("\"base64\"") => true,
            Some(_) => return false,
        };
        self.content_type == Some("application/json")
            && matches!(self.content_encoding.map(RawValue::get), None | Some("null" | "\"utf-8\"" | "\"utf8\""))
            && headers.task.is_some_and(|task| !task.is_empty())
            && headers.id.is_some_and(|id| !id.is_empty())
            && headers.retries.is_none_or(|n| serde_json::from_str::<i64>(n.get()).is_ok())
            && [headers.eta, headers.expires].into_iter().all(|when| when.is_none_or(date))
            && headers.timelimit.is_none_or(|limit| {
                serde_json::from_str::<serde_json::Value>(limit.get()).is_ok_and(|v| check_timelimit(Some(&v)).is_ok())
            })
            && properties.delivery_tag.is_some_and(|tag| !tag.is_empty())
            && info.exchange.is_some()
            && info.routing_key.is_some()
            && properties.priority.is_none_or(|p| serde_json::from_str::<u8>(p.get()).is_ok_and(|p| p <= 9))
            && body_shape(body, base64)
    }
}

/// `null`, an empty string, or an ISO-8601 date without escapes.
fn date(raw: &RawValue) -> bool {
    match raw.get() {
        "null" => true,
        text => serde_json::from_str::<&str>(text).is_ok_and(|s| s.is_empty() || check_iso8601(s).is_ok()),
    }
}

/// `[list, object, object|null]`, base64-encoded if asked.
fn body_shape(body: &str, base64: bool) -> bool {
    /// Read for its shape only.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Body(AnyList, AnyObject, Option<AnyObject>);
    if base64 {
        // Text, as the worker decodes it before parsing (the strings skipped below are
        // not checked on their own).
        BASE64
            .decode(body)
            .is_ok_and(|bytes| std::str::from_utf8(&bytes).is_ok_and(|text| serde_json::from_str::<Body>(text).is_ok()))
    } else {
        serde_json::from_str::<Body>(body).is_ok()
    }
}

/// Any JSON list, its items skipped.
struct AnyList;

impl<'de> Deserialize<'de> for AnyList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> Visitor<'de> for Items {
            type Value = AnyList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<AnyList, A::Error> {
                while items.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyList)
            }
        }
        d.deserialize_seq(Items)
    }
}

/// Any JSON object, its members skipped.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<AnyObject, A::Error> {
                while members.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(Members)
    }
}
