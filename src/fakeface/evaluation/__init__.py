"""Evaluation: metrics, reports, plots, perturbations, the GAN report, detector scoring."""
