"""End-to-end tests of the portcullis gateway with third-party clients.

Clients: Python httpx (HTTP/1.1, and HTTP/2 with prior knowledge over cleartext),
the `websockets` package, and curl. The gateway is the real binary and the upstream a
real uvicorn server (upstream.py); see conftest.py. Contract: ../../../shared/SPEC.md
(Protocols, Client identity, Response headers, Admin listener) and
docs/test-contract.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

TIMEOUT = httpx.Timeout(5.0)
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
FLOAT = r"(\d+(?:\.\d+)?)"

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
}


# --------------------------------------------------------------------------- helpers


def h1_client() -> httpx.Client:
    return httpx.Client(http1=True, http2=False, timeout=TIMEOUT, trust_env=False)


def h2_client() -> httpx.Client:
    # http1=False + http2=True on an http:// URL = HTTP/2 with prior knowledge (h2c).
    return httpx.Client(http1=False, http2=True, timeout=TIMEOUT, trust_env=False)


CLIENTS = {"h1": (h1_client, "HTTP/1.1"), "h2": (h2_client, "HTTP/2")}


@pytest.fixture(params=["h1", "h2"])
def proto(request):
    """(name, client factory, expected http_version) for HTTP/1.1 and h2c."""
    factory, version = CLIENTS[request.param]
    return request.param, factory, version


def upstream_headers(echo: dict) -> dict[str, list[str]]:
    """The request headers the upstream saw, name -> values (in order)."""
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def assert_uuid(value: str | None, what: str = "X-Request-ID"):
    assert value is not None, f"{what} missing"
    assert UUID_RE.match(value), f"{what} is not a hyphenated UUID: {value!r}"
    uuid.UUID(value)


def assert_timing_headers(headers, *, need_upstream: bool = True):
    """X-Latency-MS integer >= 1; Server-Timing with gw;dur= (and upstream;dur=)."""
    latency = headers.get("x-latency-ms")
    assert latency is not None, "X-Latency-MS missing"
    assert re.fullmatch(r"\d+", latency.strip()), f"X-Latency-MS not an integer: {latency!r}"
    assert int(latency) >= 1, f"X-Latency-MS must be rounded up, never 0: {latency!r}"
    timing = headers.get("server-timing")
    assert timing is not None, "Server-Timing missing"
    assert re.search(r"(?:^|,)\s*gw;dur=" + FLOAT, timing), f"Server-Timing lacks gw;dur=: {timing!r}"
    if need_upstream:
        assert re.search(r"(?:^|,)\s*upstream;dur=" + FLOAT, timing), (
            f"Server-Timing lacks upstream;dur=: {timing!r}"
        )


def assert_security_headers(headers, *, except_=()):
    for name, value in SECURITY_HEADERS.items():
        if name in except_:
            continue
        got = headers.get_list(name) if hasattr(headers, "get_list") else headers.get(name)
        assert got, f"security header {name} missing"
        if isinstance(got, list):
            assert got == [value], f"{name}: expected exactly [{value!r}], got {got!r}"
        else:
            assert got == value, f"{name}: expected {value!r}, got {got!r}"
    # RFC 6797 7.2: never over plain HTTP.
    hsts = headers.get("strict-transport-security")
    assert hsts is None, f"Strict-Transport-Security sent over plain HTTP: {hsts!r}"


def assert_problem(resp: httpx.Response, status: int, code: str, path: str):
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:500]}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip().lower() == "application/problem+json", (
        f"Content-Type {ctype!r} is not application/problem+json"
    )
    body = resp.json()
    assert body.get("code") == code, f"problem code {body.get('code')!r} != {code!r}: {body}"
    assert body.get("status") == status, body
    assert body.get("type") == "about:blank", body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert "detail" in body, body
    assert body.get("instance") == path, body
    rid = resp.headers.get("x-request-id")
    assert_uuid(rid)
    assert body.get("request_id") == rid, f"problem request_id {body.get('request_id')!r} != header {rid!r}"
    # Gateway-produced errors carry the same header contract.
    assert_timing_headers(resp.headers, need_upstream=False)
    assert_security_headers(resp.headers)
    return body


def curl_version() -> str:
    exe = shutil.which("curl")
    if exe is None:
        pytest.fail("curl is not installed: it is one of the required third-party clients", pytrace=False)
    return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=5).stdout


def run_curl(*args: str) -> tuple[str, list[tuple[str, str]], str]:
    """curl -sSi ... -> (status line, [(name, value)], body)."""
    out = subprocess.run(
        ["curl", "-sSi", "--max-time", "5", "--noproxy", "*", *args],
        capture_output=True,
        timeout=10,
    )
    assert out.returncode == 0, f"curl {args} exited {out.returncode}: {out.stderr.decode(errors='replace')}"
    raw = out.stdout.decode("utf-8", "replace")
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep, f"unparseable header line from curl: {line!r}"
        headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers, body


class HeaderList:
    """Minimal case-insensitive view over curl's header list."""

    def __init__(self, pairs):
        self.pairs = pairs

    def get_list(self, name):
        return [v for n, v in self.pairs if n == name.lower()]

    def get(self, name, default=None):
        values = self.get_list(name)
        return values[0] if values else default


# --------------------------------------------------------------------------- 1, 2: proxied GET


def test_proxied_get_headers(gateway, proto):
    """1/2. httpx GET over HTTP/1.1 and over h2c prior knowledge: body from the
    upstream, the request id / latency / Server-Timing / security header contract."""
    name, factory, version = proto
    with factory() as client:
        resp = client.get(f"{gateway.url}/echo/items?x=1", headers={"Accept": "application/json"})
    assert resp.http_version == version, f"{name}: http_version {resp.http_version!r}"
    assert resp.status_code == 200, resp.text[:500]
    echo = resp.json()
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo/items"
    assert echo["query"] == "x=1"
    # the upstream is spoken to over HTTP/1.1 whatever the client used
    assert echo["http_version"] == "1.1", echo["http_version"]
    rid = resp.headers.get("x-request-id")
    assert_uuid(rid)
    assert upstream_headers(echo).get("x-request-id") == [rid], "upstream did not get the same X-Request-ID"
    assert_timing_headers(resp.headers)
    assert_security_headers(resp.headers)


def test_upstream_security_header_not_overridden(gateway, proto):
    """1/2. The upstream's own X-Frame-Options: SAMEORIGIN passes unchanged, alone."""
    name, factory, version = proto
    with factory() as client:
        resp = client.get(f"{gateway.url}/sameorigin")
    assert resp.http_version == version
    assert resp.status_code == 200
    assert resp.headers.get_list("x-frame-options") == ["SAMEORIGIN"], resp.headers.get_list("x-frame-options")
    assert_security_headers(resp.headers, except_=("x-frame-options",))


def test_no_hsts_when_client_claims_https(gateway):
    """A client on an untrusted address cannot claim HTTPS: no HSTS, and upstream gets
    X-Forwarded-Proto: http (replacing the client's)."""
    with h1_client() as client:
        resp = client.get(
            f"{gateway.url}/echo/proto",
            headers={"X-Forwarded-Proto": "https", "Forwarded": "proto=https;for=203.0.113.9"},
        )
    assert resp.status_code == 200
    assert "strict-transport-security" not in resp.headers
    seen = upstream_headers(resp.json())
    assert seen.get("x-forwarded-proto") == ["http"], seen.get("x-forwarded-proto")


def test_forwarding_headers_and_hop_by_hop(gateway):
    """Client identity: upstream gets X-Forwarded-For (appended), X-Forwarded-Host,
    X-Request-ID and no hop-by-hop headers (Connection and what it names)."""
    with h1_client() as client:
        resp = client.get(
            f"{gateway.url}/echo/fwd",
            headers={
                "X-Forwarded-For": "198.51.100.7",
                "Connection": "keep-alive, X-Hop-Secret",
                "X-Hop-Secret": "must-not-reach-upstream",
                "Keep-Alive": "timeout=5",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                "TE": "trailers",
                "X-Kept": "yes",
            },
        )
    assert resp.status_code == 200
    seen = upstream_headers(resp.json())
    xff = ", ".join(seen.get("x-forwarded-for", []))
    parts = [p.strip() for p in xff.split(",") if p.strip()]
    assert parts and parts[-1] == "127.0.0.1", f"X-Forwarded-For must end with the peer: {xff!r}"
    assert "198.51.100.7" in parts, f"X-Forwarded-For must be appended to, not replaced: {xff!r}"
    assert seen.get("x-forwarded-host") == [f"{gateway.host}:{gateway.port}"], seen.get("x-forwarded-host")
    assert seen.get("x-kept") == ["yes"]
    assert "x-hop-secret" not in seen, "header named by Connection was forwarded"
    for name in ("keep-alive", "te", "proxy-authorization", "proxy-connection", "upgrade", "trailer"):
        assert name not in seen, f"hop-by-hop header {name} forwarded upstream: {seen[name]}"
    # upstream's own hop-by-hop headers never reach the client either
    for name in ("keep-alive", "proxy-connection", "trailer", "upgrade"):
        assert name not in resp.headers, f"hop-by-hop header {name} in the response"


# --------------------------------------------------------------------------- 3: request ids


@pytest.mark.parametrize(
    "sent",
    [str(uuid.uuid4()), str(uuid.uuid4()).upper()],
    ids=["lowercase-uuid", "uppercase-uuid"],
)
def test_client_request_id_kept(gateway, proto, sent):
    """3. A client X-Request-ID that is a UUID is returned and sent upstream."""
    name, factory, _ = proto
    with factory() as client:
        resp = client.get(f"{gateway.url}/echo/rid", headers={"X-Request-ID": sent})
    assert resp.status_code == 200
    got = resp.headers.get("x-request-id")
    assert got is not None
    assert got.lower() == sent.lower(), f"{name}: valid client id {sent!r} replaced by {got!r}"
    assert [v.lower() for v in upstream_headers(resp.json()).get("x-request-id", [])] == [sent.lower()]


@pytest.mark.parametrize(
    "sent",
    ["not a uuid <x>", "12345", str(uuid.uuid4()).replace("-", ""), str(uuid.uuid4()) + "x"],
    ids=["words", "digits", "unhyphenated", "trailing-char"],
)
def test_invalid_request_id_replaced(gateway, sent):
    """3. An X-Request-ID that is not a hyphenated UUID is replaced by a new UUID, the
    same one upstream and in the response."""
    with h1_client() as client:
        resp = client.get(f"{gateway.url}/echo/rid", headers={"X-Request-ID": sent})
    assert resp.status_code == 200
    got = resp.headers.get("x-request-id")
    assert_uuid(got)
    assert got != sent
    assert upstream_headers(resp.json()).get("x-request-id") == [got]


def test_request_id_in_access_log(gateway):
    """The same id is written in the access log line (stdout JSON)."""
    rid = str(uuid.uuid4())
    with h1_client() as client:
        resp = client.get(f"{gateway.url}/echo/logged", headers={"X-Request-ID": rid})
    assert resp.status_code == 200
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = [e for e in gateway.access_log() if str(e.get("request_id", "")).lower() == rid]
        if lines:
            entry = lines[-1]
            assert entry.get("method") == "GET", entry
            assert str(entry.get("status")) == "200", entry
            assert str(entry.get("path", "")).startswith("/echo/logged"), entry
            return
        time.sleep(0.05)
    pytest.fail(f"no access-log line with request_id {rid}; last stdout lines: {list(gateway.p.stdout_lines)[-5:]}")


# --------------------------------------------------------------------------- 4: streaming


def test_streaming_sse(gateway, proto):
    """4. Server-sent events stream through: first chunk well before the last."""
    name, factory, version = proto
    chunks = []
    first_at = None
    with factory() as client:
        start = time.monotonic()
        with client.stream("GET", f"{gateway.url}/stream") as resp:
            assert resp.http_version == version
            assert resp.status_code == 200
            assert resp.headers.get("content-type", "").startswith("text/event-stream")
            assert_uuid(resp.headers.get("x-request-id"))
            for chunk in resp.iter_raw():
                if not chunk:
                    continue
                if first_at is None:
                    first_at = time.monotonic() - start
                chunks.append(chunk)
        total = time.monotonic() - start
    body = b"".join(chunks).decode()
    assert [f"data: event {i}" in body for i in range(5)] == [True] * 5, body
    assert first_at is not None
    assert first_at < 0.5, f"{name}: first chunk after {first_at:.3f}s: the response was buffered"
    assert total >= 0.8, f"{name}: whole stream in {total:.3f}s, expected >= 0.8s (5 events 200 ms apart)"


# --------------------------------------------------------------------------- 5: WebSocket


def test_websocket_echo(gateway):
    """5. A WebSocket upgrade passes through; the 101 carries X-Request-ID."""
    url = f"ws://{gateway.listen}/ws"
    messages = ["hello", "portcullis \u2603", "x" * 2000]
    with ws_connect(url, open_timeout=5, close_timeout=5, proxy=None) as ws:
        assert ws.response.status_code == 101
        assert_uuid(ws.response.headers.get("X-Request-ID"), "X-Request-ID on the 101")
        for msg in messages:
            ws.send(msg)
            assert ws.recv(timeout=5) == msg
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=5) == b"\x00\x01binary\xff"
        ws.close()
    assert ws.close_code == 1000, f"close code {ws.close_code}, reason {ws.close_reason!r}"


# --------------------------------------------------------------------------- 6: curl


def test_curl_http1(gateway):
    """6. curl -sSi over HTTP/1.1 shows the header contract."""
    status, pairs, body = run_curl("--http1.1", f"{gateway.url}/echo/curl")
    print(status)
    assert re.match(r"^HTTP/1\.1 200\b", status), status
    headers = HeaderList(pairs)
    assert_uuid(headers.get("x-request-id"))
    assert_timing_headers(headers)
    assert_security_headers(headers)
    assert '"path": "/echo/curl"' in body or '"path":"/echo/curl"' in body, body[:300]


def test_curl_http2_prior_knowledge(gateway):
    """6. curl --http2-prior-knowledge (h2c) shows the header contract."""
    version = curl_version()
    features = next((line for line in version.splitlines() if line.startswith("Features:")), "")
    if "HTTP2" not in features.split():
        pytest.skip(
            f"this curl has no HTTP2 feature ({features!r}); h2c is covered by the httpx [h2] tests"
        )
    status, pairs, body = run_curl("--http2-prior-knowledge", f"{gateway.url}/echo/curl2")
    print(status)
    assert re.match(r"^HTTP/2 200\b", status), status
    headers = HeaderList(pairs)
    assert_uuid(headers.get("x-request-id"))
    assert_timing_headers(headers)
    assert_security_headers(headers)
    assert "/echo/curl2" in body, body[:300]


# --------------------------------------------------------------------------- 7: 413


def test_body_too_large_content_length(gateway):
    """7. A declared Content-Length over max_body_bytes (1024) gets 413 body_too_large."""
    with h1_client() as client:
        resp = client.post(f"{gateway.url}/echo/upload", content=b"a" * 4096)
    assert_problem(resp, 413, "body_too_large", "/echo/upload")


def test_body_within_limit_passes(gateway):
    """7 (control). A body of exactly max_body_bytes reaches the upstream whole."""
    with h1_client() as client:
        resp = client.post(f"{gateway.url}/echo/upload", content=b"a" * 1024)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["body_len"] == 1024


def test_body_too_large_chunked(gateway):
    """7. A chunked body growing past max_body_bytes gets 413 body_too_large."""

    def body():
        for _ in range(8):
            yield b"b" * 512

    with h1_client() as client:
        try:
            resp = client.post(f"{gateway.url}/echo/chunked", content=body())
        except httpx.TransportError as exc:  # pragma: no cover - reported as a failure
            pytest.fail(f"no 413 response to an oversized chunked body: {exc!r}")
    assert_problem(resp, 413, "body_too_large", "/echo/chunked")


def test_body_too_large_h2(gateway):
    """7. The same limit over h2c."""
    with h2_client() as client:
        resp = client.post(f"{gateway.url}/echo/upload2", content=b"c" * 4096)
    assert resp.http_version == "HTTP/2"
    assert_problem(resp, 413, "body_too_large", "/echo/upload2")


# --------------------------------------------------------------------------- 8: 502


def test_upstream_unreachable(down_gateway, proto):
    """8. Upstream refused -> 502 problem+json upstream_unreachable, quickly."""
    name, factory, version = proto
    start = time.monotonic()
    with factory() as client:
        resp = client.get(f"{down_gateway.url}/echo/down")
    assert resp.http_version == version
    assert_problem(resp, 502, "upstream_unreachable", "/echo/down")
    assert time.monotonic() - start < 4, "502 took too long for a refused connection"


# --------------------------------------------------------------------------- admin listener


def _poll_status(url: str, want: int, seconds: float = 5.0) -> httpx.Response:
    deadline = time.monotonic() + seconds
    with h1_client() as client:
        while True:
            resp = client.get(url)
            if resp.status_code == want or time.monotonic() > deadline:
                return resp
            time.sleep(0.1)


def test_admin_health_endpoints(gateway):
    """Admin listener: /healthz, /readyz, /health, /metrics on the ephemeral admin port."""
    with h1_client() as client:
        r = client.get(f"{gateway.admin_url}/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
        r = client.get(f"{gateway.admin_url}/health")
        assert r.status_code == 200, r.text
        health = r.json()
        for member in ("status", "version", "uptime_s", "upstream"):
            assert member in health, f"/health lacks {member}: {health}"
        assert health["upstream"]["url"].rstrip("/") == gateway.upstream_url, health["upstream"]
        assert health["upstream"]["circuit"] in ("closed", "half_open", "open")
        r = client.get(f"{gateway.admin_url}/metrics")
        assert r.status_code == 200
        assert "portcullis_requests_total" in r.text
    r = _poll_status(f"{gateway.admin_url}/readyz", 200)
    assert r.status_code == 200, r.text
    assert r.json().get("status") == "ready"


def test_admin_readyz_upstream_down(down_gateway):
    """/readyz is 503 with reasons while the upstream refuses connections."""
    r = _poll_status(f"{down_gateway.admin_url}/readyz", 503)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body.get("status") == "unready", body
    assert isinstance(body.get("reasons"), list) and body["reasons"], body
