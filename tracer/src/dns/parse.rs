//! DNS responses, parsed with hickory-proto (never by hand). Anything that
//! is not a well-formed response is an error to count and skip.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType},
    rr::RData,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The queried name, lowercase, without the trailing dot.
    pub name: String,
    /// `NoError`, `NXDomain`, `ServFail`, ...
    pub rcode: String,
    /// Addresses the name resolved to (through any CNAME chain).
    pub addresses: Vec<IpAddr>,
    /// Smallest TTL among the address records (seconds).
    pub ttl: u32,
    /// The CNAME chain, in order: (alias, target).
    pub cnames: Vec<(String, String)>,
    /// The server truncated the answer (TC bit).
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    #[error("not a response")]
    NotResponse,
    #[error("response without a question")]
    NoQuestion,
}

fn name(n: &hickory_proto::rr::Name) -> String {
    n.to_lowercase().to_ascii().trim_end_matches('.').to_owned()
}

pub fn parse_response(payload: &[u8]) -> Result<DnsAnswer, DnsError> {
    let msg = Message::from_vec(payload).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if msg.metadata.message_type != MessageType::Response {
        return Err(DnsError::NotResponse);
    }
    let query = msg.queries.first().ok_or(DnsError::NoQuestion)?;
    let qname = name(&query.name);
    // Follow the CNAME chain from the question; bounded by the answer count.
    let mut chain = vec![qname.clone()];
    let mut cnames = Vec::new();
    for _ in 0..msg.answers.len() {
        let current = chain.last().expect("non-empty").clone();
        let next = msg.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if name(&r.name) == current => Some(name(&target.0)),
            _ => None,
        });
        match next {
            Some(target) if !chain.contains(&target) => {
                cnames.push((current, target.clone()));
                chain.push(target);
            }
            _ => break,
        }
    }
    let mut addresses = Vec::new();
    let mut ttl = u32::MAX;
    for r in &msg.answers {
        let ip = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        if chain.contains(&name(&r.name)) && !addresses.contains(&ip) {
            addresses.push(ip);
            ttl = ttl.min(r.ttl);
        }
    }
    addresses.sort();
    Ok(DnsAnswer {
        name: qname,
        rcode: format!("{:?}", msg.metadata.response_code),
        addresses,
        ttl: if ttl == u32::MAX { 0 } else { ttl },
        cnames,
        truncated: msg.metadata.truncation,
    })
}

/// A DNS-over-TCP segment starts with a two-byte length; returns the message
/// if the segment holds it whole.
pub fn tcp_message(segment: &[u8]) -> Option<&[u8]> {
    let len = u16::from_be_bytes([*segment.first()?, *segment.get(1)?]) as usize;
    segment.get(2..2 + len)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A response for `name` with a CNAME to `target` and A records (TTL 30).
    pub fn response(name: &str, target: Option<&str>, ips: &[[u8; 4]]) -> Vec<u8> {
        fn encode_name(out: &mut Vec<u8>, n: &str) {
            for label in n.split('.') {
                out.push(label.len() as u8);
                out.extend_from_slice(label.as_bytes());
            }
            out.push(0);
        }
        let answers = ips.len() + usize::from(target.is_some());
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, answers as u8, 0, 0, 0, 0];
        encode_name(&mut m, name);
        m.extend_from_slice(&[0, 1, 0, 1]);
        let owner = target.unwrap_or(name);
        if let Some(t) = target {
            encode_name(&mut m, name);
            m.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 30]);
            let mut rdata = Vec::new();
            encode_name(&mut rdata, t);
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(&rdata);
        }
        for ip in ips {
            encode_name(&mut m, owner);
            m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
            m.extend_from_slice(ip);
        }
        m
    }

    #[test]
    fn a_records_through_a_cname() {
        let msg = response(
            "api.example.com",
            Some("lb-1.cloud.example"),
            &[[203, 0, 113, 7], [203, 0, 113, 8]],
        );
        let a = parse_response(&msg).unwrap();
        assert_eq!(a.name, "api.example.com");
        assert_eq!(
            a.addresses,
            vec![
                "203.0.113.7".parse::<IpAddr>().unwrap(),
                "203.0.113.8".parse().unwrap()
            ]
        );
        assert_eq!(
            a.cnames,
            vec![("api.example.com".into(), "lb-1.cloud.example".into())]
        );
        assert_eq!(
            (a.ttl, a.rcode.as_str(), a.truncated),
            (30, "NoError", false)
        );
    }

    #[test]
    fn broken_messages_are_errors_not_panics() {
        let good = response("x.example", None, &[[10, 0, 0, 1]]);
        assert!(parse_response(&[]).is_err());
        assert!(
            parse_response(&good[..good.len() - 3]).is_err(),
            "cut inside a record"
        );
        let mut query = good.clone();
        query[2] = 0x01; // QR bit cleared: a query
        assert_eq!(parse_response(&query), Err(DnsError::NotResponse));
        // A compression pointer pointing at itself.
        let mut looped = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_response(&looped).is_err());
        // Every prefix of a good message: never a panic.
        for cut in 0..good.len() {
            let _ = parse_response(&good[..cut]);
        }
    }

    #[test]
    fn tcp_framing() {
        let msg = response("x.example", None, &[[10, 0, 0, 1]]);
        let mut seg = (msg.len() as u16).to_be_bytes().to_vec();
        seg.extend_from_slice(&msg);
        assert_eq!(tcp_message(&seg), Some(&msg[..]));
        assert_eq!(
            tcp_message(&seg[..seg.len() - 1]),
            None,
            "split across segments"
        );
    }
}
