//! Robustness of DNS payload handling: real answers captured from dnsmasq
//! (`tests/data/dns/`) and broken ones, mutated at random (bit flips, cuts,
//! splices, length and pointer corruption) and fed to the parser and to the
//! pipeline the daemon runs. Nothing may panic; bad input is counted.
//!
//! Bounded: `CONNTRACER_FUZZ_SECONDS` (default 5) and 200 000 inputs at most.
//! For a long run: `CONNTRACER_FUZZ_SECONDS=600 cargo test --release --test dns_fuzz`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tracer::{
    analysis::AnalysisConfig,
    dns::{parse::tcp_message, parse_response},
    kernel::reset_reasons::ResetReasons,
    metadata::{NetnsNames, Pods},
    pipeline::Pipeline,
};
use tracer_common::event::{DNS_CAPTURE_MAX, DnsEvent, Tuple};

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dns");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("seed corpus")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    seeds.sort();
    // Hostile shapes: a pointer to itself, a label longer than the packet,
    // an answer count far beyond the data, an rdlength past the end.
    let header = |an: u8| vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, an, 0, 0, 0, 0];
    let mut self_pointer = header(0);
    self_pointer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut long_label = header(0);
    long_label.extend_from_slice(&[63, b'a', b'b']);
    let mut many_answers = header(255);
    many_answers.extend_from_slice(&[1, b'x', 0, 0, 1, 0, 1]);
    let mut bad_rdlength = header(1);
    bad_rdlength.extend_from_slice(&[
        1, b'x', 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0xff, 0xff, 1, 2,
    ]);
    for (name, bytes) in [
        ("self-pointer", self_pointer),
        ("long-label", long_label),
        ("many-answers", many_answers),
        ("bad-rdlength", bad_rdlength),
    ] {
        seeds.push((name.to_owned(), bytes));
    }
    seeds
}

#[test]
fn real_answers_parse() {
    let seeds = seeds();
    let get = |n: &str| &seeds.iter().find(|(name, _)| name == n).unwrap().1;
    let a = parse_response(get("a-api.lab.example.bin")).unwrap();
    assert_eq!(
        (a.name.as_str(), a.addresses.len(), a.rcode.as_str()),
        ("api.lab.example", 1, "NoError")
    );
    let c = parse_response(get("a-cname-www.lab.example.bin")).unwrap();
    assert_eq!(
        c.cnames,
        vec![("www.lab.example".to_owned(), "api.lab.example".to_owned())]
    );
    assert_eq!(
        c.addresses, a.addresses,
        "the CNAME chain ends at api's address"
    );
    let v6 = parse_response(get("aaaa-v6.lab.example.bin")).unwrap();
    assert_eq!(
        v6.addresses,
        vec!["fd00::7".parse::<std::net::IpAddr>().unwrap()]
    );
    let empty = parse_response(get("aaaa-empty-api.lab.example.bin")).unwrap();
    assert!(empty.addresses.is_empty());
    let nx = parse_response(get("nxdomain-or-refused.bin")).unwrap();
    assert!(nx.addresses.is_empty() && nx.rcode != "NoError", "{nx:?}");
    let tcp = get("tcp-a-api.lab.example.bin");
    assert_eq!(
        parse_response(tcp_message(tcp).unwrap()).unwrap().addresses,
        a.addresses
    );
    for name in ["self-pointer", "long-label", "many-answers", "bad-rdlength"] {
        assert!(parse_response(get(name)).is_err(), "{name} must not parse");
    }
}

/// xorshift64*: deterministic, so a failure can be replayed from its iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => b.truncate(rng.below(b.len() + 1)),
            3 => {
                let i = rng.below(b.len() + 1);
                b.splice(i..i, other[..rng.below(other.len() + 1)].iter().copied());
            }
            4 if b.len() > 1 => {
                // A compression pointer anywhere, often at itself.
                let i = rng.below(b.len() - 1);
                b[i] = 0xc0;
                b[i + 1] = if rng.below(2) == 0 {
                    i as u8
                } else {
                    rng.next() as u8
                };
            }
            5 if b.len() >= 12 => {
                // Section counts.
                let i = 4 + 2 * rng.below(4);
                b[i] = rng.next() as u8;
                b[i + 1] = rng.next() as u8;
            }
            _ => b.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
        }
    }
    b.truncate(4096);
    b
}

fn event(payload: &[u8], tcp: bool, rng: &mut Rng) -> DnsEvent {
    let mut data = [0u8; DNS_CAPTURE_MAX];
    let mut bytes = Vec::new();
    if tcp {
        bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    let captured = bytes.len().min(DNS_CAPTURE_MAX);
    data[..captured].copy_from_slice(&bytes[..captured]);
    DnsEvent {
        ts_ns: 1,
        netns_cookie: rng.next(),
        tuple: Tuple::default(),
        uid: 0,
        protocol: if tcp { 6 } else { 17 },
        _pad: [0; 3],
        netns: 0,
        _pad2: 0,
        len: bytes.len() as u32,
        // Sometimes claim a different capture length than the data has.
        captured: if rng.below(8) == 0 {
            rng.next() as u32
        } else {
            captured as u32
        },
        data,
    }
}

#[test]
fn mutated_payloads_never_panic_and_are_counted() {
    let seconds: u64 = std::env::var("CONNTRACER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let seeds = seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pipeline = Pipeline::new(
        AnalysisConfig::default(),
        Pods::new(Box::new(NetnsNames::new())),
        1024,
        ResetReasons::default(),
    );
    let mut observations = Vec::new();
    let (mut inputs, mut parsed) = (0u64, 0u64);
    while inputs < 200_000 && Instant::now() < deadline {
        let (_, seed) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, other);
        parsed += u64::from(parse_response(&input).is_ok());
        let _ = tcp_message(&input);
        let ev = event(&input, rng.below(2) == 0, &mut rng);
        pipeline.process_dns(&ev, &mut observations);
        observations.clear();
        inputs += 1;
    }
    let skipped = pipeline.skipped.dns_malformed + pipeline.skipped.dns_truncated;
    eprintln!("dns fuzz: {inputs} inputs, {parsed} parsed, {skipped} skipped by the pipeline");
    assert!(inputs >= 1_000, "too few inputs in {seconds}s: {inputs}");
    assert!(
        pipeline.skipped.dns_malformed > 0 && pipeline.skipped.dns_truncated > 0,
        "bad input is counted"
    );
    assert!(parsed > 0, "mutations keep some inputs valid");
}
