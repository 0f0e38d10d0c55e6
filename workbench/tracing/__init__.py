"""Causal tracing (Meng et al. 2022): where does a model keep a fact, and which weight to edit."""
