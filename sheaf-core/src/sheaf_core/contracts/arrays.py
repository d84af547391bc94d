"""Numeric arrays in JSON: base64 of the raw little-endian bytes, with dtype and shape.

A JSON list of floats costs ~10 bytes a value and slow parsing; base64 of float32 costs
5.3. Validation checks that the bytes match the shape without decoding them (no numpy
needed); `to_numpy`/`from_numpy` convert where numpy is at hand.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

if TYPE_CHECKING:
    import numpy as np

#: Largest array accepted inline in JSON, in bytes (bigger states travel as NetCDF or Zarr;
#: arrays made with `from_numpy`, e.g. read from such a file, are not limited).
MAX_INLINE_BYTES = 64 * 1024 * 1024
_ITEMSIZE = {"float32": 4, "float64": 8}


class EncodedArray(BaseModel):
    """An n-dimensional float array: `data_b64` holds prod(shape) values, C order."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float32", "float64"] = "float32"
    shape: list[int] = Field(min_length=1, max_length=8)
    data_b64: str = Field(description="base64 of the little-endian values, row-major.")
    #: The values, when this array was made from them (`from_numpy`): read back without
    #: decoding, and never checked against the inline limit.
    _values: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _bytes_match_shape(self) -> EncodedArray:
        if any(n < 1 for n in self.shape):
            raise ValueError(f"shape {self.shape}: every dimension must be at least 1")
        expected = math.prod(self.shape) * _ITEMSIZE[self.dtype]
        if expected > MAX_INLINE_BYTES:
            raise ValueError(f"shape {self.shape} is {expected:,} bytes; inline arrays are "
                             f"limited to {MAX_INLINE_BYTES:,} (send NetCDF or Zarr)")
        try:
            size = len(base64.b64decode(self.data_b64, validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("data_b64 is not valid base64") from None
        if size != expected:
            raise ValueError(f"data_b64 holds {size:,} bytes; shape {self.shape} of "
                             f"{self.dtype} needs {expected:,}")
        return self

    def __eq__(self, other: object) -> bool:
        """Equal values (the cached `_values` are not compared: they equal the data)."""
        if not isinstance(other, EncodedArray):
            return NotImplemented
        return (self.dtype, self.shape, self.data_b64) == (other.dtype, other.shape,
                                                            other.data_b64)

    __hash__ = None  # type: ignore[assignment]  # mutable, as pydantic models are

    def to_numpy(self) -> np.ndarray:
        """The values (read-only)."""
        import numpy as np

        if self._values is not None:
            return self._values
        raw = base64.b64decode(self.data_b64)
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(
            self.shape).astype(self.dtype)

    @classmethod
    def from_numpy(cls, array: Any, dtype: Literal["float32", "float64"] = "float32",
                   ) -> EncodedArray:
        import numpy as np

        values = np.ascontiguousarray(np.asarray(array, dtype=np.dtype(dtype).newbyteorder("<")))
        if values.ndim == 0 or 0 in values.shape:
            raise ValueError(f"shape {list(values.shape)}: an array needs at least one "
                             "dimension and no empty one")
        # Consistent by construction, so not validated (which would apply the inline limit).
        encoded = cls.model_construct(dtype=dtype, shape=list(values.shape),
                                      data_b64=base64.b64encode(values.tobytes()).decode())
        values = values.astype(dtype, copy=False)
        values.flags.writeable = False
        encoded._values = values
        return encoded
