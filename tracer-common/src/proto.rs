//! What a connection's payload says about requests, for the protocols whose
//! keep-alive traffic is not requests: HTTP/2 in cleartext (h2c) and TLS.
//! The same code runs in the kernel programs (on the first bytes of a
//! segment) and in userspace tests.
//!
//! - The protocol is told once per connection from its first payload: the
//!   HTTP/2 client preface `PRI * HTTP/2.0` or a TLS handshake record
//!   (`0x16 0x03`) with a ClientHello; it is kept as a [`flags`] bit.
//! - On h2c, a write whose frames are all control frames (SETTINGS, PING,
//!   WINDOW_UPDATE, PRIORITY, RST_STREAM, GOAWAY) is not a request.
//! - On TLS the content is encrypted (TLS 1.3 hides even the record type),
//!   so the record size speaks: an alert such as `close_notify` is a record
//!   of at most [`TLS_ALERT_MAX_RECORD`] bytes (24 in TLS 1.3 with AES-GCM or
//!   ChaCha20, 31 in TLS 1.2 with AES-GCM), and no request is that small.
//!
//! [`flags`]: crate::event::flags

/// Bytes of a segment's payload the detection reads.
pub const HEAD: usize = 9;

/// An HTTP/2 frame header: 3-byte length, type, flags, 4-byte stream id.
pub const H2_FRAME_HEADER: usize = 9;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest frame a peer may send before SETTINGS raise it (RFC 9113 §4.2);
/// a larger length in a frame header means the bytes are something else.
pub const H2_DEFAULT_MAX_FRAME: u32 = 16_384;

/// Frame types (RFC 9113 §6).
pub mod h2_type {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

/// A TLS record this size or smaller is an alert (`close_notify` included),
/// never a request.
pub const TLS_ALERT_MAX_RECORD: u64 = 31;

/// What the first payload of a connection says it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The HTTP/2 client preface (h2c: HTTP/2 without TLS).
    H2Preface,
    /// A TLS handshake record carrying a ClientHello.
    TlsClientHello,
    Other,
}

/// The protocol a payload starting with `head` opens.
#[inline(always)]
pub fn start(head: &[u8; HEAD]) -> Start {
    if head == b"PRI * HTT" {
        return Start::H2Preface;
    }
    // ContentType handshake, version 3.x, length, HandshakeType client_hello.
    if head[0] == 0x16 && head[1] == 0x03 && head[2] <= 0x04 && head[5] == 0x01 {
        return Start::TlsClientHello;
    }
    Start::Other
}

/// An HTTP/2 frame header's length and type, if the bytes can be one: a
/// known type on the stream kind and with the length RFC 9113 §6 gives it.
/// The per-type rules keep the kernel's lookups off segments that merely
/// start with small numbers (zeros, length-prefixed binary protocols).
#[inline(always)]
pub fn h2_frame(header: &[u8; H2_FRAME_HEADER]) -> Option<(u32, u8)> {
    let len = (header[0] as u32) << 16 | (header[1] as u32) << 8 | header[2] as u32;
    let kind = header[3];
    // The stream id's top bit is reserved (sent as 0).
    if len > H2_DEFAULT_MAX_FRAME || header[5] & 0x80 != 0 {
        return None;
    }
    let on_stream = (header[5] as u32) << 24
        | (header[6] as u32) << 16
        | (header[7] as u32) << 8
        | header[8] as u32
        != 0;
    let valid = match kind {
        h2_type::DATA | h2_type::HEADERS | h2_type::CONTINUATION => on_stream,
        h2_type::PRIORITY => on_stream && len == 5,
        h2_type::RST_STREAM => on_stream && len == 4,
        h2_type::SETTINGS => !on_stream && len.is_multiple_of(6),
        h2_type::PUSH_PROMISE => on_stream && len >= 4,
        h2_type::PING => !on_stream && len == 8,
        h2_type::GOAWAY => !on_stream && len >= 8,
        h2_type::WINDOW_UPDATE => len == 4,
        _ => false,
    };
    valid.then_some((len, kind))
}

/// A frame that carries no request or response: connection upkeep.
#[inline(always)]
pub fn h2_is_control(kind: u8) -> bool {
    matches!(
        kind,
        h2_type::PRIORITY
            | h2_type::RST_STREAM
            | h2_type::SETTINGS
            | h2_type::PING
            | h2_type::GOAWAY
            | h2_type::WINDOW_UPDATE
    )
}

/// Frames a segment's walk reads at most (a control write holds a few:
/// SETTINGS ack + WINDOW_UPDATE + PING ack); more means data.
pub const H2_MAX_FRAMES: usize = 4;

/// What a segment of an h2c connection carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Segment {
    /// Only control frames, each whole in the segment.
    pub control_only: bool,
    pub goaway: bool,
    pub rst_stream: bool,
}

/// Walks the frames of a segment of `len` bytes; `header(off)` reads the
/// 9 bytes at `off` (the kernel loads them from the packet). A segment that
/// does not start on a frame, or holds more than [`H2_MAX_FRAMES`], is data.
#[inline(always)]
pub fn h2_segment(
    len: usize,
    mut header: impl FnMut(usize) -> Option<[u8; H2_FRAME_HEADER]>,
) -> H2Segment {
    let mut seg = H2Segment::default();
    let mut off = 0usize;
    for _ in 0..H2_MAX_FRAMES {
        if off + H2_FRAME_HEADER > len {
            break;
        }
        let Some(bytes) = header(off) else {
            return H2Segment::default();
        };
        let Some((frame_len, kind)) = h2_frame(&bytes) else {
            return H2Segment::default();
        };
        seg.goaway |= kind == h2_type::GOAWAY;
        seg.rst_stream |= kind == h2_type::RST_STREAM;
        if !h2_is_control(kind) {
            return H2Segment {
                control_only: false,
                ..seg
            };
        }
        off += H2_FRAME_HEADER + frame_len as usize;
    }
    seg.control_only = off == len;
    seg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn walk(bytes: &[u8]) -> H2Segment {
        h2_segment(bytes.len(), |off| {
            bytes.get(off..off + H2_FRAME_HEADER)?.try_into().ok()
        })
    }

    #[test]
    fn starts() {
        assert_eq!(
            start(H2_PREFACE[..HEAD].try_into().unwrap()),
            Start::H2Preface
        );
        // TLS 1.2 record header, then handshake type 1 (ClientHello).
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
        assert_eq!(start(&hello), Start::TlsClientHello);
        let server_hello = [0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76];
        assert_eq!(start(&server_hello), Start::Other);
        assert_eq!(start(b"GET / HTT"), Start::Other);
    }

    #[test]
    fn control_writes_are_not_requests() {
        let ping = frame(h2_type::PING, 0, 0, &[0; 8]);
        let ping_ack = frame(h2_type::PING, 1, 0, &[7; 8]);
        let settings_ack = frame(h2_type::SETTINGS, 1, 0, &[]);
        let window = frame(h2_type::WINDOW_UPDATE, 0, 0, &[0, 0, 0x40, 0]);
        assert!(walk(&ping).control_only);
        let several = [settings_ack.clone(), window.clone(), ping_ack].concat();
        assert!(walk(&several).control_only);

        let headers = frame(h2_type::HEADERS, 5, 1, &[0x82, 0x86, 0x84, 0x41]);
        assert!(!walk(&headers).control_only);
        assert!(!walk(&[window.clone(), headers].concat()).control_only);
        // A frame cut by the segment's end, or too many frames: data.
        assert!(!walk(&ping[..12]).control_only);
        assert!(
            !walk(
                &[
                    window.clone(),
                    window.clone(),
                    window.clone(),
                    window.clone(),
                    window
                ]
                .concat()
            )
            .control_only
        );
        // Not HTTP/2 at all.
        assert_eq!(
            walk(b"HTTP/1.1 503 Service Unavailable"),
            H2Segment::default()
        );
    }

    #[test]
    fn goaway_and_reset_are_seen() {
        let goaway = frame(h2_type::GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]);
        let rst = frame(h2_type::RST_STREAM, 0, 3, &[0, 0, 0, 8]);
        let seg = walk(&[rst, goaway].concat());
        assert_eq!(
            seg,
            H2Segment {
                control_only: true,
                goaway: true,
                rst_stream: true
            }
        );
    }

    #[test]
    fn frame_headers_of_other_protocols_are_not_frames() {
        assert_eq!(h2_frame(b"GET / HTT"), None);
        assert_eq!(h2_frame(&[0x17, 0x03, 0x03, 0, 0x13, 0, 0, 0, 0]), None);
        assert_eq!(
            h2_frame(&[0, 0, 8, 6, 0, 0, 0, 0, 0]),
            Some((8, h2_type::PING))
        );
    }

    #[test]
    fn frame_headers_break_no_stream_or_length_rule() {
        // Zeros (the bench's payload) would be DATA on stream 0.
        assert_eq!(h2_frame(&[0; H2_FRAME_HEADER]), None);
        let header = |kind: u8, len: u8, stream: u8| [0, 0, len, kind, 0, 0, 0, 0, stream];
        assert_eq!(
            h2_frame(&header(h2_type::DATA, 0, 1)),
            Some((0, h2_type::DATA))
        );
        assert_eq!(h2_frame(&header(h2_type::HEADERS, 9, 0)), None);
        assert_eq!(h2_frame(&header(h2_type::PING, 8, 1)), None);
        assert_eq!(h2_frame(&header(h2_type::PING, 4, 0)), None);
        assert_eq!(
            h2_frame(&header(h2_type::SETTINGS, 12, 0)),
            Some((12, h2_type::SETTINGS))
        );
        assert_eq!(h2_frame(&header(h2_type::SETTINGS, 7, 0)), None);
        assert_eq!(h2_frame(&header(h2_type::RST_STREAM, 4, 0)), None);
        assert_eq!(h2_frame(&header(h2_type::GOAWAY, 7, 0)), None);
        assert_eq!(
            h2_frame(&header(h2_type::WINDOW_UPDATE, 4, 0)),
            Some((4, h2_type::WINDOW_UPDATE))
        );
        assert_eq!(
            h2_frame(&header(h2_type::WINDOW_UPDATE, 4, 5)),
            Some((4, h2_type::WINDOW_UPDATE))
        );
        assert_eq!(h2_frame(&header(10, 0, 0)), None);
        // A length-prefixed binary record: 4-byte length 0x20, then bytes.
        assert_eq!(h2_frame(&[0, 0, 0, 0x20, 0, 0, 0, 1, 0]), None);
    }
}
