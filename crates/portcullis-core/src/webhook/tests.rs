use super::*;
use proptest::prelude::*;

const FIVE_MIN: Duration = Duration::from_secs(300);
const ALL: [Scheme; 4] = [
    Scheme::Standard,
    Scheme::Github,
    Scheme::Stripe,
    Scheme::HmacSha256,
];

/// A case-insensitive header lookup over owned pairs, as a gateway's would be.
fn lookup<'a>(pairs: &'a [(String, String)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn check(
    scheme: Scheme,
    secrets: &str,
    headers: &[(String, String)],
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    verify(
        scheme,
        &Secrets::parse(secrets),
        &lookup(headers),
        body,
        now,
        FIVE_MIN,
    )
}

fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

fn replaced(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out = without(headers, name);
    out.push((name.to_owned(), value.to_owned()));
    out
}

// === published and computed vectors ===

// Standard Webhooks reference test vector: TestWebhookSign in
// https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/go/webhook_test.go
// (the same secret, id, timestamp and payload appear in the other reference libraries'
// tests).
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn sw_headers() -> Vec<(String, String)> {
    pairs(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIG),
    ])
}

#[test]
fn standard_webhooks_reference_vector_signs() {
    let headers = sign(Scheme::Standard, SW_SECRET, SW_BODY, Some(SW_ID), SW_TS).unwrap();
    assert_eq!(headers, sw_headers());
}

#[test]
fn standard_webhooks_reference_vector_verifies() {
    let v = check(Scheme::Standard, SW_SECRET, &sw_headers(), SW_BODY, SW_TS).unwrap();
    assert_eq!(
        v,
        Verified {
            replay_id: SW_ID.to_owned(),
            timestamp: Some(SW_TS),
            secret_index: 0,
        }
    );
}

// GitHub's documented test values, "Testing the webhook payload validation" in
// https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_documented_vector_signs_and_verifies() {
    let headers = sign(Scheme::Github, GH_SECRET, GH_BODY, None, 0).unwrap();
    assert_eq!(headers, pairs(&[("x-hub-signature-256", GH_SIG)]));
    let headers = pairs(&[("X-Hub-Signature-256", GH_SIG)]);
    let v = check(Scheme::Github, GH_SECRET, &headers, GH_BODY, 0).unwrap();
    assert_eq!(v.timestamp, None);
    assert_eq!(
        v.replay_id,
        // SHA-256 of "Hello, World!".
        "sha256:dffd6021bb2bd5b0af676290809ec3a53191dd81c7f70a4b28688a362182986f"
    );
}

// The plain scheme without a timestamp is the same computation as GitHub's, so GitHub's
// documented vector applies to it too.
#[test]
fn hmac_sha256_plain_form_matches_github_documented_vector() {
    let headers = pairs(&[("X-Signature", GH_SIG)]);
    let v = check(Scheme::HmacSha256, GH_SECRET, &headers, GH_BODY, 0).unwrap();
    assert_eq!(v.timestamp, None);
    assert_eq!(
        hmac::sign(GH_SECRET.as_bytes(), GH_BODY, None),
        pairs(&[("x-signature", GH_SIG)])
    );
}

// Stripe documents the algorithm (https://docs.stripe.com/webhooks#verify-manually:
// signed_payload = "{t}.{body}", HMAC-SHA256 keyed with the endpoint secret, hex) but
// publishes no fixed secret/payload/signature triple. This vector is COMPUTED, not
// published: `t` is the timestamp of the example header in those docs, and the
// signature was computed independently with Python's standard library:
//   hmac.new(b"whsec_test_secret", b'1492774577.{"id":"evt_test","object":"event"}',
//            hashlib.sha256).hexdigest()
const STRIPE_SECRET: &str = "whsec_test_secret";
const STRIPE_TS: i64 = 1_492_774_577;
const STRIPE_BODY: &[u8] = br#"{"id":"evt_test","object":"event"}"#;
const STRIPE_V1: &str = "691252e266ce41cb94d709c84e9580d4172b117a510bbc81723f657d2cd5d215";

#[test]
fn stripe_computed_vector_signs_and_verifies() {
    let expected = format!("t=1492774577,v1={STRIPE_V1}");
    let headers = sign(Scheme::Stripe, STRIPE_SECRET, STRIPE_BODY, None, STRIPE_TS).unwrap();
    assert_eq!(
        headers,
        vec![("stripe-signature".to_owned(), expected.clone())]
    );
    // As Stripe sends it during a secret roll: a stale v1 first, and a v0.
    let header = format!(
        "t=1492774577,v1={},v1={STRIPE_V1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
        "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
    );
    let headers = pairs(&[("Stripe-Signature", &header)]);
    let v = check(
        Scheme::Stripe,
        STRIPE_SECRET,
        &headers,
        STRIPE_BODY,
        STRIPE_TS + 10,
    )
    .unwrap();
    assert_eq!(v.timestamp, Some(STRIPE_TS));
    assert!(v.replay_id.starts_with("sha256:"));
}

// Computed like the Stripe vector (Python: hmac.new(key, b"1700000000.{}", sha256)),
// documenting the timestamped form of the plain scheme.
#[test]
fn hmac_sha256_timestamped_form_computed_vector() {
    let headers = sign(Scheme::HmacSha256, "secret", b"{}", None, 1_700_000_000).unwrap();
    assert_eq!(
        headers,
        pairs(&[
            (
                "x-signature",
                "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
            ),
            ("x-signature-timestamp", "1700000000"),
        ])
    );
    let v = check(Scheme::HmacSha256, "secret", &headers, b"{}", 1_700_000_000).unwrap();
    assert_eq!(v.timestamp, Some(1_700_000_000));
}

// === each failure, per scheme ===

/// A fresh, valid delivery for `scheme` signed with `secret` at `ts`.
fn delivery(scheme: Scheme, secret: &str, body: &[u8], ts: i64) -> Vec<(String, String)> {
    sign(scheme, secret, body, Some("msg_test"), ts).unwrap()
}

#[test]
fn every_scheme_round_trips() {
    for scheme in ALL {
        let headers = delivery(scheme, "whsec_c2VjcmV0", b"payload", 1000);
        let v = check(scheme, "whsec_c2VjcmV0", &headers, b"payload", 1000);
        assert!(v.is_ok(), "{scheme:?}: {v:?}");
    }
}

#[test]
fn tampered_body_is_bad_signature() {
    for scheme in ALL {
        let headers = delivery(scheme, "k", b"amount=100", 1000);
        let err = check(scheme, "k", &headers, b"amount=900", 1000).unwrap_err();
        assert_eq!(err, VerifyError::BadSignature, "{scheme:?}");
        assert_eq!(err.code(), "signature_invalid");
        assert_eq!(err.status(), 401);
        // Byte for byte: even trailing whitespace counts.
        let err = check(scheme, "k", &headers, b"amount=100\n", 1000).unwrap_err();
        assert_eq!(err, VerifyError::BadSignature, "{scheme:?}");
    }
}

#[test]
fn wrong_secret_is_bad_signature() {
    for scheme in ALL {
        let headers = delivery(scheme, "right", b"x", 1000);
        let err = check(scheme, "wrong", &headers, b"x", 1000).unwrap_err();
        assert_eq!(err, VerifyError::BadSignature, "{scheme:?}");
    }
}

#[test]
fn signed_metadata_cannot_be_changed() {
    // Standard: the id and the timestamp are signed.
    let h = delivery(Scheme::Standard, "k", b"x", 1000);
    let moved = replaced(&h, "webhook-id", "msg_other");
    assert_eq!(
        check(Scheme::Standard, "k", &moved, b"x", 1000),
        Err(VerifyError::BadSignature)
    );
    let moved = replaced(&h, "webhook-timestamp", "1001");
    assert_eq!(
        check(Scheme::Standard, "k", &moved, b"x", 1000),
        Err(VerifyError::BadSignature)
    );
    // Stripe: t is signed.
    let h = delivery(Scheme::Stripe, "k", b"x", 1000);
    let value = h[0].1.replace("t=1000", "t=1001");
    let moved = pairs(&[("stripe-signature", &value)]);
    assert_eq!(
        check(Scheme::Stripe, "k", &moved, b"x", 1000),
        Err(VerifyError::BadSignature)
    );
    // Plain HMAC: dropping or changing the timestamp breaks the signature.
    let h = delivery(Scheme::HmacSha256, "k", b"x", 1000);
    let dropped = without(&h, "x-signature-timestamp");
    assert_eq!(
        check(Scheme::HmacSha256, "k", &dropped, b"x", 1000),
        Err(VerifyError::BadSignature)
    );
    let moved = replaced(&h, "x-signature-timestamp", "1001");
    assert_eq!(
        check(Scheme::HmacSha256, "k", &moved, b"x", 1000),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn missing_headers_are_named() {
    let h = sw_headers();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let err = check(
            Scheme::Standard,
            SW_SECRET,
            &without(&h, name),
            SW_BODY,
            SW_TS,
        );
        assert_eq!(err, Err(VerifyError::MissingHeader(name)));
    }
    let cases = [
        (Scheme::Github, "x-hub-signature-256"),
        (Scheme::Stripe, "stripe-signature"),
        (Scheme::HmacSha256, "x-signature"),
    ];
    for (scheme, name) in cases {
        let err = check(scheme, "k", &[], b"x", 0).unwrap_err();
        assert_eq!(err, VerifyError::MissingHeader(name));
        assert_eq!(err.code(), "signature_missing");
        assert_eq!(
            err.to_string(),
            format!("missing webhook signature header `{name}`")
        );
    }
}

/// The reason of a `MalformedHeader`, or a panic.
fn malformed_reason(result: Result<Verified, VerifyError>) -> (&'static str, &'static str) {
    match result {
        Err(VerifyError::MalformedHeader { header, reason, .. }) => (header, reason),
        other => panic!("expected MalformedHeader, got {other:?}"),
    }
}

#[test]
fn malformed_standard_headers() {
    let h = sw_headers();
    let bad_sigs = [
        ("v1g0hM9SsE", "an entry is not `version,signature`"),
        ("v1,not base64!", "a v1 signature is not base64 of 32 bytes"),
        (
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= junk",
            "an entry is not `version,signature`",
        ),
        ("v1,!!!!", "a v1 signature is not base64 of 32 bytes"),
        ("v1,AAAA", "a v1 signature is not base64 of 32 bytes"),
        (
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "no v1 signature",
        ),
        ("", "no v1 signature"),
        ("   ", "no v1 signature"),
    ];
    for (sig, want) in bad_sigs {
        let got = malformed_reason(check(
            Scheme::Standard,
            SW_SECRET,
            &replaced(&h, "webhook-signature", sig),
            SW_BODY,
            SW_TS,
        ));
        assert_eq!(got, ("webhook-signature", want), "{sig:?}");
    }
    for ts in [
        "",
        "-1614265330",
        "+1614265330",
        " 1614265330",
        "1e9",
        "١٢٣",
        "99999999999999999999",
    ] {
        let got = malformed_reason(check(
            Scheme::Standard,
            SW_SECRET,
            &replaced(&h, "webhook-timestamp", ts),
            SW_BODY,
            SW_TS,
        ));
        assert_eq!(got.0, "webhook-timestamp", "{ts:?}");
    }
    let got = malformed_reason(check(
        Scheme::Standard,
        SW_SECRET,
        &replaced(&h, "webhook-id", ""),
        SW_BODY,
        SW_TS,
    ));
    assert_eq!(got, ("webhook-id", "empty"));
}

#[test]
fn malformed_github_and_hmac_headers() {
    let cases = [
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e177",
        "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=",
        "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=é57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
    ];
    for value in cases {
        for (scheme, name) in [
            (Scheme::Github, "x-hub-signature-256"),
            (Scheme::HmacSha256, "x-signature"),
        ] {
            let got = malformed_reason(check(
                scheme,
                GH_SECRET,
                &pairs(&[(name, value)]),
                GH_BODY,
                0,
            ));
            assert_eq!(got.0, name, "{value:?}");
        }
    }
    let bad_ts = pairs(&[("x-signature", GH_SIG), ("x-signature-timestamp", "soon")]);
    let got = malformed_reason(check(Scheme::HmacSha256, GH_SECRET, &bad_ts, GH_BODY, 0));
    assert_eq!(got.0, "x-signature-timestamp");
}

#[test]
fn uppercase_hex_is_accepted() {
    let headers = pairs(&[(
        "x-hub-signature-256",
        &GH_SIG.to_ascii_uppercase().replace("SHA256=", "sha256="),
    )]);
    assert!(check(Scheme::Github, GH_SECRET, &headers, GH_BODY, 0).is_ok());
}

#[test]
fn malformed_stripe_headers() {
    let v1 = STRIPE_V1;
    let cases = [
        (format!("v1={v1}"), "no `t` timestamp"),
        ("t=1492774577".to_owned(), "no v1 signature"),
        (format!("t=1492774577,v0={v1}"), "no v1 signature"),
        (
            format!("t=1492774577,t=1492774577,v1={v1}"),
            "more than one `t`",
        ),
        (format!("t=-5,v1={v1}"), "`t` is not a Unix timestamp"),
        (format!("t=,v1={v1}"), "`t` is not a Unix timestamp"),
        (
            format!("t=99999999999999999999,v1={v1}"),
            "`t` is not a Unix timestamp",
        ),
        (
            "t=1492774577,v1=abc".to_owned(),
            "a v1 is not 64 hex digits",
        ),
        (format!("t=1492774577,{v1}"), "an item is not `key=value`"),
        (String::new(), "no `t` timestamp"),
        (",,,".to_owned(), "no `t` timestamp"),
    ];
    for (value, want) in cases {
        let got = malformed_reason(check(
            Scheme::Stripe,
            STRIPE_SECRET,
            &pairs(&[("stripe-signature", &value)]),
            STRIPE_BODY,
            STRIPE_TS,
        ));
        assert_eq!(got, ("stripe-signature", want), "{value:?}");
    }
    // Spaces around items are tolerated.
    let spaced = format!("t=1492774577, v1={v1} ");
    let headers = pairs(&[("stripe-signature", &spaced)]);
    assert!(check(
        Scheme::Stripe,
        STRIPE_SECRET,
        &headers,
        STRIPE_BODY,
        STRIPE_TS
    )
    .is_ok());
}

#[test]
fn malformed_error_carries_a_shortened_value() {
    let long = format!("v1,{}", "é".repeat(500));
    let err = check(
        Scheme::Standard,
        SW_SECRET,
        &replaced(&sw_headers(), "webhook-signature", &long),
        SW_BODY,
        SW_TS,
    )
    .unwrap_err();
    let VerifyError::MalformedHeader { value, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(value.len() <= MAX_ECHO + '…'.len_utf8(), "{}", value.len());
    assert!(value.starts_with("v1,éé") && value.ends_with('…'));
    assert_eq!(err.code(), "signature_malformed");
    assert!(err
        .to_string()
        .starts_with("malformed `webhook-signature` header ("));
}

// === timestamps ===

#[test]
fn stale_and_future_timestamps_are_rejected_with_their_age() {
    for scheme in [Scheme::Standard, Scheme::Stripe, Scheme::HmacSha256] {
        let headers = delivery(scheme, "k", b"x", 10_000);
        // Inclusive at the edges.
        assert!(
            check(scheme, "k", &headers, b"x", 10_300).is_ok(),
            "{scheme:?}"
        );
        assert!(
            check(scheme, "k", &headers, b"x", 9_700).is_ok(),
            "{scheme:?}"
        );

        let err = check(scheme, "k", &headers, b"x", 10_301).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Expired {
                timestamp: 10_000,
                age_secs: 301,
                tolerance_secs: 300
            }
        );
        assert_eq!(err.code(), "timestamp_outside_tolerance");
        assert_eq!(err.status(), 401);
        assert_eq!(
            err.to_string(),
            "webhook timestamp 10000 is 301 s old, beyond the tolerance of 300 s"
        );

        let err = check(scheme, "k", &headers, b"x", 9_699).unwrap_err();
        assert_eq!(
            err,
            VerifyError::FromTheFuture {
                timestamp: 10_000,
                ahead_secs: 301,
                tolerance_secs: 300
            }
        );
        assert_eq!(err.code(), "timestamp_outside_tolerance");
    }
}

#[test]
fn a_forged_stale_delivery_reads_as_a_bad_signature() {
    // The signature is checked first: only authentic senders learn about their clock.
    let headers = delivery(Scheme::Standard, "k", b"x", 10_000);
    assert_eq!(
        check(Scheme::Standard, "other", &headers, b"x", 99_999),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn github_has_no_timestamp_check() {
    let headers = delivery(Scheme::Github, "k", b"x", 0);
    assert!(check(Scheme::Github, "k", &headers, b"x", i64::MAX).is_ok());
    assert!(check(Scheme::Github, "k", &headers, b"x", i64::MIN).is_ok());
}

#[test]
fn extreme_clocks_and_tolerances_do_not_overflow() {
    let headers = delivery(Scheme::Stripe, "k", b"x", i64::MAX);
    let err = check(Scheme::Stripe, "k", &headers, b"x", i64::MIN).unwrap_err();
    assert_eq!(
        err,
        VerifyError::FromTheFuture {
            timestamp: i64::MAX,
            ahead_secs: u64::MAX,
            tolerance_secs: 300
        }
    );
    let headers = delivery(Scheme::Stripe, "k", b"x", 0);
    let err = check(Scheme::Stripe, "k", &headers, b"x", i64::MAX).unwrap_err();
    assert!(matches!(err, VerifyError::Expired { age_secs, .. } if age_secs == i64::MAX as u64));
    let ok = verify(
        Scheme::Stripe,
        &Secrets::parse("k"),
        &lookup(&headers),
        b"x",
        i64::MAX,
        Duration::MAX,
    );
    assert!(ok.is_ok());
}

// === secrets and rotation ===

#[test]
fn rotation_any_secret_may_match_and_the_index_says_which() {
    for scheme in ALL {
        let old = delivery(scheme, "old", b"x", 1000);
        let new = delivery(scheme, "new", b"x", 1000);
        let v = check(scheme, "new, old", &old, b"x", 1000).unwrap();
        assert_eq!(v.secret_index, 1, "{scheme:?}");
        let v = check(scheme, "new, old", &new, b"x", 1000).unwrap();
        assert_eq!(v.secret_index, 0, "{scheme:?}");
        assert_eq!(
            check(scheme, "newer,new", &old, b"x", 1000),
            Err(VerifyError::BadSignature)
        );
    }
}

#[test]
fn rotation_with_standard_whsec_secrets() {
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let both = format!("{other},{SW_SECRET}");
    let v = check(Scheme::Standard, &both, &sw_headers(), SW_BODY, SW_TS).unwrap();
    assert_eq!(v.secret_index, 1);
}

#[test]
fn several_signatures_in_one_header() {
    // Standard: mixed versions and non-matching v1 entries around the valid one (the
    // shape of the reference libraries' "valid multi sig is valid" case).
    let junk = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    let multi = format!("{junk} v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SW_SIG} {junk}");
    let h = replaced(&sw_headers(), "webhook-signature", &multi);
    assert!(check(Scheme::Standard, SW_SECRET, &h, SW_BODY, SW_TS).is_ok());
    let only_junk = format!("{junk} {junk}");
    let h = replaced(&sw_headers(), "webhook-signature", &only_junk);
    assert_eq!(
        check(Scheme::Standard, SW_SECRET, &h, SW_BODY, SW_TS),
        Err(VerifyError::BadSignature)
    );

    // Stripe: one v1 per secret during a roll; either order verifies.
    let a = stripe::signature(b"a", 1000, b"x");
    let b = stripe::signature(b"b", 1000, b"x");
    let v1 = |s: &str| s.split_once(",v1=").map(|(_, v)| v.to_owned()).unwrap();
    let header = format!("t=1000,v1={},v1={}", v1(&a), v1(&b));
    let h = pairs(&[("stripe-signature", &header)]);
    assert_eq!(
        check(Scheme::Stripe, "b", &h, b"x", 1000)
            .unwrap()
            .secret_index,
        0
    );
    assert_eq!(
        check(Scheme::Stripe, "a", &h, b"x", 1000)
            .unwrap()
            .secret_index,
        0
    );
}

#[test]
fn stripe_replay_id_does_not_depend_on_which_signatures_are_sent() {
    let a = stripe::signature(b"a", 1000, b"x");
    let b = stripe::signature(b"b", 1000, b"x");
    let v1 = |s: &str| s.split_once(",v1=").map(|(_, v)| v.to_owned()).unwrap();
    let both = format!("t=1000,v1={},v1={}", v1(&a), v1(&b));
    let ids: Vec<String> = [both.as_str(), &a, &b]
        .iter()
        .map(|value| {
            check(
                Scheme::Stripe,
                "a,b",
                &pairs(&[("stripe-signature", value)]),
                b"x",
                1000,
            )
            .unwrap()
            .replay_id
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    // ... but does depend on t and the body.
    let later = delivery(Scheme::Stripe, "a", b"x", 1001);
    let other = check(Scheme::Stripe, "a", &later, b"x", 1000).unwrap();
    assert_ne!(other.replay_id, ids[0]);
}

#[test]
fn github_replay_id_ignores_the_unsigned_delivery_header() {
    let mut h = delivery(Scheme::Github, "k", b"x", 0);
    let first = check(Scheme::Github, "k", &h, b"x", 0).unwrap();
    h.push((
        "X-GitHub-Delivery".to_owned(),
        "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
    ));
    let second = check(Scheme::Github, "k", &h, b"x", 0).unwrap();
    assert_eq!(first.replay_id, second.replay_id);
}

#[test]
fn no_secret() {
    for scheme in ALL {
        let err = check(scheme, " , ,", &sw_headers(), SW_BODY, SW_TS).unwrap_err();
        assert_eq!(err, VerifyError::NoSecret);
        assert_eq!(err.code(), "webhook_secret_missing");
        assert!(!err.is_client_error());
        assert_eq!(err.status(), 500);
    }
    // A whsec_ secret that is not base64 is unusable for standard only.
    assert_eq!(
        check(Scheme::Standard, "whsec_!!!", &sw_headers(), SW_BODY, SW_TS),
        Err(VerifyError::NoSecret)
    );
    let h = delivery(Scheme::Stripe, "whsec_!!!", b"x", 0);
    assert!(check(Scheme::Stripe, "whsec_!!!", &h, b"x", 0).is_ok());
}

#[test]
fn secrets_parse_validate_and_never_show() {
    let s = Secrets::parse(" a , ,b,");
    assert_eq!(s.len(), 2);
    assert_eq!(s.signing(), Some("a"));
    assert!(!s.is_empty());
    assert_eq!(format!("{s:?}"), "Secrets([REDACTED; 2])");
    assert_eq!(
        Secrets::parse("").validate(Scheme::Github),
        Err(SecretError::Empty)
    );
    assert!(Secrets::parse(SW_SECRET).validate(Scheme::Standard).is_ok());
    let bad = Secrets::parse(&format!("{SW_SECRET},whsec_not*base64"));
    assert_eq!(
        bad.validate(Scheme::Standard),
        Err(SecretError::NotBase64 { index: 1 })
    );
    assert!(bad.validate(Scheme::Stripe).is_ok());
    assert!(SecretError::NotBase64 { index: 1 }
        .to_string()
        .contains("#2"));
}

#[test]
fn standard_secret_without_prefix_is_raw_bytes() {
    let body = b"x";
    let headers = sign(Scheme::Standard, "plain-secret", body, Some("m"), 5).unwrap();
    let expected = standard::signature(b"plain-secret", "m", 5, body);
    assert_eq!(headers[2].1, expected);
    assert!(check(Scheme::Standard, "plain-secret", &headers, body, 5).is_ok());
}

#[test]
fn standard_whsec_padding_is_optional() {
    // 32 characters need no padding; a 43-character secret needs one `=`.
    let padded = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let unpadded = padded.trim_end_matches('=');
    let h = delivery(Scheme::Standard, padded, b"x", 1);
    assert!(check(Scheme::Standard, unpadded, &h, b"x", 1).is_ok());
}

// === sign ===

#[test]
fn sign_rejects_what_it_cannot_send() {
    assert_eq!(
        sign(Scheme::Standard, "", b"x", Some("m"), 1),
        Err(SignError::Secret(SecretError::Empty))
    );
    assert_eq!(
        sign(Scheme::Standard, "whsec_???", b"x", Some("m"), 1),
        Err(SignError::Secret(SecretError::NotBase64 { index: 0 }))
    );
    for scheme in [Scheme::Standard, Scheme::Stripe, Scheme::HmacSha256] {
        assert_eq!(
            sign(scheme, "k", b"x", Some("m"), -1),
            Err(SignError::NegativeTimestamp(-1))
        );
    }
    assert!(sign(Scheme::Github, "k", b"x", None, -1).is_ok());
    for id in ["", "has space", "new\nline"] {
        assert!(matches!(
            sign(Scheme::Standard, "k", b"x", Some(id), 1),
            Err(SignError::InvalidId(_))
        ));
    }
}

#[test]
fn sign_derives_a_stable_standard_id() {
    let a = sign(Scheme::Standard, "k", b"x", None, 1).unwrap();
    let b = sign(Scheme::Standard, "k", b"x", None, 1).unwrap();
    let c = sign(Scheme::Standard, "k", b"y", None, 1).unwrap();
    assert_eq!(a, b);
    assert_ne!(a[0].1, c[0].1);
    assert!(a[0].1.starts_with("msg_") && a[0].1.len() == 36);
}

// === properties ===

fn any_scheme() -> impl Strategy<Value = Scheme> {
    prop::sample::select(ALL.to_vec())
}

/// Header values that look almost right, so the parsers get past their first checks.
fn header_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(v1,[A-Za-z0-9+/=]{0,50} ?){0,4}",
        "(v[0-9a],[A-Za-z0-9+/=]{40,46}| ){0,4}",
        "(t=[0-9+-]{0,22}|v1=[0-9a-fA-F]{60,66}|v0=[0-9a-f]{0,64}|[ ,=])*",
        "sha256=[0-9a-fA-Fé]{60,66}",
        "[0-9+-]{0,25}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(value in header_like()) {
        let _ = standard::parse_signatures(&value);
        let _ = stripe::parse_header(&value);
        let _ = github::parse_signature(&value);
        let _ = hmac::parse_signature(&value);
        let _ = hmac::parse_timestamp_header(&value);
        let _ = Secrets::parse(&value).validate(Scheme::Standard);
    }

    #[test]
    fn verify_never_panics(
        scheme in any_scheme(),
        secrets in any::<String>(),
        a in header_like(),
        b in header_like(),
        c in header_like(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
        tolerance in any::<u64>(),
    ) {
        // The same three values under every name the schemes ask for.
        let values = [a, b, c];
        let headers = |name: &str| -> Option<&str> {
            let i = name.len() % 3;
            Some(values[i].as_str())
        };
        let result = verify(
            scheme,
            &Secrets::parse(&secrets),
            &headers,
            &body,
            now,
            Duration::from_secs(tolerance),
        );
        if let Err(e) = result {
            prop_assert!(!e.code().is_empty());
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn sign_then_verify_round_trips(
        scheme in any_scheme(),
        secret in "[!-+\\--~]{1,40}",
        id in "[!-~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        timestamp in 0i64..=i64::MAX,
        skew in -300i64..=300,
        second in "[!-+\\--~]{1,40}",
    ) {
        // `secret` avoids `,` (the list separator) and, for standard, a `whsec_` prefix
        // that is not base64 would be refused by sign: skip those.
        let signed = sign(scheme, &secret, &body, Some(&id), timestamp);
        prop_assume!(signed.is_ok());
        let headers = signed.unwrap();
        let now = timestamp.saturating_add(skew);
        let rotation = format!("{second},{secret}");
        let v = verify(scheme, &Secrets::parse(&rotation), &lookup(&headers), &body, now, FIVE_MIN);
        let v = v.unwrap();
        if second != secret {
            prop_assert_eq!(v.secret_index, 1);
        }
        if scheme == Scheme::Standard {
            prop_assert_eq!(&v.replay_id, &id);
        }
        if scheme != Scheme::Github {
            prop_assert_eq!(v.timestamp, Some(timestamp));
        }

        // Any single flipped bit in the body breaks it.
        if !body.is_empty() {
            let mut tampered = body.clone();
            let i = (timestamp as usize) % tampered.len();
            tampered[i] ^= 1;
            let r = verify(scheme, &Secrets::parse(&secret), &lookup(&headers), &tampered, now, FIVE_MIN);
            prop_assert_eq!(r, Err(VerifyError::BadSignature));
        }
    }
}
