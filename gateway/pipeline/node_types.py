"""Per node type: which detector scores a node and which channel map feeds it (issue 16).

``[scoring.node_types.<type>]`` (:class:`~gateway.pipeline.config.NodeTypeConfig`) names the
nodes of a type by id pattern and says how they are scored:

* ``detector = "model"``: the type's gateway model (``model_path``, default the running one)
  through the type's ``channel_map``; a node that model does not cover (no channel maps, or
  ``missing_channels = "skip"`` and an input is missing) is scored from its own baseline
  (:mod:`gateway.pipeline.fallback`) unless ``scoring.fallback = "off"``;
* ``detector = "own_baseline"``: always T² + MSET over the node's own channels;
* ``detector = "off"``: not scored (counted as unscorable rows).

A node of no type is scored as before. Rows for a type with its own model carry a layout that
starts with :func:`slot_key`, which is how :class:`~gateway.pipeline.scoring.BatchScorer` sends
them to that model's slot; every other row keeps the layout it always had.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from gateway.errors import ModelError
from gateway.pipeline.config import ScoringConfig
from gateway.pipeline.fallback import own_layout
from gateway.pipeline.hotswap import ModelInfo, load_startup
from gateway.pipeline.windows import ChannelMapper
from gateway.protocol.messages import Channel
from tinymodels.runtime import GatewayModel

TYPE_PREFIX = "type:"

Plan = tuple[tuple[int, ...] | None, str]  # (column plan or None: unscored, layout)


def slot_key(name: str) -> str:
    """The layout prefix of rows scored by type ``name``'s own model."""
    return f"{TYPE_PREFIX}{name}|"


def slot_of(layout: str) -> str | None:
    """The :func:`slot_key` a row's layout starts with, if any."""
    if not layout.startswith(TYPE_PREFIX):
        return None
    return layout[: layout.index("|") + 1]


class NodeTypes:
    """Resolves a node id to its type and a batch's channels to a scoring plan."""

    def __init__(self, config: ScoringConfig, running: GatewayModel) -> None:
        self._config = config
        self.models: dict[str, tuple[GatewayModel, ModelInfo]] = {}  # slot_key -> own model
        self._mappers: dict[str, ChannelMapper] = {}
        for name, t in config.node_types.items():
            model = running
            if t.detector == "model" and t.model_path is not None:
                model, info = load_startup(t.model_path, config.public_key_path)
                self.models[slot_key(name)] = (model, info)
            cfg = model.feature_config
            if cfg is None:
                raise ModelError(f"node type {name}: {t.model_path} is not a gateway model")
            channel_map = t.channel_map if t.channel_map is not None else config.channel_map
            missing = t.missing_channels or config.missing_channels
            self._mappers[name] = ChannelMapper(cfg, channel_map, missing)
        self._type: dict[str, str | None] = {}
        self._plans: dict[tuple[str, tuple[Channel, ...]], Plan] = {}

    def type_of(self, node_id: str) -> str | None:
        """The first type (config order) with a pattern matching ``node_id``; None: no type."""
        try:
            return self._type[node_id]
        except KeyError:
            pass
        name = next(
            (
                n
                for n, t in self._config.node_types.items()
                if any(fnmatchcase(node_id, p) for p in t.nodes)
            ),
            None,
        )
        self._type[node_id] = name
        return name

    def plan(self, node_id: str, channels: tuple[Channel, ...]) -> Plan | None:
        """How a batch of ``node_id`` with ``channels`` is scored; None: the node has no type."""
        name = self.type_of(node_id)
        if name is None:
            return None
        key = (name, channels)
        try:
            return self._plans[key]
        except KeyError:
            pass
        t = self._config.node_types[name]
        fallback = self._config.fallback != "off"
        own: Plan = (tuple(range(len(channels))), own_layout(channels)) if channels else (None, "")
        out: Plan
        if t.detector == "off":
            out = (None, "")
        elif t.detector == "own_baseline":
            out = own
        else:
            mapper = self._mappers[name]
            column_plan = mapper.plan(channels)
            if column_plan is None:
                out = own if fallback else (None, "")
            else:
                layout = mapper.layout(channels)
                if slot_key(name) in self.models:
                    layout = slot_key(name) + layout
                out = (column_plan, layout)
        self._plans[key] = out
        return out
