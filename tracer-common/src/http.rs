//! The HTTP status line the egress peek looks for, matched by the same code
//! in the kernel program and in userspace (where it is fuzzed:
//! `tracer/fuzz/`).

/// Bytes of a segment's payload the peek reads: `HTTP/1.1 503` is 12.
pub const STATUS_LINE_PREFIX: usize = 12;

/// The status code of a payload starting with an HTTP/1.x status line
/// (`HTTP/1.1 503 Service Unavailable`), read from its first
/// [`STATUS_LINE_PREFIX`] bytes; `None` when they are not one. The minor
/// version and the code must be ASCII digits: anything else is some other
/// protocol's bytes, not a status (`HTTP/1.1 4:3` is not a 503).
#[inline(always)]
pub fn status_code(head: &[u8; STATUS_LINE_PREFIX]) -> Option<u32> {
    if &head[..7] != b"HTTP/1." || !head[7].is_ascii_digit() || head[8] != b' ' {
        return None;
    }
    Some(digit(head[9])? * 100 + digit(head[10])? * 10 + digit(head[11])?)
}

#[inline(always)]
fn digit(b: u8) -> Option<u32> {
    b.is_ascii_digit().then(|| (b - b'0') as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(text: &[u8]) -> Option<u32> {
        status_code(text[..STATUS_LINE_PREFIX].try_into().unwrap())
    }

    #[test]
    fn status_lines_envoy_writes() {
        assert_eq!(status(b"HTTP/1.1 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    /// Found by the fuzzer (`tracer/fuzz/regressions/http_status_line/`):
    /// non-digits were read as digits wrapped around `'0'`, so `4:3`
    /// (4·100 + 10·10 + 3) counted as a 503, and any byte passed as the
    /// minor version.
    #[test]
    fn fuzz_regression_non_digits_are_not_a_status() {
        let found = include_bytes!(
            "../../tracer/fuzz/regressions/http_status_line/crash-ae939eda0ac1ad736b23e94ce26f354c46cc90cb"
        );
        assert_eq!(status(found), None);
        assert_eq!(status(b"HTTP/1.1 4:3 x"), None);
        assert_eq!(status(b"HTTP/1.1 0b3 x"), None);
        assert_eq!(status(b"HTTP/1.x 503 x"), None);
    }
}
