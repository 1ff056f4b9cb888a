"""Use floor: what a trained model file is for: feature indexes, predictions with "unknown",
and spotting symbols on whole drawings. Imports the floors below, never the commands."""
