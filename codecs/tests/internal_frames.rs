//! Internal frames: round trips of every typed frame, no panic on any
//! input, incomplete input is `Ok(None)`, over-limit bodies are refused
//! before anything is buffered.

use bytes::BytesMut;
use codecs::internal::{
    check, tag, Authenticate, CartLine, Currencies, Cvv2, Details, Error, EventKind, Expiry, Frame,
    FrameType, HistoryEntry, InternalCodec, ListPayments, MandateRow, MerchantChange,
    MerchantSettings, MotoRequest, Pan, PaymentRow, PaymentStatus, Refund, Repeated, Request,
    Response, ResultCode, Secret, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

/// Owned data for a cart line.
type LineModel = (String, u32, u64);

/// Owned data a `Request` view can borrow from.
#[derive(Clone, Debug)]
enum ReqModel {
    Auth {
        client_id: String,
        secret: Vec<u8>,
    },
    Moto(Box<MotoModel>),
    Capture {
        payment_id: u64,
        amount_minor: Option<u64>,
        cart: Vec<LineModel>,
        not_final: bool,
    },
    Refund {
        payment_id: u64,
        amount_minor: u64,
        lines: Vec<LineModel>,
        reason: Option<String>,
    },
    Cancel {
        payment_id: u64,
    },
    Get {
        payment_id: u64,
    },
    List(Box<ListModel>),
    Scam {
        payment_id: u64,
        reason: Option<String>,
    },
}

#[derive(Clone, Debug)]
struct MotoModel {
    preauth: bool,
    pan: String,
    expiry: (u8, u8),
    cvv2: Option<String>,
    cardholder_name: Option<String>,
    merchant_reference: String,
    description: Option<String>,
    currency: u16,
    amount_minor: u64,
    terminal_id: String,
    cart: Vec<LineModel>,
}

#[derive(Clone, Debug)]
struct ListModel {
    status: Option<u8>,
    created: Option<(u64, u64)>,
    amounts: Option<(u64, u64)>,
    merchant_reference: Option<String>,
    terminal_id: Option<String>,
    cursor: Option<u64>,
    limit: Option<u16>,
}

fn lines_of(models: &[LineModel]) -> Vec<CartLine<'_>> {
    models
        .iter()
        .map(|(item, quantity, unit_price_minor)| CartLine {
            item,
            quantity: *quantity,
            unit_price_minor: *unit_price_minor,
        })
        .collect()
}

fn status(code: u8) -> PaymentStatus {
    PaymentStatus::from_code(tag::STATUS, code).unwrap()
}

/// Builds the view borrowing from `m` and hands it to `f`.
fn with_request<R>(m: &ReqModel, f: impl FnOnce(Request<'_>) -> R) -> R {
    match m {
        ReqModel::Auth { client_id, secret } => f(Request::Authenticate(Authenticate {
            client_id,
            secret: Secret::new(secret).unwrap(),
        })),
        ReqModel::Moto(m) => {
            let cart = lines_of(&m.cart);
            let moto = MotoRequest {
                pan: Pan::new(&m.pan).unwrap(),
                expiry: Expiry::new(m.expiry.0, m.expiry.1).unwrap(),
                cvv2: m.cvv2.as_deref().map(|c| Cvv2::new(c).unwrap()),
                cardholder_name: m.cardholder_name.as_deref(),
                merchant_reference: &m.merchant_reference,
                description: m.description.as_deref(),
                currency: m.currency,
                amount_minor: m.amount_minor,
                terminal_id: &m.terminal_id,
                cart: Repeated::from_slice(&cart),
            };
            f(if m.preauth {
                Request::PreauthorizeMoto(moto)
            } else {
                Request::AuthorizeMoto(moto)
            })
        }
        ReqModel::Capture {
            payment_id,
            amount_minor,
            cart,
            not_final,
        } => {
            let cart = lines_of(cart);
            f(Request::Capture {
                payment_id: *payment_id,
                amount_minor: *amount_minor,
                cart: Repeated::from_slice(&cart),
                not_final: *not_final,
            })
        }
        ReqModel::Refund {
            payment_id,
            amount_minor,
            lines,
            reason,
        } => {
            let lines = lines_of(lines);
            f(Request::Refund(Refund {
                payment_id: *payment_id,
                amount_minor: *amount_minor,
                lines: Repeated::from_slice(&lines),
                reason: reason.as_deref(),
            }))
        }
        ReqModel::Cancel { payment_id } => f(Request::Cancel {
            payment_id: *payment_id,
        }),
        ReqModel::Get { payment_id } => f(Request::GetPayment {
            payment_id: *payment_id,
        }),
        ReqModel::List(l) => f(Request::ListPayments(ListPayments {
            status: l.status.map(status),
            created_from_unix_s: l.created.map(|c| c.0),
            created_to_unix_s: l.created.map(|c| c.1),
            amount_min_minor: l.amounts.map(|a| a.0),
            amount_max_minor: l.amounts.map(|a| a.1),
            merchant_reference: l.merchant_reference.as_deref(),
            terminal_id: l.terminal_id.as_deref(),
            cursor: l.cursor,
            limit: l.limit,
            ..ListPayments::default()
        })),
        ReqModel::Scam { payment_id, reason } => f(Request::MarkScam {
            payment_id: *payment_id,
            reason: reason.as_deref(),
        }),
    }
}

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    // Any characters but controls; 4 bytes at most each.
    proptest::string::string_regex(&format!("[^\\p{{Cc}}]{{1,{max_chars}}}")).unwrap()
}

fn printable(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[ -~]{{1,{max}}}")).unwrap()
}

fn payment_id() -> impl Strategy<Value = u64> {
    1..=u64::MAX
}

fn amount() -> impl Strategy<Value = u64> {
    1..=999_999_999_999u64
}

fn line() -> impl Strategy<Value = LineModel> {
    (text(16), 1..=9_999u32, 1..=1_000_000u64)
}

fn moto() -> impl Strategy<Value = MotoModel> {
    (
        (
            any::<bool>(),
            "[0-9]{12,19}",
            (0..=99u8, 1..=12u8),
            proptest::option::of("[0-9]{3,4}"),
        ),
        (
            proptest::option::of(text(16)),
            printable(64),
            proptest::option::of(text(60)),
        ),
        (
            1..=999u16,
            amount(),
            printable(8),
            proptest::collection::vec(line(), 0..=50),
        ),
    )
        .prop_map(
            |(
                (preauth, pan, expiry, cvv2),
                (name, mref, desc),
                (currency, amount_minor, tid, cart),
            )| {
                MotoModel {
                    preauth,
                    pan,
                    expiry,
                    cvv2,
                    cardholder_name: name,
                    merchant_reference: mref,
                    description: desc,
                    currency,
                    amount_minor,
                    terminal_id: tid,
                    cart,
                }
            },
        )
}

fn list() -> impl Strategy<Value = ListModel> {
    let range = |max: u64| (0..=max, 0..=max).prop_map(|(a, b)| (a.min(b), a.max(b)));
    (
        proptest::option::of(1..=8u8),
        proptest::option::of(range(u64::MAX)),
        proptest::option::of(range(999_999_999_999)),
        proptest::option::of(printable(64)),
        proptest::option::of(printable(8)),
        proptest::option::of(any::<u64>()),
        proptest::option::of(1..=100u16),
    )
        .prop_map(
            |(status, created, amounts, merchant_reference, terminal_id, cursor, limit)| {
                ListModel {
                    status,
                    created,
                    amounts,
                    merchant_reference,
                    terminal_id,
                    cursor,
                    limit,
                }
            },
        )
}

/// A capture by amount (or of what is left), or by an edited cart (its
/// amount the lines' total, as decoded); final or not.
fn capture() -> impl Strategy<Value = ReqModel> {
    let by_amount = (payment_id(), proptest::option::of(amount()), any::<bool>()).prop_map(
        |(payment_id, amount_minor, not_final)| ReqModel::Capture {
            payment_id,
            amount_minor,
            cart: Vec::new(),
            not_final,
        },
    );
    let by_cart = (
        payment_id(),
        proptest::collection::vec(line(), 1..=50),
        any::<bool>(),
    )
        .prop_map(|(payment_id, cart, not_final)| {
            let total = cart.iter().map(|(_, q, p)| u64::from(*q) * p).sum();
            ReqModel::Capture {
                payment_id,
                amount_minor: Some(total),
                cart,
                not_final,
            }
        });
    prop_oneof![by_amount, by_cart]
}

fn refund() -> impl Strategy<Value = ReqModel> {
    let by_amount = (payment_id(), amount(), proptest::option::of(text(60))).prop_map(
        |(payment_id, amount_minor, reason)| ReqModel::Refund {
            payment_id,
            amount_minor,
            lines: Vec::new(),
            reason,
        },
    );
    let by_lines = (
        payment_id(),
        proptest::collection::vec(line(), 1..=50),
        proptest::option::of(text(60)),
    )
        .prop_map(|(payment_id, lines, reason)| {
            let amount_minor = lines.iter().map(|(_, q, p)| u64::from(*q) * p).sum();
            ReqModel::Refund {
                payment_id,
                amount_minor,
                lines,
                reason,
            }
        });
    prop_oneof![by_amount, by_lines]
}

fn request() -> impl Strategy<Value = ReqModel> {
    prop_oneof![
        (
            "[A-Z]{2}-[0-9]{4}-[0-9]{4}",
            proptest::collection::vec(any::<u8>(), 16..=64)
        )
            .prop_map(|(client_id, secret)| ReqModel::Auth { client_id, secret }),
        moto().prop_map(|m| ReqModel::Moto(Box::new(m))),
        capture(),
        refund(),
        payment_id().prop_map(|payment_id| ReqModel::Cancel { payment_id }),
        payment_id().prop_map(|payment_id| ReqModel::Get { payment_id }),
        list().prop_map(|l| ReqModel::List(Box::new(l))),
        (payment_id(), proptest::option::of(text(60)))
            .prop_map(|(payment_id, reason)| ReqModel::Scam { payment_id, reason }),
    ]
}

/// Owned data a `Response` view can borrow from.
#[derive(Clone, Debug)]
struct RespModel {
    code: String,
    message: Option<String>,
    payment_id: Option<u64>,
    auth_code: Option<String>,
    status: Option<u8>,
    currency: Option<u16>,
    amounts: [Option<u64>; 3],
    masked_pan: Option<String>,
    scam: Option<bool>,
    merchant_reference: Option<String>,
    terminal_id: Option<String>,
    created_unix_s: Option<u64>,
    next_cursor: Option<u64>,
    history: Vec<(u64, u8, u64, String)>,
    rows: Vec<RowModel>,
}

type RowModel = (u64, u64, u8, bool, u16, [u64; 3], Option<String>);

fn response_model() -> impl Strategy<Value = RespModel> {
    let opt_amount = || proptest::option::of(0..=999_999_999_999u64);
    let history = (any::<u64>(), 1..=9u8, 0..=999_999_999_999u64, "[0-9A-Z]{2}");
    let row = (
        payment_id(),
        any::<u64>(),
        1..=8u8,
        any::<bool>(),
        1..=999u16,
        [
            0..=999_999_999_999u64,
            0..=999_999_999_999u64,
            0..=999_999_999_999u64,
        ],
        proptest::option::of(printable(64)),
    );
    (
        (
            "[0-9A-Z]{2}",
            proptest::option::of(text(60)),
            proptest::option::of(payment_id()),
        ),
        (
            proptest::option::of("[A-Za-z0-9]{6}"),
            proptest::option::of(1..=8u8),
            proptest::option::of(1..=999u16),
        ),
        (
            [opt_amount(), opt_amount(), opt_amount()],
            proptest::option::of("[0-9]{6}\\*{2,9}[0-9]{4}"),
        ),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(printable(64)),
            proptest::option::of(printable(8)),
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
        ),
        (
            proptest::collection::vec(history, 0..=64),
            proptest::collection::vec(row, 0..=100),
        ),
    )
        .prop_map(
            |(
                (code, message, payment_id),
                (auth_code, status, currency),
                (amounts, masked_pan),
                (scam, mref, tid),
                (created, cursor),
                (history, rows),
            )| RespModel {
                code,
                message,
                payment_id,
                auth_code,
                status,
                currency,
                amounts,
                masked_pan,
                scam,
                merchant_reference: mref,
                terminal_id: tid,
                created_unix_s: created,
                next_cursor: cursor,
                history,
                rows,
            },
        )
}

fn with_response<R>(m: &RespModel, f: impl FnOnce(Response<'_>) -> R) -> R {
    let code = |s: &str| ResultCode::new(s.as_bytes().try_into().unwrap()).unwrap();
    let history: Vec<HistoryEntry> = m
        .history
        .iter()
        .map(|(at_unix_s, kind, amount_minor, rc)| HistoryEntry {
            at_unix_s: *at_unix_s,
            kind: EventKind::from_code(*kind).unwrap(),
            amount_minor: *amount_minor,
            result_code: code(rc),
        })
        .collect();
    let rows: Vec<PaymentRow<'_>> = m
        .rows
        .iter()
        .map(
            |(id, created, st, scam, currency, [a, c, r], mref)| PaymentRow {
                payment_id: *id,
                created_unix_s: *created,
                status: status(*st),
                scam: *scam,
                currency: *currency,
                amount_authorized_minor: *a,
                amount_captured_minor: *c,
                amount_refunded_minor: *r,
                merchant_reference: mref.as_deref(),
            },
        )
        .collect();
    let [authorized, captured, refunded] = m.amounts;
    f(Response {
        result_code: code(&m.code),
        message: m.message.as_deref(),
        payment_id: m.payment_id,
        auth_code: m.auth_code.as_deref(),
        status: m.status.map(status),
        currency: m.currency,
        amount_authorized_minor: authorized,
        amount_captured_minor: captured,
        amount_refunded_minor: refunded,
        masked_pan: m.masked_pan.as_deref(),
        scam: m.scam,
        merchant_reference: m.merchant_reference.as_deref(),
        terminal_id: m.terminal_id.as_deref(),
        created_unix_s: m.created_unix_s,
        history: Repeated::from_slice(&history),
        rows: Repeated::from_slice(&rows),
        mandates: Repeated::empty(),
        next_cursor: m.next_cursor,
        details: Details::default(),
        terminals: Repeated::empty(),
        merchant: None,
        webhook_events: Repeated::empty(),
        webhook_endpoint: None,
        webhook_secret: None,
    })
}

proptest! {
    /// A full mandate list fits a frame and reads back as written; scopes
    /// outside the three bits are refused by both sides.
    #[test]
    fn mandate_lists_round_trip(
        rows in proptest::collection::vec(("[A-Z0-9]{15}", any::<u64>(), 1..=7u8), 0..=150),
        bad in 8..=255u8,
    ) {
        let list: Vec<MandateRow<'_>> = rows
            .iter()
            .map(|(mid, granted, scopes)| MandateRow {
                merchant_id: mid,
                granted_unix_s: *granted,
                scopes: *scopes,
            })
            .collect();
        let mut r = Response::new(ResultCode::APPROVED);
        r.mandates = Repeated::from_slice(&list);
        let mut dst = BytesMut::new();
        r.encode(7, &mut dst).unwrap();
        let (frame, _) = Frame::parse(&dst).unwrap().unwrap();
        let back = Response::parse(&frame).unwrap();
        prop_assert_eq!(back.mandates.iter().collect::<Vec<_>>(), list);
        let wrong = [MandateRow { merchant_id: "DEMO00000000001", granted_unix_s: 1, scopes: bad }];
        let mut r = Response::new(ResultCode::APPROVED);
        r.mandates = Repeated::from_slice(&wrong);
        prop_assert!(r.encode(8, &mut BytesMut::new()).is_err());
        let zero = [MandateRow { merchant_id: "DEMO00000000001", granted_unix_s: 1, scopes: 0 }];
        r.mandates = Repeated::from_slice(&zero);
        prop_assert!(r.encode(9, &mut BytesMut::new()).is_err());
    }
}

/// Parses whatever `bytes` holds every way there is, touching every
/// lazily decoded item, and never panicking.
fn parse_everything(bytes: &[u8]) {
    let _ = check(bytes);
    let Ok(Some((frame, n))) = Frame::parse(bytes) else {
        return;
    };
    assert!(n <= bytes.len() && n >= FRAME_HEADER_BYTES);
    let _ = format!("{frame:?}");
    if let Ok(request) = Request::parse(&frame) {
        let _ = format!("{request:?}");
        reencode_request(request, frame.request_id());
    }
    if let Ok(response) = Response::parse(&frame) {
        let _ = format!("{response:?}");
        assert_eq!(response.history.iter().count(), response.history.len());
        assert_eq!(response.rows.iter().count(), response.rows.len());
        let mut dst = BytesMut::new();
        response.encode(frame.request_id(), &mut dst).unwrap();
        let (again, _) = Frame::parse(&dst).unwrap().unwrap();
        assert_eq!(Response::parse(&again).unwrap(), response);
    }
}

/// Whatever decodes, encodes again and decodes to the same.
fn reencode_request(request: Request<'_>, request_id: u64) {
    let mut dst = BytesMut::new();
    request.encode(request_id, &mut dst).unwrap();
    let (again, _) = Frame::parse(&dst).unwrap().unwrap();
    assert_eq!(Request::parse(&again).unwrap(), request);
}

fn header(frame_type: u8, request_id: u64, body_len: u32) -> Vec<u8> {
    let mut v = b"SW\x01".to_vec();
    v.push(frame_type);
    v.extend_from_slice(&request_id.to_be_bytes());
    v.extend_from_slice(&body_len.to_be_bytes());
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trips(model in request(), request_id in any::<u64>()) {
        with_request(&model, |request| {
            let mut dst = BytesMut::from(&b"prefix"[..]);
            request.encode(request_id, &mut dst).unwrap();
            let (frame, n) = Frame::parse(&dst[6..]).unwrap().unwrap();
            assert_eq!(n, dst.len() - 6);
            assert_eq!(frame.request_id(), request_id);
            assert_eq!(frame.frame_type(), Ok(request.frame_type()));
            assert_eq!(Request::parse(&frame), Ok(request));
            assert!(matches!(Response::parse(&frame), Err(Error::WrongDirection { .. })));
        });
    }

    #[test]
    fn response_round_trips(model in response_model(), request_id in any::<u64>()) {
        with_response(&model, |response| {
            let mut dst = BytesMut::new();
            response.encode(request_id, &mut dst).unwrap();
            let (frame, _) = Frame::parse(&dst).unwrap().unwrap();
            assert_eq!(frame.request_id(), request_id);
            assert_eq!(Response::parse(&frame), Ok(response));
            assert_eq!(Request::parse(&frame), Err(Error::WrongDirection { found: FrameType::Response }));
        });
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_everything(&bytes);
    }

    #[test]
    fn arbitrary_bodies_never_panic(
        frame_type in prop_oneof![1..=9u8, Just(0x80u8), any::<u8>()],
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = header(frame_type, 1, u32::try_from(body.len()).unwrap());
        bytes.extend_from_slice(&body);
        parse_everything(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        model in request(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut dst = BytesMut::new();
        with_request(&model, |r| r.encode(9, &mut dst).unwrap());
        let len = dst.len();
        if len == FRAME_HEADER_BYTES {
            return Ok(()); // An empty body: nothing to mutate.
        }
        // Keep the header's length honest, so the body parser is what is hit.
        for (at, byte) in flips {
            let i = FRAME_HEADER_BYTES + at.index(len - FRAME_HEADER_BYTES);
            if i < len {
                dst[i] = byte;
            }
        }
        parse_everything(&dst);
    }

    #[test]
    fn truncated_input_is_incomplete(model in request(), cut in any::<prop::sample::Index>()) {
        let mut dst = BytesMut::new();
        with_request(&model, |r| r.encode(3, &mut dst).unwrap());
        let cut = cut.index(dst.len());
        let prefix = &dst[..cut];
        assert_eq!(check(prefix), Ok(None));
        assert_eq!(Frame::parse(prefix), Ok(None));
        let mut src = BytesMut::from(prefix);
        assert!(InternalCodec::new().decode(&mut src).unwrap().is_none());
        assert_eq!(src.len(), cut);
    }

    #[test]
    fn codec_delimits_a_pipelined_stream(
        models in proptest::collection::vec(request(), 1..6),
        chunk in 1..64usize,
    ) {
        let mut wire = BytesMut::new();
        let mut codec = InternalCodec::new();
        for (id, model) in models.iter().enumerate() {
            with_request(model, |r| codec.encode((id as u64, r), &mut wire).unwrap());
        }
        let mut src = BytesMut::new();
        let mut seen = 0;
        for piece in wire.chunks(chunk) {
            src.extend_from_slice(piece);
            while let Some(frame_bytes) = codec.decode(&mut src).unwrap() {
                assert_eq!(frame_bytes.request_id(), seen as u64);
                let parsed = Request::parse(&frame_bytes.frame()).unwrap();
                with_request(&models[seen], |r| assert_eq!(parsed, r));
                seen += 1;
            }
        }
        assert_eq!(seen, models.len());
        assert!(src.is_empty());
    }
}

#[test]
fn over_limit_body_is_refused_before_buffering() {
    let limit = u32::try_from(FRAME_BODY_BYTES_MAX).unwrap();
    for announced in [limit + 1, u32::MAX] {
        let bytes = header(0x07, 1, announced);
        assert_eq!(check(&bytes), Err(Error::BodyTooLong { length: announced }));
        let mut src = BytesMut::from(&bytes[..]);
        let capacity = src.capacity();
        let err = InternalCodec::new().decode(&mut src).unwrap_err();
        assert!(matches!(
            err,
            codecs::internal::CodecError::Frame(Error::BodyTooLong { .. })
        ));
        assert_eq!(
            src.capacity(),
            capacity,
            "nothing reserved for a refused body"
        );
        assert!(Error::BodyTooLong { length: announced }.closes_connection());
    }
    // At the limit, the decoder reserves the body and waits for it.
    let mut src = BytesMut::from(&header(0x07, 1, limit)[..]);
    assert!(InternalCodec::new().decode(&mut src).unwrap().is_none());
    assert!(src.capacity() >= FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX);
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    let mut dst = BytesMut::new();
    let too_many: Vec<PaymentRow<'_>> = (1..=101)
        .map(|id| PaymentRow {
            payment_id: id,
            created_unix_s: 0,
            status: PaymentStatus::Succeeded,
            scam: false,
            currency: 978,
            amount_authorized_minor: 1,
            amount_captured_minor: 1,
            amount_refunded_minor: 0,
            merchant_reference: None,
        })
        .collect();
    let mut response = Response::new(ResultCode::APPROVED);
    response.rows = Repeated::from_slice(&too_many);
    assert_eq!(
        response.encode(1, &mut dst),
        Err(Error::TooManyRepeats {
            tag: tag::PAYMENT_ROW
        })
    );
    let mut response = Response::new(ResultCode::APPROVED);
    response.masked_pan = Some("4111111111111111");
    assert_eq!(
        response.encode(1, &mut dst),
        Err(Error::BadCharacter {
            tag: tag::MASKED_PAN
        })
    );
    let lines = [CartLine {
        item: "mug",
        quantity: 2,
        unit_price_minor: 500,
    }];
    let refund = Request::Refund(Refund {
        payment_id: 5,
        amount_minor: 999,
        lines: Repeated::from_slice(&lines),
        reason: None,
    });
    assert_eq!(
        refund.encode(1, &mut dst),
        Err(Error::Inconsistent {
            tag: tag::CART_LINE
        })
    );
    assert_eq!(
        Request::Cancel { payment_id: 0 }.encode(1, &mut dst),
        Err(Error::OutOfRange {
            tag: tag::PAYMENT_ID
        })
    );
    assert!(dst.is_empty(), "failed encodes leave nothing behind");
}

/// Builds a body from `(tag, value)` pairs.
fn body(fields: &[(u8, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    for (t, value) in fields {
        v.push(*t);
        v.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        v.extend_from_slice(value);
    }
    v
}

fn request_of(frame_type: u8, fields: &[(u8, &[u8])]) -> Result<(), Error> {
    let b = body(fields);
    let mut bytes = header(frame_type, 77, u32::try_from(b.len()).unwrap());
    bytes.extend_from_slice(&b);
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    Request::parse(&frame).map(|_| ())
}

#[test]
fn field_errors_name_the_field() {
    let id = 5u64.to_be_bytes();
    assert_eq!(request_of(0x06, &[(tag::PAYMENT_ID, &id)]), Ok(()));
    assert_eq!(
        request_of(0x06, &[]),
        Err(Error::MissingField {
            tag: tag::PAYMENT_ID
        })
    );
    assert_eq!(
        request_of(0x06, &[(tag::PAYMENT_ID, &id), (tag::PAYMENT_ID, &id)]),
        Err(Error::DuplicateField {
            tag: tag::PAYMENT_ID
        })
    );
    assert_eq!(
        request_of(0x06, &[(tag::PAYMENT_ID, &id[..4])]),
        Err(Error::FieldLength {
            tag: tag::PAYMENT_ID,
            length: 4
        })
    );
    assert_eq!(
        request_of(
            0x06,
            &[(tag::PAYMENT_ID, &id), (tag::PAN, b"4111111111111111")]
        ),
        Err(Error::UnexpectedField {
            frame_type: FrameType::Cancel,
            tag: tag::PAN
        })
    );
    // Unknown extensions are skipped, known-range unknown tags are not.
    assert_eq!(
        request_of(0x06, &[(0xF3, b"later"), (tag::PAYMENT_ID, &id)]),
        Ok(())
    );
    assert_eq!(
        request_of(0x7F, &[]),
        Err(Error::UnknownFrameType { found: 0x7F })
    );
    let list = |from: u64, to: u64| {
        request_of(
            0x08,
            &[
                (tag::CREATED_FROM_UNIX_S, &from.to_be_bytes()),
                (tag::CREATED_TO_UNIX_S, &to.to_be_bytes()),
            ],
        )
    };
    assert_eq!(list(1, 2), Ok(()));
    assert_eq!(
        list(2, 1),
        Err(Error::Inconsistent {
            tag: tag::CREATED_TO_UNIX_S
        })
    );
    assert_eq!(
        request_of(0x08, &[(tag::LIMIT, &[0, 101])]),
        Err(Error::OutOfRange { tag: tag::LIMIT })
    );
    assert_eq!(
        request_of(
            0x05,
            &[(tag::PAYMENT_ID, &id), (tag::DESCRIPTION, b"bad\x00")]
        ),
        Err(Error::BadCharacter {
            tag: tag::DESCRIPTION
        })
    );
    assert_eq!(
        request_of(0x05, &[(tag::PAYMENT_ID, &id)]),
        Err(Error::MissingField {
            tag: tag::AMOUNT_MINOR
        })
    );
}

#[test]
fn refund_by_lines_totals_them() {
    let mut line = Vec::new();
    line.extend_from_slice(&3u32.to_be_bytes());
    line.extend_from_slice(&250u64.to_be_bytes());
    line.extend_from_slice(b"socks");
    let b = body(&[
        (tag::PAYMENT_ID, &9u64.to_be_bytes()),
        (tag::CART_LINE, &line),
        (tag::CART_LINE, &line),
    ]);
    let mut bytes = header(0x05, 1, u32::try_from(b.len()).unwrap());
    bytes.extend_from_slice(&b);
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    let Request::Refund(refund) = Request::parse(&frame).unwrap() else {
        panic!("not a refund")
    };
    assert_eq!(refund.amount_minor, 1500);
    assert_eq!(refund.lines.len(), 2);
    assert!(refund
        .lines
        .iter()
        .all(|l| l.item == "socks" && l.quantity == 3));
}

/// The annotated example of `docs/internal-frames.md`.
fn doc_example() -> BytesMut {
    let cart = [CartLine {
        item: "Tea",
        quantity: 2,
        unit_price_minor: 1250,
    }];
    let request = Request::AuthorizeMoto(MotoRequest {
        pan: Pan::new("4111111111111111").unwrap(),
        expiry: Expiry::new(27, 12).unwrap(),
        cvv2: Some(Cvv2::new("123").unwrap()),
        cardholder_name: None,
        merchant_reference: "ORD-1",
        description: None,
        currency: 978,
        amount_minor: 2500,
        terminal_id: "DEMO0001",
        cart: Repeated::from_slice(&cart),
    });
    let mut dst = BytesMut::new();
    request.encode(0x2A, &mut dst).unwrap();
    dst
}

#[test]
fn doc_example_bytes() {
    let dst = doc_example();
    let expected = concat!(
        "5357",
        "01",
        "02",
        "000000000000002a",
        "00000055",
        "20",
        "0010",
        "34313131313131313131313131313131",
        "21",
        "0004",
        "32373132",
        "22",
        "0003",
        "313233",
        "04",
        "0005",
        "4f52442d31",
        "03",
        "0002",
        "03d2",
        "02",
        "0008",
        "00000000000009c4",
        "05",
        "0008",
        "44454d4f30303031",
        "24",
        "000f",
        "00000002",
        "00000000000004e2",
        "546561",
    );
    assert_eq!(hex::encode(&dst), expected);
    let (frame, _) = Frame::parse(&dst).unwrap().unwrap();
    let request = Request::parse(&frame).unwrap();
    let debug = format!("{request:?}");
    assert!(!debug.contains("4111111111111111") && debug.contains("411111******1111"));
    assert!(!debug.contains("\"123\"") && debug.contains("Cvv2(***)"));
}

#[test]
fn response_answers_by_request_id() {
    let mut dst = BytesMut::new();
    let mut r = Response::new(ResultCode::FORMAT_ERROR);
    r.message = Some("missing required field pan (0x20)");
    r.encode(7, &mut dst).unwrap();
    let (frame, _) = Frame::parse(&dst).unwrap().unwrap();
    assert_eq!(frame.request_id(), 7);
    let back = Response::parse(&frame).unwrap();
    assert_eq!(back.result_code.as_str(), "30");
    assert_eq!(back.message, r.message);
}

/// The annotated response of `docs/internal-frames.md`.
#[test]
fn doc_example_response_bytes() {
    let mut response = Response::new(ResultCode::APPROVED);
    response.payment_id = Some(1001);
    response.auth_code = Some("A1B2C3");
    response.status = Some(PaymentStatus::Succeeded);
    response.currency = Some(978);
    response.amount_authorized_minor = Some(2500);
    response.amount_captured_minor = Some(2500);
    response.masked_pan = Some("411111******1111");
    let mut dst = BytesMut::new();
    response.encode(0x2A, &mut dst).unwrap();
    let expected = concat!(
        "5357",
        "01",
        "80",
        "000000000000002a",
        "0000004b",
        "40",
        "0002",
        "3030",
        "01",
        "0008",
        "00000000000003e9",
        "42",
        "0006",
        "413142324333",
        "30",
        "0001",
        "02",
        "03",
        "0002",
        "03d2",
        "43",
        "0008",
        "00000000000009c4",
        "44",
        "0008",
        "00000000000009c4",
        "46",
        "0010",
        "3431313131312a2a2a2a2a2a31313131",
    );
    assert_eq!(hex::encode(&dst), expected);
}

/// One frame's bytes for `request`.
fn request_bytes(request: &Request<'_>) -> BytesMut {
    let mut out = BytesMut::new();
    request.encode(7, &mut out).expect("encodes");
    out
}

#[test]
fn back_office_filters_unmark_and_details_round_trip() {
    let statuses = [1u8, 8];
    let list = ListPayments {
        scam: Some(true),
        rrn: Some("000000000042"),
        auth_code: Some("A1B2C3"),
        last4: Some("4242"),
        channel: Some(59),
        eci: Some(5),
        result_code: Some(ResultCode::new(*b"51").unwrap()),
        statuses: Some(&statuses),
        limit: Some(100),
        ..ListPayments::default()
    };
    let bytes = request_bytes(&Request::ListPayments(list));
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    let Request::ListPayments(back) = Request::parse(&frame).unwrap() else {
        panic!("not a list");
    };
    assert_eq!(back, list);
    let got: Vec<PaymentStatus> = back.statuses().collect();
    assert_eq!(got, [PaymentStatus::Uncaptured, PaymentStatus::Declined]);

    // Bad filter values are refused on both sides.
    for bad in [
        ListPayments {
            channel: Some(7),
            ..ListPayments::default()
        },
        ListPayments {
            eci: Some(100),
            ..ListPayments::default()
        },
        ListPayments {
            last4: Some("42a2"),
            ..ListPayments::default()
        },
        ListPayments {
            statuses: Some(&[1, 1]),
            ..ListPayments::default()
        },
        ListPayments {
            statuses: Some(&[9]),
            ..ListPayments::default()
        },
    ] {
        let mut out = BytesMut::new();
        assert!(
            Request::ListPayments(bad).encode(1, &mut out).is_err()
                || Request::parse(&Frame::parse(&out).unwrap().unwrap().0).is_err(),
            "{bad:?}"
        );
    }

    let unmark = Request::UnmarkScam {
        payment_id: 9,
        reason: "customer verified",
    };
    let bytes = request_bytes(&unmark);
    assert_eq!(bytes[3], 0x10, "frame type 0x10");
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    assert_eq!(Request::parse(&frame).unwrap(), unmark);
    // The reason is required.
    let mut no_reason = BytesMut::new();
    Request::Cancel { payment_id: 9 }
        .encode(1, &mut no_reason)
        .unwrap();
    no_reason[3] = 0x10;
    let (frame, _) = Frame::parse(&no_reason).unwrap().unwrap();
    assert!(Request::parse(&frame).is_err());

    let mut r = Response::new(ResultCode::APPROVED);
    r.details = Details {
        eci: Some(5),
        rrn: Some("633412000001"),
        channel: Some(8),
        stood_in: Some(true),
        auth_result_code: Some(ResultCode::new(*b"05").unwrap()),
        amount_requested_minor: Some(12_345),
        flag_reasons: Some("manual"),
        flagged_by: Some("AB-0000-0001"),
        flag_note: Some("chargeback"),
        unflagged_by: Some("AB-0000-0002"),
        unflag_reason: Some("verified"),
        unflagged_unix_s: Some(1_795_434_550),
    };
    let mut out = BytesMut::new();
    r.encode(3, &mut out).unwrap();
    let (frame, _) = Frame::parse(&out).unwrap().unwrap();
    assert_eq!(Response::parse(&frame).unwrap(), r);
}

/// Owned data of a merchant's settings.
type MerchantModel = (
    String,
    bool,
    Vec<u16>,
    u8,
    u16,
    Option<u16>,
    (bool, bool),
    Option<String>,
);

fn merchant_model() -> impl Strategy<Value = MerchantModel> {
    (
        "[ -~]{15}",
        any::<bool>(),
        proptest::collection::btree_set(1..=999u16, 1..=32)
            .prop_map(|s| s.into_iter().rev().collect()),
        0..=100u8,
        1..=744u16,
        proptest::option::of(1..=744u16),
        (any::<bool>(), any::<bool>()),
        proptest::option::of(text(16)),
    )
}

fn settings_of(m: &MerchantModel) -> MerchantSettings<'_> {
    let (mid, enabled, currencies, pct, hold, auto, (refunds, moto), name) = m;
    MerchantSettings {
        merchant_id: mid,
        enabled: *enabled,
        currencies: Currencies::new(currencies).unwrap(),
        over_capture_pct: *pct,
        hold_hours: *hold,
        auto_capture_hours: *auto,
        refunds: *refunds,
        moto: *moto,
        name: name.as_deref().unwrap_or_default(),
    }
}

proptest! {
    /// A merchant's settings read back as written, in a response (beside
    /// a full page of rows and a full history: the largest response) and
    /// as a SetMerchant of any subset of them; a GetMerchant carries only
    /// the merchant id.
    #[test]
    fn merchant_frames_round_trip(
        m in merchant_model(),
        present in proptest::collection::vec(any::<bool>(), 9),
        request_id in any::<u64>(),
    ) {
        let settings = settings_of(&m);
        let mut r = Response::new(ResultCode::APPROVED);
        r.message = Some("ok");
        r.merchant = Some(settings);
        let mut dst = BytesMut::new();
        r.encode(request_id, &mut dst).unwrap();
        let (frame, _) = Frame::parse(&dst).unwrap().unwrap();
        prop_assert_eq!(Response::parse(&frame).unwrap().merchant, Some(settings));

        let on = |i: usize| present[i];
        let change = MerchantChange {
            merchant_id: on(0).then_some(settings.merchant_id),
            enabled: on(1).then_some(settings.enabled),
            currencies: on(2).then_some(settings.currencies),
            over_capture_pct: on(3).then_some(settings.over_capture_pct),
            hold_hours: on(4).then_some(settings.hold_hours),
            auto_capture_hours: on(5).then_some(settings.auto_capture_hours),
            refunds: on(6).then_some(settings.refunds),
            moto: on(7).then_some(settings.moto),
            name: on(8).then_some(settings.name).filter(|n| !n.is_empty()),
        };
        for request in [
            Request::SetMerchant(change),
            Request::GetMerchant(MerchantChange {
                merchant_id: change.merchant_id,
                ..MerchantChange::default()
            }),
        ] {
            let bytes = request_bytes(&request);
            let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
            prop_assert_eq!(Request::parse(&frame).unwrap(), request);
        }
        let read_with_a_setting = Request::GetMerchant(MerchantChange {
            over_capture_pct: Some(1),
            ..MerchantChange::default()
        });
        prop_assert!(read_with_a_setting.encode(1, &mut BytesMut::new()).is_err());
    }
}

#[test]
fn the_largest_response_with_a_merchant_fits() {
    let m: MerchantModel = (
        "DEMO00000000001".into(),
        true,
        (1..=32).collect(),
        100,
        744,
        Some(744),
        (true, true),
        Some("é".repeat(32)),
    );
    let history = [HistoryEntry {
        at_unix_s: 1,
        kind: EventKind::Captured,
        amount_minor: 1,
        result_code: ResultCode::APPROVED,
    }; 64];
    let reference = "R".repeat(64);
    let rows = vec![
        PaymentRow {
            payment_id: 1,
            created_unix_s: 1,
            status: PaymentStatus::Succeeded,
            scam: false,
            currency: 978,
            amount_authorized_minor: 1,
            amount_captured_minor: 1,
            amount_refunded_minor: 0,
            merchant_reference: Some(&reference),
        };
        100
    ];
    let message = "m".repeat(255);
    let mut r = Response::new(ResultCode::APPROVED);
    r.message = Some(&message);
    r.merchant = Some(settings_of(&m));
    r.history = Repeated::from_slice(&history);
    r.rows = Repeated::from_slice(&rows);
    let mut dst = BytesMut::new();
    r.encode(1, &mut dst).expect("fits");
    let (frame, _) = Frame::parse(&dst).unwrap().unwrap();
    let back = Response::parse(&frame).unwrap();
    assert_eq!(back.merchant, r.merchant);
    assert_eq!(back.rows.len(), 100);
}

#[test]
fn merchant_field_errors_name_the_field() {
    const GET: u8 = 0x0E;
    const SET: u8 = 0x0F;
    assert_eq!(FrameType::GetMerchant.code(), GET);
    assert_eq!(FrameType::SetMerchant.code(), SET);
    assert_eq!(request_of(GET, &[]), Ok(()));
    assert_eq!(
        request_of(SET, &[(tag::MERCHANT_ID, b"DEMO00000000001")]),
        Ok(())
    );
    assert_eq!(
        request_of(GET, &[(tag::OVER_CAPTURE_PCT, &[5])]),
        Err(Error::UnexpectedField {
            frame_type: FrameType::GetMerchant,
            tag: tag::OVER_CAPTURE_PCT
        })
    );
    let out_of_range: [(u8, &[u8]); 6] = [
        (tag::OVER_CAPTURE_PCT, &[101]),
        (tag::HOLD_HOURS, &[0, 0]),
        (tag::HOLD_HOURS, &[2, 233]), // 745
        (tag::AUTO_CAPTURE_HOURS, &[2, 233]),
        (tag::MERCHANT_ENABLED, &[2]),
        (tag::CURRENCIES, &[3, 232]), // 1000
    ];
    for (t, value) in out_of_range {
        assert_eq!(
            request_of(SET, &[(t, value)]),
            Err(Error::OutOfRange { tag: t }),
            "{t:#04x}"
        );
    }
    assert_eq!(
        request_of(SET, &[(tag::CURRENCIES, &[3, 0xd2, 3, 0xd2])]),
        Err(Error::Inconsistent {
            tag: tag::CURRENCIES
        })
    );
    for bad in [&[3u8][..], &[], &[1; 66]] {
        assert!(matches!(
            request_of(SET, &[(tag::CURRENCIES, bad)]),
            Err(Error::FieldLength {
                tag: tag::CURRENCIES,
                ..
            })
        ));
    }
    assert!(matches!(
        request_of(SET, &[(tag::MERCHANT_NAME, b"")]),
        Err(Error::FieldLength {
            tag: tag::MERCHANT_NAME,
            ..
        })
    ));
    assert_eq!(
        request_of(SET, &[(tag::AUTO_CAPTURE_HOURS, &[0, 0])]),
        Ok(()),
        "0: off"
    );
    assert_eq!(
        Error::OutOfRange {
            tag: tag::HOLD_HOURS
        }
        .to_string(),
        "field hold_hours (0x5a): value out of range"
    );
}

/// The fuzz seeds of the merchant frames (`fuzz/seeds.py`) are valid
/// frames, so the fuzzer starts from inside the format.
#[test]
fn the_merchant_seeds_parse() {
    let seed = |name: &str| {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/internal_decode")
                .join(name),
        )
        .expect("seed")
    };
    let bytes = seed("set_merchant");
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    let Request::SetMerchant(c) = Request::parse(&frame).unwrap() else {
        panic!("not a SetMerchant");
    };
    assert_eq!(
        (
            c.merchant_id,
            c.over_capture_pct,
            c.auto_capture_hours,
            c.name
        ),
        (Some("DEMO00000000001"), Some(20), Some(None), Some("Demo"))
    );
    let bytes = seed("response_merchant");
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    let m = Response::parse(&frame).unwrap().merchant.expect("merchant");
    assert_eq!(
        (m.currencies.as_slice(), m.hold_hours, m.auto_capture_hours),
        (&[978, 840][..], 168, Some(24))
    );
}

#[test]
fn webhook_requests_round_trip_and_bad_ones_are_refused() {
    use codecs::internal::{ListWebhookEvents, WebhookEndpointChange, WebhookStatus};
    let round_trip = |request: Request<'_>| {
        let bytes = request_bytes(&request);
        let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
        let back = Request::parse(&frame).unwrap();
        assert_eq!(format!("{back:?}"), format!("{request:?}"));
        assert_eq!(back.frame_type(), request.frame_type());
    };
    round_trip(Request::ListWebhookEvents(ListWebhookEvents {
        merchant_id: Some("DEMO00000000001"),
        payment_id: Some(9),
        status: Some(WebhookStatus::Failed),
        cursor: Some(77),
        limit: Some(50),
    }));
    round_trip(Request::ResendWebhookEvent {
        event_id: "evt_0000000000000007",
    });
    let url = Some("https://example.com/hooks");
    for request in [
        Request::GetWebhookEndpoint(WebhookEndpointChange::default()),
        Request::SetWebhookEndpoint(WebhookEndpointChange {
            merchant_id: Some("DEMO00000000001"),
            url,
        }),
        Request::RemoveWebhookEndpoint(WebhookEndpointChange {
            merchant_id: Some("DEMO00000000001"),
            url: None,
        }),
    ] {
        round_trip(request);
    }
    round_trip(Request::ListPayments(ListPayments {
        webhook_status: Some(WebhookStatus::Pending),
        ..ListPayments::default()
    }));
    // A page over WEBHOOK_EVENTS_MAX, a set without a URL, a URL where
    // none is allowed: refused by the encoder as the decoder would.
    let mut out = BytesMut::new();
    let too_many = Request::ListWebhookEvents(ListWebhookEvents {
        limit: Some(51),
        ..ListWebhookEvents::default()
    });
    assert_eq!(
        too_many.encode(1, &mut out),
        Err(Error::OutOfRange { tag: tag::LIMIT })
    );
    let no_url = Request::SetWebhookEndpoint(WebhookEndpointChange::default());
    assert_eq!(
        no_url.encode(1, &mut out),
        Err(Error::MissingField {
            tag: tag::WEBHOOK_URL
        })
    );
    let stray = Request::RemoveWebhookEndpoint(WebhookEndpointChange {
        merchant_id: None,
        url,
    });
    assert!(stray.encode(1, &mut out).is_err());
    assert!(out.is_empty());
    // On the wire: a status code 3 is out of range.
    let good = request_bytes(&Request::ListPayments(ListPayments {
        webhook_status: Some(WebhookStatus::Delivered),
        ..ListPayments::default()
    }));
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] = 3;
    let (frame, _) = Frame::parse(&bad).unwrap().unwrap();
    assert_eq!(
        Request::parse(&frame),
        Err(Error::OutOfRange {
            tag: tag::WEBHOOK_STATUS
        })
    );
}

/// The fuzz seeds of the webhook frames (`fuzz/seeds.py`) are valid
/// frames.
#[test]
fn the_webhook_seeds_parse() {
    use codecs::internal::WebhookStatus;
    let seed = |name: &str| {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/internal_decode")
                .join(name),
        )
        .expect("seed")
    };
    let bytes = seed("list_webhook_events");
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    let Request::ListWebhookEvents(l) = Request::parse(&frame).unwrap() else {
        panic!("not a ListWebhookEvents");
    };
    assert_eq!(
        (l.payment_id, l.status, l.cursor, l.limit),
        (Some(1001), Some(WebhookStatus::Failed), Some(77), Some(50))
    );
    let bytes = seed("set_webhook_endpoint");
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    let Request::SetWebhookEndpoint(c) = Request::parse(&frame).unwrap() else {
        panic!("not a SetWebhookEndpoint");
    };
    assert_eq!(c.url, Some("https://shop.example/hooks/switch"));
    let bytes = seed("response_webhooks");
    let (frame, _) = Frame::parse(&bytes).unwrap().unwrap();
    let r = Response::parse(&frame).unwrap();
    let e = r.webhook_events.iter().next().expect("an event");
    assert_eq!(
        (
            e.payment_id,
            e.status,
            e.attempts,
            e.last_status_code,
            e.kind
        ),
        (
            1001,
            WebhookStatus::Failed,
            7,
            Some(503),
            "payment.captured"
        )
    );
    assert_eq!(
        r.webhook_endpoint.expect("endpoint").secret_masked,
        "whsec_…x2y3"
    );
    assert!(r.webhook_secret.is_some());
}
