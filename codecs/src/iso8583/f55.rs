//! F55 EMV data as BER-TLV, read in a loop with a depth cap (no recursion).

/// Deepest nesting of constructed tags read.
pub const TLV_DEPTH_MAX: usize = 4;
/// Most TLV items read from one F55.
pub const TLV_ITEMS_MAX: usize = 64;

/// Why F55 could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    /// A tag, length or value runs past its container, at this byte.
    #[error("F55 TLV truncated at byte {0}")]
    Truncated(u16),
    /// A length form other than 1 to 2 length bytes.
    #[error("F55 TLV length form unsupported at byte {0}")]
    BadLength(u16),
    /// A tag longer than 3 bytes.
    #[error("F55 TLV tag too long at byte {0}")]
    BadTag(u16),
    /// Nesting deeper than [`TLV_DEPTH_MAX`].
    #[error("F55 TLV nested deeper than {TLV_DEPTH_MAX}")]
    TooDeep,
    /// More than [`TLV_ITEMS_MAX`] items.
    #[error("F55 TLV has more than {TLV_ITEMS_MAX} items")]
    TooMany,
}

/// One TLV item: the tag (up to 3 bytes, big-endian in a u32), its depth
/// and value. A constructed item is followed by its children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Tag bytes as a number (`0x9F02`).
    pub tag: u32,
    /// Nesting depth, 0 at the top.
    pub depth: u8,
    /// Whether the tag is constructed (its value holds more TLVs).
    pub constructed: bool,
    /// The value bytes.
    pub value: &'a [u8],
}

/// Iterator over every item of F55, depth first; stops after an error.
#[derive(Clone, Debug)]
pub struct TlvIter<'a> {
    /// The whole field.
    data: &'a [u8],
    /// Next byte to read.
    pos: usize,
    /// Ends of the open constructed items; `depth` of them are in use.
    ends: [usize; TLV_DEPTH_MAX],
    /// Open constructed items.
    depth: usize,
    /// Items read, against [`TLV_ITEMS_MAX`].
    count: usize,
    /// Set after an error so iteration ends.
    done: bool,
}

/// Reads F55's binary content.
pub fn tlvs(data: &[u8]) -> TlvIter<'_> {
    TlvIter {
        data,
        pos: 0,
        ends: [0; TLV_DEPTH_MAX],
        depth: 0,
        count: 0,
        done: false,
    }
}

impl<'a> TlvIter<'a> {
    fn limit(&self) -> usize {
        match self.depth.checked_sub(1).and_then(|d| self.ends.get(d)) {
            Some(&end) => end,
            None => self.data.len(),
        }
    }

    fn byte(&self, at: usize, limit: usize) -> Result<u8, TlvError> {
        if at >= limit {
            return Err(TlvError::Truncated(at as u16));
        }
        self.data
            .get(at)
            .copied()
            .ok_or(TlvError::Truncated(at as u16))
    }

    fn read(&mut self) -> Result<Option<Tlv<'a>>, TlvError> {
        // Close every container that ends here.
        while self.depth > 0 && self.pos >= self.limit() {
            self.depth -= 1;
        }
        let limit = self.limit();
        if self.pos >= limit {
            return Ok(None);
        }
        if self.count == TLV_ITEMS_MAX {
            return Err(TlvError::TooMany);
        }
        let start = self.pos;
        let first = self.byte(start, limit)?;
        let mut tag = u32::from(first);
        let mut at = start + 1;
        if first & 0x1f == 0x1f {
            loop {
                let b = self.byte(at, limit)?;
                tag = (tag << 8) | u32::from(b);
                at += 1;
                if b & 0x80 == 0 {
                    break;
                }
                if at - start >= 3 {
                    return Err(TlvError::BadTag(start as u16));
                }
            }
        }
        let l0 = self.byte(at, limit)?;
        at += 1;
        let len = match l0 {
            0..=0x7f => usize::from(l0),
            0x81 => {
                let l = self.byte(at, limit)?;
                at += 1;
                usize::from(l)
            }
            0x82 => {
                let (hi, lo) = (self.byte(at, limit)?, self.byte(at + 1, limit)?);
                at += 2;
                usize::from(u16::from_be_bytes([hi, lo]))
            }
            _ => return Err(TlvError::BadLength(at as u16 - 1)),
        };
        let end = at
            .checked_add(len)
            .filter(|&e| e <= limit)
            .ok_or(TlvError::Truncated(at as u16))?;
        let value = self
            .data
            .get(at..end)
            .ok_or(TlvError::Truncated(at as u16))?;
        let constructed = first & 0x20 != 0;
        let depth = self.depth as u8;
        self.count += 1;
        if constructed {
            let slot = self.ends.get_mut(self.depth).ok_or(TlvError::TooDeep)?;
            *slot = end;
            self.depth += 1;
            self.pos = at;
        } else {
            self.pos = end;
        }
        Ok(Some(Tlv {
            tag,
            depth,
            constructed,
            value,
        }))
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, TlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_primitive_and_constructed_items() {
        // 9F02 06 000000001000, 82 02 5C00, 70 05 (5A 03 123456)... nested.
        let data = [
            0x9F, 0x02, 0x06, 0, 0, 0, 0, 0x10, 0x00, 0x82, 0x02, 0x5C, 0x00, 0x70, 0x05, 0x5A,
            0x03, 1, 2, 3,
        ];
        let items: Vec<_> = tlvs(&data).collect::<Result<_, _>>().expect("valid");
        let tags: Vec<_> = items.iter().map(|t| (t.tag, t.depth)).collect();
        assert_eq!(tags, vec![(0x9F02, 0), (0x82, 0), (0x70, 0), (0x5A, 1)]);
        assert_eq!(items[3].value, &[1, 2, 3]);
    }

    #[test]
    fn truncation_and_depth_are_errors() {
        assert_eq!(
            tlvs(&[0x9F, 0x02, 0x06, 0]).last(),
            Some(Err(TlvError::Truncated(3)))
        );
        // Child longer than its parent.
        assert!(matches!(
            tlvs(&[0x70, 0x02, 0x5A, 0x03, 1]).last(),
            Some(Err(TlvError::Truncated(_)))
        ));
        let deep = [0x70, 0x08, 0x70, 0x06, 0x70, 0x04, 0x70, 0x02, 0x70, 0x00];
        assert_eq!(tlvs(&deep).last(), Some(Err(TlvError::TooDeep)));
        assert_eq!(
            tlvs(&[0x9F, 0x81, 0x81, 0x01]).last(),
            Some(Err(TlvError::BadTag(0)))
        );
        assert_eq!(
            tlvs(&[0x82, 0x85]).last(),
            Some(Err(TlvError::BadLength(1)))
        );
        let many = [0x82, 0x00].repeat(TLV_ITEMS_MAX + 1);
        assert_eq!(tlvs(&many).last(), Some(Err(TlvError::TooMany)));
    }
}
