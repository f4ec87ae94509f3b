//! DNS answers as the capture hands them over (any bytes from port 53).

use hickory_proto::op::Message;
use tracer::dns::{DnsAnswer, parse::tcp_message, parse_response};

pub fn check(data: &[u8]) {
    let parsed = parse_response(data);
    // The TCP form (two-byte length first) yields the same message.
    if let Ok(len) = u16::try_from(data.len()) {
        let mut segment = len.to_be_bytes().to_vec();
        segment.extend_from_slice(data);
        assert_eq!(tcp_message(&segment), Some(data));
    }
    let Ok(answer) = parsed else { return };
    well_formed(&answer);
    // Parse → re-encode → parse: the same answer.
    let message = Message::from_vec(data).expect("parse_response accepted it");
    if let Ok(bytes) = message.to_vec() {
        let again = parse_response(&bytes).expect("a re-encoded answer parses");
        assert_eq!(again, answer, "re-encoding changed the answer");
    }
}

fn well_formed(answer: &DnsAnswer) {
    assert!(!answer.name.ends_with('.') || answer.name == ".");
    assert!(!answer.name.bytes().any(|b| b.is_ascii_uppercase()));
    assert!(answer.addresses.is_sorted(), "addresses sorted");
    assert!(
        answer.addresses.windows(2).all(|w| w[0] != w[1]),
        "addresses distinct"
    );
    if answer.addresses.is_empty() {
        assert_eq!(answer.ttl, 0, "no address, no TTL");
    }
    // The CNAME chain starts at the question, is linked, and has no loop.
    let mut current = &answer.name;
    let mut seen = vec![current];
    for (alias, target) in &answer.cnames {
        assert_eq!(alias, current, "chain linked");
        assert!(!seen.contains(&target), "chain loops");
        seen.push(target);
        current = target;
    }
}
