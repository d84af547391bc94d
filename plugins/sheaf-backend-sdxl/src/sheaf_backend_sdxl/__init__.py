"""Sheaf backend `sdxl`: SDXL img2img and inpainting through diffusers."""
