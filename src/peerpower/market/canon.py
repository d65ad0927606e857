"""``maxmin``'s pairing rule: a clearing is worth what its fills are worth once paired by the
rule.

Under ``midpoint`` prices the pairing decides who is paid what, so the rules fix one pairing for
given fills, and ``verify`` and the ledger refuse any other (rule ``pairing``). For ``volume`` and
``welfare`` that is the bottom-up matching of :func:`.optimal.canonical_midpoint`; it hands a
cheap sell the cheapest buy that can pay it, which is harmless where the pairing does not enter
the objective but ruins ``maxmin``'s (on the benchmark books it left t at 26 % of the bound at
1,000 orders and 3.6 % at 10,000). So ``maxmin`` has a rule of its own, :func:`maxmin_pairing`:
the bottom-up matching, then swaps of counterparties that raise the lowest participant, the fills
fixed, within :func:`swap_budget` swaps (a work limit, so every validator computes the same
pairing).

A ``maxmin`` clearing is therefore chosen by its fills: its ``t`` (the lowest participant's
profit per offered lot), welfare and seeded score are those of its fills paired by the rule. The
pairwise MILP of :mod:`.pairwise` ranges over every pairing, so it stays an upper bound, and a
clearing counts as proven only when its t reaches that bound.

:func:`best_canonical` pairs the clearings the solver passed through by the rule, keeps the best
by (t, welfare, score), and improves it by a local search over fills — first improvement, in a
fixed order, within a budget of evaluations:

* a lowest participant's order with lots free takes one more lot with a free partner
  (best gain first);
* a lowest participant's order with lots free takes a lot of a paired order's counterpart (the
  lot that order held is dropped);
* any pair gives up one lot, and any filled order gives up all its lots with the lots its
  partners hold with it; the same, with the lowest participants' orders then filled again
  from their free partners.

A move is taken if it raises (t, −participants at t, welfare, score); the result is the best
seen by (t, welfare, score). Capacities hold throughout: an edge's net flow depends on the fills
alone, and every move is checked against them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from peerpower.market.orders import Book, BookArrays

I64 = npt.NDArray[np.int64]
Units = list[tuple[int, int, int]]

#: Partners tried per order of a lowest participant in one round of the search.
PARTNERS = 8
#: Evaluations of the search on books small enough for the exact MILP.
SEARCH_EVALUATIONS = 600


@dataclass(frozen=True)
class Canon:
    """A clearing paired canonically: its units (book indexes), fills [lots per order], t (the
    lowest profit per offered lot, sen/kWh), the participants at t, welfare [sen/kWh · lot] and
    seeded score."""

    units: Units
    filled: tuple[int, ...]
    t: Fraction
    low: tuple[int, ...]
    welfare: int
    score: int

    @property
    def rank(self) -> tuple[Fraction, int, int]:
        """What ``maxmin`` ranks clearings by: t, then welfare, then the seeded score."""
        return self.t, self.welfare, self.score

    @property
    def step(self) -> tuple[Fraction, int, int, int]:
        """What the search climbs: t, then fewer participants at t, welfare, score."""
        return self.t, -len(self.low), self.welfare, self.score


class Evaluator:
    """Pairs fills canonically and measures them for ``maxmin`` over the participants ``w``
    (participant index → offered lots)."""

    def __init__(self, book: Book, arr: BookArrays, w: dict[int, int]) -> None:
        self.book, self.arr, self.w = book, arr, w
        grid = book.grid
        self.cap = [
            -1
            if grid.capacity_wh[c] < 0 or grid.parent[c] < 0
            else grid.capacity_wh[c] // book.lot_wh
            for c in range(grid.size)
        ]
        self.capacitated = any(c >= 0 for c in self.cap)
        self.sign = np.where(arr.is_sell, 1, -1).astype(np.int64)
        self.evaluations = 0

    def of_units(self, units: Units) -> Canon:
        filled = np.zeros(len(self.arr.lots), dtype=np.int64)
        for s, b, n in units:
            filled[s] += n
            filled[b] += n
        got = self.of_fills(filled)
        assert got is not None, "fills of a compatible pairing are pairable"
        return got

    def fits(self, filled: I64) -> bool:
        """The fills' net flow keeps every capacitated edge within its capacity."""
        if not self.capacitated:
            return True
        grid = self.book.grid
        balance = np.zeros(grid.size, dtype=np.int64)
        np.add.at(balance, self.arr.node, self.sign * filled)
        net = grid.subtree_sums(balance).tolist()
        return all(c < 0 or abs(net[v]) <= c for v, c in enumerate(self.cap))

    def of_fills(self, filled: I64) -> Canon | None:
        """The fills paired by the ``maxmin`` rule (:func:`maxmin_pairing`) and measured, or
        ``None`` if no compatible pairing of them exists."""
        from peerpower.errors import ClearingError
        from peerpower.market import pairwise as pw

        self.evaluations += 1
        arr, book = self.arr, self.book
        try:
            units = maxmin_pairing(book, arr, self.w, filled)
        except ClearingError:
            return None
        # the rule pairs compatibly (the bottom-up matching does, and every swap checks)
        profit = pw._profits(book, arr, len(arr.participants), units)
        ratios = {q: Fraction(profit[q], m) for q, m in self.w.items()}
        t = min(ratios.values(), default=Fraction(0))
        low = tuple(sorted(q for q, r in ratios.items() if r == t))
        return Canon(
            units=units,
            filled=tuple(filled.tolist()),
            t=t,
            low=low,
            welfare=pw._welfare_of(book, arr, units),
            score=pw._score_of(arr, units),
        )


def best_canonical(
    book: Book,
    arr: BookArrays,
    w: dict[int, int],
    pool: list[Units],
    partners: dict[int, list[int]],
    evaluations: int,
) -> Canon:
    """The best clearing by the canonical pairing of its fills: the best of ``pool`` re-paired,
    then improved by the local search (module notes) within ``evaluations`` measurements.

    ``partners`` lists, per live order (book index), its compatible counterparts best gain
    first; the search tries the first :data:`PARTNERS` with lots free.
    """
    ev = Evaluator(book, arr, w)
    seen: set[tuple[int, ...]] = set()
    best: Canon | None = None
    for units in pool:
        got = ev.of_units(units)
        if got.filled in seen:
            continue
        seen.add(got.filled)
        if best is None or got.rank > best.rank:
            best = got
    assert best is not None, "the pool holds at least one clearing"
    top = best
    cur = best
    budget = ev.evaluations + evaluations
    while ev.evaluations < budget:
        moved = False
        for filled in _moves(arr, cur, partners):
            if ev.evaluations >= budget:
                break
            key = tuple(filled.tolist())
            if key in seen or not ev.fits(filled):
                continue
            seen.add(key)
            near = ev.of_fills(filled)
            if near is None:
                continue
            if near.rank > top.rank:
                top = near
            if near.step > cur.step:
                cur, moved = near, True
                break
        if not moved:
            break
    return top


def _moves(arr: BookArrays, cur: Canon, partners: dict[int, list[int]]) -> Iterator[I64]:
    """Fills next to ``cur``'s, in a fixed order (module notes)."""
    base = np.array(cur.filled, dtype=np.int64)
    free = arr.lots - base
    low = set(cur.low)
    mine_all = [o for o in partners if int(arr.participant[o]) in low]
    mine = [o for o in mine_all if free[o] > 0]
    for o in mine:  # one more lot with a free partner
        tried = 0
        for p in partners[o]:
            if free[p] <= 0:
                continue
            tried += 1
            out = base.copy()
            out[o] += 1
            out[p] += 1
            yield out
            if tried >= PARTNERS:
                break
    for o in mine:  # take a lot from an order paired with one of o's partners
        ok = set(partners[o])
        for s, b, _ in cur.units:
            other, rival = (b, s) if arr.is_sell[o] else (s, b)
            if other in ok and int(arr.participant[rival]) not in low:
                out = base.copy()
                out[rival] -= 1
                out[o] += 1
                yield out
    for s, b, _ in cur.units:  # one lot fewer
        out = base.copy()
        out[s] -= 1
        out[b] -= 1
        yield out
    for k in np.flatnonzero(base > 0).tolist():  # an order out, the lowest refilled
        out = base.copy()
        for s, b, n in cur.units:
            if k in (s, b):
                out[s] -= n
                out[b] -= n
        yield out
        refilled = out.copy()
        left = arr.lots - refilled
        for o in mine_all:
            for p in partners[o]:
                take = min(int(left[o]), int(left[p]))
                if p == k or take <= 0:
                    continue
                refilled[o] += take
                refilled[p] += take
                left[o] -= take
                left[p] -= take
        if (refilled != out).any():
            yield refilled


#: Partners of an order the pairing rule sorts at first (all of them if a scan gets past these).
PARTNERS_FIRST = 48
#: Swaps the ``maxmin`` pairing rule makes at most (a work limit, the same for every validator).
SWAPS = 20_000
#: ... or this many per filled order, if more (large books need more swaps to lift everyone).
SWAPS_PER_ORDER = 2
#: Above every price: :attr:`_Pairing.reach` of an order with no counterparty.
_NONE = 2**62
#: Partners a scan filters at once (doubling from 64), before it reads their counterparties.
_WINDOW = 4096


def swap_budget(filled: I64) -> int:
    """The most swaps :func:`maxmin_pairing` makes on fills ``filled``: :data:`SWAPS`, or
    :data:`SWAPS_PER_ORDER` per filled order if that is more."""
    return max(SWAPS, SWAPS_PER_ORDER * int(np.count_nonzero(filled)))


class _Pairing:
    """A pairing of fixed fills under change: lots per (sell, buy), each order's counterparties,
    each participant's profit at midpoint prices [sen/kWh · lot]."""

    def __init__(self, book: Book, arr: BookArrays, filled: I64, units: Units) -> None:
        self.grid = book.grid
        self._fee: dict[tuple[int, int], int] = {}
        self.price: list[int] = arr.price.tolist()
        self.node: list[int] = arr.node.tolist()
        self.part: list[int] = arr.participant.tolist()
        self.is_sell: list[bool] = arr.is_sell.tolist()
        self.x: dict[tuple[int, int], int] = {}
        self.held: dict[int, set[int]] = {}
        self.profit = [0] * len(arr.participants)
        #: Counts the changes, so a scan knows when what it filtered is out of date.
        self.version = 0
        #: Per order, the best price among its counterparties: the lowest ask a buy holds, the
        #: highest bid a sell holds (none: a sentinel no price passes). Fees are never
        #: negative, so an order whose counterparties all fail this against a price can give
        #: none of them to an order at that price.
        self.reach = np.where(arr.is_sell, -_NONE, _NONE).astype(np.int64)
        for i, j, k in units:
            self.change(i, j, k)
        # the filled orders of each side, for the partner lists
        self._side: dict[bool, tuple[I64, I64, I64, I64]] = {}
        for sell in (True, False):
            on = np.flatnonzero((arr.is_sell == sell) & (filled > 0))
            self._side[sell] = (on, arr.node[on], arr.price[on], arr.participant[on])
        self._partners: dict[int, tuple[I64, I64, bool]] = {}
        self._complete: set[int] = set()  # orders whose partner lists are whole
        self._fee_rows: dict[int, I64] = {}  # per node: the fee to every node

    def spread(self, i: int, j: int) -> int:
        """Bid − fee − ask of pair (sell i, buy j) [sen/kWh]."""
        u, v = self.node[i], self.node[j]
        fee = self._fee.get((u, v))
        if fee is None:
            fee = self._fee[(u, v)] = self.grid.fee(u, v)
        return self.price[j] - fee - self.price[i]

    def gains(self, i: int, j: int) -> tuple[int, int]:
        """The seller's and the buyer's gain per lot of pair (sell i, buy j) [sen/kWh]."""
        spread = self.spread(i, j)
        return spread // 2, spread - spread // 2

    def change(self, i: int, j: int, k: int) -> None:
        """Add ``k`` lots (negative: remove) to pair (i, j)."""
        self.version += 1
        before = self.x.get((i, j), 0)
        now = before + k
        price, reach = self.price, self.reach
        if now:
            self.x[(i, j)] = now
            if not before:
                self.held.setdefault(i, set()).add(j)
                self.held.setdefault(j, set()).add(i)
                reach[i] = max(int(reach[i]), price[j])
                reach[j] = min(int(reach[j]), price[i])
        else:
            del self.x[(i, j)]
            self.held[i].discard(j)
            self.held[j].discard(i)
            if reach[i] == price[j]:
                reach[i] = max((price[b] for b in self.held[i]), default=-_NONE)
            if reach[j] == price[i]:
                reach[j] = min((price[s] for s in self.held[j]), default=_NONE)
        gs, gb = self.gains(i, j)
        self.profit[self.part[i]] += gs * k
        self.profit[self.part[j]] += gb * k

    def partners(self, o: int, better_than: int) -> tuple[I64, bool]:
        """Order ``o``'s filled counterparties it could trade with and gains more than
        ``better_than`` from [sen/kWh], by its own gain, best first (ties: lower index): the
        first of them known (:data:`PARTNERS_FIRST`, more after each :meth:`more`), and
        whether there may be more."""
        got = self._partners.get(o)
        if got is None:
            got = self._sort(o, PARTNERS_FIRST)
        idx, gain, whole = got
        # the gains come best first: count those above better_than
        m = int(np.searchsorted(-gain, -better_than, side="left"))
        return idx[:m], not whole and m == len(idx)

    def more(self, o: int) -> None:
        """Know 64 times as many of :meth:`partners` of ``o``."""
        self._sort(o, 64 * len(self._partners[o][0]))

    def _sort(self, o: int, first: int) -> tuple[I64, I64, bool]:
        sell = self.is_sell[o]
        other, node, price, part = self._side[not sell]
        u = self.node[o]
        row = self._fee_rows.get(u)
        if row is None:
            n = self.grid.size
            row = self.grid.fees_between(np.full(n, u, dtype=np.int64), np.arange(n))
            self._fee_rows[u] = row
        fee = row[node]
        spread = price - fee - self.price[o] if sell else self.price[o] - fee - price
        ok = (spread >= 0) & (part != self.part[o])
        idx, spread = other[ok], spread[ok]
        g = spread // 2 if sell else spread - spread // 2
        key = -g * (len(self.price) + 1) + idx  # best gain first, then lower index
        whole = len(key) <= first
        if whole:
            order = np.argsort(key)
        else:
            top = np.argpartition(key, first)[:first]
            order = top[np.argsort(key[top])]
        got = (idx[order], g[order], whole)
        self._partners[o] = got
        return got


def maxmin_weights(book: Book, arr: BookArrays) -> dict[int, int]:
    """The participants ``maxmin`` measures (an order in a compatible pair) and their offered
    lots, by participant index."""
    from peerpower.market.objective import maxmin_participants

    index = {name: q for q, name in enumerate(arr.participants)}
    return {index[p]: wh // book.lot_wh for p, wh in maxmin_participants(book).items()}


def maxmin_units(book: Book, arr: BookArrays, filled: I64) -> tuple[I64, I64, I64]:
    """:func:`maxmin_pairing` of ``filled`` as columns (sell, buy, lots), sorted by (sell,
    buy); raises :class:`ClearingError` (field ``pairing``) if the fills cannot be paired."""
    units = maxmin_pairing(book, arr, maxmin_weights(book, arr), filled)
    table = np.array(units, dtype=np.int64).reshape(-1, 3)
    return table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy()


def maxmin_pairing(
    book: Book, arr: BookArrays, w: dict[int, int], filled: I64, swaps: int | None = None
) -> Units:
    """The one pairing ``maxmin`` allows for fills ``filled`` [lots per order] over the
    participants ``w`` (participant index → offered lots).

    Start from the canonical midpoint pairing (:func:`.optimal.canonical_midpoint`); then, while
    the lowest participant (lowest ``profit / w``, lowest index among equals) has a *swap*, make
    it, at most ``swaps`` times (default :func:`swap_budget`). A swap takes one of its orders
    ``o`` (in index order), a counterparty ``c`` it is paired with (index order), a partner
    ``p`` it gains more from (best first) and an order ``r`` paired with ``p`` (index order)
    that can trade with ``c``, and turns ``k`` lots of (o, c) and (r, p) into (o, p) and
    (r, c), for the most ``k`` (from the lots both pairs hold, halving) that leaves every
    participant the swap touches above the lowest's old ratio. A participant's scan resumes
    where it found its last swap (:func:`_swaps`) and starts again from its first order when it
    runs out; the rule stops when a scan from the start finds none. The fills never change, so
    neither do the edge flows; fees can.
    """
    from peerpower.market.optimal import canonical_midpoint

    s0, b0, n0 = canonical_midpoint(book, arr, filled)
    state = _Pairing(
        book, arr, filled, list(zip(s0.tolist(), b0.tolist(), n0.tolist(), strict=True))
    )
    mine: dict[int, list[int]] = {}
    for o in np.flatnonzero(filled > 0).tolist():
        mine.setdefault(state.part[o], []).append(o)
    profit = state.profit
    # The heap orders participants by profit / w as a float: the division is correctly
    # rounded, so equal ratios give equal floats and (for profits and offers below 2^26, far
    # beyond any book) different ratios keep their order; the swap test itself is exact.
    heap = [(profit[q] / w[q], q) for q in w]
    heapq.heapify(heap)
    scans: dict[int, Iterator[Units]] = {}  # each participant's scan, where it found a swap
    for _ in range((swap_budget(filled) if swaps is None else swaps) if heap else 0):
        while heap[0][0] != profit[heap[0][1]] / w[heap[0][1]]:
            heapq.heappop(heap)  # stale: a fresh entry was pushed when the ratio changed
        q = heap[0][1]
        move = next(scans[q], None) if q in scans else None
        if move is None:  # no scan under way, or it ran out: scan again from the start
            scans[q] = _swaps(state, w, q, mine.get(q, []))
            move = next(scans[q], None)
            if move is None:
                break  # the lowest participant has no swap: no swap can raise t
        touched: set[int] = set()
        for i, j, k in move:
            state.change(i, j, k)
            touched.update((state.part[i], state.part[j]))
        for p in sorted(touched):
            if p in w:
                heapq.heappush(heap, (profit[p] / w[p], p))
    return sorted((i, j, k) for (i, j), k in state.x.items())


def _swaps(state: _Pairing, w: dict[int, int], low: int, orders: list[int]) -> Iterator[Units]:
    """The swaps (see :func:`maxmin_pairing`) for participant ``low`` and its ``orders``, in
    the rule's order, as unit changes ``(sell, buy, ± lots)``. Resumed after a swap is made,
    only while ``low`` is the lowest participant: each later candidate is checked against the
    pairing as it is then, with ``low``'s ratio then as the floor.

    A swap that fails at one lot fails at every ``k`` (a participant that loses loses more with
    more lots, one that gains passes the floor with one), so candidates are tried at one lot
    first and only those that pass are sized."""
    profit, part, x, held, gains = state.profit, state.part, state.x, state.held, state.gains
    price, reach, spread_of = state.price, state.reach, state.spread

    def above(delta: dict[int, int], k: int, f_num: int, f_den: int) -> bool:
        return all(
            q not in w or (profit[q] + k * d) * f_den > f_num * w[q] for q, d in delta.items()
        )

    for o in orders:
        sell = state.is_sell[o]
        side = 0 if sell else 1
        for c in sorted(held.get(o, ())):
            i, j = (o, c) if sell else (c, o)
            if (i, j) not in x:
                continue  # a swap since took every lot of (o, c)
            g_oc = gains(i, j)
            now = g_oc[side]
            pc = price[c]
            parr, more = state.partners(o, now)
            # The partners are read in order; those whose counterparties cannot reach c's price
            # are skipped, filtered a window at a time and again whenever the pairing changed.
            n, end, window, ver = 0, 0, 64, state.version
            cand: list[int] = []  # positions in parr of the partners to read, and the partners
            cand_p: list[int] = []
            ci = 0
            while (i, j) in x:
                if ver != state.version:
                    end, cand, ci, ver = n, [], 0, state.version
                if ci == len(cand):
                    if end == len(parr):
                        if not more:
                            break
                        state.more(o)
                        parr, more = state.partners(o, now)
                        continue
                    n, end = end, min(len(parr), end + window)
                    window = min(2 * window, _WINDOW)
                    seg = parr[n:end]
                    hits = np.flatnonzero(reach[seg] <= pc if sell else reach[seg] >= pc)
                    cand, cand_p, ci = (n + hits).tolist(), seg[hits].tolist(), 0
                    continue
                n, p = cand[ci] + 1, cand_p[ci]
                ci += 1
                i2, j2 = (o, p) if sell else (p, o)
                for r in sorted(held.get(p, ())):
                    i3, j3 = (r, c) if sell else (c, r)  # the rival takes o's counterparty
                    ri, rj = (r, p) if sell else (p, r)
                    pr = part[r]
                    if (price[r] > pc if sell else price[r] < pc) or pr == part[c]:
                        continue  # r cannot reach c, or c is its own participant's
                    if (ri, rj) not in x:
                        continue
                    s_rc = spread_of(i3, j3)
                    if s_rc < 0:
                        continue
                    s_rp = spread_of(ri, rj)
                    f_num, f_den = profit[low], w[low]  # the floor every touched one must pass
                    if pr != low and pr in w:
                        # the rival's participant alone (it is neither c's nor p's): the
                        # test most swaps fail, made before the others
                        d = s_rc // 2 - s_rp // 2 if sell else s_rp // 2 - s_rc // 2 + s_rc - s_rp
                        if (profit[pr] + d) * f_den <= f_num * w[pr]:
                            continue
                    delta: dict[int, int] = {}
                    for a, b, sign, (ga, gb) in (
                        (i, j, -1, g_oc),
                        (ri, rj, -1, (s_rp // 2, s_rp - s_rp // 2)),
                        (i2, j2, 1, gains(i2, j2)),
                        (i3, j3, 1, (s_rc // 2, s_rc - s_rc // 2)),
                    ):
                        delta[part[a]] = delta.get(part[a], 0) + sign * ga
                        delta[part[b]] = delta.get(part[b], 0) + sign * gb
                    if not above(delta, 1, f_num, f_den):
                        continue
                    k = min(x[(i, j)], x[(ri, rj)])
                    while k > 1 and not above(delta, k, f_num, f_den):
                        k //= 2
                    yield [(i, j, -k), (ri, rj, -k), (i2, j2, k), (i3, j3, k)]
                    if (i, j) not in x:
                        break
