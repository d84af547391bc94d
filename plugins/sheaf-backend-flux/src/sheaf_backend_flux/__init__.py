"""Sheaf backend `flux`: FLUX text-to-image through diffusers' FluxPipeline."""
