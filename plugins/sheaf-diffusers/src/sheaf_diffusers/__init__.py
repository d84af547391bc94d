"""What Sheaf's diffusers backends share. Light at import: torch and diffusers load in
`load_pipeline` and the generation helpers, never at discovery."""

from sheaf_diffusers.generation import ImageJob, generate_images, generators, group_by
from sheaf_diffusers.loading import load_pipeline, weights_problems
from sheaf_diffusers.settings import DiffusersSettings

__version__ = "0.1.0"

__all__ = ["DiffusersSettings", "ImageJob", "generate_images", "generators", "group_by",
           "load_pipeline", "weights_problems"]
