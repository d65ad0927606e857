"""A validator's home: bad configuration is a clear error naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peerpower.cli import main
from peerpower.consensus.localnet import homes, init
from peerpower.consensus.validator import Home, NodeConfig
from peerpower.errors import InvalidInput


@pytest.fixture
def net(tmp_path: Path) -> Path:
    init(tmp_path / "net", 4, base_port=40100)
    return tmp_path / "net"


def test_init_writes_homes_that_load(net: Path) -> None:
    paths = homes(net)
    assert [p.name for p in paths] == ["node0", "node1", "node2", "node3"]
    loaded = [Home.load(p) for p in paths]
    assert {h.genesis.hash for h in loaded} == {loaded[0].genesis.hash}
    ports = {h.config.listen.port for h in loaded} | {h.config.rpc.port for h in loaded}
    assert ports == set(range(40100, 40108))
    for h in loaded:
        assert h.config.id not in {p.id for p in h.config.peers}
        assert len(h.config.peers) == 3
        assert (h.path / "validator.key").stat().st_mode & 0o777 == 0o600


def test_init_cli_prints_one_json_line_per_node(tmp_path: Path, capsys: Any) -> None:
    assert main(["devnet", "init", "--validators", "5", "--dir", str(tmp_path / "d")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 5
    assert all(
        set(x) == {"home", "rpc"} and x["rpc"].startswith("http://127.0.0.1:") for x in lines
    )
    assert len({x["rpc"] for x in lines}) == 5


def test_invalid_init_into_a_used_folder(net: Path, capsys: Any) -> None:
    assert main(["devnet", "init", "--validators", "4", "--dir", str(net)]) == 2
    err = json.loads(capsys.readouterr().err)
    assert err["field"] == "dir"


@pytest.mark.parametrize("n", [0, 3, 101])
def test_invalid_init_validator_count(tmp_path: Path, n: int) -> None:
    with pytest.raises(InvalidInput, match="validators") as info:
        init(tmp_path / "x", n)
    assert str(n) in str(info.value)


def _edit(home: Path, change: dict[str, Any]) -> None:
    cfg = json.loads((home / "node.json").read_text())
    cfg.update(change)
    (home / "node.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rpc": {"host": "127.0.0.1", "port": 70000}}, "rpc.port"),
        ({"listen": "here"}, "listen"),
        ({"id": ""}, "id"),
        ({"colour": "blue"}, "colour"),
        ({"block_interval_ms": -5}, "block_interval_ms"),
        ({"max_block_txs": 0}, "max_block_txs"),
        (
            {"peers": [{"id": "val1", "host": "127.0.0.1", "port": 1, "public_key": "zz"}]},
            "peers[0].public_key",
        ),
    ],
)
def test_invalid_node_config(net: Path, change: dict[str, Any], field: str) -> None:
    home = net / "node0"
    _edit(home, change)
    with pytest.raises(InvalidInput) as info:
        Home.load(home)
    assert info.value.field == field


def test_invalid_node_key_not_in_genesis(net: Path) -> None:
    (net / "node0" / "validator.key").unlink()
    (net / "node0" / "validator.key").write_bytes((net / "node1" / "validator.key").read_bytes())
    with pytest.raises(InvalidInput, match="genesis gives validator 'val0'"):
        Home.load(net / "node0")


def test_invalid_peer_key_not_in_genesis(net: Path) -> None:
    cfg = json.loads((net / "node0" / "node.json").read_text())
    cfg["peers"][0]["public_key"] = "11" * 32
    (net / "node0" / "node.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidInput) as info:
        Home.load(net / "node0")
    assert info.value.field == "peers[0]"


def test_invalid_node_home_cli(tmp_path: Path, capsys: Any) -> None:
    assert main(["node", "--home", str(tmp_path / "nowhere")]) == 2
    err = json.loads(capsys.readouterr().err)
    assert err["field"] == "home"


def test_node_config_round_trips(net: Path) -> None:
    cfg = Home.load(net / "node2").config
    assert NodeConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


def test_invalid_devnet_up_folder(tmp_path: Path, capsys: Any) -> None:
    assert main(["devnet", "up", "--dir", str(tmp_path)]) == 2
    err = json.loads(capsys.readouterr().err)
    assert err["field"] == "dir"
    assert "devnet.json" in err["error"]


def test_invalid_devnet_init_options(tmp_path: Path, capsys: Any) -> None:
    for argv, field in (
        (["--base-port", "80"], "base-port"),
        (["--block-interval-ms", "-1"], "block-interval-ms"),
        (["--goal", "fastest"], "goal"),
    ):
        code = main(["devnet", "init", "--dir", str(tmp_path / "d"), *argv])
        assert code == 2
        assert json.loads(capsys.readouterr().err)["field"] == field
        assert not (tmp_path / "d").exists()  # nothing written
