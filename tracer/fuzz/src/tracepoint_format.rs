//! Tracefs `format` files: parsed, rendered back and parsed again, then
//! turned into the record layouts the programs read.

use std::fmt::Write as _;

use tracer::kernel::{format::TracepointFormat, layouts};
use tracer_common::config::Field;

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(format) = TracepointFormat::parse(text) else {
        return;
    };
    assert!(format.fields.iter().all(|f| !f.name.starts_with("common_")));
    assert_eq!(
        TracepointFormat::parse(&render(&format)).as_ref(),
        Ok(&format),
        "parse → render → parse"
    );
    for field in ["reason", "state", "newstate"] {
        let _ = format.symbolic_values(field);
    }
    // Every layout field is the format's field of that name, at its size.
    let same = |name: &str, field: Field| {
        if field == Field::ABSENT {
            return;
        }
        let f = format.field(name).expect("a layout field exists");
        assert_eq!((field.offset, field.size), (f.offset, f.size), "{name}");
    };
    if let Ok(l) = layouts::state_change(&format) {
        same("skaddr", l.skaddr);
        same("oldstate", l.oldstate);
        same("newstate", l.newstate);
        same("protocol", l.protocol);
        same("saddr", l.tuple.saddr);
        same("daddr", l.tuple.daddr);
        same("sport", l.tuple.sport);
        same("dport", l.tuple.dport);
        same("family", l.tuple.family);
    }
    if let Ok(l) = layouts::send_reset(&format) {
        same("skbaddr", l.skbaddr);
        same("skaddr", l.skaddr);
        same("state", l.state);
        same("reason", l.reason);
    }
    if let Ok(l) = layouts::msg_length(&format) {
        same("sk", l.sk);
        same("family", l.family);
        same("protocol", l.protocol);
        same("ret", l.ret);
        same("flags", l.flags);
    }
    let _ = layouts::sock(&format);
    let _ = layouts::net_receive(&format);
}

/// A format file as tracefs writes it.
fn render(format: &TracepointFormat) -> String {
    let mut out = format!("name: {}\n", format.name);
    if let Some(id) = format.id {
        let _ = writeln!(out, "ID: {id}");
    }
    out.push_str("format:\n");
    for f in &format.fields {
        let _ = writeln!(
            out,
            "\tfield:int {};\toffset:{};\tsize:{};\tsigned:0;",
            f.name, f.offset, f.size
        );
    }
    let _ = writeln!(out, "\nprint fmt: {}", format.print_fmt);
    out
}
