//! The HTTP/1.1 client codec: golden requests, response decoding fed in every possible
//! split, framing edge cases, limits and garbage.

use burrow_proto::http1::{
    BodyFraming, DecodeError, EncodeError, Limits, ResponseDecoder, ResponseEvent, encode_request,
};
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, Request, header};

// ---------------------------------------------------------------------------------------
// Requests

fn head(method: Method, uri: &str) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri.parse().expect("valid uri");
    parts
}

#[test]
fn get_request_head_golden_bytes() {
    let mut parts = head(Method::GET, "http://user:pw@localhost:8080/a/b?q=1");
    parts
        .headers
        .insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let mut buf = BytesMut::new();
    let body = encode_request(&parts, BodyFraming::Empty, &mut buf).expect("encodes");
    body.finish(&mut buf).expect("no body");
    assert_eq!(
        &buf[..],
        b"GET /a/b?q=1 HTTP/1.1\r\nhost: localhost:8080\r\naccept: */*\r\n\r\n"
    );
}

#[test]
fn explicit_host_header_goes_first_and_wins_over_the_uri() {
    let mut parts = head(Method::GET, "/");
    parts
        .headers
        .insert(header::USER_AGENT, HeaderValue::from_static("burrow"));
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_static("example.test"));
    let mut buf = BytesMut::new();
    encode_request(&parts, BodyFraming::Empty, &mut buf).expect("encodes");
    assert_eq!(
        &buf[..],
        b"GET / HTTP/1.1\r\nhost: example.test\r\nuser-agent: burrow\r\n\r\n"
    );
}

#[test]
fn content_length_request_golden_bytes() {
    let parts = head(Method::POST, "http://h/submit");
    let mut buf = BytesMut::new();
    let mut body =
        encode_request(&parts, BodyFraming::ContentLength(5), &mut buf).expect("encodes");
    body.data(b"hel", &mut buf).expect("fits");
    body.data(b"lo", &mut buf).expect("fits");
    body.finish(&mut buf).expect("complete");
    assert_eq!(
        &buf[..],
        b"POST /submit HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello"
    );
}

#[test]
fn chunked_request_golden_bytes() {
    let parts = head(Method::PUT, "http://h");
    let mut buf = BytesMut::new();
    let mut body = encode_request(&parts, BodyFraming::Chunked, &mut buf).expect("encodes");
    body.data(b"hello world, ", &mut buf).expect("chunk");
    body.data(b"", &mut buf)
        .expect("empty data is not the last chunk");
    body.data(&[b'x'; 26], &mut buf).expect("chunk");
    body.finish(&mut buf).expect("last chunk");
    let mut expected = b"PUT / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n\
        d\r\nhello world, \r\n1a\r\n"
        .to_vec();
    expected.extend_from_slice(&[b'x'; 26]);
    expected.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(&buf[..], &expected[..]);
}

#[test]
fn connect_request_uses_the_authority_as_target() {
    let mut buf = BytesMut::new();
    encode_request(
        &head(Method::CONNECT, "db.internal:5432"),
        BodyFraming::Empty,
        &mut buf,
    )
    .expect("encodes");
    assert_eq!(
        &buf[..],
        b"CONNECT db.internal:5432 HTTP/1.1\r\nhost: db.internal:5432\r\n\r\n"
    );
}

#[test]
fn request_without_host_is_refused() {
    let mut buf = BytesMut::new();
    assert_eq!(
        encode_request(&head(Method::GET, "/x"), BodyFraming::Empty, &mut buf),
        Err(EncodeError::MissingHost)
    );
    assert!(buf.is_empty());
}

#[test]
fn framing_headers_set_by_hand_are_refused() {
    for (name, value) in [
        (header::CONTENT_LENGTH, "3"),
        (header::TRANSFER_ENCODING, "chunked"),
    ] {
        let mut parts = head(Method::POST, "http://h/");
        parts
            .headers
            .insert(name.clone(), HeaderValue::from_static(value));
        let mut buf = BytesMut::new();
        assert_eq!(
            encode_request(&parts, BodyFraming::ContentLength(3), &mut buf),
            Err(EncodeError::FramingHeader(name))
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn header_values_with_line_breaks_cannot_reach_the_encoder() {
    // `http` refuses them at construction; the encoder checks again (see its unit tests).
    assert!(HeaderValue::from_bytes(b"x\r\nInjected: 1").is_err());
    assert!(HeaderValue::from_bytes(b"x\nInjected: 1").is_err());
    assert!("/a\r\nb".parse::<http::Uri>().is_err());
}

#[test]
fn body_longer_or_shorter_than_announced_is_refused() {
    let parts = head(Method::POST, "http://h/");
    let mut buf = BytesMut::new();
    let mut body =
        encode_request(&parts, BodyFraming::ContentLength(4), &mut buf).expect("encodes");
    let head_len = buf.len();
    body.data(b"abc", &mut buf).expect("fits");
    assert_eq!(
        body.data(b"de", &mut buf),
        Err(EncodeError::BodyTooLong { length: 4 })
    );
    assert_eq!(buf.len(), head_len + 3, "a refused write writes nothing");
    assert_eq!(
        body.finish(&mut buf),
        Err(EncodeError::BodyTooShort { missing: 1 })
    );

    let mut body = encode_request(&parts, BodyFraming::Empty, &mut buf).expect("encodes");
    assert_eq!(
        body.data(b"x", &mut buf),
        Err(EncodeError::BodyTooLong { length: 0 })
    );
}

// ---------------------------------------------------------------------------------------
// Responses

/// An event in comparable form; consecutive body pieces are merged, since how the body is
/// cut depends on how the bytes arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Info(u16),
    Head(u16, Vec<(String, String)>),
    Body(Vec<u8>),
    Trailers(Vec<(String, String)>),
    End(bool),
    Upgrade(u16, Vec<u8>),
    Err(DecodeError),
}

fn fields(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Feeds `chunks` one by one to a decoder expecting `methods`, then the end of the stream
/// if `eof`, and collects the events. Once upgraded, later bytes join the upgrade's rest,
/// as a caller would route them to the new protocol.
fn run_with(limits: Limits, methods: &[Method], chunks: &[&[u8]], eof: bool) -> Vec<Ev> {
    let mut d = ResponseDecoder::new(limits);
    for m in methods {
        d.expect_response(m.clone());
    }
    let mut out: Vec<Ev> = Vec::new();
    let drain = |d: &mut ResponseDecoder, out: &mut Vec<Ev>| loop {
        if matches!(out.last(), Some(Ev::Err(_))) {
            return;
        }
        let ev = match d.poll_event() {
            Ok(None) => return,
            Ok(Some(ResponseEvent::Informational(h))) => Ev::Info(h.status.as_u16()),
            Ok(Some(ResponseEvent::Head(h))) => Ev::Head(h.status.as_u16(), fields(&h.headers)),
            Ok(Some(ResponseEvent::Body(b))) => {
                assert!(!b.is_empty(), "empty body events are noise");
                if let Some(Ev::Body(prev)) = out.last_mut() {
                    prev.extend_from_slice(&b);
                    continue;
                }
                Ev::Body(b.to_vec())
            }
            Ok(Some(ResponseEvent::Trailers(t))) => Ev::Trailers(fields(&t)),
            Ok(Some(ResponseEvent::End { reusable })) => Ev::End(reusable),
            Ok(Some(ResponseEvent::Upgrade { head, rest })) => {
                Ev::Upgrade(head.status.as_u16(), rest.to_vec())
            }
            Err(e) => Ev::Err(e),
        };
        out.push(ev);
    };
    for chunk in chunks {
        if let Some(Ev::Upgrade(_, rest)) = out.last_mut() {
            rest.extend_from_slice(chunk);
            continue;
        }
        d.push(chunk);
        drain(&mut d, &mut out);
    }
    if eof && !matches!(out.last(), Some(Ev::Upgrade(..))) {
        d.eof();
        drain(&mut d, &mut out);
    }
    out
}

fn run(methods: &[Method], bytes: &[u8], eof: bool) -> Vec<Ev> {
    run_with(Limits::default(), methods, &[bytes], eof)
}

fn get() -> Vec<Method> {
    vec![Method::GET]
}

fn h(name: &str, value: &str) -> (String, String) {
    (name.into(), value.into())
}

/// Responses that must decode the same however they are cut: (methods, bytes, eof).
fn split_cases() -> Vec<(Vec<Method>, &'static [u8], bool)> {
    vec![
        (
            get(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            false,
        ),
        (
            get(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6 ; a=\"b\"\r\n world\r\n0\r\nX-Sum: 9\r\n\r\n",
            false,
        ),
        (get(), b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true),
        (
            vec![Method::POST],
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        (
            get(),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05Hello",
            false,
        ),
        (
            vec![Method::GET, Method::HEAD],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
              HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            false,
        ),
        (
            get(),
            b"HTTP/1.1 404 Not Found\nContent-Length: 1\nConnection: close\n\nx",
            false,
        ),
    ]
}

#[test]
fn responses_split_at_every_byte_boundary_yield_the_same_events() {
    for (methods, bytes, eof) in split_cases() {
        let whole = run(&methods, bytes, eof);
        assert!(
            !whole.iter().any(|e| matches!(e, Ev::Err(_))),
            "{whole:?} for {:?}",
            String::from_utf8_lossy(bytes)
        );
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let split = run_with(Limits::default(), &methods, &[a, b], eof);
            assert_eq!(split, whole, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run_with(Limits::default(), &methods, &bytewise, eof), whole);
    }
}

#[test]
fn content_length_response_yields_head_body_end() {
    assert_eq!(
        run(
            &get(),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            false
        ),
        vec![
            Ev::Head(
                200,
                vec![h("content-type", "text/plain"), h("content-length", "5")]
            ),
            Ev::Body(b"hello".to_vec()),
            Ev::End(true),
        ]
    );
}

#[test]
fn body_is_streamed_as_it_arrives() {
    let mut d = ResponseDecoder::default();
    d.expect_response(Method::GET);
    d.push(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nfirst");
    assert!(matches!(d.poll_event(), Ok(Some(ResponseEvent::Head(_)))));
    assert!(matches!(d.poll_event(), Ok(Some(ResponseEvent::Body(b))) if b == "first"));
    assert!(matches!(d.poll_event(), Ok(None)));
    d.push(b"second");
    assert!(matches!(d.poll_event(), Ok(Some(ResponseEvent::Body(b))) if b == "second"));
    assert_eq!(d.pending_responses(), 1);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    assert_eq!(
        run(
            &get(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;name=value\r\nWiki\r\n5\r\npedia\r\nE ; x\r\n in\r\n\r\nchunks.\r\n\
              0;last\r\nExpires: never\r\nX-Checksum: 42\r\n\r\n",
            false
        ),
        vec![
            Ev::Head(200, vec![h("transfer-encoding", "chunked")]),
            Ev::Body(b"Wikipedia in\r\n\r\nchunks.".to_vec()),
            Ev::Trailers(vec![h("expires", "never"), h("x-checksum", "42")]),
            Ev::End(true),
        ]
    );
}

#[test]
fn chunked_wins_when_it_is_the_last_transfer_coding() {
    // gzip stays applied: the body is passed through as it came.
    assert_eq!(
        run(
            &get(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\n\x1f\x8b\r\n0\r\n\r\n",
            false
        )[1..],
        [Ev::Body(vec![0x1f, 0x8b]), Ev::End(true)]
    );
    // chunked not last: the body runs to the end of the connection.
    assert_eq!(
        run(
            &get(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nraw",
            true
        )[1..],
        [Ev::Body(b"raw".to_vec()), Ev::End(false)]
    );
}

#[test]
fn head_204_and_304_responses_have_no_body_despite_content_length() {
    for (method, status) in [
        (Method::HEAD, 200),
        (Method::GET, 204),
        (Method::GET, 304),
        (Method::HEAD, 404),
    ] {
        let mut bytes = format!("HTTP/1.1 {status} X\r\nContent-Length: 42\r\n\r\n").into_bytes();
        bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(
            run(&[method.clone(), Method::GET], &bytes, false),
            vec![
                Ev::Head(status, vec![h("content-length", "42")]),
                Ev::End(true),
                Ev::Head(200, vec![h("content-length", "2")]),
                Ev::Body(b"ok".to_vec()),
                Ev::End(true),
            ],
            "{method} {status}"
        );
    }
}

#[test]
fn keep_alive_decoder_reads_two_responses_from_one_buffer() {
    let mut d = ResponseDecoder::default();
    d.expect_response(Method::GET);
    d.expect_response(Method::GET);
    assert_eq!(d.pending_responses(), 2);
    d.push(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
    );
    let mut bodies = Vec::new();
    let mut ends = Vec::new();
    while let Some(event) = d.poll_event().expect("valid") {
        match event {
            ResponseEvent::Body(b) => bodies.push(b),
            ResponseEvent::End { reusable } => ends.push(reusable),
            _ => {}
        }
    }
    assert_eq!(bodies, ["one", "two"]);
    assert_eq!(ends, [true, true]);
    assert_eq!(d.pending_responses(), 0);
    // The connection is idle: a server closing it now is no error.
    d.eof();
    assert!(matches!(d.poll_event(), Ok(None)));
}

#[test]
fn connection_close_makes_the_connection_not_reusable() {
    assert_eq!(
        run(
            &get(),
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
            false
        )
        .last(),
        Some(&Ev::End(false))
    );
    // Bytes after the last response are refused.
    assert_eq!(
        run(
            &[Method::GET, Method::GET],
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",
            false
        )
        .last(),
        Some(&Ev::Err(DecodeError::DataAfterEnd))
    );
}

#[test]
fn http10_closes_unless_it_says_keep_alive() {
    let close = run(
        &get(),
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert_eq!(close.last(), Some(&Ev::End(false)));
    let keep = run(
        &get(),
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert_eq!(keep.last(), Some(&Ev::End(true)));
}

#[test]
fn close_delimited_body_ends_at_eof() {
    let bytes = b"HTTP/1.1 200 OK\r\n\r\nstreamed until close";
    assert_eq!(
        run(&get(), bytes, false),
        vec![
            Ev::Head(200, vec![]),
            Ev::Body(b"streamed until close".to_vec())
        ]
    );
    assert_eq!(run(&get(), bytes, true).last(), Some(&Ev::End(false)));
}

#[test]
fn eof_inside_a_response_is_an_error() {
    for bytes in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n",
    ] {
        assert_eq!(
            run(&get(), bytes, true).last(),
            Some(&Ev::Err(DecodeError::UnexpectedEof)),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn informational_responses_are_surfaced_before_the_final_one() {
    assert_eq!(
        run(
            &[Method::POST],
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false
        ),
        vec![
            Ev::Info(100),
            Ev::Info(103),
            Ev::Head(200, vec![h("content-length", "0")]),
            Ev::End(true),
        ]
    );
}

#[test]
fn switching_protocols_hands_over_the_bytes_after_the_head() {
    let mut d = ResponseDecoder::default();
    d.expect_response(Method::GET);
    d.push(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi");
    let Ok(Some(ResponseEvent::Upgrade { head, rest })) = d.poll_event() else {
        panic!("no upgrade");
    };
    assert_eq!(head.status, 101);
    assert_eq!(head.headers[header::UPGRADE], "websocket");
    assert_eq!(rest, b"\x81\x02hi"[..]);
    assert!(matches!(d.poll_event(), Ok(None)));
    assert_eq!(d.pending_responses(), 0);
}

#[test]
fn successful_connect_is_an_upgrade() {
    assert_eq!(
        run(
            &[Method::CONNECT],
            b"HTTP/1.1 200 Connection Established\r\n\r\nSSH-2.0",
            false
        ),
        vec![Ev::Upgrade(200, b"SSH-2.0".to_vec())]
    );
}

fn error_of(bytes: &[u8]) -> Option<DecodeError> {
    match run(&get(), bytes, false).pop() {
        Some(Ev::Err(e)) => Some(e),
        _ => None,
    }
}

#[test]
fn malformed_status_lines_are_errors() {
    for bytes in [
        &b"HTTP/1.1 OK\r\n\r\n"[..],
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"<html>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
    ] {
        assert!(
            matches!(error_of(bytes), Some(DecodeError::Malformed(_))),
            "{:?}: {:?}",
            String::from_utf8_lossy(bytes),
            error_of(bytes)
        );
    }
    assert_eq!(
        error_of(b"HTTP/1.1 099 Low\r\n\r\n"),
        Some(DecodeError::InvalidStatus(99))
    );
}

#[test]
fn oversize_heads_are_errors() {
    let limits = Limits {
        max_head_len: 1024,
        ..Limits::default()
    };
    // Never-ending head: refused once the limit is buffered, without waiting for its end.
    let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
    while bytes.len() < 1024 {
        bytes.extend_from_slice(b"X-Filler: 0123456789\r\n");
    }
    assert_eq!(
        run_with(limits, &get(), &[&bytes], false).pop(),
        Some(Ev::Err(DecodeError::HeadTooLarge { limit: 1024 }))
    );
    // A complete head that is too long is refused as well.
    bytes.extend_from_slice(b"\r\n");
    assert_eq!(
        run_with(limits, &get(), &[&bytes], false).pop(),
        Some(Ev::Err(DecodeError::HeadTooLarge { limit: 1024 }))
    );
    // So is a trailer block.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    chunked.extend(
        std::iter::repeat_n(
            b"X-T: 0123456789012345678901234567890123456789\r\n".as_slice(),
            40,
        )
        .flatten(),
    );
    assert_eq!(
        run_with(limits, &get(), &[&chunked], false).pop(),
        Some(Ev::Err(DecodeError::HeadTooLarge { limit: 1024 }))
    );
}

#[test]
fn too_many_headers_is_an_error() {
    let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..101 {
        bytes.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    assert_eq!(
        error_of(&bytes),
        Some(DecodeError::TooManyHeaders { limit: 100 })
    );
}

#[test]
fn bad_chunks_are_errors() {
    let prefix = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (chunks, expected) in [
        (&b"zz\r\n"[..], DecodeError::InvalidChunkSize),
        (b"-5\r\n", DecodeError::InvalidChunkSize),
        (b"5\nhello\r\n", DecodeError::InvalidChunkSize),
        (b"1ffffffffffffffff\r\n", DecodeError::InvalidChunkSize),
        (b"5 junk\r\n", DecodeError::InvalidChunkSize),
        (b"5\r\nhelloXY", DecodeError::InvalidChunkEnd),
        (b"5\r\nhelloX", DecodeError::InvalidChunkEnd),
        (b"5\r\nhello\rX", DecodeError::InvalidChunkEnd),
    ] {
        let bytes = [&prefix[..], chunks].concat();
        assert_eq!(
            error_of(&bytes),
            Some(expected),
            "{:?}",
            String::from_utf8_lossy(chunks)
        );
    }
    let long_line = [&prefix[..], &[b'0'; 5000]].concat();
    assert_eq!(
        error_of(&long_line),
        Some(DecodeError::ChunkLineTooLong {
            limit: burrow_proto::http1::DEFAULT_MAX_CHUNK_LINE_LEN
        })
    );
}

#[test]
fn invalid_content_lengths_are_errors() {
    for value in [
        "-1",
        "+5",
        "5x",
        "0x10",
        "",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let bytes = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(
            error_of(bytes.as_bytes()),
            Some(DecodeError::InvalidContentLength),
            "{value:?}"
        );
    }
    assert_eq!(
        error_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        Some(DecodeError::ConflictingContentLength)
    );
    // Repeated equal values are one length.
    assert_eq!(
        run(
            &get(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
            false
        )
        .last(),
        Some(&Ev::End(true))
    );
    // The largest length is fine to announce.
    assert!(error_of(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n").is_none());
}

#[test]
fn content_length_with_transfer_encoding_is_rejected() {
    assert_eq!(
        error_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        Some(DecodeError::ConflictingFraming)
    );
}

#[test]
fn transfer_encoding_that_cannot_be_honoured_is_an_error() {
    assert!(matches!(
        error_of(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Some(DecodeError::InvalidTransferEncoding(_))
    ));
    assert!(matches!(
        error_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
        Some(DecodeError::InvalidTransferEncoding(_))
    ));
}

#[test]
fn response_without_a_request_is_an_error() {
    assert_eq!(
        run(&[], b"HTTP/1.1 408 Request Timeout\r\n\r\n", false),
        vec![Ev::Err(DecodeError::UnexpectedResponse)]
    );
}

#[test]
fn errors_are_sticky() {
    let mut d = ResponseDecoder::default();
    d.expect_response(Method::GET);
    d.push(b"nonsense\r\n\r\n");
    let first = d.poll_event().expect_err("malformed");
    d.push(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.poll_event().expect_err("still failed"), first);
}

/// A small deterministic generator, so the garbage test needs no extra crate and
/// replays the same inputs on every run.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_and_mutated_responses_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let seeds: Vec<&[u8]> = split_cases().into_iter().map(|(_, b, _)| b).collect();
    let methods = [Method::GET, Method::HEAD, Method::CONNECT, Method::POST];
    let limits = Limits {
        max_head_len: 512,
        max_headers: 8,
        max_chunk_line_len: 16,
    };
    for i in 0..20_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = (rng.next() % 200) as usize;
            let alphabet = b"HTP/1.0 2\r\n:;chunkedContent-Length\x00\xff";
            (0..len)
                .map(|_| {
                    if rng.next().is_multiple_of(2) {
                        alphabet[(rng.next() % alphabet.len() as u64) as usize]
                    } else {
                        rng.next() as u8
                    }
                })
                .collect()
        } else {
            let mut v = seeds[(rng.next() % seeds.len() as u64) as usize].to_vec();
            for _ in 0..(rng.next() % 4) {
                let at = (rng.next() % v.len() as u64) as usize;
                v[at] = rng.next() as u8;
            }
            v.truncate((rng.next() % (v.len() as u64 + 1)) as usize);
            v
        };
        let mut d = ResponseDecoder::new(limits);
        for _ in 0..(rng.next() % 3) {
            d.expect_response(methods[(rng.next() % 4) as usize].clone());
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = ((rng.next() % 17) as usize + 1).min(rest.len());
            d.push(&rest[..n]);
            rest = &rest[n..];
            while let Ok(Some(_)) = d.poll_event() {}
        }
        d.eof();
        for _ in 0..100 {
            if !matches!(d.poll_event(), Ok(Some(_))) {
                break;
            }
        }
    }
}
