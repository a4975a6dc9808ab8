"""The reconcile loop's pure core: plan() and the scheduler."""

from .plan import plan
from .state import Action, Configured, Hn, Observed, Placements, Plan, Settings

__all__ = ["Action", "Configured", "Hn", "Observed", "Placements", "Plan", "Settings", "plan"]
