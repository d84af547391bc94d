"""Backend plugin tests. `image_support` (shared by the image backends' tests) is importable
from here."""
