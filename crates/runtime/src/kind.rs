//! The name of a message's type (its enum variant), for per-type metrics,
//! without formatting or encoding the message.

use serde::ser::{self, Serialize};
use std::fmt;

/// The top-level variant name of `value` (`"AppendEntries"`), or the
/// struct's name when it is not an enum.
pub fn message_kind<T: Serialize>(value: &T) -> &'static str {
    match value.serialize(Namer) {
        Ok(()) => "other",
        Err(Found(name)) => name,
    }
}

/// Carries the name out as an error, so nothing else is serialised.
#[derive(Debug)]
struct Found(&'static str);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<T: fmt::Display>(_: T) -> Found {
        Found("other")
    }
}

struct Namer;

macro_rules! other {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<(), Found> { Err(Found("other")) })*
    };
}

impl ser::Serializer for Namer {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = ser::Impossible<(), Found>;
    type SerializeTuple = ser::Impossible<(), Found>;
    type SerializeTupleStruct = ser::Impossible<(), Found>;
    type SerializeTupleVariant = ser::Impossible<(), Found>;
    type SerializeMap = ser::Impossible<(), Found>;
    type SerializeStruct = ser::Impossible<(), Found>;
    type SerializeStructVariant = ser::Impossible<(), Found>;

    other!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
    );

    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<(), Found> {
        v.serialize(self)
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), Found> {
        Err(Found(name))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Found> {
        Err(Found(v))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        _: &T,
    ) -> Result<(), Found> {
        Err(Found(v))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Found> {
        Err(Found("other"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Found> {
        Err(Found("other"))
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Found> {
        Err(Found(name))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Found> {
        Err(Found(v))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Found> {
        Err(Found("other"))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, Found> {
        Err(Found(name))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Found> {
        Err(Found(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    enum Msg {
        Ping,
        Vote(u64),
        Pair(u8, u8),
        Append { term: u64, entries: Vec<u8> },
    }

    #[derive(serde::Serialize)]
    struct Envelope {
        body: Msg,
    }

    #[test]
    fn names_the_variant_without_serialising_the_body() {
        assert_eq!(message_kind(&Msg::Ping), "Ping");
        assert_eq!(message_kind(&Msg::Vote(3)), "Vote");
        assert_eq!(message_kind(&Msg::Pair(1, 2)), "Pair");
        assert_eq!(
            message_kind(&Msg::Append {
                term: 1,
                entries: vec![0; 1 << 20]
            }),
            "Append"
        );
        assert_eq!(message_kind(&Envelope { body: Msg::Ping }), "Envelope");
        assert_eq!(message_kind(&7u32), "other");
    }
}
