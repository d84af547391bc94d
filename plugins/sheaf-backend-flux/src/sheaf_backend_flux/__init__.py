"""Sheaf backend `flux`: FLUX text-to-image through diffusers' FluxPipeline."""

__version__ = "0.1.0"
