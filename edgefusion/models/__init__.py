"""Model sources: local diffusers folders and architecture presets built from configs."""
