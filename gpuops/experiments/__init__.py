"""Experiment specs: ``experiments/*.yaml`` validated, overridden, resolved and hashed."""

from gpuops.experiments.spec import (
    ClassifyExperiment,
    ExperimentSpec,
    ResolvedExperiment,
    SRExperiment,
    load_experiment,
    resolved_from_dict,
)

__all__ = [
    "ClassifyExperiment",
    "ExperimentSpec",
    "ResolvedExperiment",
    "SRExperiment",
    "load_experiment",
    "resolved_from_dict",
]
