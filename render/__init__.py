"""Edge-to-video renderer (guidance maps, generator, per-target training). Not built yet."""
