"""A model's Feast feature store: reads the features a request names (`features` in its
body) so the request path can complete it before the response cache and the batcher.

Opened when the model loads (importing Feast and reading its registry take seconds), read
in a worker thread per request (an online lookup of one entity). What can go wrong is
answered with the status that says who must act: a feature view, feature or join key the
store does not have → 422 naming the request field; an entity with no values → 404 naming
it; a store that cannot be read → 502.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sheaf_core.contracts.features import FeatureReference
from sheaf_core.errors import ConfigError, FieldProblem, InvalidRequest
from sheaf_core.spec import FeatureStoreSpec
from sheaf_server.engine.errors import FeatureEntityNotFound, FeatureStoreUnavailable

log = logging.getLogger("sheaf.features")

_INTEGER_KEYS = {"INT32", "INT64"}
#: What importing Feast puts in os.environ when absent (feast/metrics.py, for its own
#: Gunicorn feature server): it would switch this process's Prometheus exposition to
#: multiprocess files that sheaf's series, created earlier, never write (an empty scrape).
_FEAST_SETS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


@contextmanager
def importing_feast() -> Iterator[None]:
    """Around the first `import feast` of a process: undo what it does to os.environ."""
    kept = {name: os.environ.get(name) for name in _FEAST_SETS}
    try:
        yield
    finally:
        for name, value in kept.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class FeatureStoreReader:
    def __init__(self, model: str, spec: FeatureStoreSpec) -> None:
        self.model = model
        self.spec = spec
        self._store: Any = None

    def open(self) -> None:
        """Build the Feast `FeatureStore` (worker thread, at load). ConfigError names the
        setting at fault; the model then fails to load and says why in /ready."""
        try:
            with importing_feast():
                from feast import FeatureStore
                from feast.repo_config import RepoConfig
        except ImportError:
            raise ConfigError(f"model {self.model!r}: features: needs Feast: pip install "
                              "'sheaf-server[feast]'") from None
        if self.spec.repo_path is not None:
            if not (Path(self.spec.repo_path) / "feature_store.yaml").is_file():
                raise ConfigError(f"model {self.model!r}: features.repo_path: no "
                                  f"feature_store.yaml in {self.spec.repo_path}")
            self._store = FeatureStore(repo_path=self.spec.repo_path)
        else:
            try:
                config = RepoConfig(**(self.spec.config or {}))
            except Exception as exc:
                raise ConfigError(f"model {self.model!r}: features.config: not a valid "
                                  f"feature_store.yaml content: {exc}") from None
            self._store = FeatureStore(config=config)

    @property
    def project(self) -> str:
        return str(self._store.project)

    def read(self, ref: FeatureReference) -> dict[str, Any]:
        """Feature name → the entity's value (None where the store has none). Worker
        thread."""
        self._check(ref)
        names = list(dict.fromkeys(name for _, name in ref.features()))
        try:
            result = self._store.get_online_features(
                features=[f"{ref.feature_view}:{name}" for name in names],
                entity_rows=[dict(ref.entity)]).to_dict()
        except Exception as exc:
            raise self._unavailable(exc) from None
        values = {name: result[name][0] for name in names}
        if all(value is None for value in values.values()):
            shown = ", ".join(f"{k}={v!r}" for k, v in ref.entity.items())
            raise FeatureEntityNotFound(
                f"no entity {shown} in feature view {ref.feature_view!r}",
                problems=[FieldProblem("features.entity", f"{shown}: the feature store has no "
                                       f"values for this entity in {ref.feature_view!r}",
                                       "not_found")])
        log.debug("model %r read %d features of %s", self.model, len(names), ref.entity)
        return values

    def _check(self, ref: FeatureReference) -> None:
        """The reference against the store's registry: its feature view, features and join
        keys (422 naming the request field otherwise)."""
        from feast.errors import FeatureViewNotFoundException

        try:
            view = self._store.get_feature_view(ref.feature_view)
        except FeatureViewNotFoundException:
            names = sorted(v.name for v in self._safely(self._store.list_feature_views))
            raise InvalidRequest(FieldProblem(
                "features.feature_view", f"no feature view {ref.feature_view!r} in project "
                f"{self.project!r}; it has: {', '.join(names)}", "not_found"),
                message="the feature reference names what the store lacks") from None
        except Exception as exc:
            raise self._unavailable(exc) from None
        problems = []
        known = {feature.name for feature in view.features}
        for location, name in ref.features():
            if name not in known:
                problems.append(FieldProblem(
                    ".".join(str(part) for part in location),
                    f"feature view {ref.feature_view!r} has no feature {name!r}; it has: "
                    f"{', '.join(sorted(known))}", "not_found"))
        keys = {column.name: getattr(column.dtype, "name", str(column.dtype))
                for column in view.entity_columns}
        if set(ref.entity) != set(keys):
            problems.append(FieldProblem(
                "features.entity", f"feature view {ref.feature_view!r} is keyed by "
                f"{', '.join(sorted(keys))}; got {', '.join(sorted(ref.entity))}"))
        for key, value in ref.entity.items():
            if keys.get(key) in _INTEGER_KEYS and not isinstance(value, int):
                problems.append(FieldProblem(f"features.entity.{key}",
                                             f"must be an integer (its join key is "
                                             f"{keys[key]}); got {value!r}"))
        if problems:
            raise InvalidRequest(problems, message="the feature reference does not match "
                                 "the feature store")

    def _safely(self, listing: Any) -> list[Any]:
        try:
            return list(listing())
        except Exception:
            return []

    def _unavailable(self, exc: Exception) -> FeatureStoreUnavailable:
        log.error("model %r: reading the feature store failed", self.model, exc_info=exc)
        return FeatureStoreUnavailable(
            f"model {self.model!r}: the feature store (Feast project {self.project!r}) could "
            f"not be read: {type(exc).__name__}: {exc}; retry later, or send the data itself")
