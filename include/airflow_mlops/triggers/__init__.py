"""Triggers: AssetWatcher event triggers (new raw batches) and the deferrable sensors' triggers."""
