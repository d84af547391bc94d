"""Sheaf backend `sdxl`: SDXL img2img and inpainting through diffusers."""

__version__ = "0.1.0"
