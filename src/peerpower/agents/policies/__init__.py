"""The bidding policies, one module each; importing this package registers them all."""

from peerpower.agents.policies import ev_cheap, house_car, optimizer, renewable, soc_table, zi_c

__all__ = ["ev_cheap", "house_car", "optimizer", "renewable", "soc_table", "zi_c"]
