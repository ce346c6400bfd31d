//! Proves that the ISO 8583 hot path does not allocate: decoding (strict
//! and lenient), every accessor and subfield parser, encoding into a reused
//! `BytesMut`, and framing once its buffers have grown. A counting global
//! allocator counts this thread's allocations only, so the test harness's
//! other threads do not disturb the count.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, BytesMut};
use codecs::framing::{FrameCodec, FrameConfig};
use codecs::iso8583::{f48, f55, Message, MessageWriter, Mti, Profile};
use tokio_util::codec::Decoder;

/// The system allocator, counting allocations per thread.
struct Counting;

thread_local! {
    /// Allocations (including reallocations) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread-local may be gone while a thread exits.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const F55: [u8; 28] = [
    0x9F, 0x02, 0x06, 0, 0, 0, 0, 0x30, 0x00, 0x9F, 0x26, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0x5F, 0x2A,
    0x02, 0x09, 0x78, 0x82, 0x02, 0x58,
];

/// A typical 0100 written into `buf`: 16 fields, F48 and F55 included.
fn write_0100(buf: &mut BytesMut, profile: &'static Profile, mti: Mti) {
    let mut w = MessageWriter::new(buf, profile, mti);
    w.field(2, b"4111111111111111")
        .and_then(|w| w.field(3, b"000000"))
        .and_then(|w| w.number(4, 3000))
        .and_then(|w| w.field(7, b"1123114959"))
        .and_then(|w| w.number(11, 42))
        .and_then(|w| w.field(12, b"114959"))
        .and_then(|w| w.field(13, b"1123"))
        .and_then(|w| w.field(14, b"2812"))
        .and_then(|w| w.field(22, b"051"))
        .and_then(|w| w.field(25, b"59"))
        .and_then(|w| w.field(37, b"332711000042"))
        .and_then(|w| w.field(41, b"DEMO0001"))
        .and_then(|w| w.field(42, b"DEMO00000000001"))
        .and_then(|w| w.field(48, b"0103abc420207"))
        .and_then(|w| w.field(49, b"978"))
        .and_then(|w| w.field(55, &F55))
        .and_then(|w| w.field(70, b"301"))
        .expect("valid fields");
    w.finish().expect("fits");
}

/// Everything the switch reads from a request, without allocating.
fn read_everything(m: &Message<'_>) -> usize {
    let mut seen = 0;
    let mut scratch = [0u8; 255];
    for (n, raw) in m.fields() {
        seen += usize::from(n) + raw.len();
        if let Some(b) = m.binary(n) {
            seen += b.bytes(&mut scratch).map_or(0, <[u8]>::len);
        }
    }
    seen += m.text(41).map_or(0, str::len) + m.number(4).unwrap_or(0) as usize;
    seen += f48::eci(m.raw(48).expect("F48"))
        .ok()
        .flatten()
        .map_or(0, |e| usize::from(e.0));
    let f55 = m
        .binary(55)
        .and_then(|b| b.bytes(&mut scratch))
        .expect("F55");
    seen + f55::tlvs(f55).filter(Result::is_ok).count()
}

#[test]
fn the_counter_counts() {
    let n = allocations_in(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(64));
    });
    assert_eq!(n, 1);
}

#[test]
fn decode_and_encode_do_not_allocate() {
    let mti = Mti::parse("0100").expect("mti");
    for profile in Profile::ALL {
        let mut wire = BytesMut::with_capacity(1024);
        write_0100(&mut wire, profile, mti);
        let wire = wire.freeze();

        let decode = allocations_in(|| {
            for _ in 0..100 {
                let m = Message::decode(profile, &wire).expect("decodes");
                assert!(read_everything(&m) > 0);
                let (l, e) = Message::decode_lenient(profile, &wire).expect("decodes");
                assert!(e.is_none() && l.has(55));
            }
        });
        assert_eq!(decode, 0, "{}: decode allocated", profile.name);

        // Encoding: after a first message has grown the buffer, clearing and
        // writing again reuses its memory.
        let mut buf = BytesMut::with_capacity(1024);
        write_0100(&mut buf, profile, mti);
        let encode = allocations_in(|| {
            for _ in 0..100 {
                buf.clear();
                write_0100(&mut buf, profile, mti);
            }
        });
        assert_eq!(encode, 0, "{}: encode allocated", profile.name);
        assert_eq!(buf, wire);
    }
}

#[test]
fn framing_does_not_allocate_once_warm() {
    let mut one = BytesMut::new();
    write_0100(&mut one, &Profile::ASCII, Mti::parse("0100").expect("mti"));
    let mut stream = BytesMut::new();
    for _ in 0..4 {
        stream.put_u16(u16::try_from(one.len()).expect("short"));
        stream.put_slice(&one);
    }
    let mut codec = FrameCodec::new(FrameConfig::default());
    let mut src = BytesMut::with_capacity(16 * 1024);
    // Warm-up: the first split turns the buffer into a shared one.
    src.put_slice(&stream);
    while codec.decode(&mut src).expect("valid").is_some() {}
    let framing = allocations_in(|| {
        for _ in 0..100 {
            src.put_slice(&stream);
            while let Some(frame) = codec.decode(&mut src).expect("valid") {
                let m = Message::decode(&Profile::ASCII, &frame.body).expect("decodes");
                assert!(m.has(2));
            }
        }
    });
    assert_eq!(framing, 0, "framing allocated");
}
