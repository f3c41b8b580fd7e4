"""Pieces that the API and the workers share: settings, the SQL schema, job specs, datasets."""
