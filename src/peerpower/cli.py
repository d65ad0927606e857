"""The ``peerpower`` command line: ``clear``, ``verify``, ``demo``, ``keys``, ``ledger``, ``bench``.

Commands that take data read JSON and write JSON. Bad input exits with code 2, prints nothing
on stdout and one line of JSON on stderr: ``{"error": "...", "field": "..."}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from peerpower.errors import ClearingError, InvalidInput

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class _JsonErrorParser(argparse.ArgumentParser):
    """argparse that reports usage errors as the one-line JSON error of every command."""

    def error(self, message: str) -> NoReturn:
        field = "argv"
        if "--" in message:
            field = message.split("--", 1)[1].split()[0].strip(":,'\"")
        _emit_error(f"{self.prog}: {message}", field)
        raise SystemExit(EXIT_BAD_INPUT)


def _emit_error(message: str, field: str) -> None:
    sys.stderr.write(json.dumps({"error": message, "field": field}, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send anything a native solver prints to stderr, keeping stdout for our JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _read_json(source: str, field: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(field, f"cannot read {source!r}: {err.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(
            field, f"{source!r} is not JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except RecursionError:
        raise InvalidInput(field, f"{source!r} nests too deeply") from None


def _cmd_clear(args: argparse.Namespace) -> int:
    from peerpower.market import clear, parse_book
    from peerpower.market.result import gc_paused

    # The decoded book, the columns and the trades form no reference cycles: collecting while
    # they are built would only walk them again and again.
    with gc_paused():
        raw = _read_json(args.book, "book")
        book = parse_book(raw)
        pricing = args.pricing
        if pricing is None and isinstance(raw, dict) and "pricing" in raw:
            pricing = raw["pricing"]
            if not isinstance(pricing, str):
                raise InvalidInput("pricing", f"must be a pricing rule's name, got {pricing!r}")
        with _stdout_to_stderr():
            result = clear(book, args.mechanism, args.goal, pricing)
        sys.stdout.write(result.to_json_text() + "\n")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from peerpower.market import parse_book, verify
    from peerpower.market.verify import result_from_json

    book = parse_book(_read_json(args.book, "book"))
    result = result_from_json(_read_json(args.result, "result"))
    report = verify(book, result)
    sys.stdout.write(json.dumps(report.to_json()) + "\n")
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_demo(args: argparse.Namespace) -> int:
    from peerpower.demo import run_demo

    with _stdout_to_stderr():
        text = run_demo(Path(args.examples), args.depth)
    sys.stdout.write(text)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from peerpower.bench import run_clearing_bench

    code: int = run_clearing_bench(args)
    return code


def _cmd_bench_ledger(args: argparse.Namespace) -> int:
    from peerpower.bench_ledger import run

    return run(
        blocks_orders=args.orders,
        days=args.days,
        sites=args.sites,
        repeat=args.repeat,
        out=sys.stdout,
    )


def _cmd_bench_consensus(args: argparse.Namespace) -> int:
    from peerpower.bench_consensus import run_all

    if args.part not in ("all", "sim", "tcp", "memory"):
        raise InvalidInput("part", f"{args.part!r} is not one of all, sim, tcp, memory")
    if not 2 <= args.blocks <= 1000:
        raise InvalidInput("blocks", f"must be 2–1000, got {args.blocks}")
    return run_all(
        args.part,
        validators=args.validators,
        heights=args.heights,
        seed=args.seed,
        blocks=args.blocks,
        out=sys.stdout,
    )


def _cmd_bench_agents(args: argparse.Namespace) -> int:
    from peerpower.bench_agents import run

    if not 1 <= args.sites <= 100_000:
        raise InvalidInput("sites", f"must be 1–100000, got {args.sites}")
    return run(sites=args.sites, seed=args.seed, out=sys.stdout)


def _cmd_bench_simulate(args: argparse.Namespace) -> int:
    from peerpower.bench_simulate import run

    text = io.StringIO()
    with _stdout_to_stderr():  # a native solver's chatter goes to stderr
        code = run(args.scenario, args.days, args.validators, out=text)
    sys.stdout.write(text.getvalue())
    return code


def _cmd_bench_api(args: argparse.Namespace) -> int:
    from peerpower.bench_api import check_flags, run

    check_flags(args.orders, args.connections, args.accounts)
    return run(args.orders, args.connections, args.accounts, out=sys.stdout, json_out=args.out)


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from peerpower.crypto import KeyPair, write_key_file

    key = KeyPair.generate()
    write_key_file(Path(args.out), key)
    sys.stdout.write(key.public_hex + "\n")
    return EXIT_OK


def _cmd_ledger_export(args: argparse.Namespace) -> int:
    from peerpower.ledger.replay import export
    from peerpower.ledger.store import StorageError, Store

    try:
        opened = Store(args.db)
    except StorageError as err:
        raise InvalidInput("db", str(err)) from None
    with opened as store:
        blocks = export(store, Path(args.out))
    sys.stdout.write(json.dumps({"blocks": blocks, "out": args.out}) + "\n")
    return EXIT_OK


def _cmd_ledger_verify(args: argparse.Namespace) -> int:
    from peerpower.errors import LedgerError
    from peerpower.ledger.replay import verify_path
    from peerpower.ledger.store import StorageError

    try:
        summary = verify_path(Path(args.chain))
    except LedgerError as err:
        height = getattr(err, "height", None)
        if args.json:
            sys.stdout.write(json.dumps({"ok": False, **err.to_json()}, ensure_ascii=False) + "\n")
        else:
            where = f"height {height}: " if height is not None else ""
            sys.stdout.write(f"invalid: {where}rule {err.rule}: {err.message}\n")
        return EXIT_FAILED
    except StorageError as err:
        if args.json:
            sys.stdout.write(json.dumps({"ok": False, "error": str(err), "rule": "storage"}) + "\n")
        else:
            sys.stdout.write(f"invalid: rule storage: {err}\n")
        return EXIT_FAILED
    if args.json:
        sys.stdout.write(json.dumps(summary.to_json()) + "\n")
    else:
        sys.stdout.write(summary.line() + "\n")
    return EXIT_OK


def _cmd_devnet_simulate(args: argparse.Namespace) -> int:
    from peerpower.consensus.devnet import DevnetConfig, simulate

    cfg = DevnetConfig(
        validators=args.validators,
        byzantine=args.byzantine,
        drop=args.drop,
        seed=args.seed,
        heights=args.heights,
        goal=args.goal,
    )
    with _stdout_to_stderr():
        summary = simulate(cfg)
    sys.stdout.write(json.dumps(summary) + "\n")
    return EXIT_OK


def _cmd_devnet_init(args: argparse.Namespace) -> int:
    from peerpower.consensus.localnet import init

    for line in init(
        Path(args.dir),
        args.validators,
        base_port=args.base_port,
        block_interval_ms=args.block_interval_ms,
        goal=args.goal,
    ):
        sys.stdout.write(json.dumps(line) + "\n")
    return EXIT_OK


def _cmd_devnet_up(args: argparse.Namespace) -> int:
    from peerpower.consensus.localnet import up

    return up(Path(args.dir))


def _api_client(url: str) -> Any:
    """A client of the API at ``url`` (its chain read from ``/status``)."""
    import httpx

    from peerpower.client import Client

    try:
        status = httpx.get(f"{url.rstrip('/')}/status", timeout=10).json()
    except (httpx.HTTPError, ValueError) as err:
        raise InvalidInput("api", f"cannot reach the API at {url!r}: {err}") from None
    return Client(url, str(status.get("tx_chain", "")))


def _api_call(run: Any) -> int:
    from peerpower.client import ApiError

    try:
        out = run()
    except ApiError as err:
        body = {"error": err.detail, "status": err.status, "rule": err.rule, "field": err.field}
        sys.stderr.write(json.dumps(body, ensure_ascii=False) + "\n")
        return EXIT_FAILED
    if out is not None:
        sys.stdout.write(out if isinstance(out, str) else json.dumps(out, indent=1) + "\n")
    return EXIT_OK


def _cmd_book(args: argparse.Namespace) -> int:
    from peerpower.demo import table
    from peerpower.units import Wh, kwh_str, price_str

    with _api_client(args.api) as client:

        def show() -> str:
            got = client.ladder(args.slot, args.depth)
            rows = [
                [
                    kwh_str(Wh(r["sell_wh"])) if r["sell_wh"] else "",
                    r["label"]
                    if r["price_sen_per_kwh"] is None
                    else price_str(r["price_sen_per_kwh"]),
                    kwh_str(Wh(r["buy_wh"])) if r["buy_wh"] else "",
                ]
                for r in got["rows"]
            ]
            head = f"{got['slot']} ({got['status']}, {got['orders']} orders)\n"
            return head + table(["SELL kWh", "PRICE ¥/kWh", "BUY kWh"], rows, "rcl") + "\n"

        return _api_call(show)


def _cmd_account(args: argparse.Namespace) -> int:
    with _api_client(args.api) as client:
        return _api_call(lambda: client.account(args.account_id))


def _cmd_order(args: argparse.Namespace) -> int:
    from peerpower.crypto import read_key_file

    key = read_key_file(Path(args.key))
    with _api_client(args.api) as client:

        def send() -> dict[str, Any]:
            me = client.participant(args.account, key)
            if args.order_cmd == "submit":
                return {"order": me.order(args.slot, args.side, args.energy_wh, args.price)}
            me.cancel(args.order)
            return {"cancelled": args.order}

        return _api_call(send)


def _cmd_serve(args: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from peerpower.api.app import create_app
    from peerpower.api.devnet import GUEST, DevnetOptions, LiveDevnet
    from peerpower.timeslots import Slot

    if not 1 <= args.port <= 65535:
        raise InvalidInput("port", f"must be 1–65535, got {args.port}")
    opts = DevnetOptions(validators=args.devnet, speed=args.speed, seed=args.seed)
    opts.check()
    with socket.socket() as probe:  # say so now rather than after the set-up
        try:
            probe.bind((args.host, args.port))
        except OSError as err:
            raise InvalidInput("port", f"cannot listen on {args.host}:{args.port}: {err}") from None
    devnet = LiveDevnet(opts)
    url = f"http://{args.host}:{args.port}"
    slot = Slot(devnet.scenario.start, 24)
    per_slot = 1800 / opts.speed
    sys.stdout.write(
        f"peerpower devnet: {opts.validators} validators, {len(devnet.scenario.sites)} simulated "
        f"sites trading from {devnet.scenario.start}, time ×{opts.speed:g} "
        f"(a half-hour slot every {per_slot:.3g} s)\n"
        f"  dashboard  {url}/\n"
        f"  API        {url}/docs  (schema {url}/openapi.json, events ws://{args.host}:"
        f"{args.port}/stream)\n"
        f"  you        account {GUEST!r} with 20,000 yen of margin; key {devnet.guest_key_file}\n"
        f"  try        peerpower book '{slot}' --api {url}\n"
        f"             peerpower order submit --api {url} --key {devnet.guest_key_file} "
        f"--account {GUEST} --slot '{slot}' --side buy --energy-wh 500 --price 2400\n"
        f"Ctrl-C stops it.\n"
    )
    sys.stdout.flush()
    app = create_app(devnet.exchange)
    devnet.start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        devnet.stop()
    return EXIT_OK


def _cmd_results(args: argparse.Namespace) -> int:
    from peerpower.sim.results import build, write
    from peerpower.sim.runner import progress_bar
    from peerpower.sim.sweep import cluster, parse_seeds

    seeds = parse_seeds(args.seeds)
    if not 1 <= args.days <= 366:
        raise InvalidInput("--days", f"must be 1–366 days, got {args.days}")
    out = Path(args.out)

    def bar(name: str) -> Callable[[int, int], None] | None:
        print(f"sweeping {name}: {len(seeds)} seed(s) × {args.days} day(s)", file=sys.stderr)
        return progress_bar(name) if sys.stderr.isatty() else None

    with cluster(args.workers, args.scheduler) as client, _stdout_to_stderr():
        text, _ = build(seeds, args.days, client, bar)
    write(out, text)
    print(f"wrote {out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from peerpower.sim.runner import progress_bar
    from peerpower.sim.scenario import load_scenario
    from peerpower.sim.sweep import cluster, parse_seeds, sweep, table, write

    seeds = parse_seeds(args.seeds)
    variants = None
    if args.compare is not None:
        from peerpower.sim.compare import parse_variants

        variants = parse_variants(args.compare)
    scenario = load_scenario(args.scenario).with_overrides(
        days=args.days, validators=args.validators
    )
    for warning in scenario.warnings():
        sys.stderr.write(f"warning: {warning}\n")
    show = progress_bar(f"{scenario.name} sweep") if sys.stderr.isatty() else None
    with cluster(args.workers, args.scheduler) as client, _stdout_to_stderr():
        data = sweep(scenario, seeds, variants, client, show)
    path = write(data, Path(args.out))
    sys.stdout.write(table(data) + "\n")
    sys.stdout.write(f"wrote {path}\n")
    checks = all(all(r["summary"]["checks"].values()) for r in data["runs"])
    return EXIT_OK if checks else EXIT_FAILED


def _cmd_simulate(args: argparse.Namespace) -> int:
    from peerpower.sim.runner import progress_bar, run
    from peerpower.sim.scenario import load_scenario
    from peerpower.sim.summary import table, write_outputs

    scenario = load_scenario(args.scenario).with_overrides(
        days=args.days,
        seed=args.seed,
        mechanism=args.mechanism,
        goal=args.goal,
        validators=args.validators,
    )
    for warning in scenario.warnings():
        sys.stderr.write(f"warning: {warning}\n")
    if args.compare is not None:
        from peerpower.sim.compare import compare, parse_variants
        from peerpower.sim.compare import table as compare_table

        variants = parse_variants(args.compare)
        bars = progress_bar if sys.stderr.isatty() else None
        with _stdout_to_stderr():
            rows = compare(scenario, variants, Path(args.out), bars)
        sys.stdout.write(compare_table(rows) + "\n")
        sys.stdout.write(f"wrote {Path(args.out) / 'compare.json'}\n")
        return EXIT_OK if all(r["checks"] for r in rows) else EXIT_FAILED
    show = progress_bar(f"{scenario.name}") if sys.stderr.isatty() else None
    with _stdout_to_stderr():
        result = run(scenario, show)
    data = write_outputs(result, Path(args.out))
    sys.stdout.write(table(data) + "\n")
    sys.stdout.write(f"wrote {Path(args.out) / 'summary.json'}, {Path(args.out) / 'report.html'}\n")
    return EXIT_OK if all(data["checks"].values()) else EXIT_FAILED


def _cmd_node(args: argparse.Namespace) -> int:
    from peerpower.consensus.validator import run

    return run(Path(args.home))


def _cmd_ledger_example(args: argparse.Namespace) -> int:
    from peerpower.ledger.example import write_example
    from peerpower.ledger.replay import verify_path

    db, jsonl, _node = write_example(Path(args.out))
    summary = verify_path(jsonl)
    sys.stdout.write(f"wrote {db} and {jsonl}\n{summary.line()}\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _JsonErrorParser(prog="peerpower", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_JsonErrorParser)

    p = sub.add_parser("clear", help="clear a book (JSON) with one mechanism; result on stdout")
    p.add_argument("book", help="book file, or - for standard input")
    p.add_argument("--mechanism", required=True, help="cda, call or optimal")
    p.add_argument("--goal", default=None, help="volume, welfare (default) or maxmin")
    p.add_argument(
        "--pricing",
        default=None,
        help="nodal (default for call and optimal welfare) or midpoint (optimal; the default "
        'for volume and maxmin); overrides the book\'s "pricing"',
    )
    p.set_defaults(run=_cmd_clear)

    p = sub.add_parser("verify", help="check a clearing result against its book")
    p.add_argument("book", help="book file, or - for standard input")
    p.add_argument("result", help="result file (as printed by peerpower clear)")
    p.set_defaults(run=_cmd_verify)

    p = sub.add_parser("demo", help="clear the sample books with each mechanism, as tables")
    p.add_argument("--examples", default="examples", help="folder of sample books")
    p.add_argument("--depth", type=int, default=10, help="price levels per side in ladders")
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True, parser_class=_JsonErrorParser)
    b = bench.add_parser("clearing", help="clearing time against a lower bound")
    b.add_argument(
        "--sizes",
        default="1000,2000,10000,100000,200000",
        help="comma-separated book sizes [orders]",
    )
    b.add_argument("--sites", type=int, default=2000, help="sites in the grid tree")
    b.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument(
        "--only",
        default="",
        help="comma-separated runs to keep by name, e.g. cda,optimal:welfare:nodal (default: "
        "all, each up to its largest size; a run named here is measured at every size)",
    )
    b.add_argument(
        "--both-share",
        type=float,
        default=0.2,
        help="share of sites (homes with a battery) that both buy and sell",
    )
    b.add_argument(
        "--capacity-wh",
        type=int,
        default=30_000,
        help="capacity of every transformer edge in the +cap runs [Wh]",
    )
    b.add_argument(
        "--no-self-cross",
        dest="self_cross",
        action="store_false",
        help="skip the 2,000-order book with and without a self-crossing participant",
    )
    b.add_argument("--out", default=None, help="also write the figures as JSON here")
    b.set_defaults(run=_cmd_bench)
    b = bench.add_parser("ledger", help="block application and chain verification times")
    b.add_argument("--orders", type=int, default=10_000, help="signed orders in the block")
    b.add_argument("--days", type=int, default=30, help="days of the synthetic chain")
    b.add_argument("--sites", type=int, default=100, help="sites of the synthetic chain")
    b.add_argument("--repeat", type=int, default=1, help="runs per measurement (best is kept)")
    b.set_defaults(run=_cmd_bench_ledger)
    b = bench.add_parser("consensus", help="the simulated validators' heights a minute")
    b.add_argument("--validators", type=int, default=7)
    b.add_argument("--heights", type=int, default=1000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--part", default="all", help="all, sim, tcp or memory")
    b.add_argument("--blocks", type=int, default=15, help="TCP: blocks of 2,000 orders to send")
    b.set_defaults(run=_cmd_bench_consensus)

    b = bench.add_parser("simulate", help="a community for a day through the whole stack")
    b.add_argument("--scenario", default="large", help="a preset or a TOML file")
    b.add_argument("--days", type=int, default=1)
    b.add_argument("--validators", type=int, default=None)
    b.set_defaults(run=_cmd_bench_simulate)
    b = bench.add_parser("agents", help="a day of the sites' controllers")
    b.add_argument("--sites", type=int, default=1000)
    b.add_argument("--seed", type=int, default=1)
    b.set_defaults(run=_cmd_bench_agents)
    b = bench.add_parser("api", help="signed orders a second through the HTTP API")
    b.add_argument("--orders", type=int, default=20_000, help="signed orders to POST")
    b.add_argument("--connections", type=int, default=32, help="concurrent keep-alive clients")
    b.add_argument("--accounts", type=int, default=300, help="participants placing the orders")
    b.add_argument("--out", default=None, help="also write the figures as JSON here")
    b.set_defaults(run=_cmd_bench_api)

    p = sub.add_parser("keys", help="Ed25519 keys")
    keys = p.add_subparsers(dest="keys", required=True, parser_class=_JsonErrorParser)
    k = keys.add_parser("new", help="write a new key file (mode 0600); print its public key")
    k.add_argument("--out", required=True, help="key file to create (never overwritten)")
    k.set_defaults(run=_cmd_keys_new)

    p = sub.add_parser("ledger", help="the chain: export, verify, example")
    ledger = p.add_subparsers(dest="ledger", required=True, parser_class=_JsonErrorParser)
    c = ledger.add_parser("export", help="write a node's chain as JSON Lines")
    c.add_argument("--db", required=True, help="the node's SQLite file")
    c.add_argument("--out", required=True, help="JSON Lines file to write")
    c.set_defaults(run=_cmd_ledger_export)
    c = ledger.add_parser("verify", help="replay a chain from genesis and check everything")
    c.add_argument("chain", help="chain.jsonl or chain.db")
    c.add_argument("--json", action="store_true", help="print the outcome as one JSON line")
    c.set_defaults(run=_cmd_ledger_verify)
    p = sub.add_parser("devnet", help="validators running the exchange under BFT consensus")
    devnet = p.add_subparsers(dest="devnet", required=True, parser_class=_JsonErrorParser)
    d = devnet.add_parser("simulate", help="the in-memory network in virtual time; JSON summary")
    d.add_argument("--validators", type=int, default=4)
    d.add_argument("--byzantine", type=int, default=0, help="equivocating/silent validators")
    d.add_argument("--drop", type=float, default=0.0, help="message loss until half-way")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--heights", type=int, default=120, help="blocks (one a virtual minute)")
    d.add_argument("--goal", default="welfare", help="volume, welfare or maxmin")
    d.set_defaults(run=_cmd_devnet_simulate)
    d = devnet.add_parser("init", help="keys, genesis and one home per validator on 127.0.0.1")
    d.add_argument("--validators", type=int, default=4)
    d.add_argument("--dir", required=True, help="folder to create (must not hold anything)")
    d.add_argument("--base-port", type=int, default=None, help="default: free ports")
    d.add_argument("--block-interval-ms", type=int, default=1000, help="pause between blocks")
    d.add_argument("--goal", default="welfare", help="volume, welfare or maxmin")
    d.set_defaults(run=_cmd_devnet_init)
    d = devnet.add_parser("up", help="run every validator of a devnet folder until Ctrl-C")
    d.add_argument("--dir", required=True, help="a folder written by devnet init")
    d.set_defaults(run=_cmd_devnet_up)

    p = sub.add_parser("simulate", help="a community trading for days; summary, trades, chain")
    p.add_argument("--scenario", required=True, help="misono, higashifuji, large, or a TOML file")
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--mechanism", default=None, help="cda, call or optimal")
    p.add_argument("--goal", default=None, help="volume, welfare or maxmin")
    p.add_argument("--validators", type=int, default=None, help="1 (solo) or 4 or more")
    p.add_argument(
        "--compare",
        default=None,
        help="run under several, e.g. cda,call,optimal:volume,optimal:welfare,optimal:maxmin",
    )
    p.add_argument("--out", required=True, help="folder for the outputs")
    p.set_defaults(run=_cmd_simulate)

    p = sub.add_parser("sweep", help="a scenario over many seeds on Dask; means and intervals")
    p.add_argument("--scenario", required=True, help="misono, higashifuji, large, or a TOML file")
    p.add_argument("--seeds", required=True, help="e.g. 1-10, or 1-3,8")
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--validators", type=int, default=None, help="1 (solo) or 4 or more")
    p.add_argument("--compare", default=None, help="variants, as for simulate --compare")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (2)")
    p.add_argument("--scheduler", default=None, help="a Dask scheduler, tcp://HOST:PORT")
    p.add_argument("--out", required=True, help="folder for sweep.json")
    p.set_defaults(run=_cmd_sweep)

    api_default = "http://127.0.0.1:8000"
    p = sub.add_parser("book", help="the SELL | PRICE | BUY ladder of a slot, from the API")
    p.add_argument("slot", help="e.g. 2026-08-18#24")
    p.add_argument("--api", default=api_default)
    p.add_argument("--depth", type=int, default=None, help="price levels per side")
    p.set_defaults(run=_cmd_book)

    p = sub.add_parser("account", help="an account from the API: balance, margin, orders")
    p.add_argument("account_id")
    p.add_argument("--api", default=api_default)
    p.set_defaults(run=_cmd_account)

    order = sub.add_parser("order", help="submit or cancel an order signed with your key")
    osub = order.add_subparsers(dest="order_cmd", required=True)
    for name in ("submit", "cancel"):
        o = osub.add_parser(name)
        o.add_argument("--api", default=api_default)
        o.add_argument("--key", required=True, help="your key file (peerpower keys new)")
        o.add_argument("--account", required=True, help="your account id")
        if name == "submit":
            o.add_argument("--slot", required=True)
            o.add_argument("--side", required=True, choices=("buy", "sell"))
            o.add_argument("--energy-wh", type=int, required=True)
            o.add_argument("--price", type=int, required=True, help="sen/kWh")
        else:
            o.add_argument("--order", required=True, help="the order id, e.g. home-1#7")
        o.set_defaults(run=_cmd_order)

    p = sub.add_parser(
        "serve", help="a live market: validators, simulated sites, the API and the dashboard"
    )
    p.add_argument(
        "--devnet", type=int, required=True, metavar="N", help="validators to run (4–10)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--speed", type=float, default=120.0, help="virtual seconds a real second (1–100000)"
    )
    p.add_argument("--seed", type=int, default=None, help="the simulated sites' seed")
    p.set_defaults(run=_cmd_serve)

    p = sub.add_parser("results", help="sweep the presets and write docs/results.md from them")
    p.add_argument("--out", default="docs/results.md", help="the document to write")
    p.add_argument("--seeds", default="1-10", help="seeds of every sweep (default 1-10)")
    p.add_argument("--days", type=int, default=7, help="days of every run (default 7)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (2)")
    p.add_argument("--scheduler", default=None, help="a Dask scheduler, tcp://HOST:PORT")
    p.set_defaults(run=_cmd_results)

    p = sub.add_parser("node", help="run one validator (consensus on TCP, HTTP RPC)")
    p.add_argument("--home", required=True, help="the node's home folder (devnet init)")
    p.set_defaults(run=_cmd_node)

    c = ledger.add_parser("example", help="write the documented example chain")
    c.add_argument("--out", required=True, help="folder for chain.db and chain.jsonl")
    c.set_defaults(run=_cmd_ledger_example)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (InvalidInput, ClearingError) as err:
        _emit_error(str(err), err.field)
        return EXIT_BAD_INPUT
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
