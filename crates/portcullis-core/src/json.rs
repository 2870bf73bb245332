//! Writing JSON text by hand, for the lines the gateway writes on every request (problem
//! bodies, access-log lines): the same bytes `serde_json` writes, without building a
//! `Value` first.

use std::fmt::Write as _;

/// Appends `n` in decimal (as JSON writes an unsigned integer), through `itoa`: `fmt`
/// costs several times more for the handful of integers every response carries.
pub fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends `v` as compact JSON, as `serde_json` writes it.
pub fn push_value(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => push_u64(out, u),
            (None, Some(i)) => out.push_str(itoa::Buffer::new().format(i)),
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::String(s) => push_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, k);
                out.push(':');
                push_value(out, item);
            }
            out.push('}');
        }
    }
}

/// The index of the first byte JSON must escape (`"`, `\\`, below 0x20), eight bytes
/// at a time: every problem body and log line is mostly clean text.
fn first_escape(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Nonzero in a byte's high bit iff some byte of `x` is below `n` (n <= 0x80): exact
    // for "is there one", not for "which one", so the bytewise scan below finds it.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut offset = 0;
    for chunk in b.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let hits = below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            | below(x, 0x20);
        if hits != 0 {
            break;
        }
        offset += 8;
    }
    b[offset..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| p + offset)
}

/// Appends `s` as a JSON string literal (RFC 8259 escapes).
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// Appends the inside of a JSON string literal holding `s` (escaped, no quotes), for a
/// string written in pieces.
pub fn push_escaped(out: &mut String, s: &str) {
    let Some(first) = first_escape(s.as_bytes()) else {
        out.push_str(s);
        return;
    };
    let mut start = 0;
    for (i, b) in s.bytes().enumerate().skip(first) {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain ascii text that is longer than eight bytes".into(),
            "é ü 日本 🦀 and \u{7f}".into(),
        ];
        // Every escaped byte at every offset of a 20-byte string (the word scan's
        // boundaries), and every byte value once.
        for special in [
            '"', '\\', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{0}', '\u{1f}',
        ] {
            for at in 0..20 {
                let mut s: String = "abcdefghijklmnopqrst".into();
                s.insert(at, special);
                cases.push(s);
            }
        }
        cases.push((0u8..=127).map(char::from).collect());
        // Multi-byte characters (bytes >= 0x80) next to escapes, across word boundaries.
        cases.push("é\"ü\\日\n🦀\u{80}\u{ff}\t\u{10ffff}".repeat(5));
        cases.push((0x80u32..0x800).filter_map(char::from_u32).collect());
        cases.push(" !#$%&'()*+,-./0123456789:;<=>?@[]^_`{|}~".repeat(3));
        for s in cases {
            let mut ours = String::new();
            push_str(&mut ours, &s);
            assert_eq!(ours, serde_json::to_string(&s).unwrap_or_default(), "{s:?}");
        }
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        for v in [
            serde_json::json!(0),
            serde_json::json!(u64::MAX),
            serde_json::json!(-17),
            serde_json::json!(i64::MIN),
            serde_json::json!(1.5),
            serde_json::json!([1, -2, 3.25, "x"]),
        ] {
            let mut ours = String::new();
            push_value(&mut ours, &v);
            assert_eq!(ours, v.to_string());
        }
    }
}
