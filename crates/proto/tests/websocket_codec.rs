//! The WebSocket client codec: RFC 6455's own examples, the handshake, fragmentation,
//! the closing handshake, protocol errors and garbage.

use burrow_proto::http1::{BodyFraming, ResponseDecoder, ResponseEvent, encode_request};
use burrow_proto::websocket::{
    CloseCode, Config, Handshake, HandshakeError, MAX_CONTROL_PAYLOAD, Message, Opcode,
    ProtocolError, SendError, WebSocket, accept_key, encode_frame,
};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, header};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Decodes `bytes` fed whole, and checks that feeding them in two pieces at every boundary,
/// and byte by byte, gives the same messages.
fn decode_all(config: Config, bytes: &[u8]) -> Vec<Result<Message, ProtocolError>> {
    let run = |chunks: &[&[u8]]| {
        let mut ws = WebSocket::new(config);
        let mut out = Vec::new();
        for chunk in chunks {
            ws.push(chunk);
            loop {
                match ws.poll_event() {
                    Ok(Some(m)) => out.push(Ok(m)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    };
    let whole = run(&[bytes]);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(run(&[a, b]), whole, "cut at {cut}");
    }
    if bytes.len() < 2000 {
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&bytewise), whole, "byte by byte");
    }
    whole
}

fn decode(bytes: &[u8]) -> Vec<Result<Message, ProtocolError>> {
    decode_all(Config::default(), bytes)
}

fn text(s: &str) -> Result<Message, ProtocolError> {
    Ok(Message::Text(s.into()))
}

// ---------------------------------------------------------------------------------------
// RFC 6455 section 5.7

#[test]
fn rfc_single_frame_unmasked_text() {
    assert_eq!(
        decode(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
        [text("Hello")]
    );
}

#[test]
fn rfc_single_frame_masked_text_encoding() {
    let mut ws = WebSocket::default();
    let mut buf = BytesMut::new();
    ws.send(&Message::Text("Hello".into()), MASK, &mut buf)
        .expect("open");
    assert_eq!(
        &buf[..],
        [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
}

#[test]
fn masked_frames_from_the_server_are_errors() {
    // The RFC's masked "Hello" is what a client sends; a server must not.
    assert_eq!(
        decode(&[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]),
        [Err(ProtocolError::MaskedFrame)]
    );
}

#[test]
fn rfc_fragmented_unmasked_text() {
    assert_eq!(
        decode(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]),
        [text("Hello")]
    );
}

#[test]
fn rfc_unmasked_ping_and_masked_pong() {
    assert_eq!(
        decode(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
        [Ok(Message::Ping(Bytes::from_static(b"Hello")))]
    );
    let mut buf = BytesMut::new();
    WebSocket::default()
        .send(&Message::Pong(Bytes::from_static(b"Hello")), MASK, &mut buf)
        .expect("open");
    assert_eq!(
        &buf[..],
        [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
}

#[test]
fn rfc_256_byte_binary_uses_a_16_bit_length() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut frame = vec![0x82, 0x7e, 0x01, 0x00];
    frame.extend_from_slice(&payload);
    assert_eq!(
        decode(&frame),
        [Ok(Message::Binary(payload.clone().into()))]
    );

    let mut buf = BytesMut::new();
    encode_frame(true, Opcode::Binary, &payload, [0; 4], &mut buf);
    assert_eq!(&buf[..4], [0x82, 0xfe, 0x01, 0x00]);
    assert_eq!(
        &buf[8..],
        &payload[..],
        "a zero mask leaves the payload as is"
    );
}

#[test]
fn rfc_64_kib_binary_uses_a_64_bit_length() {
    let payload = vec![0xa5; 65_536];
    let mut frame = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
    frame.extend_from_slice(&payload);
    assert_eq!(
        decode(&frame),
        [Ok(Message::Binary(payload.clone().into()))]
    );

    let mut buf = BytesMut::new();
    encode_frame(true, Opcode::Binary, &payload, MASK, &mut buf);
    assert_eq!(
        &buf[..14],
        [
            0x82, 0xff, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x37, 0xfa, 0x21, 0x3d
        ]
    );
    assert_eq!(buf.len(), 14 + 65_536);
}

#[test]
fn length_encodings_switch_at_126_and_65536() {
    for (len, header) in [
        (125, &[0x82, 0x80 | 125][..]),
        (126, &[0x82, 0xfe, 0, 126]),
        (65_535, &[0x82, 0xfe, 0xff, 0xff]),
        (65_536, &[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let mut buf = BytesMut::new();
        encode_frame(true, Opcode::Binary, &vec![0; len], [1, 2, 3, 4], &mut buf);
        assert_eq!(&buf[..header.len()], header, "{len}");
        assert_eq!(buf.len(), header.len() + 4 + len);
    }
}

// ---------------------------------------------------------------------------------------
// Handshake

/// RFC 6455 section 1.3's example. (The value is sometimes misquoted as
/// "s3pPLMBiTxaQ9kYGzzhOzRbxk+o="; the RFC and SHA-1 agree on this one.)
#[test]
fn rfc_handshake_accept_example() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

/// The RFC section 1.3 key is base64 of these 16 bytes ("the sample nonce").
const RFC_NONCE: [u8; 16] = *b"the sample nonce";

fn response(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = StatusCode::from_u16(status).expect("status");
    for (name, value) in headers {
        parts.headers.append(
            header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    parts
}

fn good_response(extra: &[(&str, &str)]) -> http::response::Parts {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ];
    headers.extend_from_slice(extra);
    response(101, &headers)
}

#[test]
fn handshake_request_golden_bytes() {
    let handshake = Handshake::new(
        "ws://server.example.com/chat".parse().expect("uri"),
        RFC_NONCE,
    )
    .protocol("chat")
    .protocol("superchat")
    .header(
        header::ORIGIN,
        HeaderValue::from_static("http://example.com"),
    );
    assert_eq!(handshake.key(), "dGhlIHNhbXBsZSBub25jZQ==");
    let request = handshake.request().expect("valid");
    let mut buf = BytesMut::new();
    encode_request(&request, BodyFraming::Empty, &mut buf).expect("encodes");
    assert_eq!(
        std::str::from_utf8(&buf).expect("ascii"),
        "GET /chat HTTP/1.1\r\n\
         host: server.example.com\r\n\
         origin: http://example.com\r\n\
         upgrade: websocket\r\n\
         connection: Upgrade\r\n\
         sec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-protocol: chat, superchat\r\n\
         \r\n"
    );
}

#[test]
fn handshake_accepts_the_rfc_response_and_an_offered_protocol() {
    let handshake = Handshake::new("ws://h/chat".parse().expect("uri"), RFC_NONCE)
        .protocol("chat")
        .protocol("superchat");
    assert_eq!(handshake.accept(&good_response(&[])), Ok(None));
    assert_eq!(
        handshake.accept(&good_response(&[("Sec-WebSocket-Protocol", "chat")])),
        Ok(Some("chat".into()))
    );
    // Header values compare case-insensitively where RFC 6455 says so.
    let shouty = response(
        101,
        &[
            ("Upgrade", "WebSocket"),
            ("Connection", "keep-alive, UPGRADE"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ],
    );
    assert_eq!(handshake.accept(&shouty), Ok(None));
}

#[test]
fn handshake_refuses_bad_responses() {
    let handshake = Handshake::new("ws://h/".parse().expect("uri"), RFC_NONCE).protocol("chat");
    let accept = ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    let cases = [
        (
            response(200, &[]),
            HandshakeError::NotSwitchingProtocols(StatusCode::OK),
        ),
        (
            response(101, &[("Connection", "Upgrade"), accept]),
            HandshakeError::MissingUpgrade,
        ),
        (
            response(101, &[("Upgrade", "websocket"), accept]),
            HandshakeError::MissingConnectionUpgrade,
        ),
        (
            response(
                101,
                &[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                ],
            ),
            HandshakeError::WrongAccept,
        ),
        (
            response(101, &[("Upgrade", "websocket"), ("Connection", "Upgrade")]),
            HandshakeError::WrongAccept,
        ),
        (
            good_response(&[("Sec-WebSocket-Protocol", "superchat")]),
            HandshakeError::UnofferedProtocol("superchat".into()),
        ),
        (
            good_response(&[("Sec-WebSocket-Extensions", "permessage-deflate")]),
            HandshakeError::UnofferedExtension,
        ),
    ];
    for (response, expected) in cases {
        assert_eq!(handshake.accept(&response), Err(expected));
    }
}

#[test]
fn handshake_refuses_invalid_requests() {
    let uri: http::Uri = "ws://h/".parse().expect("uri");
    assert_eq!(
        Handshake::new(uri.clone(), [0; 16])
            .protocol("two words")
            .request()
            .map(|_| ()),
        Err(HandshakeError::InvalidProtocol("two words".into()))
    );
    assert_eq!(
        Handshake::new(uri.clone(), [0; 16])
            .protocol("a")
            .protocol("a")
            .request()
            .map(|_| ()),
        Err(HandshakeError::InvalidProtocol("a".into()))
    );
    assert_eq!(
        Handshake::new(uri, [0; 16])
            .header(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static("permessage-deflate")
            )
            .request()
            .map(|_| ()),
        Err(HandshakeError::ReservedHeader(
            header::SEC_WEBSOCKET_EXTENSIONS
        ))
    );
}

#[test]
fn handshake_through_the_http1_codec_hands_over_the_first_frames() {
    let handshake = Handshake::new("ws://h/".parse().expect("uri"), RFC_NONCE);
    let mut http = ResponseDecoder::default();
    http.expect_response(Method::GET);
    http.push(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi\x89",
    );
    let Ok(Some(ResponseEvent::Upgrade { head, rest })) = http.poll_event() else {
        panic!("no upgrade");
    };
    assert_eq!(handshake.accept(&head), Ok(None));
    let mut ws = WebSocket::default();
    ws.push(&rest);
    assert_eq!(ws.poll_event(), Ok(Some(Message::Text("hi".into()))));
    assert_eq!(ws.poll_event(), Ok(None));
    ws.push(&[0x00]);
    assert_eq!(ws.poll_event(), Ok(Some(Message::Ping(Bytes::new()))));
}

// ---------------------------------------------------------------------------------------
// Messages

#[test]
fn control_frames_interleave_with_fragments() {
    let frames = [
        &[0x02, 0x02, 1, 2][..],                     // binary, not final
        &[0x89, 0x01, b'p'],                         // ping
        &[0x00, 0x01, 3],                            // continuation
        &[0x8a, 0x00],                               // pong
        &[0x80, 0x02, 4, 5],                         // final continuation
        &[0x81, 0x00],                               // empty text
        &[0x01, 0x00, 0x00, 0x00, 0x80, 0x01, b'x'], // empty fragments
    ]
    .concat();
    assert_eq!(
        decode(&frames),
        [
            Ok(Message::Ping(Bytes::from_static(b"p"))),
            Ok(Message::Pong(Bytes::new())),
            Ok(Message::Binary(Bytes::from_static(&[1, 2, 3, 4, 5]))),
            text(""),
            text("x"),
        ]
    );
}

#[test]
fn utf8_split_across_fragments_is_valid() {
    // "é€" is c3 a9 e2 82 ac; cut inside both characters.
    let frames = [
        &[0x01, 0x01, 0xc3][..],
        &[0x00, 0x02, 0xa9, 0xe2],
        &[0x80, 0x02, 0x82, 0xac],
    ]
    .concat();
    assert_eq!(decode(&frames), [text("é€")]);
}

#[test]
fn invalid_utf8_is_an_error() {
    for frames in [
        vec![0x81, 0x02, 0xc3, 0x28],
        vec![0x81, 0x01, 0xff],
        // Fails at the first fragment, before the message ends.
        vec![0x01, 0x02, 0xed, 0xa0],
        // A character cut by the last fragment's end.
        vec![0x01, 0x01, 0xe2, 0x80, 0x01, 0x82],
    ] {
        assert_eq!(
            decode(&frames),
            [Err(ProtocolError::InvalidUtf8)],
            "{frames:x?}"
        );
    }
    assert_eq!(
        ProtocolError::InvalidUtf8.close_code(),
        CloseCode::INVALID_PAYLOAD
    );
}

#[test]
fn oversize_messages_are_errors_before_their_payload_arrives() {
    let config = Config {
        max_message_size: 10,
    };
    let limit = || Err(ProtocolError::MessageTooLarge { limit: 10 });
    // The header alone is refused.
    assert_eq!(decode_all(config, &[0x82, 0x0b]), [limit()]);
    assert_eq!(
        decode_all(config, &[0x82, 0x7f, 0, 0, 1, 0, 0, 0, 0, 0]),
        [limit()]
    );
    // Fragments count together.
    assert_eq!(
        decode_all(config, &[0x02, 0x06, 0, 0, 0, 0, 0, 0, 0x80, 0x05]),
        [limit()]
    );
    // Exactly the limit is fine.
    assert_eq!(
        decode_all(config, &[0x82, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        [Ok(Message::Binary(vec![0; 10].into()))]
    );
}

#[test]
fn reserved_bits_and_opcodes_are_errors() {
    assert_eq!(
        decode(&[0xc1, 0x00]),
        [Err(ProtocolError::ReservedBits(0x40))]
    );
    assert_eq!(
        decode(&[0x91, 0x00]),
        [Err(ProtocolError::ReservedBits(0x10))]
    );
    for op in [0x3, 0x7, 0xb, 0xf] {
        assert_eq!(
            decode(&[0x80 | op, 0x00]),
            [Err(ProtocolError::ReservedOpcode(op))]
        );
    }
    assert_eq!(
        decode(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        [Err(ProtocolError::InvalidLength)]
    );
}

#[test]
fn long_or_fragmented_control_frames_are_errors() {
    let mut ping = vec![0x89, 0x7e, 0x00, 0x7e];
    ping.extend_from_slice(&[0; 126]);
    assert_eq!(decode(&ping), [Err(ProtocolError::ControlTooLong(126))]);
    assert_eq!(
        decode(&[0x09, 0x00]),
        [Err(ProtocolError::FragmentedControl)]
    );
    assert_eq!(
        decode(&[0x08, 0x02, 0x03, 0xe8]),
        [Err(ProtocolError::FragmentedControl)]
    );
    let mut max = vec![0x8a, 125];
    max.extend_from_slice(&[7; 125]);
    assert_eq!(decode(&max), [Ok(Message::Pong(vec![7; 125].into()))]);
}

#[test]
fn fragment_sequence_violations_are_errors() {
    assert_eq!(
        decode(&[0x80, 0x01, b'x']),
        [Err(ProtocolError::UnexpectedContinuation)]
    );
    assert_eq!(
        decode(&[0x01, 0x01, b'a', 0x81, 0x01, b'b']),
        [Err(ProtocolError::ExpectedContinuation)]
    );
}

#[test]
fn close_frames_decode_code_and_reason() {
    assert_eq!(
        decode(&[0x88, 0x00]),
        [Ok(Message::Close {
            code: None,
            reason: String::new()
        })]
    );
    assert_eq!(
        decode(&[0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']),
        [Ok(Message::Close {
            code: Some(CloseCode::NORMAL),
            reason: "bye".into()
        })]
    );
    assert_eq!(
        decode(&[0x88, 0x01, 0x03]),
        [Err(ProtocolError::InvalidClosePayload)]
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        let [hi, lo] = code.to_be_bytes();
        assert_eq!(
            decode(&[0x88, 0x02, hi, lo]),
            [Err(ProtocolError::InvalidCloseCode(code))]
        );
    }
    assert_eq!(
        decode(&[0x88, 0x03, 0x03, 0xe8, 0xff]),
        [Err(ProtocolError::InvalidUtf8)]
    );
}

#[test]
fn closing_handshake_state() {
    let mut ws = WebSocket::default();
    let mut buf = BytesMut::new();
    ws.push(&[0x88, 0x02, 0x03, 0xe9]);
    assert_eq!(
        ws.poll_event(),
        Ok(Some(Message::Close {
            code: Some(CloseCode::GOING_AWAY),
            reason: String::new()
        }))
    );
    assert!(ws.close_received() && !ws.close_sent() && !ws.is_closed());
    // Anything after the server's Close is an error.
    ws.push(&[0x81, 0x00]);
    assert_eq!(ws.poll_event(), Err(ProtocolError::FrameAfterClose));

    // Echo the close; after that nothing more may be sent.
    ws.send(
        &Message::Close {
            code: Some(CloseCode::GOING_AWAY),
            reason: String::new(),
        },
        MASK,
        &mut buf,
    )
    .expect("first close");
    assert_eq!(&buf[..], [0x88, 0x82, 0x37, 0xfa, 0x21, 0x3d, 0x34, 0x13]);
    assert!(ws.is_closed());
    let sent = buf.len();
    assert_eq!(
        ws.send(&Message::Text("late".into()), MASK, &mut buf),
        Err(SendError::Closed)
    );
    assert_eq!(
        ws.send(&Message::Ping(Bytes::new()), MASK, &mut buf),
        Err(SendError::Closed)
    );
    assert_eq!(buf.len(), sent);
}

#[test]
fn frames_keep_arriving_after_this_side_sent_close() {
    let mut ws = WebSocket::default();
    let mut buf = BytesMut::new();
    ws.send(
        &Message::Close {
            code: None,
            reason: String::new(),
        },
        [0; 4],
        &mut buf,
    )
    .expect("close");
    assert_eq!(&buf[..], [0x88, 0x80, 0, 0, 0, 0]);
    assert!(ws.close_sent() && !ws.is_closed());
    ws.push(&[0x82, 0x01, 9, 0x88, 0x00]);
    assert_eq!(ws.poll_event(), Ok(Some(Message::Binary(vec![9].into()))));
    assert!(matches!(ws.poll_event(), Ok(Some(Message::Close { .. }))));
    assert!(ws.is_closed());
}

#[test]
fn invalid_sends_are_refused_without_writing() {
    let mut ws = WebSocket::default();
    let mut buf = BytesMut::new();
    assert_eq!(
        ws.send(&Message::Ping(vec![0; 126].into()), MASK, &mut buf),
        Err(SendError::ControlTooLong(126))
    );
    for code in [1005u16, 1006, 999, 2000] {
        assert_eq!(
            ws.send(
                &Message::Close {
                    code: Some(CloseCode(code)),
                    reason: String::new()
                },
                MASK,
                &mut buf
            ),
            Err(SendError::InvalidCloseCode(CloseCode(code)))
        );
    }
    assert_eq!(
        ws.send(
            &Message::Close {
                code: None,
                reason: "why".into()
            },
            MASK,
            &mut buf
        ),
        Err(SendError::ReasonWithoutCode)
    );
    assert!(buf.is_empty());
    assert!(!ws.close_sent());
}

#[test]
fn long_close_reasons_are_cut_at_a_char_boundary() {
    let mut ws = WebSocket::default();
    let mut buf = BytesMut::new();
    ws.send(
        &Message::Close {
            code: Some(CloseCode::NORMAL),
            reason: "é".repeat(100),
        },
        [0; 4],
        &mut buf,
    )
    .expect("close");
    // 2 bytes of code and 61 "é" (122 bytes): 123 would split a character.
    assert_eq!(buf[1], 0x80 | 124);
    assert_eq!(buf.len(), 2 + 4 + 124);
    assert!(2 + 4 + MAX_CONTROL_PAYLOAD >= buf.len());
}

#[test]
fn sent_messages_decode_back_after_unmasking() {
    let messages = [
        Message::Text("héllo wörld".into()),
        Message::Binary(Bytes::from(vec![0xaa; 70_000])),
        Message::Ping(Bytes::from_static(b"1")),
        Message::Pong(Bytes::new()),
        Message::Close {
            code: Some(CloseCode(4001)),
            reason: "app".into(),
        },
    ];
    let mut ws = WebSocket::default();
    let mut server_view = WebSocket::default();
    for (i, message) in messages.iter().enumerate() {
        let mut buf = BytesMut::new();
        let mask = [i as u8, 0x5a, 0xc3, 0x99];
        ws.send(message, mask, &mut buf).expect("open");
        // Unmask as a server would, then clear the mask bit and drop the key.
        let len_end = match buf[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let key: [u8; 4] = buf[len_end..len_end + 4].try_into().expect("4 bytes");
        assert_eq!(key, mask);
        let mut frame = buf[..len_end].to_vec();
        frame[1] &= 0x7f;
        frame.extend(
            buf[len_end + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4]),
        );
        server_view.push(&frame);
        assert_eq!(server_view.poll_event(), Ok(Some(message.clone())));
    }
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
fn random_and_mutated_frames_never_panic() {
    let mut rng = XorShift(0x853c_49e6_748f_ea9b);
    let seeds: [&[u8]; 5] = [
        &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        &[
            0x01, 0x03, 0x48, 0x65, 0x6c, 0x89, 0x00, 0x80, 0x02, 0x6c, 0x6f,
        ],
        &[0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e'],
        &[0x82, 0x7e, 0x00, 0x04, 1, 2, 3, 4],
        &[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2],
    ];
    let config = Config {
        max_message_size: 4096,
    };
    for i in 0..30_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = (rng.next() % 64) as usize;
            (0..len)
                .map(|j| {
                    let b = rng.next() as u8;
                    // Keep most frames unmasked with small lengths, so payloads get parsed.
                    if j % 2 == 1 { b & 0x7f } else { b }
                })
                .collect()
        } else {
            let mut v = seeds[(rng.next() % seeds.len() as u64) as usize].to_vec();
            for _ in 0..(rng.next() % 3) {
                let at = (rng.next() % v.len() as u64) as usize;
                v[at] = rng.next() as u8;
            }
            v.truncate((rng.next() % (v.len() as u64 + 1)) as usize);
            v
        };
        let mut ws = WebSocket::new(config);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = ((rng.next() % 9) as usize + 1).min(rest.len());
            ws.push(&rest[..n]);
            rest = &rest[n..];
            while let Ok(Some(_)) = ws.poll_event() {}
        }
    }
}
