"""Deployment: export to a self-describing model file, load it, score images with it."""
