use super::*;
use crate::config::load;
use std::collections::HashMap as Map;

struct Facts {
    ip: &'static str,
    headers: Map<&'static str, &'static str>,
    query: Map<&'static str, &'static str>,
}

impl RequestFacts for Facts {
    fn client_key(&self) -> &str {
        self.ip
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).copied()
    }
    fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).copied()
    }
}

fn facts(headers: &[(&'static str, &'static str)]) -> Facts {
    Facts {
        ip: "203.0.113.7",
        headers: headers.iter().copied().collect(),
        query: [("tenant", "t-1")].into_iter().collect(),
    }
}

fn set(text: &str) -> PolicySet {
    PolicySet::from_config(&load("t.toml", Some(text), Vec::new()).unwrap())
}

const TIERS: &str = r#"
[[policy]]
name = "default"
limit = 100
window = "1m"

[[policy]]
name = "auth"
limit = 10
window = "1m"
key = ["header:X-Workspace-Id", "ip"]

[[policy]]
name = "keys"
limit = 5
window = "1m"
key = ["api_key"]
on_missing_key = "deny"
overrides = [{ key = "9f86d081884c7d65", limit = 50 }]

[[route]]
path = "/api/auth/*"
methods = ["post"]
policies = ["default", "auth"]

[[route]]
path = "/api/items/{id}"
policies = ["keys"]
cost = 2

[[route]]
path = "/healthz"
policies = []
"#;

#[test]
fn first_matching_route_wins_and_unmatched_uses_default() {
    let s = set(TIERS);
    let r = s.resolve("POST", "/api/auth/login");
    assert_eq!(r.route.unwrap().label.as_ref(), "/api/auth/*");
    assert_eq!(r.policies.len(), 2);
    let r = s.resolve("GET", "/api/auth/login");
    assert!(r.route.is_none(), "method does not match");
    assert_eq!(r.policies, &[0]);
    let r = s.resolve("GET", "/api/items/42");
    assert_eq!((r.cost, r.policies), (2, &[2][..]));
    let r = s.resolve("GET", "/healthz");
    assert!(r.route.is_some() && r.policies.is_empty());
}

#[test]
fn keys_follow_the_spec_form() {
    let s = set(TIERS);
    let auth = s.policy("auth").unwrap();
    let k = build_key(auth, None, &facts(&[("x-workspace-id", "ws-42")]));
    assert_eq!(k, KeyOutcome::Key("ws-42|203.0.113.7".into()));
    // Missing workspace: on_missing_key = "ip" keys by the IP alone.
    assert_eq!(
        build_key(auth, None, &facts(&[])),
        KeyOutcome::Key("203.0.113.7".into())
    );
    let keys = s.policy("keys").unwrap();
    assert_eq!(
        build_key(keys, None, &facts(&[("x-api-key", "test")])),
        KeyOutcome::Key("9f86d081884c7d65".into()),
        "sha256(\"test\") starts 9f86d081884c7d65"
    );
    assert_eq!(
        build_key(keys, None, &facts(&[("authorization", "Bearer test")])),
        KeyOutcome::Key("9f86d081884c7d65".into())
    );
    assert_eq!(
        build_key(keys, None, &facts(&[])),
        KeyOutcome::Deny(KeySource::ApiKey)
    );
    assert_eq!(keys.quota_for("9f86d081884c7d65").limit, 50, "override");
    assert_eq!(keys.quota_for("other").limit, 5);
}

#[test]
fn route_query_and_global_sources() {
    let s = set(r#"
[[policy]]
name = "p"
limit = 1
window = "1s"
key = ["route", "query:tenant", "global"]
on_missing_key = "skip"
[[route]]
path = "/x/*"
policies = ["p"]
"#);
    let r = s.resolve("GET", "/x/y");
    let p = &s.policies[0];
    assert_eq!(
        build_key(p, r.route, &facts(&[])),
        KeyOutcome::Key("/x/*|t-1|".into())
    );
    let no_query = Facts {
        query: Map::new(),
        ..facts(&[])
    };
    assert_eq!(build_key(p, r.route, &no_query), KeyOutcome::Skip);
}

#[test]
fn store_keys_hash_policy_and_key_apart() {
    let s = set(TIERS);
    let a = s.policy("default").unwrap().store_key("1.2.3.4");
    let b = s.policy("auth").unwrap().store_key("1.2.3.4");
    assert_ne!(a, b);
    assert_eq!(a, s.policy("default").unwrap().store_key("1.2.3.4"));
}

#[test]
fn unknown_policy_and_bad_values_are_errors_with_positions() {
    let text = "[[policy]]\nname = \"a\"\nlimit = 1\nwindow = \"1m\"\n[[route]]\npath = \"/x\"\npolicies = [\"a\", \"nope\"]\n";
    let e = load("t.toml", Some(text), Vec::new()).unwrap_err();
    assert_eq!(e.position, Some((7, 18)), "{e}");
    assert!(e.message.contains("unknown policy \"nope\""), "{e}");
    let text = "[[policy]]\nname = \"a\"\nlimit = 0\nwindow = \"1m\"\n";
    let e = load("t.toml", Some(text), Vec::new()).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
    let text = "[[policy]]\nname = \"a\"\nlimit = 1\nwindow = \"1m\"\nkey = [\"cookie\"]\n";
    assert!(load("t.toml", Some(text), Vec::new()).is_err());
    let text = "[[policy]]\nname = \"a\"\nlimit = 1\nwindow = \"1m\"\n[[policy]]\nname = \"a\"\nlimit = 1\nwindow = \"1m\"\n";
    let e = load("t.toml", Some(text), Vec::new()).unwrap_err();
    assert!(e.message.contains("duplicate"), "{e}");
    let text = "[[policy]]\nname = \"a\"\nlimit = 2\nwindow = \"1m\"\n[[route]]\npath = \"/x\"\npolicies = [\"a\"]\ncost = 3\n";
    let e = load("t.toml", Some(text), Vec::new()).unwrap_err();
    assert!(e.message.contains("exceeds"), "{e}");
}

#[test]
fn analysis_warns_about_shadowed_routes_and_unused_policies() {
    let text = "[[policy]]\nname = \"a\"\nlimit = 1\nwindow = \"1m\"\n[[policy]]\nname = \"unused\"\nlimit = 1\nwindow = \"1m\"\n[[route]]\npath = \"/api/*\"\npolicies = [\"a\"]\n[[route]]\npath = \"/api/auth/login\"\nmethods = [\"POST\"]\npolicies = [\"a\"]\n";
    let c = load("t.toml", Some(text), Vec::new()).unwrap();
    let w = crate::config::analyze(&c, "t.toml", text);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].message.contains("can never match"), "{}", w[0]);
    assert_eq!(w[0].position.map(|p| p.0), Some(13));
    assert!(
        w[1].message.contains("\"unused\" is never used"),
        "{}",
        w[1]
    );
}

#[test]
fn env_overrides_still_work_with_policies() {
    let c = load(
        "t.toml",
        Some(TIERS),
        vec![("PORTCULLIS_SERVER__MAX_BODY_BYTES".into(), "5".into())],
    )
    .unwrap();
    assert_eq!(c.server.max_body_bytes, 5);
    assert_eq!(c.policy.len(), 3);
}
