//! A byte buffer that never grows: the response builders write into these, allocated at start.

/// A buffer with a fixed capacity. A write that does not fit is dropped and remembered, so the
/// caller can answer with an error instead of growing or panicking.
#[derive(Debug)]
pub struct FixedBuf {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl FixedBuf {
    /// Allocates `capacity` bytes once.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { bytes: Vec::with_capacity(capacity), overflowed: false }
    }

    /// Wraps a vector, keeping its capacity as the limit.
    pub fn from_vec(mut bytes: Vec<u8>) -> Self {
        bytes.clear();
        Self { bytes, overflowed: false }
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.bytes
    }

    #[inline]
    pub fn put(&mut self, data: &[u8]) {
        if self.bytes.len() + data.len() > self.bytes.capacity() {
            self.overflowed = true;
            return;
        }
        self.bytes.extend_from_slice(data);
    }

    #[inline]
    pub fn put_u64(&mut self, value: u64) {
        self.put(itoa::Buffer::new().format(value).as_bytes());
    }

    #[inline]
    pub fn put_i64(&mut self, value: i64) {
        self.put(itoa::Buffer::new().format(value).as_bytes());
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    pub fn remaining(&self) -> usize {
        self.bytes.capacity() - self.bytes.len()
    }

    /// True when a write since the last `clear`/`truncate` did not fit.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.overflowed = false;
    }

    /// Drops everything after `len` (to undo a partly written response).
    pub fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
        self.overflowed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_grow() {
        let mut buf = FixedBuf::with_capacity(4);
        buf.put(b"abc");
        buf.put(b"de");
        assert_eq!(buf.as_slice(), b"abc");
        assert!(buf.overflowed());
        assert_eq!(buf.capacity(), 4);
        buf.truncate(1);
        assert!(!buf.overflowed());
        buf.put_u64(123);
        assert_eq!(buf.as_slice(), b"a123");
    }
}
