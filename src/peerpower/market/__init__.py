"""The market core: orders, the book, clearing mechanisms and the result checker."""

from peerpower.market.clear import clear
from peerpower.market.orders import Book, Order, Side, parse_book
from peerpower.market.result import ClearingResult, Trade
from peerpower.market.verify import verify

__all__ = ["Book", "ClearingResult", "Order", "Side", "Trade", "clear", "parse_book", "verify"]
