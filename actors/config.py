"""Cluster and node configuration: the `cluster.toml` an operator writes, and its defaults.

    cluster_id = "railraft-local"
    data_dir = "data"            # node N keeps its files under data_dir/node<N>
    tick_ms = 50                 # one Raft tick
    election_ticks = 10          # election timeout: 10..20 ticks
    heartbeat_ticks = 1
    snapshot_entries = 10000     # take a snapshot (and compact the log) every this many applied entries
                                 # (of a database over 64 MB: also not before the log since the last
                                 # snapshot is 1/8 of the database's size, see actors.node._snapshot_due)
    secret_file = "cluster.secret"  # optional: the cluster secret (64 hex digits, relative to this file);
                                 # without it RAILRAFT_CLUSTER_SECRET is used, and without both the peer
                                 # traffic is not authenticated (gateway/peer_auth.py)

    [[nodes]]
    id = 1
    host = "127.0.0.1"
    port = 50051
    metrics_port = 9101          # optional: serve Prometheus metrics at http://host:9101/metrics
                                 # (`railraft node --metrics-port` overrides it; absent or 0 = off,
                                 # except under `railraft cluster up`, which picks a port by default)
    dial = { 2 = "127.0.0.1:40012" }   # optional: where THIS node connects to peer 2 (e.g. through a
                                 # proxy); its listen address and what it tells clients stay as above

The defaults give 3 nodes on 127.0.0.1 ports 50051-50053.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

# The cluster secret, when cluster.toml names no `secret_file`: hex, as in the file.
SECRET_ENV = "RAILRAFT_CLUSTER_SECRET"
SECRET_MIN_BYTES = 16  # generated secrets have 32


class ConfigError(ValueError):
    """The configuration is unusable; the message says why."""


@dataclass(frozen=True)
class NodeAddress:
    """Where one node listens."""

    id: int
    host: str
    port: int
    metrics_port: int = 0  # 0: no metrics port configured
    # Where this node dials some peers instead of their listen address: ((peer id, "host:port"), ...).
    dial: tuple[tuple[int, str], ...] = ()

    @property
    def address(self) -> str:
        """host:port"""
        return f"{self.host}:{self.port}"

    def dial_map(self) -> dict[int, tuple[str, int]]:
        """{peer id: (host, port)} this node dials instead of the peer's own address."""
        out = {}
        for peer, addr in self.dial:
            host, _, port = addr.rpartition(":")
            out[peer] = (host, int(port))
        return out


@dataclass(frozen=True)
class ClusterConfig:
    """Everything every node agrees on at start."""

    cluster_id: str = "railraft-local"
    data_dir: Path = Path("data")
    tick_ms: int = 50
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    snapshot_entries: int = 10000
    nodes: tuple[NodeAddress, ...] = field(
        default_factory=lambda: tuple(NodeAddress(i, "127.0.0.1", 50050 + i) for i in (1, 2, 3))
    )
    # The file holding the cluster secret (see `cluster_secret`); None: RAILRAFT_CLUSTER_SECRET, if set.
    secret_file: Path | None = None

    def node(self, node_id: int) -> NodeAddress:
        """The address of node `node_id`; ConfigError if it is not listed."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError(f"node {node_id} is not in the cluster configuration (ids: {self.ids()})")

    def ids(self) -> list[int]:
        """Node ids, ascending."""
        return sorted(n.id for n in self.nodes)

    def node_dir(self, node_id: int) -> Path:
        """Data directory of one node."""
        return self.data_dir / f"node{node_id}"

    def with_node(self, addr: NodeAddress) -> ClusterConfig:
        """A copy with `addr` added (or replacing the node with the same id)."""
        rest = tuple(n for n in self.nodes if n.id != addr.id)
        return replace(self, nodes=tuple(sorted(rest + (addr,), key=lambda n: n.id)))

    def to_toml(self) -> str:
        """Render as cluster.toml text (what `load_config` reads back)."""
        lines = [
            f'cluster_id = "{self.cluster_id}"',
            f'data_dir = "{self.data_dir}"',
            f"tick_ms = {self.tick_ms}",
            f"election_ticks = {self.election_ticks}",
            f"heartbeat_ticks = {self.heartbeat_ticks}",
            f"snapshot_entries = {self.snapshot_entries}",
        ]
        if self.secret_file is not None:
            lines.append(f'secret_file = "{self.secret_file}"')
        for n in self.nodes:
            lines += ["", "[[nodes]]", f"id = {n.id}", f'host = "{n.host}"', f"port = {n.port}"]
            if n.metrics_port:
                lines.append(f"metrics_port = {n.metrics_port}")
            if n.dial:
                lines.append("dial = { " + ", ".join(f'{p} = "{a}"' for p, a in n.dial) + " }")
        return "\n".join(lines) + "\n"


def default_config(nodes: int = 3, port: int = 50051, data_dir: str | Path = "data") -> ClusterConfig:
    """`nodes` nodes on 127.0.0.1 from `port` upwards."""
    if nodes < 1:
        raise ConfigError("a cluster needs at least one node")
    return ClusterConfig(
        data_dir=Path(data_dir),
        nodes=tuple(NodeAddress(i + 1, "127.0.0.1", port + i) for i in range(nodes)),
    )


def _parse_dial(raw: dict) -> tuple[tuple[int, str], ...]:
    """A node's `dial` table ({peer id: "host:port"}) -> sorted pairs; ValueError if malformed."""
    out = []
    for peer, addr in raw.items():
        host, _, port = str(addr).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"dial address {addr!r} of peer {peer} is not host:port")
        out.append((int(peer), str(addr)))
    return tuple(sorted(out))


def load_config(path: str | Path) -> ClusterConfig:
    """Read cluster.toml; relative data_dir is taken relative to the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    base = ClusterConfig()
    nodes_raw = raw.get("nodes")
    nodes = base.nodes
    if nodes_raw is not None:
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise ConfigError(f"{path}: [[nodes]] must list at least one node")
        parsed = []
        for item in nodes_raw:
            try:
                parsed.append(NodeAddress(int(item["id"]), str(item.get("host", "127.0.0.1")), int(item["port"]),
                                          int(item.get("metrics_port", 0)), _parse_dial(item.get("dial", {}))))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ConfigError(f"{path}: bad [[nodes]] entry {item!r}: {e}") from None
        bad_ports = [n.metrics_port for n in parsed if not 0 <= n.metrics_port <= 65535]
        if bad_ports:
            raise ConfigError(f"{path}: metrics_port must be 0..65535 (got {bad_ports})")
        ids = [n.id for n in parsed]
        if len(set(ids)) != len(ids) or min(ids) < 1:
            raise ConfigError(f"{path}: node ids must be unique and >= 1 (got {ids})")
        nodes = tuple(sorted(parsed, key=lambda n: n.id))
    data_dir = Path(raw.get("data_dir", str(base.data_dir)))
    if not data_dir.is_absolute():
        data_dir = path.parent / data_dir
    cfg = ClusterConfig(
        cluster_id=str(raw.get("cluster_id", base.cluster_id)),
        data_dir=data_dir,
        tick_ms=int(raw.get("tick_ms", base.tick_ms)),
        election_ticks=int(raw.get("election_ticks", base.election_ticks)),
        heartbeat_ticks=int(raw.get("heartbeat_ticks", base.heartbeat_ticks)),
        snapshot_entries=int(raw.get("snapshot_entries", base.snapshot_entries)),
        nodes=nodes,
        secret_file=_secret_path(path, raw.get("secret_file")),
    )
    if cfg.tick_ms < 1 or cfg.election_ticks <= cfg.heartbeat_ticks or cfg.heartbeat_ticks < 1:
        raise ConfigError(f"{path}: need tick_ms >= 1 and 1 <= heartbeat_ticks < election_ticks")
    if cfg.snapshot_entries < 1:
        raise ConfigError(f"{path}: snapshot_entries must be >= 1")
    return cfg


def _secret_path(config_path: Path, raw: object) -> Path | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{config_path}: secret_file must be a file name")
    secret = Path(raw)
    return secret if secret.is_absolute() else config_path.parent / secret


def parse_secret(text: str, where: str) -> bytes:
    """The cluster secret from its hex text (whitespace around it ignored); ConfigError if it is not one."""
    try:
        secret = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: the cluster secret must be hex digits") from None
    if len(secret) < SECRET_MIN_BYTES:
        raise ConfigError(f"{where}: the cluster secret must be at least {SECRET_MIN_BYTES} bytes "
                          f"({2 * SECRET_MIN_BYTES} hex digits); `railraft cluster up` generates 32")
    return secret


def read_secret_file(path: str | Path) -> bytes:
    """The cluster secret kept in `path`; ConfigError if it is missing or malformed."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"no cluster secret at {path} (named by secret_file in cluster.toml)") from None
    except OSError as e:
        raise ConfigError(f"cannot read the cluster secret at {path}: {e}") from None
    return parse_secret(text, str(path))


def cluster_secret(cfg: ClusterConfig | None, environ: dict[str, str] | None = None) -> bytes | None:
    """The cluster secret: the configuration's `secret_file` if it names one, else RAILRAFT_CLUSTER_SECRET,
    else None (peer traffic then goes unauthenticated).  ConfigError for a missing file or a malformed secret."""
    if cfg is not None and cfg.secret_file is not None:
        return read_secret_file(cfg.secret_file)
    text = (os.environ if environ is None else environ).get(SECRET_ENV, "")
    return parse_secret(text, SECRET_ENV) if text.strip() else None
