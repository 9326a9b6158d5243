//! Drives the differential test's interpreter (tests/differential.rs) from
//! raw bytes: the first byte picks one to three threads, then each op takes
//! a tag byte and a few parameter bytes; `0xff` moves on to the next thread.
//! Strata is the global allocator (installed by the included module).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/differential.rs"]
mod differential;

use differential::{run, Op, MAX_SIZE};

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<usize> {
        Some(usize::from(self.byte()?) | usize::from(self.byte()?) << 8)
    }

    /// A size in 1..=MAX_SIZE, mostly small (like the proptest strategy).
    fn size(&mut self) -> Option<usize> {
        let kind = self.byte()?;
        let raw = self.u16()?;
        Some(match kind % 20 {
            0..=11 => 1 + raw % 128,
            12..=16 => 1 + raw % 4096,
            17..=18 => 1 + (raw << 1 | raw >> 15) % (128 << 10),
            _ => 1 + (raw * 5) % MAX_SIZE,
        })
    }
}

fn decode(data: &[u8]) -> Vec<Vec<Op>> {
    let mut b = Bytes(data);
    let threads = 1 + usize::from(b.byte().unwrap_or(0) % 3);
    let mut programs = vec![Vec::new(); threads];
    let mut t = 0;
    while let Some(tag) = b.byte() {
        let op = match tag % 8 {
            0..=2 => {
                let Some(size) = b.size() else { break };
                let Some(a) = b.byte() else { break };
                // Alignment 2^0..2^16, mostly at most 16.
                let align_log2 = if a & 0x80 == 0 { a % 5 } else { a % 17 };
                Op::Alloc {
                    size,
                    align_log2,
                    zeroed: tag & 0x40 != 0,
                }
            }
            3 | 4 => {
                let (Some(slot), Some(size)) = (b.byte(), b.size()) else {
                    break;
                };
                Op::Realloc {
                    slot: slot.into(),
                    size,
                }
            }
            5 => {
                let Some(slot) = b.byte() else { break };
                Op::Free { slot: slot.into() }
            }
            6 => {
                let Some(slot) = b.byte() else { break };
                Op::Give {
                    slot: slot.into(),
                    to: usize::from(tag >> 3),
                }
            }
            _ => {
                if tag == 0xff {
                    t = (t + 1) % threads;
                    continue;
                }
                let Some(slot) = b.byte() else { break };
                Op::FreeRemote {
                    slot: slot.into(),
                    to: usize::from(tag >> 3),
                }
            }
        };
        programs[t].push(op);
    }
    programs
}

fuzz_target!(|data: &[u8]| {
    run(decode(data));
});
