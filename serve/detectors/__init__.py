"""Deepfake detectors: the plug-in interface (base), the registry, and the built-in MesoNet family."""
