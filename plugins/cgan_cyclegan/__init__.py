"""The built-in CycleGAN plugin: unpaired translation (the cyclegan method) and unpaired data."""
