//! The status line the kernel's egress peek matches (the same function the
//! eBPF program runs), against a plain reading of RFC 9112's status line.

use tracer_common::http::{STATUS_LINE_PREFIX, status_code};

pub fn check(data: &[u8]) {
    let Some(head) = data.first_chunk::<STATUS_LINE_PREFIX>() else {
        return;
    };
    assert_eq!(status_code(head), reference(head), "head {:?}", head);
}

/// `HTTP/1.<digit> <three digits>`.
fn reference(head: &[u8; STATUS_LINE_PREFIX]) -> Option<u32> {
    let text = std::str::from_utf8(head).ok()?;
    let version = text.strip_prefix("HTTP/1.")?;
    let (minor, code) = version.split_at_checked(1)?;
    let code = code.strip_prefix(' ')?;
    if !minor.bytes().all(|b| b.is_ascii_digit()) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}
