"""peerpower: a peer-to-peer electricity exchange.

Half-hourly markets in 0.1 kWh lots, cleared by a continuous double auction, a call auction or
an optimal clearing for a shared goal, recorded on a verifiable ledger.
"""

__version__ = "0.1.0"
