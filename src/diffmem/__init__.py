"""diffmem: when does a diffusion model stop generalising and start memorising?"""

__version__ = "0.1.0"
