"""A request may name its data in the model's feature store instead of sending it.

`FeatureReference` is what every such reference shares — the feature view and the entity
(join key → value); a contract subclasses it to say which features fill which request
fields (time series: `SeriesFeatures`). The server reads them before the response cache
and the batcher (`BaseRequest.feature_reference` / `with_features`), so a backend only
ever sees complete requests.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

FeatureName = Annotated[str, Field(min_length=1, max_length=256)]
#: Where a feature goes, as a request location: ("features", "target", 0).
Location = tuple[str | int, ...]


class FeatureReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature_view: FeatureName = Field(description="The Feast feature view holding the features.")
    entity: dict[FeatureName, str | int] = Field(
        min_length=1, max_length=16,
        description="The entity whose features to read: each join key of the feature view → "
        "its value, e.g. {\"store_id\": 42}.")

    def features(self) -> list[tuple[Location, str]]:
        """Every feature to read, with the request location that names it (for errors)."""
        raise NotImplementedError
