"""Model families. `models.specs` needs no torch; importing `models.registry` loads them."""
