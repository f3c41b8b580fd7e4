"""Each family's `model` section and job document, as pydantic models (no torch), one file each."""
