"""Who may call what, on real servers: API keys and their scopes (401 without a valid key,
403 outside its scopes, both with the request id; probes open; the listing shows what a key
may call; /metrics needs `admin`), keys from the environment and from files (raw or
hashed), the rate limits (429 with Retry-After and RateLimit-* headers, then recovery),
CORS preflights, TLS and mutual TLS handshakes, and a planted key that never shows."""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import time
from pathlib import Path

import httpx
import pytest
import trustme
from hosts import Host

from sheaf_core import ConfigError, ModelSpec
from sheaf_core.client import SheafClient, SheafHTTPError
from sheaf_server import ModelServer
from sheaf_server.settings import ServerSettings, SheafConfig
from sheaf_server.testing import wait_until_ready

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}
A_KEY, STAR_KEY, ADMIN_KEY = "key-for-a-5b1f0c", "key-for-all-9d2e7a", "key-admin-77c3aa"


def models() -> list[ModelSpec]:
    return [ModelSpec(name=name, backend="baseline", resources={"num_cpus": 0.5})
            for name in ("a", "b")]


def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys"
    path.write_text(f"# key:scopes\n{A_KEY}:a\n{STAR_KEY}:*\n{ADMIN_KEY}:admin|a\n")
    return str(path)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_keys_decide_who_calls_what_on_both_hosts(host: Host, tmp_path: Path) -> None:
    with host.serve(*models(), auth={"keys_file": keys_file(tmp_path)}) as client:
        missing = client.post("/a/predict", json=BODY, headers={"x-request-id": "r-401"})
        assert missing.status_code == 401 and missing.json()["request_id"] == "r-401"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert client.post("/a/predict", json=BODY,
                           headers=bearer("not-a-key")).status_code == 401
        assert client.post("/a/predict", json=BODY, headers=bearer(A_KEY)).status_code == 200
        assert client.post("/a/predict", json=BODY,
                           headers={"x-api-key": A_KEY}).status_code == 200
        refused = client.post("/b/predict", json=BODY,
                              headers={**bearer(A_KEY), "x-request-id": "r-403"})
        assert refused.status_code == 403 and refused.json()["request_id"] == "r-403"
        assert refused.json()["error"] == "forbidden" and "key-" in refused.json()["message"]
        assert client.post("/b/stream", json=BODY, headers=bearer(A_KEY)).status_code == 403
        assert client.post("/invocations", json=BODY, headers={
            **bearer(A_KEY), "x-amzn-sagemaker-target-model": "b"}).status_code == 403
        assert client.post("/b/predict", json=BODY, headers=bearer(STAR_KEY)).status_code == 200
        listed = client.get("/models", headers=bearer(A_KEY)).json()["models"]
        assert [m["name"] for m in listed] == ["a"]
        assert client.get("/models/b", headers=bearer(A_KEY)).status_code == 403
        everything = client.get("/models", headers=bearer(ADMIN_KEY)).json()["models"]
        assert sorted(m["name"] for m in everything) == ["a", "b"]
        assert client.get("/metrics", headers=bearer(STAR_KEY)).status_code == 403
        assert client.get("/metrics", headers=bearer(ADMIN_KEY)).status_code == 200
        for probe in ("/health", "/ready", "/a/ready", "/b/health"):
            assert client.get(probe).status_code == 200, probe
        document = client.get("/openapi.json", headers=bearer(A_KEY)).json()
        assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_keys_from_the_environment_and_from_a_hashed_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEAF_API_KEYS", f"{A_KEY}:a, {STAR_KEY}:*")
    hashed = tmp_path / "keys.yaml"
    hashed.write_text(json.dumps([{"id": "ci-bot", "scopes": ["b"],
                                   "sha256": hashlib.sha256(b"ci-secret").hexdigest()}]))
    config = SheafConfig(models=models(), server=ServerSettings(
        auth={"keys_file": str(hashed)}))
    with ModelServer(config, port=0, log_level="warning") as server, \
            httpx.Client(base_url=server.url or "") as client:
        wait_until_ready(client)
        assert client.post("/a/predict", json=BODY, headers=bearer(A_KEY)).status_code == 200
        assert client.post("/b/predict", json=BODY,
                           headers=bearer("ci-secret")).status_code == 200
        denied = client.post("/a/predict", json=BODY, headers=bearer("ci-secret"))
        assert denied.status_code == 403 and "'ci-bot'" in denied.json()["message"]


def test_the_typed_client_sends_its_key(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEAF_API_KEYS", f"{A_KEY}:a")
    with ModelServer(SheafConfig(models=models()), port=0, log_level="warning") as server:
        url = server.url or ""
        wait_until_ready(url)
        with SheafClient(url, api_key=A_KEY) as client:
            assert client.predict("a", BODY).model_name == "a"
        monkeypatch.setenv("SHEAF_API_KEY", A_KEY)  # the client's own variable
        with SheafClient(url) as client:
            assert client.predict("a", BODY).model_name == "a"
        with SheafClient(url, api_key="wrong") as client, \
                pytest.raises(SheafHTTPError) as refused:
            client.predict("a", BODY)
        assert refused.value.status == 401


@pytest.mark.parametrize(("entries", "message"), [
    ("k1:a|nope", "'nope'"),
    ("k1", "KEY:SCOPE"),
    ("k1:a,k1:b", "used twice"),
])
def test_a_bad_key_entry_stops_the_start_naming_it(entries: str, message: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEAF_API_KEYS", entries)
    with pytest.raises(ConfigError, match=message) as failed:
        ModelServer(SheafConfig(models=models()), port=0)
    assert "k1:" not in str(failed.value)  # the key itself is never repeated


def test_required_auth_without_keys_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHEAF_API_KEYS", raising=False)
    config = SheafConfig(models=models(), server=ServerSettings(auth={"required": True}))
    with pytest.raises(ConfigError, match="SHEAF_API_KEYS"):
        ModelServer(config, port=0)


def test_planted_secrets_show_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """An API key, storage credentials and an exporter's headers, planted: none is in the
    log (access log on, debug level), the listing, the OpenAPI document, the metrics, an
    error body or a header."""
    planted = "planted-secret-0c4f9e1a7b"
    monkeypatch.setenv("SHEAF_API_KEYS", f"{planted}:*|admin")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {planted}")
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    config = SheafConfig(models=models(), server=ServerSettings(
        access_log=True, payloads={"allowed_uri_prefixes": ["s3://bucket/"],
                                   "storage_options": {"key": "AKIA", "secret": planted}}))
    with ModelServer(config, port=0, log_level="debug") as server, \
            httpx.Client(base_url=server.url or "", headers=bearer(planted)) as client:
        wait_until_ready(client)
        for method, path in (("GET", "/models"), ("GET", "/models/a"), ("GET", "/openapi.json"),
                             ("GET", "/metrics"), ("POST", "/nope/predict"),
                             ("POST", "/a/predict")):
            answer = client.request(method, path, json=BODY if method == "POST" else None)
            seen.append(answer.text + json.dumps(dict(answer.headers)))
        bad = client.post("/a/predict", content=b"{", headers=bearer(planted))
        seen.append(bad.text)
    seen.append(caplog.text)
    assert all(planted not in text for text in seen)


def test_rate_limits_answer_429_then_recover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEAF_API_KEYS", f"{A_KEY}:a|b")
    config = SheafConfig(models=models(), server=ServerSettings(
        rate_limits={"per_key": {"requests_per_s": 2, "burst": 2},
                     "per_model": {"requests_per_s": 100}}))
    with ModelServer(config, port=0, log_level="warning") as server, \
            httpx.Client(base_url=server.url or "", headers=bearer(A_KEY)) as client:
        wait_until_ready(client)
        answers = [client.post("/a/predict", json=BODY) for _ in range(3)]
        assert [a.status_code for a in answers[:2]] == [200, 200]
        limited = answers[2]
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-limit"] == "2"
        assert limited.headers["ratelimit-remaining"] == "0"
        assert client.post("/b/predict", json=BODY).status_code == 429  # the key, any model
        deadline = time.monotonic() + 10
        while (again := client.post("/a/predict", json=BODY)).status_code == 429:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.1)
        assert again.status_code == 200


def test_a_cors_preflight_is_answered_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEAF_API_KEYS", f"{A_KEY}:a")
    origin = "https://app.example.com"
    config = SheafConfig(models=models(), server=ServerSettings(
        cors={"allow_origins": [origin]}))
    with ModelServer(config, port=0, log_level="warning") as server, \
            httpx.Client(base_url=server.url or "") as client:
        wait_until_ready(client)
        preflight = {"origin": origin, "access-control-request-method": "POST",
                     "access-control-request-headers": "authorization,content-type"}
        allowed = client.options("/a/predict", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == origin
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = client.options("/a/predict", headers={**preflight,
                                                      "origin": "https://evil.example"})
        assert other.status_code == 400
        answered = client.post("/a/predict", json=BODY,
                               headers={"origin": origin, **bearer(A_KEY)})
        assert answered.headers["access-control-allow-origin"] == origin
        assert "x-request-id" in answered.headers["access-control-expose-headers"].lower()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("client@sheaf")
    paths = {"ca": root / "ca.pem", "cert": root / "server.pem", "key": root / "server.key",
             "client": root / "client.pem"}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    client.private_key_and_cert_chain_pem.write_to_path(paths["client"])
    return paths


def test_tls_serves_https_with_the_configured_certificate(certificates: dict[str, Path]) -> None:
    tls = {"certfile": str(certificates["cert"]), "keyfile": str(certificates["key"])}
    config = SheafConfig(models=models(), server=ServerSettings(tls=tls))
    with ModelServer(config, port=0, log_level="warning") as server:
        url = server.url or ""
        assert url.startswith("https://")
        with httpx.Client(base_url=url, verify=str(certificates["ca"])) as client:
            wait_until_ready(client)
            assert client.post("/a/predict", json=BODY).status_code == 200
        with pytest.raises(httpx.ConnectError):  # not our CA: the handshake is refused
            httpx.get(f"{url}/health")
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(url.replace("https://", "http://") + "/health")


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
        certificates: dict[str, Path]) -> None:
    tls = {"certfile": str(certificates["cert"]), "keyfile": str(certificates["key"]),
           "ca_certs": str(certificates["ca"]), "client_auth": "required"}
    config = SheafConfig(models=models(), server=ServerSettings(tls=tls))
    with ModelServer(config, port=0, log_level="warning") as server:
        url = server.url or ""
        with_cert = ssl.create_default_context(cafile=str(certificates["ca"]))
        with_cert.load_cert_chain(str(certificates["client"]))
        with httpx.Client(base_url=url, verify=with_cert) as client:
            wait_until_ready(client)
            assert client.post("/a/predict", json=BODY).status_code == 200
        without = ssl.create_default_context(cafile=str(certificates["ca"]))
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", verify=without)


def test_client_auth_without_a_ca_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="ca_certs"):
        ServerSettings(tls={"certfile": "c", "keyfile": "k", "client_auth": "required"})


def test_the_healthcheck_sends_its_key_to_a_protected_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sheaf_server import healthcheck

    monkeypatch.setenv("SHEAF_API_KEYS", f"{A_KEY}:a")
    config = SheafConfig(models=models(), server=ServerSettings(auth={"open_paths": []}))
    with ModelServer(config, port=0, log_level="warning") as server:
        monkeypatch.setenv("PORT", (server.url or "").rsplit(":", 1)[1])
        monkeypatch.delenv("SHEAF_API_KEY", raising=False)
        assert healthcheck.main(["/health"]) == 1  # 401: every path protected
        monkeypatch.setenv("SHEAF_API_KEY", A_KEY)
        assert healthcheck.main(["/health"]) == 0


def test_a_key_scoped_to_a_pipeline_calls_it_without_scopes_on_its_models(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sheaf_core import PipelineSpec

    monkeypatch.setenv("SHEAF_API_KEYS", f"{A_KEY}:both")
    both = PipelineSpec.model_validate({"name": "both", "output": "mix", "nodes": {
        "a": {"model": "a"}, "b": {"model": "b"},
        "mix": {"combiner": "weighted_ensemble", "inputs": ["a", "b"]}}})
    config = SheafConfig(models=models(), pipelines=[both])
    with ModelServer(config, port=0, log_level="warning") as server, \
            httpx.Client(base_url=server.url or "", headers=bearer(A_KEY)) as client:
        wait_until_ready(client)
        answered = client.post("/both/predict", json=BODY)
        assert answered.status_code == 200 and answered.json()["model_name"] == "both"
        assert client.post("/a/predict", json=BODY).status_code == 403
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["both"]
