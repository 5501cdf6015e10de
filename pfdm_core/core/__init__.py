"""Core floor: the noise schedule, the UNet, diffusion (loss, samplers), the one training loop, checkpoints,
paths, presets and the OpenMP policy. Imports nothing else of the package."""
