"""Compressed-domain source separation on WaLLoC latents: not built yet -- see the open issue."""
