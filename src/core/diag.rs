//! Core layer: diagnostics.
//!
//! Text output without allocating: a stack-buffer `fmt::Write` over
//! `write(2)`, used for the stats report and for fatal diagnostics.

use core::fmt;

use crate::core::os;

/// Formats into a fixed stack buffer, flushing to stderr when it fills.
pub(crate) struct StderrWriter {
    buf: [u8; 1024],
    len: usize,
}

impl StderrWriter {
    pub(crate) const fn new() -> Self {
        StderrWriter {
            buf: [0; 1024],
            len: 0,
        }
    }

    pub(crate) fn flush(&mut self) {
        os::write_stderr(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl fmt::Write for StderrWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

impl Drop for StderrWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Aborts with `message` followed by the pointer in hex.
pub(crate) fn abort_with_pointer(message: &[u8], p: *mut u8) -> ! {
    abort_with_pointers(&[(message, p)])
}

/// Aborts with one line: each message followed by its pointer in hex.
pub(crate) fn abort_with_pointers(parts: &[(&[u8], *mut u8)]) -> ! {
    let mut line = [0u8; 240];
    let mut len = 0;
    for &(message, p) in parts {
        for &b in message {
            if len + 18 < line.len() {
                line[len] = b;
                len += 1;
            }
        }
        if len + 18 > line.len() {
            break;
        }
        line[len] = b'0';
        line[len + 1] = b'x';
        len += 2;
        let addr = p.addr();
        for shift in (0..16).rev() {
            line[len] = b"0123456789abcdef"[(addr >> (shift * 4)) & 0xf];
            len += 1;
        }
    }
    os::abort_with(&line[..len])
}
