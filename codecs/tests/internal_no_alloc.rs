//! The hot path of internal frames does not allocate after warm-up:
//! delimiting with the codec, parsing a request, reading its cart lines,
//! and encoding a response into a reused buffer.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use codecs::internal::{
    CartLine, Cvv2, Expiry, Frame, InternalCodec, MotoRequest, Pan, PaymentStatus, Repeated,
    Request, Response, ResultCode,
};
use tokio_util::codec::Decoder;

/// Counts allocations made by the current thread, so the test harness's
/// other threads do not disturb the count.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the thread-local may be gone while a thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: delegates every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// A sale with a few cart lines, as a client would send it.
fn sale_frames(count: u64) -> Vec<u8> {
    let cart = [
        CartLine {
            item: "Tea",
            quantity: 2,
            unit_price_minor: 1250,
        },
        CartLine {
            item: "Mug",
            quantity: 1,
            unit_price_minor: 900,
        },
    ];
    let mut dst = BytesMut::new();
    for request_id in 0..count {
        Request::AuthorizeMoto(MotoRequest {
            pan: Pan::new("4111111111111111").unwrap(),
            expiry: Expiry::new(27, 12).unwrap(),
            cvv2: Some(Cvv2::new("123").unwrap()),
            cardholder_name: Some("Ada Lovelace"),
            merchant_reference: "ORD-1",
            description: Some("Two teas and a mug"),
            currency: 978,
            amount_minor: 3400,
            terminal_id: "DEMO0001",
            cart: Repeated::from_slice(&cart),
        })
        .encode(request_id, &mut dst)
        .unwrap();
    }
    dst.to_vec()
}

/// What a server does with one frame: parse, read, answer.
fn serve(frame: &Frame<'_>, out: &mut BytesMut) -> u64 {
    let Request::AuthorizeMoto(sale) = Request::parse(frame).unwrap() else {
        panic!("expected a sale")
    };
    let cart_total: u64 = sale.cart.iter().filter_map(|l| l.total_minor()).sum();
    let mut response = Response::new(ResultCode::APPROVED);
    response.payment_id = Some(frame.request_id() + 1);
    response.auth_code = Some("A1B2C3");
    response.status = Some(PaymentStatus::Succeeded);
    response.currency = Some(sale.currency);
    response.amount_authorized_minor = Some(sale.amount_minor);
    response.amount_captured_minor = Some(cart_total);
    response.masked_pan = Some("411111******1111");
    response.encode(frame.request_id(), out).unwrap();
    cart_total
}

#[test]
fn hot_path_does_not_allocate() {
    const FRAMES: u64 = 64;
    let wire = sale_frames(FRAMES);
    let mut codec = InternalCodec::new();
    let mut src = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);

    // The counter counts.
    let before = allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert_eq!(allocations() - before, 1);

    // Slice path: the frames as they lie in a buffer.
    let before = allocations();
    let mut rest = &wire[..];
    let mut served = 0;
    while let Some((frame, n)) = Frame::parse(rest).unwrap() {
        assert_eq!(serve(&frame, &mut out), 3400);
        rest = &rest[n..];
        served += 1;
        out.clear();
    }
    assert_eq!(served, FRAMES);
    assert_eq!(allocations() - before, 0, "parsing from a slice allocated");

    // Codec path: warm up once (the first `split_to` makes the buffer
    // shared), then a steady state of read, delimit, serve, write.
    for round in 0..3 {
        let before = allocations();
        src.extend_from_slice(&wire);
        let mut served = 0;
        while let Some(frame_bytes) = codec.decode(&mut src).unwrap() {
            serve(&frame_bytes.frame(), &mut out);
            served += 1;
            out.clear();
        }
        assert_eq!(served, FRAMES);
        if round > 0 {
            assert_eq!(allocations() - before, 0, "round {round} allocated");
        }
    }
}
