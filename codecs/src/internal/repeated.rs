//! [`Repeated`]: a repeatable field (cart lines, history entries, list
//! rows) as a zero-copy view, over any [`RepeatedItem`]. Decoded frames keep a reference to the body
//! and decode items as they are iterated (the body was validated once at
//! parse time); frames built for encoding borrow a caller's slice.

use std::fmt;

use super::error::Error;
use super::field::split_field;

/// The value of a repeatable field: [`CartLine`](super::CartLine),
/// [`HistoryEntry`](super::HistoryEntry), [`PaymentRow`](super::PaymentRow).
pub trait RepeatedItem<'a>: Copy {
    /// The field's tag.
    const TAG: u8;

    /// Decodes and checks one field value.
    ///
    /// # Errors
    /// The first thing wrong with the value, naming [`Self::TAG`].
    fn decode(value: &'a [u8]) -> Result<Self, Error>;
}

/// The items of a repeatable field, borrowed either from a decoded body or
/// from a caller's slice. Iterating never allocates.
pub struct Repeated<'a, T> {
    /// Where the items live.
    inner: Inner<'a, T>,
}

enum Inner<'a, T> {
    /// Built by a caller, to encode.
    Slice(&'a [T]),
    /// Decoded: every field with the item's tag in `body`, already
    /// validated.
    Wire {
        /// The whole body, so the items need no list of their own.
        body: &'a [u8],
        /// How many fields carry the tag, counted at parse time.
        count: usize,
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

    /// The items of a body validated by the caller, `count` of them.
    pub(crate) fn from_wire(body: &'a [u8], count: usize) -> Repeated<'a, T> {
        Repeated {
            inner: Inner::Wire { body, count },
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

impl<'a, T: RepeatedItem<'a>> Repeated<'a, T> {
    /// The items, in wire order.
    pub fn iter(&self) -> RepeatedIter<'a, T> {
        let inner = match self.inner {
            Inner::Slice(items) => IterInner::Slice(items.iter()),
            Inner::Wire { body, .. } => IterInner::Wire { rest: body },
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
impl<'a, T: RepeatedItem<'a> + PartialEq> PartialEq for Repeated<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: RepeatedItem<'a> + fmt::Debug> fmt::Debug for Repeated<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: RepeatedItem<'a>> IntoIterator for &Repeated<'a, T> {
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
    /// A caller's items.
    Slice(std::slice::Iter<'a, T>),
    /// What is left of the body.
    Wire { rest: &'a [u8] },
}

impl<'a, T: RepeatedItem<'a>> Iterator for RepeatedIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.inner {
            IterInner::Slice(items) => items.next().copied(),
            IterInner::Wire { rest } => loop {
                // Bounded: every step consumes at least a field header.
                let (field, tail) = split_field(rest).ok()??;
                *rest = tail;
                if field.tag == T::TAG {
                    if let Ok(item) = T::decode(field.value) {
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
