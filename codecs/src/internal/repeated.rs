//! [`Repeated`]: a repeatable field (cart lines, history entries, list
//! rows) as a zero-copy view. Decoded frames keep a reference to the body
//! and decode items as they are iterated (the body was validated once at
//! parse time); frames built for encoding borrow a caller's slice.

use std::fmt;

use super::error::Error;
use super::field::split_field;

/// The items of a repeatable field, borrowed either from a decoded body or
/// from a caller's slice. Iterating never allocates.
pub struct Repeated<'a, T> {
    /// Where the items live.
    inner: Inner<'a, T>,
}

enum Inner<'a, T> {
    /// Built by a caller, to encode.
    Slice(&'a [T]),
    /// Decoded: every field with `tag` in `body`, already validated.
    Wire {
        /// The whole body, so the items need no list of their own.
        body: &'a [u8],
        /// The repeatable tag.
        tag: u8,
        /// How many fields carry `tag`, counted at parse time.
        count: usize,
        /// Decodes one value (cannot fail: validated at parse time).
        decode: fn(&'a [u8]) -> Result<T, Error>,
    },
}

impl<'a, T> Repeated<'a, T> {
    /// Items to encode, borrowed from the caller.
    pub fn from_slice(items: &'a [T]) -> Repeated<'a, T> {
        Repeated {
            inner: Inner::Slice(items),
        }
    }

    /// No items.
    pub fn empty() -> Repeated<'a, T> {
        Repeated {
            inner: Inner::Slice(&[]),
        }
    }

    pub(crate) fn from_wire(
        body: &'a [u8],
        tag: u8,
        count: usize,
        decode: fn(&'a [u8]) -> Result<T, Error>,
    ) -> Repeated<'a, T> {
        Repeated {
            inner: Inner::Wire {
                body,
                tag,
                count,
                decode,
            },
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        match self.inner {
            Inner::Slice(items) => items.len(),
            Inner::Wire { count, .. } => count,
        }
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a, T: Copy> Repeated<'a, T> {
    /// The items, in wire order.
    pub fn iter(&self) -> RepeatedIter<'a, T> {
        let inner = match self.inner {
            Inner::Slice(items) => IterInner::Slice(items.iter()),
            Inner::Wire {
                body, tag, decode, ..
            } => IterInner::Wire {
                rest: body,
                tag,
                decode,
            },
        };
        RepeatedIter { inner }
    }
}

impl<T> Clone for Repeated<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Repeated<'_, T> {}

impl<T> Clone for Inner<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Inner<'_, T> {}

impl<T> Default for Repeated<'_, T> {
    fn default() -> Self {
        Repeated::empty()
    }
}

/// Equal when the items are, however each side is stored.
impl<T: Copy + PartialEq> PartialEq for Repeated<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Copy + fmt::Debug> fmt::Debug for Repeated<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: Copy> IntoIterator for &Repeated<'a, T> {
    type Item = T;
    type IntoIter = RepeatedIter<'a, T>;

    fn into_iter(self) -> RepeatedIter<'a, T> {
        self.iter()
    }
}

/// Iterator over the items of a [`Repeated`].
pub struct RepeatedIter<'a, T> {
    /// Where the next item comes from.
    inner: IterInner<'a, T>,
}

enum IterInner<'a, T> {
    Slice(std::slice::Iter<'a, T>),
    Wire {
        rest: &'a [u8],
        tag: u8,
        decode: fn(&'a [u8]) -> Result<T, Error>,
    },
}

impl<T: Copy> Iterator for RepeatedIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.inner {
            IterInner::Slice(items) => items.next().copied(),
            IterInner::Wire { rest, tag, decode } => loop {
                // Bounded: every step consumes at least a field header.
                let (field, tail) = split_field(rest).ok()??;
                *rest = tail;
                if field.tag == *tag {
                    if let Ok(item) = decode(field.value) {
                        return Some(item);
                    }
                }
            },
        }
    }
}

impl<T> fmt::Debug for RepeatedIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RepeatedIter")
    }
}
