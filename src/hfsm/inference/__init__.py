"""Prediction core independent of any web framework: load, preprocess, forward, postprocess."""
