"""Local scoring: committed readings → windows → gateway model → observations (docs/scoring.md)."""

from gateway.pipeline.config import ScoringConfig
from gateway.pipeline.pipeline import PipelineStats, ScoringPipeline

__all__ = ["PipelineStats", "ScoringConfig", "ScoringPipeline"]
