//! Reading and writing CTAP maps without boilerplate (private to [`crate::ctap`]).
//!
//! CTAP messages are maps with small integer keys (CTAP 2.2 §6); the entities inside them are maps
//! with text keys (WebAuthn dictionaries). [`Fields`] reads one such map and turns every failed
//! lookup into a [`CtapError`] that names the message and the field; [`MapWriter`] builds one,
//! leaving absent optionals out.

use super::CtapError;
use crate::cbor::{self, Value};

/// One integer-keyed field of a CTAP message: its key and the spec's name for it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Field {
    pub(super) key: u64,
    pub(super) name: &'static str,
}

impl Field {
    pub(super) const fn new(key: u64, name: &'static str) -> Self {
        Self { key, name }
    }
}

/// A map being decoded, with the name of the message it is (for errors).
#[derive(Clone, Copy, Debug)]
pub(super) struct Fields<'a> {
    message: &'static str,
    entries: &'a [(Value, Value)],
}

impl<'a> Fields<'a> {
    /// Requires `value` to be a map.
    pub(super) fn new(message: &'static str, value: &'a Value) -> Result<Self, CtapError> {
        match value {
            Value::Map(entries) => Ok(Self { message, entries }),
            _ => Err(CtapError::NotAMap { message }),
        }
    }

    /// The error for an absent required `field`.
    pub(super) fn missing(&self, field: Field) -> CtapError {
        CtapError::MissingField {
            message: self.message,
            key: field.key,
            name: field.name,
        }
    }

    /// The error for `field` (or one of its elements) having the wrong type.
    pub(super) fn wrong_type(&self, field: Field) -> CtapError {
        CtapError::WrongType {
            message: self.message,
            key: field.key,
            name: field.name,
        }
    }

    fn wrong_member_type(&self, member: &'static str) -> CtapError {
        CtapError::WrongMemberType {
            message: self.message,
            member,
        }
    }

    /// The value of `field`, converted by `convert`; `None` if absent, an error if `convert`
    /// refuses it.
    pub(super) fn optional<T>(
        &self,
        field: Field,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, CtapError> {
        cbor::map_get(self.entries, field.key)
            .map(|v| convert(v).ok_or_else(|| self.wrong_type(field)))
            .transpose()
    }

    /// Like [`Fields::optional`] but absence is an error.
    pub(super) fn required<T>(
        &self,
        field: Field,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T, CtapError> {
        self.optional(field, convert)?
            .ok_or_else(|| self.missing(field))
    }

    /// A field decoded by a function with its own errors (nested structures).
    pub(super) fn optional_with<T>(
        &self,
        field: Field,
        decode: impl FnOnce(&'a Value) -> Result<T, CtapError>,
    ) -> Result<Option<T>, CtapError> {
        cbor::map_get(self.entries, field.key)
            .map(decode)
            .transpose()
    }

    /// Like [`Fields::optional_with`] but absence is an error.
    pub(super) fn required_with<T>(
        &self,
        field: Field,
        decode: impl FnOnce(&'a Value) -> Result<T, CtapError>,
    ) -> Result<T, CtapError> {
        self.optional_with(field, decode)?
            .ok_or_else(|| self.missing(field))
    }

    /// A byte string of exactly `N` bytes.
    pub(super) fn required_array<const N: usize>(
        &self,
        field: Field,
    ) -> Result<[u8; N], CtapError> {
        let bytes = self.required(field, as_bytes)?;
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| CtapError::WrongLength {
                message: self.message,
                key: field.key,
                name: field.name,
                expected: N,
                actual: bytes.len(),
            })
    }

    /// An array field whose elements are each decoded by `element`; elements for which it
    /// returns `Ok(None)` are skipped. Absent gives an empty vector.
    pub(super) fn list<T>(
        &self,
        field: Field,
        mut element: impl FnMut(&'a Value) -> Result<Option<T>, CtapError>,
    ) -> Result<Option<Vec<T>>, CtapError> {
        let Some(items) = self.optional(field, as_array)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(decoded) = element(item)? {
                out.push(decoded);
            }
        }
        Ok(Some(out))
    }

    /// An array of text strings; any other element is a type error on the field.
    pub(super) fn text_list(&self, field: Field) -> Result<Option<Vec<String>>, CtapError> {
        self.list(field, |v| {
            as_text(v).map(Some).ok_or_else(|| self.wrong_type(field))
        })
    }

    /// The value of text key `member`, converted by `convert`.
    pub(super) fn member<T>(
        &self,
        member: &'static str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, CtapError> {
        cbor::map_get_text(self.entries, member)
            .map(|v| convert(v).ok_or_else(|| self.wrong_member_type(member)))
            .transpose()
    }

    /// Like [`Fields::member`] but absence is an error.
    pub(super) fn required_member<T>(
        &self,
        member: &'static str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T, CtapError> {
        self.member(member, convert)?
            .ok_or(CtapError::MissingMember {
                message: self.message,
                member,
            })
    }

    /// The text-keyed entries whose values are booleans, for getInfo's options map. Entries
    /// with other keys or values are ignored like unknown fields (every option CTAP 2.2 defines
    /// is a boolean).
    pub(super) fn bool_members(&self) -> impl Iterator<Item = (&'a str, bool)> + use<'a> {
        self.entries
            .iter()
            .filter_map(|(key, value)| match (key, value) {
                (Value::Text(name), Value::Bool(b)) => Some((name.as_str(), *b)),
                _ => None,
            })
    }
}

/// Builds a map from fields in any order; [`cbor::encode`] sorts it.
#[derive(Debug, Default)]
pub(super) struct MapWriter {
    entries: Vec<(Value, Value)>,
}

impl MapWriter {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Adds integer-keyed `field`.
    pub(super) fn put(&mut self, field: Field, value: impl Into<Value>) -> &mut Self {
        self.entries.push((cbor::int(field.key), value.into()));
        self
    }

    /// Adds integer-keyed `field` if `value` is present.
    pub(super) fn put_opt<T: Into<Value>>(&mut self, field: Field, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.put(field, v);
        }
        self
    }

    /// Adds text-keyed `member`.
    pub(super) fn member(&mut self, member: &str, value: impl Into<Value>) -> &mut Self {
        self.entries
            .push((Value::Text(member.to_owned()), value.into()));
        self
    }

    /// Adds text-keyed `member` if `value` is present.
    pub(super) fn member_opt<T: Into<Value>>(
        &mut self,
        member: &str,
        value: Option<T>,
    ) -> &mut Self {
        if let Some(v) = value {
            self.member(member, v);
        }
        self
    }

    pub(super) fn build(&mut self) -> Value {
        Value::Map(core::mem::take(&mut self.entries))
    }
}

pub(super) fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t.clone()),
        _ => None,
    }
}

pub(super) fn as_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        _ => None,
    }
}

pub(super) fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

pub(super) fn as_uint(v: &Value) -> Option<u64> {
    cbor::uint(v)
}

pub(super) fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

/// A map, kept whole as a [`Value`] (extensions, attStmt).
pub(super) fn as_map_value(v: &Value) -> Option<Value> {
    matches!(v, Value::Map(_)).then(|| v.clone())
}

/// An array of text strings as a [`Value`].
pub(super) fn text_array(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::Text(s.clone())).collect())
}
