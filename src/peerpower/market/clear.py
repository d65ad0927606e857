"""One entry point for every mechanism."""

from __future__ import annotations

from peerpower.errors import ClearingError
from peerpower.market.call import clear_call
from peerpower.market.cda import clear_cda
from peerpower.market.optimal import check_pricing, clear_optimal
from peerpower.market.orders import Book
from peerpower.market.result import GOALS, MECHANISMS, ClearingResult, Goal, gc_paused


def clear(
    book: Book,
    mechanism: str,
    goal: str | None = None,
    pricing: str | None = None,
    maxmin_budget: int | None = None,
) -> ClearingResult:
    """Clear ``book`` with ``mechanism`` (``cda``, ``call`` or ``optimal``).

    ``goal`` (``volume``, ``welfare`` or ``maxmin``; default ``welfare``) applies to ``optimal``
    only. ``pricing`` (default: the mechanism's, see :func:`.result.pricings_for`) must be one
    the mechanism and goal define; otherwise :class:`ClearingError` names ``pricing``.
    ``maxmin_budget``: branch-and-bound nodes per stage of ``maxmin``'s exact MILP (default
    :data:`.pairwise.DEFAULT_BUDGET_NODES`).
    """
    if mechanism not in MECHANISMS:
        raise ClearingError(
            "mechanism", f"unknown mechanism {mechanism!r}; use one of {', '.join(MECHANISMS)}"
        )
    if goal is not None and goal not in GOALS:
        raise ClearingError("goal", f"unknown goal {goal!r}; use one of {', '.join(GOALS)}")
    chosen: Goal = "welfare"
    for known in GOALS:
        if goal == known:
            chosen = known
    rule = check_pricing(mechanism, chosen if mechanism == "optimal" else None, pricing)
    # A clearing allocates many small objects (heap entries, units, trades) and no reference
    # cycles, so the cyclic collector would only walk the book again and again.
    with gc_paused():
        if mechanism == "cda":
            return clear_cda(book)
        if mechanism == "call":
            return clear_call(book)
        if maxmin_budget is None:
            return clear_optimal(book, chosen, rule)
        return clear_optimal(book, chosen, rule, maxmin_budget)
