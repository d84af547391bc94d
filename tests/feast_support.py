"""A real Feast feature repository for the tests, built in a temp dir: a `store` entity
keyed by `store_id`, and a feature view `sales_daily` whose Array features hold each
store's latest window (sales, visits, temperature over the history and over the next
steps) plus one scalar, written to a SQLite online store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

FEATURE_STORE_YAML = """\
project: shop
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online_store.db
entity_key_serialization_version: 3
"""

#: store_id → the features written for it.
ROWS = {
    1: {"sales": [1.0, 2.0, 3.0], "visits": [10.0, 20.0, 30.0], "temp": [5.0, 6.0, 7.0],
        "temp_next": [100.0, 200.0], "price": 9.5},
    2: {"sales": [4.0, 5.0, 6.0, 7.0], "visits": [1.0, 1.0, 1.0, 1.0],
        "temp": [0.0, 0.0, 0.0, 0.0], "temp_next": [1.0, 2.0], "price": 3.0},
}


def build_feature_repo(root: Path) -> Path:
    """Write feature_store.yaml, apply the definitions, fill the online store; the repo."""
    import pandas as pd

    from sheaf_server.engine.features import importing_feast

    with importing_feast():  # as the server imports it: its metrics stay in memory
        from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
        from feast.types import Array, Float64

    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(FEATURE_STORE_YAML)
    now = dt.datetime.now(dt.UTC)
    frame = pd.DataFrame([{"store_id": key, **values, "event_timestamp": now}
                          for key, values in ROWS.items()])
    frame.to_parquet(root / "data" / "sales.parquet")
    store = FeatureStore(repo_path=str(root))
    entity = Entity(name="store", join_keys=["store_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="sales_daily", entities=[entity], ttl=None,
        schema=[Field(name=name, dtype=Array(Float64))
                for name in ("sales", "visits", "temp", "temp_next")]
        + [Field(name="price", dtype=Float64)],
        source=FileSource(path=str(root / "data" / "sales.parquet"),
                          timestamp_field="event_timestamp"))
    store.apply([entity, view])
    store.write_to_online_store("sales_daily", frame)
    return root
