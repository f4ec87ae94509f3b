//! Parsing tracefs `format` files (`/sys/kernel/tracing/events/<system>/<event>/format`).

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("line {line}: malformed field description `{text}`")]
    MalformedField { line: usize, text: String },
    #[error("no `name:` line")]
    MissingName,
}

/// One `field:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub offset: u16,
    pub size: u16,
}

/// A parsed `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    pub name: String,
    pub id: Option<u32>,
    /// Event fields, without the `common_*` header.
    pub fields: Vec<FormatField>,
    pub print_fmt: String,
}

impl TracepointFormat {
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        let mut print_fmt = String::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("name:") {
                name = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("ID:") {
                id = rest.trim().parse().ok();
            } else if let Some(rest) = line.strip_prefix("print fmt:") {
                print_fmt = rest.trim().to_owned();
            } else if line.starts_with("field:") {
                let field = parse_field(line).ok_or_else(|| FormatError::MalformedField {
                    line: index + 1,
                    text: line.to_owned(),
                })?;
                if !field.name.starts_with("common_") {
                    fields.push(field);
                }
            }
        }
        Ok(Self {
            name: name.ok_or(FormatError::MissingName)?,
            id,
            fields,
            print_fmt,
        })
    }

    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The value → name table of `__print_symbolic(REC->field, { 0, "A" }, ...)`
    /// in the print format: how the kernel itself names an enum field's values.
    pub fn symbolic_values(&self, field: &str) -> BTreeMap<u64, String> {
        let marker = format!("__print_symbolic(REC->{field},");
        let Some(start) = self.print_fmt.find(&marker) else {
            return BTreeMap::new();
        };
        let mut table = BTreeMap::new();
        let mut rest = &self.print_fmt[start + marker.len()..];
        // Entries look like `{ 12, "TCP_ABORT_ON_LINGER" }`; the call ends at the first `)`
        // outside an entry.
        while let Some(open) = rest.find(['{', ')']) {
            if rest.as_bytes()[open] == b')' {
                break;
            }
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let entry = &rest[open + 1..open + close];
            if let Some((value, label)) = entry.split_once(',') {
                let label = label.trim().trim_matches('"');
                if let Ok(v) = parse_c_int(value.trim()) {
                    table.insert(v, label.to_owned());
                }
            }
            rest = &rest[open + close + 1..];
        }
        table
    }
}

fn parse_c_int(text: &str) -> Result<u64, std::num::ParseIntError> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
}

/// Field names are C identifiers; anything else is a damaged line.
fn is_c_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `field:const void * skaddr;<TAB>offset:8;<TAB>size:8;<TAB>signed:0;`
fn parse_field(line: &str) -> Option<FormatField> {
    let mut parts = line.split(';').map(str::trim);
    let decl = parts.next()?.strip_prefix("field:")?.trim();
    let mut offset = None;
    let mut size = None;
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.parse().ok();
        }
    }
    // The name follows the C type (`const void * skaddr`, `__u8 saddr[4]`).
    let split = decl.rfind([' ', '*'])?;
    let raw_name = decl[split + 1..].trim();
    let name = raw_name.split_once('[').map_or(raw_name, |(name, _)| name);
    if !is_c_identifier(name) {
        return None;
    }
    Some(FormatField {
        name: name.to_owned(),
        offset: offset?,
        size: size?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer (`tracer/fuzz/regressions/tracepoint_format/`):
    /// a damaged `field:` line gave a field named with control characters
    /// and blanks, which no lookup could match and which changed when
    /// written back. Field names are C identifiers, else the line is an error.
    #[test]
    fn fuzz_regression_field_names_are_c_identifiers() {
        let found = include_str!(
            "../../fuzz/regressions/tracepoint_format/crash-fcceb1590c308152bc7e5992df8dbf951c2c2a8b"
        );
        assert!(matches!(
            TracepointFormat::parse(found),
            Err(FormatError::MalformedField { .. })
        ));
        let good = "name: x\nformat:\n\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
                    \tfield:__u8 saddr_v6[16];\toffset:16;\tsize:16;\tsigned:0;\n";
        let names: Vec<_> = TracepointFormat::parse(good)
            .unwrap()
            .fields
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["skaddr", "saddr_v6"]);
        let blank = "name: x\nformat:\n\tfield:int a\rb;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert!(TracepointFormat::parse(blank).is_err());
    }
}
