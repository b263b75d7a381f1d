"""ffrep: a reproducible workflow for emergent representations in
Forward-Forward networks (Tosato et al., arXiv 2305.18353)."""

__version__ = "0.1.0"
