"""What Sheaf's diffusers backends share. Light at import: torch and diffusers load in
`load_pipeline` and the generation helpers, never at discovery."""

from sheaf_diffusers.generation import ImageJob, group_by, plan_images
from sheaf_diffusers.loading import load_pipeline
from sheaf_diffusers.settings import DiffusersSettings

__all__ = ["DiffusersSettings", "ImageJob", "group_by", "load_pipeline", "plan_images"]
