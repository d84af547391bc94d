"""Feast features at request time: a time-series request names its history (and
covariates) in the model's feature store instead of sending them; the server reads them
from a real Feast repo with a SQLite online store before the cache and the batcher.
Failures name the field or entity at fault: 422, 404, and 502 when the store cannot be
read (the next request is still served)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from feast_support import build_feature_repo
from hosts import Host

from sheaf_core import ModelSpec


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_feature_repo(tmp_path_factory.mktemp("feast"))


@pytest.fixture
def tier1(request: pytest.FixtureRequest) -> Host:
    """Tier 1 alone, for what does not depend on the host (the engine code is the same in a
    Ray replica)."""
    return Host("asgi", request)


def featured(repo: Path, **backend_kwargs: Any) -> ModelSpec:
    return ModelSpec(name="m", backend="test", backend_kwargs=backend_kwargs,
                     features={"repo_path": str(repo)}, cache={"enabled": True})


def named(entity: int = 1, **reference: Any) -> dict[str, Any]:
    return {"horizon": 2, "features": {"feature_view": "sales_daily",
                                       "entity": {"store_id": entity}, "target": ["sales"],
                                       **reference}}


def problems(response: httpx.Response) -> dict[str, str]:
    return {d["field"]: d["message"] for d in response.json()["details"]}


def test_a_request_names_its_history_in_the_feature_store(host: Host, repo: Path) -> None:
    with host.serve(featured(repo)) as client:
        answer = client.post("/m/predict", json=named(), headers={"x-request-id": "feat-1"})
        # The same data sent inline is the same request: resolution happens before the
        # cache, so this one is a hit.
        inline = client.post("/m/predict", json={"horizon": 2, "history": [1.0, 2.0, 3.0]})
        other = client.post("/m/predict", json=named(entity=2))
        cache = client.get("/models/m").json()["cache"]
        metrics = client.get("/metrics").text  # importing Feast left the exposition alone
    assert answer.status_code == 200, answer.text
    assert answer.json()["mean"] == [3.0, 3.0] and answer.json()["request_id"] == "feat-1"
    assert inline.json()["mean"] == [3.0, 3.0]
    assert other.json()["mean"] == [7.0, 7.0]
    assert (cache["hits"], cache["misses"]) == (1, 2)
    assert 'sheaf_requests_total{model="m",route="predict",status="200"}' in metrics


def test_multivariate_targets_and_covariates_resolve_too(host: Host, repo: Path) -> None:
    with host.serve(featured(repo, use_covariates=True)) as client:
        joint = client.post("/m/predict", json={**named(target=["sales", "visits"]),
                                                "target_index": None})
        # temp over the history, temp_next as temp's known values over the horizon: the
        # scripted backend adds future covariates to its forecast.
        covariates = client.post("/m/predict", json=named(
            past_covariates=["temp"], future_covariates={"temp": "temp_next"}))
        mixed = client.post("/m/predict", json={
            **named(past_covariates=["temp"]), "past_covariates": {"promo": [0, 0, 1]},
            "future_covariates": {"promo": [5.0, 5.0]}})
    assert joint.status_code == 200, joint.text
    assert joint.json()["mean"] == [[3.0, 30.0], [3.0, 30.0]]
    assert covariates.status_code == 200, covariates.text
    assert covariates.json()["mean"] == [103.0, 203.0]
    assert mixed.status_code == 200, mixed.text  # inline covariates beside stored ones
    assert mixed.json()["mean"] == [8.0, 8.0]


def test_what_the_store_lacks_is_a_422_naming_the_field(repo: Path, tier1: Host) -> None:
    with tier1.serve(featured(repo), ModelSpec(name="plain", backend="test")) as client:
        def post(body: dict[str, Any], model: str = "m") -> httpx.Response:
            return client.post(f"/{model}/predict", json=body)

        view = post(named(**{"feature_view": "sales_weekly"}))
        feature = post(named(target=["sales", "revenue"]))
        key = post({**named(), "features": {**named()["features"], "entity": {"shop": 1}}})
        key_type = post({**named(), "features": {**named()["features"],
                                                 "entity": {"store_id": "one"}}})
        scalar = post(named(target=["price"]))
        lengths = post(named(target=["sales", "visits", "temp"], past_covariates=["sales"],
                             future_covariates={"sales": "temp"}))
        both = post({**named(), "history": [1.0, 2.0]})
        neither = post({"horizon": 2})
        no_store = post(named(), model="plain")
    assert view.status_code == 422
    assert "sales_weekly" in problems(view)["features.feature_view"]
    assert "sales_daily" in problems(view)["features.feature_view"]  # what it has
    assert "'revenue'" in problems(feature)["features.target.1"]
    assert "store_id" in problems(key)["features.entity"]
    assert "integer" in problems(key_type)["features.entity.store_id"]
    assert "Array" in problems(scalar)["features.target.0"]
    assert "horizon is 2" in problems(lengths)["future_covariates.sales"]
    assert "history" in problems(both) and "history" in problems(neither)
    assert "no feature store" in problems(no_store)["features"]


def test_an_unknown_entity_is_a_404_naming_it(host: Host, repo: Path) -> None:
    with host.serve(featured(repo)) as client:
        missing = client.post("/m/predict", json=named(entity=99),
                              headers={"x-request-id": "who"})
    assert missing.status_code == 404
    body = missing.json()
    assert body["error"] == "feature_entity_not_found" and body["request_id"] == "who"
    assert "store_id=99" in problems(missing)["features.entity"]


def test_a_store_that_cannot_be_read_is_a_502_and_the_next_request_is_served(
        tmp_path: Path, tier1: Host) -> None:
    repo = build_feature_repo(tmp_path / "repo")
    with tier1.serve(featured(repo)) as client:
        assert client.post("/m/predict", json=named()).status_code == 200
        with sqlite3.connect(repo / "data" / "online_store.db") as db:  # the store is wiped
            db.execute("DROP TABLE shop_sales_daily")
        failed = client.post("/m/predict", json=named(entity=2),
                             headers={"x-request-id": "down"})
        inline = client.post("/m/predict", json={"horizon": 2, "history": [4.0, 5.0]})
    assert failed.status_code == 502
    body = failed.json()
    assert body["error"] == "feature_store_unavailable" and body["request_id"] == "down"
    assert "shop" in body["message"] and "no such table" in body["message"]
    assert inline.status_code == 200 and inline.json()["mean"] == [5.0, 5.0]


def test_inline_store_config_and_a_repo_that_is_not_there(tmp_path: Path, repo: Path,
                                                          tier1: Host) -> None:
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["registry"] = str(repo / config["registry"])
    config["online_store"]["path"] = str(repo / config["online_store"]["path"])
    inline = ModelSpec(name="m", backend="test", features={"config": config})
    missing = ModelSpec(name="gone", backend="test",
                        features={"repo_path": str(tmp_path / "nowhere")})
    with tier1.serve(inline, missing, wait_ready=False) as client:
        for _ in range(600):  # Feast's import and registry read take seconds
            if client.get("/m/ready").status_code == 200 and \
                    client.get("/models/gone").json()["state"] == "failed":
                break
            time.sleep(0.05)
        answer = client.post("/m/predict", json=named())
        gone = client.get("/models/gone").json()
    assert answer.status_code == 200 and answer.json()["mean"] == [3.0, 3.0]
    assert gone["state"] == "failed"
    assert "features.repo_path" in gone["reason"] and "nowhere" in gone["reason"]
