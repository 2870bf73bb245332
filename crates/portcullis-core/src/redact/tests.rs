use super::*;
use proptest::prelude::*;
use serde_json::json;

fn names() -> Vec<String> {
    vec!["token".into(), "api_key".into()]
}

fn mask() -> Redactor {
    Redactor::from_config(
        &LogConfig {
            redaction: Redaction::Mask,
            ..LogConfig::default()
        },
        b"k",
    )
}

fn hash() -> Redactor {
    Redactor::from_config(&LogConfig::default(), b"test-key")
}

// === the first version's contract ===

#[test]
fn query_values_are_replaced_by_name() {
    let r = Redactor::new(Redaction::Mask, b"k", &names());
    assert_eq!(
        r.path("/a?token=s3cret&x=1&API_KEY=zz"),
        "/a?token=[REDACTED]&x=1&API_KEY=[REDACTED]"
    );
    assert_eq!(r.path("/a"), "/a");
    assert_eq!(r.path("/a?token"), "/a?token");
    assert_eq!(r.path("/a?token="), "/a?token=");
    assert_eq!(r.path("/a?tokens=1&xtoken=2"), "/a?tokens=1&xtoken=2");
    assert_eq!(
        r.path("/a?token=x#frag"),
        "/a?token=[REDACTED]#frag",
        "a fragment ends the value"
    );
}

#[test]
fn hashes_are_keyed_and_stable() {
    let a = Redactor::new(Redaction::Hash, b"key-a", &names());
    let b = Redactor::new(Redaction::Hash, b"key-b", &names());
    assert_eq!(a.replace("127.0.0.1"), a.replace("127.0.0.1"));
    assert_ne!(a.replace("127.0.0.1"), b.replace("127.0.0.1"));
    assert_ne!(a.replace("127.0.0.1"), a.replace("127.0.0.2"));
    assert!(a.replace("x").starts_with("h:") && a.replace("x").len() == HASH_LEN);
    assert!(is_replacement(&a.replace("x")));
    assert!(!a.path("/p?token=s3cret").contains("s3cret"));
}

#[test]
fn query_values_are_scanned_too() {
    let r = Redactor::new(Redaction::Mask, b"k", &names());
    assert_eq!(
        r.path("/a?email=ann@example.com&card=4111111111111111&page=2"),
        "/a?email=[REDACTED]&card=[REDACTED]&page=2"
    );
}

// === corpus ===

/// Secrets and personal data, each with the part that must not survive.
const SECRETS: &[(&str, &str)] = &[
    ("email", "ann.smith+tag@example.co.uk"),
    ("email, upper case", "Bob.Jones@Mail.Example.COM"),
    ("email, url-encoded", "bob%40example.org"),
    ("bearer, opaque", "Bearer 9f8e7d6c5b4a39281706"),
    ("bearer, lower case", "bearer AbCdEfGhIjKlMnOp"),
    (
        "bearer, jwt",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz",
    ),
    ("basic", "Basic dXNlcjpwYXNzd29yZA=="),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ),
    (
        "jwt, alg none",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
    ),
    ("card, visa", "4111111111111111"),
    ("card, spaced", "4242 4242 4242 4242"),
    ("card, dashed", "5555-5555-5555-4444"),
    ("card, amex", "378282246310005"),
    ("card, discover", "6011111111111117"),
    ("card, 19 digits", "6250941006528599016"),
    ("aws key id", "AKIAIOSFODNN7EXAMPLE"),
    ("aws session key id", "ASIAY34FZKBOKMUTVV7A"),
    ("stripe live", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("stripe test", "sk_test_51Hx0aBCdEfGhIjKlMnOpQrSt"),
    ("stripe restricted", "rk_live_51Hx0aBCdEfGhIjKlMnOp"),
    ("stripe webhook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("github", "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
    (
        "github fine-grained",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    ),
    (
        "slack bot",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    ),
    ("slack app", "xapp-1-A0123456789-1234567890123-abcdef0123"),
    ("gitlab", "glpat-Ab1Cd2Ef3Gh4Ij5Kl6Mn"),
    ("google", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
    (
        "sendgrid",
        "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",
    ),
    ("npm", "npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
    ("hugging face", "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ01234567"),
    (
        "openai",
        "sk-proj-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv",
    ),
];

/// The part of a secret that must be gone (the scheme word may stay).
fn core(secret: &str) -> &str {
    for scheme in ["Bearer ", "bearer ", "Basic "] {
        if let Some(rest) = secret.strip_prefix(scheme) {
            return rest;
        }
    }
    secret
}

/// Where secrets turn up in log strings.
const CONTEXTS: &[&str] = &[
    "{}",
    "/v1/users/{}/profile",
    "/v1/search?q={}&page=2",
    "x-debug: {}",
    "upstream refused credentials {}: 401 Unauthorized",
    "error=\"{}\", retrying",
    "{\"detail\":\"{}\"}",
    "line one\nvalue {}\nline three",
];

/// Secrets that only make sense after their key name.
const KEYED: &[(&str, &str)] = &[
    (
        "aws_secret_access_key = {}",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "\"SecretAccessKey\": \"{}\"",
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    ),
    (
        "AWS_SECRET_ACCESS_KEY={}",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("GET /login?password={}&user=ann", "hunter2"),
    ("GET /cb?code=1&access_token={}", "ya29-abcdef"),
    ("GET /hook?Signature={}", "t=1,v1=abc"),
    ("cookie: {}", "session=abc123; theme=dark"),
    (
        "Set-Cookie: {}",
        "sid=31d4d96e407aad42; Path=/; Secure; HttpOnly",
    ),
    (
        "authorization: Digest {}",
        "username=\"ann\", response=\"6629fae4\"",
    ),
    ("{\"x-api-key\": \"{}\"}", "k-8f2a91"),
    ("headers: {\"Proxy-Authorization\": \"{}\"}", "pa55w0rd"),
    ("authorization: Bearer {}", "opaque"),
];

#[test]
fn corpus_secrets_do_not_survive() {
    let mut checked = 0;
    for r in [mask(), hash()] {
        for (kind, secret) in SECRETS {
            for ctx in CONTEXTS {
                let line = ctx.replace("{}", secret);
                let out = r.redact_str(&line);
                assert!(
                    !out.contains(core(secret)),
                    "{kind} survived in {line:?}: {out:?}"
                );
                assert!(
                    matches!(out, Cow::Owned(_)),
                    "{kind}: nothing replaced in {line:?}"
                );
                assert_eq!(r.redact_str(&out), out, "{kind}: not idempotent");
                checked += 1;
            }
        }
        for (ctx, secret) in KEYED {
            let line = ctx.replace("{}", secret);
            let out = r.redact_str(&line);
            assert!(
                !out.contains(secret),
                "{secret} survived in {line:?}: {out:?}"
            );
            assert_eq!(r.redact_str(&out), out, "{line}: not idempotent");
            checked += 1;
        }
    }
    assert!(checked > 500);
}

#[test]
fn corpus_shapes_of_the_output() {
    let r = mask();
    let cases = [
        (
            "GET /v1/users/ann@example.com/orders?token=abc&page=2",
            "GET /v1/users/[REDACTED]/orders?token=[REDACTED]&page=2",
        ),
        (
            "auth failed for Bearer 9f8e7d6c5b4a39281706 (expired)",
            "auth failed for Bearer [REDACTED] (expired)",
        ),
        (
            "authorization: Bearer abc.def-1\r\naccept: */*",
            "authorization: Bearer [REDACTED]\r\naccept: */*",
        ),
        (
            "charge 4242-4242-4242-4242 declined, order 4242424242424241",
            "charge [REDACTED] declined, order 4242424242424241",
        ),
        (
            "cards 4111 1111 1111 1111 2024 and 4111111111111111",
            "cards [REDACTED] 2024 and [REDACTED]",
        ),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY key AKIAIOSFODNN7EXAMPLE",
            "aws_secret_access_key=[REDACTED] key [REDACTED]",
        ),
        (
            "git clone https://ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789@github.com/o/r",
            "git clone https://[REDACTED]@github.com/o/r",
        ),
        (
            "WWW-Authenticate: Bearer realm=\"api\", error=\"invalid_token\"",
            "WWW-Authenticate: Bearer realm=\"api\", error=\"invalid_token\"",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(r.redact_str(input), want, "{input}");
    }
}

/// Text that must come back untouched (and borrowed).
const CLEAN: &[&str] = &[
    "order 4111111111111112 shipped",
    "order 4000-1234-1234-1235",
    "invoice 5105105105105101 is not a card number",
    "550e8400-e29b-41d4-a716-446655440000",
    "123e4567-e89b-12d3-a456-426614174000",
    "request 00000000-0000-4000-8000-000000000000",
    "40001234-5678-4000-8abc-def012345678",
    "/users/40001234-5678-4000-8abc-def012345678/orders?id=40001234-5678-4000-8abc-def012345678",
    "2026-11-23T09:13:19.123Z",
    "2026-11-23 09:13:19,123 INFO started",
    "1732354399123",
    "ts=1700000000000 took 4111 ms",
    "client 192.168.1.20 via 10.0.0.1:8080",
    "client 2001:db8::1 port 443",
    "phone +1 415-555-2671",
    "GET /api/v1/orders/12345?page=2&per_page=50 200",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "the email field is required",
    "mention @ann and user@localhost",
    "Bearer of bad news",
    "Bearer token missing",
    "Basic authentication required",
    "the basic plan",
    "sk_live_ keys go in the vault; ghp_ tokens too",
    "task_live_1234567890abcdef and disk-abcdefghijklmnopqrstuvwxyz0123",
    "eyJ is how JSON starts in base64",
    "?keyboard=1&monkey=2&tokens=3",
    "x-api-key header is required",
    "cookie:",
    "authorization: [REDACTED]",
    "token h:0123456789abcdef",
    "AKIA is an AWS prefix; AKIAIOSFODNN7EXAMPLEXYZ is too long",
    "version 1.2.3 build 20240101",
    "résumé naïve 日本語 🙂",
    "",
];

#[test]
fn corpus_clean_text_survives() {
    for r in [mask(), hash()] {
        for line in CLEAN {
            let out = r.redact_str(line);
            assert!(
                matches!(out, Cow::Borrowed(_)),
                "{line:?} was changed to {out:?}"
            );
        }
    }
    // The invoice and order numbers above really fail Luhn.
    for n in ["4111111111111112", "4000123412341235", "5105105105105101"] {
        let digits: Vec<u8> = n.bytes().map(|c| c - b'0').collect();
        assert!(!scan::luhn(&digits) || !n.starts_with(['2', '3', '4', '5', '6']));
    }
}

#[test]
fn every_listed_prefix_is_detected() {
    let r = mask();
    for p in scan::PREFIXES {
        let prefix = std::str::from_utf8(p.text).unwrap();
        let key = format!("{prefix}{}", "a1B2".repeat(p.min / 4 + 1));
        assert_eq!(r.redact_str(&format!("k={key} ")), "k=[REDACTED] ", "{key}");
        // `sk-ant-` and `sk-proj-` keys are also `sk-` keys, with their own minimum.
        let generic = scan::PREFIXES
            .iter()
            .any(|o| o.text != p.text && p.text.starts_with(o.text));
        if !generic {
            let short = format!("{prefix}{}", "a".repeat(p.min - 1));
            assert_eq!(r.redact_str(&short), short, "{short} is too short");
        }
    }
}

#[test]
fn prefixes_are_grouped_by_first_byte() {
    // The scan finds a byte's prefixes as one contiguous range.
    for (k, p) in scan::PREFIXES.iter().enumerate() {
        let later = scan::PREFIXES[k..]
            .iter()
            .skip_while(|q| q.text[0] == p.text[0])
            .any(|q| q.text[0] == p.text[0]);
        assert!(!later, "{:?} is not grouped", std::str::from_utf8(p.text));
    }
}

#[test]
fn detectors_follow_the_configured_patterns() {
    let r = Redactor::with_rules(Redaction::Mask, b"k", &[], &[], &[RedactPattern::Email]);
    assert_eq!(
        r.redact_str("ann@example.com 4111111111111111 AKIAIOSFODNN7EXAMPLE"),
        "[REDACTED] 4111111111111111 AKIAIOSFODNN7EXAMPLE"
    );
    let none = Redactor::with_rules(Redaction::Mask, b"k", &[], &[], &[]);
    assert_eq!(
        none.redact_str("ann@example.com?token=1"),
        "ann@example.com?token=1"
    );
}

// === hashing ===

#[test]
fn one_secret_one_hash_everywhere() {
    let r = hash();
    let token = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let h = r.replace(token);
    assert!(r.redact_str(&format!("/pay/{token}")).contains(&h));
    assert!(r.redact_str(&format!("key {token}: bad")).contains(&h));
    assert!(r.redact_str(&format!("Bearer {token}")).contains(&h));
    assert!(r
        .redact_str(&format!("authorization: Bearer {token}"))
        .contains(&h));
    assert!(r
        .redact_header("Authorization", &format!("Bearer {token}"))
        .contains(&h));
    assert!(r.redact_str(&format!("/x?token={token}")).contains(&h));
    let mut v = json!({ "msg": format!("got {token}"), "x-api-key": token });
    r.redact_json(&mut v);
    assert_eq!(v["x-api-key"], json!(h));
    assert!(v["msg"].as_str().is_some_and(|m| m.contains(&h)));

    // One card, one hash, however it is grouped; one address, whatever its case.
    let card = r.redact_str("4111 1111 1111 1111");
    assert_eq!(card, r.redact_str("4111111111111111"));
    assert_eq!(card, r.redact_str("4111-1111-1111-1111"));
    assert_eq!(
        r.redact_str("Ann@Example.com"),
        r.redact_str("ann%40example.com")
    );
    assert_ne!(card, r.redact_str("4242424242424242"));

    let other = Redactor::from_config(&LogConfig::default(), b"other-key");
    assert_ne!(other.redact_str(token), r.redact_str(token));
}

// === headers and JSON ===

#[test]
fn headers_by_name_and_by_value() {
    let r = mask();
    let headers = [
        ("Authorization", "Bearer abc.def"),
        ("Cookie", "sid=1; theme=dark"),
        ("X-API-Key", "plain"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("Accept", "application/json"),
        ("X-Forwarded-Email", "ann@example.com"),
        ("Referer", "https://a.example/cb?token=abc&x=1"),
        ("authorization", ""),
    ];
    let out = r.redact_headers(headers);
    let got: Vec<(&str, &str)> = out.iter().map(|(n, v)| (*n, v.as_ref())).collect();
    assert_eq!(
        got,
        [
            ("Authorization", "Bearer [REDACTED]"),
            ("Cookie", "[REDACTED]"),
            ("X-API-Key", "[REDACTED]"),
            ("Proxy-Authorization", "Basic [REDACTED]"),
            ("Accept", "application/json"),
            ("X-Forwarded-Email", "[REDACTED]"),
            ("Referer", "https://a.example/cb?token=[REDACTED]&x=1"),
            ("authorization", ""),
        ]
    );
    assert!(matches!(out[4].1, Cow::Borrowed(_)));
    // Redacting a redacted value changes nothing.
    for (n, v) in &out {
        assert_eq!(r.redact_header(n, v), *v);
    }
    let h = hash();
    let once = h.redact_header("authorization", "Bearer abc.def");
    assert_eq!(h.redact_header("authorization", &once), once);
}

#[test]
fn json_lines_are_walked() {
    let r = mask();
    let mut line = json!({
        "ts": "2026-11-23T09:13:19.123Z",
        "request_id": "550e8400-e29b-41d4-a716-446655440000",
        "method": "GET",
        "path": "/v1/users/ann@example.com?token=abc",
        "status": 502,
        "error": "upstream said: invalid api key sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "headers": {
            "authorization": "Bearer abc",
            "cookie": ["a=1", "b=2"],
            "x-count": 3,
            "token": 12345,
            "api_key": null,
        },
        "ann@example.com": true,
        "tags": ["ok", "4111111111111111", { "deep": ["AKIAIOSFODNN7EXAMPLE"] }],
    });
    r.redact_json(&mut line);
    assert_eq!(
        line,
        json!({
            "ts": "2026-11-23T09:13:19.123Z",
            "request_id": "550e8400-e29b-41d4-a716-446655440000",
            "method": "GET",
            "path": "/v1/users/[REDACTED]?token=[REDACTED]",
            "status": 502,
            "error": "upstream said: invalid api key [REDACTED]",
            "headers": {
                "authorization": "Bearer [REDACTED]",
                "cookie": ["[REDACTED]", "[REDACTED]"],
                "x-count": 3,
                "token": "[REDACTED]",
                "api_key": null,
            },
            "[REDACTED]": true,
            "tags": ["ok", "[REDACTED]", { "deep": ["[REDACTED]"] }],
        })
    );
    let keys: Vec<&String> = line
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys[0], "ts", "key order is kept");
    let again = line.clone();
    r.redact_json(&mut line);
    assert_eq!(line, again, "idempotent");
}

#[test]
fn deep_json_does_not_overflow_the_stack() {
    let mut v = json!("ann@example.com");
    for _ in 0..100_000 {
        v = Value::Array(vec![v]);
    }
    mask().redact_json(&mut v);
    let mut inner = &v;
    while let Value::Array(items) = inner {
        inner = &items[0];
    }
    assert_eq!(inner, &json!(MASK));
    // serde_json drops nested values recursively; unwind by hand.
    let mut cur = v;
    while let Value::Array(mut items) = cur {
        cur = items.pop().unwrap_or(Value::Null);
    }
}

// === properties ===

/// Pieces that come close to every detector, so random concatenations probe the
/// boundaries between matches and replacements.
const FRAGMENTS: &[&str] = &[
    "@",
    "%40",
    "%20",
    ".",
    "-",
    " ",
    "_",
    "+",
    "/",
    "=",
    ":",
    "?",
    "&",
    "#",
    "\"",
    "\\",
    "\n",
    "'",
    "~",
    "bob",
    "example",
    "com",
    "co",
    "x",
    "a1",
    "h",
    "h:",
    "0123456789abcdef",
    "h:0123456789abcdef",
    "[REDACTED]",
    "4111",
    "1111",
    "4242",
    "5555",
    "0",
    "9",
    "12",
    "4111111111111111",
    "eyJhbGciOiJIUzI1NiJ9",
    "eyJ",
    "Bearer ",
    "bearer",
    "Basic ",
    "dXNlcjpwYXNz",
    "AKIA",
    "IOSFODNN7EXAMPLE",
    "ASIA",
    "aws_secret_access_key",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "sk_live_",
    "ghp_",
    "xoxb-",
    "SG.",
    "ya29.",
    "whsec_",
    "abcdefghij",
    "ABCDEFGHIJ",
    "token",
    "key",
    "authorization",
    "cookie",
    "é",
    "日本",
    "\u{1F600}",
    "Bearer",
    "realm",
    "secret",
    "access",
    "aws_",
    "AIza",
    "%",
    "4",
    "5",
    "3782",
    "eyJhbGciOiJIUzI1NiJ9.",
    ".eyJzdWIiOiIxIn0.",
    "x@y.co",
    "?token=",
    "&api_key=",
    "cookie: ",
    "authorization: Bearer ",
    "\r\n",
    "h:0123456789abcdeF",
    "==",
    "\"x-api-key\":",
];

fn check_properties(r: &Redactor, s: &str) -> Result<(), TestCaseError> {
    let (out, k) = r.redact_counted(s);
    let per_match = match r.mode() {
        Redaction::Mask => MASK.len(),
        Redaction::Hash => HASH_LEN,
    } - 1;
    // The exact bound of the module documentation.
    prop_assert!(out.len() <= s.len() + k * per_match, "{s:?} -> {out:?}");
    prop_assert!(3 * k <= s.len(), "{k} matches in {s:?}");
    // Borrowed exactly when nothing was found, and then unchanged.
    match &out {
        Cow::Borrowed(b) => prop_assert!(k == 0 && *b == s),
        Cow::Owned(o) => prop_assert!(k > 0 && o != s),
    }
    // Idempotent: the output has nothing left to find.
    let (again, k2) = r.redact_counted(&out);
    prop_assert!(
        matches!(again, Cow::Borrowed(_)) && k2 == 0,
        "not idempotent: {s:?} -> {out:?} -> {again:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings(s in any::<String>()) {
        check_properties(&mask(), &s)?;
        check_properties(&hash(), &s)?;
    }

    #[test]
    fn near_matches(parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40)) {
        let s = parts.concat();
        check_properties(&mask(), &s)?;
        check_properties(&hash(), &s)?;
    }

    #[test]
    fn secrets_in_noise(
        before in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..6),
        secret in prop::sample::select(SECRETS),
        after in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..6),
    ) {
        let s = format!("{} {} {}", before.concat(), secret.1, after.concat());
        check_properties(&mask(), &s)?;
        check_properties(&hash(), &s)?;
    }

    #[test]
    fn headers_and_json_never_panic(name in "[a-zA-Z-]{0,20}", value in any::<String>()) {
        let r = hash();
        let once = r.redact_header(&name, &value);
        prop_assert_eq!(r.redact_header(&name, &once), once.clone());
        let mut v = json!({ name.clone(): value.clone(), "list": [value.clone()] });
        r.redact_json(&mut v);
        let first = v.clone();
        r.redact_json(&mut v);
        prop_assert_eq!(v, first);
    }
}
