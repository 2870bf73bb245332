//! The bodies of the fuzz targets, one function per target, so that the libFuzzer
//! binaries (`fuzz_targets/*.rs`, nightly) and the stable corpus replay (`cargo test
//! --no-default-features`, the tests below) run exactly the same code.
//!
//! Every function must return normally for any input; a panic is a bug in
//! portcullis-core (a parser that panics, or a broken invariant asserted here).

use portcullis_core::webhook::{self, github, hmac, standard, stripe, Scheme, Secrets};
use std::borrow::Cow;
use std::time::Duration;

/// The body of one fuzz target.
pub type Target = fn(&[u8]);

/// Every target: its name (= the binary, = its corpus directory) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("standard_signature", standard_signature),
    ("stripe_signature", stripe_signature),
    ("github_signature", github_signature),
    ("hmac_signature", hmac_signature),
    ("secrets", secrets),
    ("verify", verify),
];

/// Header values reach the core as `&str`; non-UTF-8 input is fuzzed through the lossy
/// conversion so those bytes still exercise the parsers.
fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `webhook-signature`: space-separated `v1,<base64>` entries.
pub fn standard_signature(data: &[u8]) {
    if let Ok(tags) = standard::parse_signatures(&text(data)) {
        assert!(!tags.is_empty(), "Ok with no v1 signature");
    }
}

/// `Stripe-Signature`: `t=...,v1=...` items.
pub fn stripe_signature(data: &[u8]) {
    let value = text(data);
    if let Ok(header) = stripe::parse_header(&value) {
        assert!(!header.v1.is_empty(), "Ok with no v1 signature");
        assert!(header.timestamp >= 0, "negative t accepted");
        assert_eq!(
            header.timestamp_text.parse::<i64>().ok(),
            Some(header.timestamp)
        );
    }
}

/// `X-Hub-Signature-256: sha256=<hex>`.
pub fn github_signature(data: &[u8]) {
    let _ = github::parse_signature(&text(data));
}

/// `X-Signature: sha256=<hex>` and `X-Signature-Timestamp`.
pub fn hmac_signature(data: &[u8]) {
    let value = text(data);
    let _ = hmac::parse_signature(&value);
    if let Ok(t) = hmac::parse_timestamp_header(&value) {
        assert!(t >= 0, "negative timestamp accepted");
    }
}

/// The comma-separated secret list from the environment.
pub fn secrets(data: &[u8]) {
    let secrets = Secrets::parse(&text(data));
    for scheme in SCHEMES {
        let _ = secrets.validate(scheme);
    }
    assert_eq!(secrets.is_empty(), secrets.signing().is_none());
}

const SCHEMES: [Scheme; 4] = [
    Scheme::Standard,
    Scheme::Github,
    Scheme::Stripe,
    Scheme::HmacSha256,
];

/// The whole of `verify` over hostile headers, clock and tolerance, then a sign→verify
/// round trip of the same body.
///
/// Layout: 8 bytes of `now` (little endian), 1 byte picking the scheme and tolerance,
/// then up to three header values and the body, separated by `\n`. An empty value is a
/// missing header.
pub fn verify(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let mut now_bytes = [0u8; 8];
    now_bytes.copy_from_slice(&data[..8]);
    let now = i64::from_le_bytes(now_bytes);
    let selector = data[8];
    let scheme = SCHEMES[usize::from(selector % 4)];
    let tolerance = match selector >> 2 {
        0 => Duration::ZERO,
        1 => Duration::MAX,
        n => Duration::from_secs(u64::from(n) * 60),
    };
    let mut parts = data[9..].splitn(4, |&b| b == b'\n');
    let values: Vec<Cow<'_, str>> = (0..3).map(|_| text(parts.next().unwrap_or(b""))).collect();
    let body = parts.next().unwrap_or(b"");
    let headers = |name: &str| -> Option<&str> {
        let slot = match name {
            standard::ID => 0,
            standard::TIMESTAMP | hmac::TIMESTAMP => 1,
            standard::SIGNATURE => 2,
            github::SIGNATURE | stripe::SIGNATURE | hmac::SIGNATURE => 0,
            _ => return None,
        };
        Some(values[slot].as_ref()).filter(|v| !v.is_empty())
    };
    let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,second");
    if let Err(e) = webhook::verify(scheme, &secrets, &headers, body, now, tolerance) {
        assert!(!e.code().is_empty());
        assert!(!e.to_string().is_empty());
    }

    // What we sign ourselves must verify, whatever the body and the clock.
    let timestamp = now & i64::MAX;
    let id = values[0].as_ref();
    let id = Some(id).filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()));
    let signed = match webhook::sign(scheme, "second", body, id, timestamp) {
        Ok(headers) => headers,
        Err(e) => panic!("sign failed on a valid secret and timestamp: {e}"),
    };
    let lookup = |name: &str| -> Option<&str> {
        signed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    match webhook::verify(scheme, &secrets, &lookup, body, timestamp, Duration::ZERO) {
        Ok(v) => assert_eq!(v.secret_index, 1),
        Err(e) => panic!("{scheme:?}: own signature did not verify: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use std::path::Path;

    /// Replays every file of `corpus/<target>/` (seeds, and whatever fuzzing added)
    /// through its target: the stable-toolchain stand-in for a fuzz run, and a
    /// regression test for committed crash inputs.
    #[test]
    fn corpus_replays_without_panics() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let mut total = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
            let mut count = 0;
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file");
                // Every prefix too: cheap extra coverage of truncated headers.
                for end in 0..=data.len() {
                    target(&data[..end]);
                }
                count += 1;
            }
            assert!(count > 0, "corpus/{name} is empty");
            println!("{name}: {count} inputs replayed");
            total += count;
        }
        println!("{total} corpus inputs replayed");
    }
}
