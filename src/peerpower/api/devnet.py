"""``peerpower serve --devnet N``: a live market for a new user to watch and trade in.

``N`` validators agree on blocks by Tendermint (in process, over the simulated network) while
the street of :file:`sim/presets/devnet.toml` — a dozen sites: consumers, PV homes, homes with
batteries and a plug-in hybrid, a shop — forecasts, bids, delivers and reports its meters
exactly as in ``peerpower simulate``, in accelerated time (``speed`` virtual seconds a real
second: at the default 120 a half-hour slot passes in 15 s, a day in 12 min). The HTTP API and
the dashboard front the first validator: what a user submits there is relayed to the others
and must pass consensus like the sites' orders.

A ``guest`` participant is registered with a fresh key (its key file is written to a new
private folder) and funded, so the user can place orders of their own with ``peerpower order
submit``.

Threads: the driver runs the community, one virtual minute at a time, holding the exchange's
lock while the validators run; the HTTP server's threads take the same lock to read or submit.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peerpower.api.exchange import Exchange
from peerpower.consensus.ledger_app import LedgerApp
from peerpower.crypto import KeyPair, write_key_file
from peerpower.errors import InvalidInput
from peerpower.ledger.genesis import Genesis
from peerpower.ledger.state import OrderRec
from peerpower.sim.network import BLOCK_MS, Validators
from peerpower.sim.runner import DEPOSIT_MICROYEN, Community
from peerpower.sim.scenario import Scenario, load_preset

log = logging.getLogger("peerpower.devnet")

GUEST = "guest"
MIN_VALIDATORS, MAX_VALIDATORS = 4, 10
MAX_SPEED = 100_000.0


class Stopped(Exception):
    """The devnet was asked to stop."""


class PacedValidators(Validators):
    """:class:`Validators` that keep virtual time ``speed`` times faster than the wall clock
    (never faster; if the machine cannot keep up they run as fast as it can), one virtual
    minute at a time, each under ``lock``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock: threading.RLock = threading.RLock()
        self.speed = 120.0
        self.stop = threading.Event()
        self.running = threading.Event()  # cleared: paused (the chain holds still)
        self.running.set()
        self.held = threading.Event()  # set while paused and holding still
        self._anchor: tuple[float, int] | None = None  # (wall s, virtual ms) in step
        self.on_step: Callable[[], None] | None = None  # after each virtual minute, locked

    def start_clock(self) -> None:
        self._anchor = (time.monotonic(), self._now)

    def _wait_for(self, virtual_ms: int) -> None:
        if not self.running.is_set():
            while not self.running.is_set():
                self.held.set()
                self.running.wait(0.05)
                if self.stop.is_set():
                    raise Stopped
            self._anchor = (time.monotonic(), self._now)  # pick up the pace from here
        if self._anchor is None:
            return
        wall0, virt0 = self._anchor
        due = wall0 + (virtual_ms - virt0) / 1000.0 / self.speed
        late = time.monotonic() - due
        if late > 2.0:  # behind: do not rush to catch up, keep the pace from here
            self._anchor = (time.monotonic(), virtual_ms)
        elif late < 0 and self.stop.wait(-late):
            raise Stopped
        if self.stop.is_set():
            raise Stopped

    def advance(self, time_ms: int) -> None:
        while self._now < time_ms:
            step = min(time_ms, self._now + BLOCK_MS)
            self._wait_for(step)
            with self.lock:
                super().advance(step)
                if self.on_step is not None:
                    self.on_step()

    def submit(self, txs: Sequence[dict[str, Any]]) -> int:
        with self.lock:
            return super().submit(txs)

    def next_nonce(self, account: str) -> int:
        with self.lock:
            return super().next_nonce(account)

    def open_orders(self, accounts: set[str]) -> dict[str, list[OrderRec]]:
        with self.lock:
            return super().open_orders(accounts)


@dataclass(frozen=True, slots=True)
class DevnetOptions:
    validators: int = 4
    speed: float = 120.0
    seed: int | None = None

    def check(self) -> None:
        if not MIN_VALIDATORS <= self.validators <= MAX_VALIDATORS:
            raise InvalidInput(
                "devnet",
                f"{self.validators} validators: the devnet runs {MIN_VALIDATORS}–"
                f"{MAX_VALIDATORS} (Tendermint tolerates f faulty of 3f + 1)",
            )
        if not 1.0 <= self.speed <= MAX_SPEED:
            raise InvalidInput(
                "speed", f"must be 1–{MAX_SPEED:g} virtual seconds a second, got {self.speed}"
            )


def devnet_scenario(opts: DevnetOptions) -> Scenario:
    return load_preset("devnet").with_overrides(validators=opts.validators, seed=opts.seed)


class LiveDevnet:
    """The devnet: call :meth:`start`, serve :attr:`exchange`, then :meth:`stop`."""

    def __init__(self, opts: DevnetOptions, key_dir: Path | None = None) -> None:
        opts.check()
        self.opts = opts
        self.scenario = devnet_scenario(opts)
        self.community = Community(self.scenario, PacedValidators)
        chain = self.community.result.validators
        assert isinstance(chain, PacedValidators)
        self.chain = chain
        chain.speed = opts.speed
        front = chain.front
        assert isinstance(front, LedgerApp)
        self.exchange = Exchange(front, lambda: chain.now_ms)
        chain.lock = self.exchange.lock  # one lock for the validators and the API
        chain.on_step = self.exchange.follow  # index every block as it commits
        self.guest_key = KeyPair.generate()
        folder = Path(tempfile.mkdtemp(prefix="peerpower-devnet-")) if key_dir is None else key_dir
        self.guest_key_file = folder / "guest.key"
        write_key_file(self.guest_key_file, self.guest_key)
        self._register_guest()
        self.error: BaseException | None = None
        self.half_hours = 0
        self._thread = threading.Thread(target=self._drive, name="devnet", daemon=True)

    @property
    def genesis(self) -> Genesis:
        return self.community.result.genesis

    def _register_guest(self) -> None:
        c = self.community
        node = self.scenario.sites[0].node
        meter = KeyPair.generate()
        txs = [
            c.op.register(GUEST, self.guest_key.public_hex, meter.public_hex, node, "consumer"),
            c.op.deposit(GUEST, DEPOSIT_MICROYEN),
        ]
        refused = self.chain.submit(txs)
        if refused:  # pragma: no cover - the genesis funds ten more deposits than sites
            raise RuntimeError(f"the guest was refused: {self.chain.refused[-refused:]}")

    def start(self) -> None:
        self.chain.start_clock()
        self._thread.start()

    def _drive(self) -> None:
        c = self.community
        try:
            for k in range(c.total + 2):
                c.half_hour(k)
                self.half_hours = k + 1
        except Stopped:
            return
        except BaseException as err:  # shown on /status; the API goes on serving the chain
            self.error = err
            self.exchange.fault = f"the devnet stopped: {type(err).__name__}: {err}"
            log.exception("the devnet stopped")

    def pause(self) -> None:
        """Hold the chain still after the virtual minute under way (the API goes on serving
        it and taking transactions); returns once it holds still."""
        self.chain.running.clear()
        self.chain.held.clear()  # set again by the driver once it holds still
        while self._thread.is_alive() and not self.chain.held.wait(0.05):
            pass

    def resume(self) -> None:
        self.chain.running.set()

    def stop(self) -> None:
        self.chain.stop.set()
        self._thread.join(30)
