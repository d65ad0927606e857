"""The distribution grid as a tree, with consignment fees and capacities on its edges."""

from peerpower.grid.tree import GridTree

__all__ = ["GridTree"]
