"""Streaming scores equal the batch scorer's; channel mapping is explicit about what is missing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_tools.sim.replay import SKAB_CHANNELS as REPLAY_CHANNELS
from firmware_tools.sim.signals import PUMP_CHANNELS
from gateway.pipeline.config import DEFAULT_CHANNEL_MAP
from gateway.pipeline.windows import ChannelMapper, NodeStream, Row
from gateway.protocol.messages import Channel
from tests.unit.pipeline.helpers import pump_frame
from tinymodels.gateway_features import window_errors
from tinymodels.runtime import GatewayModel, load_model


@pytest.fixture(scope="module")
def model() -> GatewayModel:
    return load_model()


def _stream_scores(
    model: GatewayModel, frame: np.ndarray, chunks: list[int], calibration: int
) -> np.ndarray:
    cfg = model.feature_config
    assert cfg is not None
    stream = NodeStream("pump-1", cfg, calibration)
    out = []
    i = 0
    sizes = iter(chunks)
    while i < frame.shape[0]:
        n = next(sizes, 37)
        rows = [Row("pump-1", j, tuple(frame[j])) for j in range(i, min(i + n, frame.shape[0]))]
        i += n
        prepared = stream.prepare(model, rows)
        if prepared is None:
            continue
        errors = window_errors(prepared.windows, model.predict_batched(prepared.windows))
        out.append(stream.finish(prepared, errors))
    return np.concatenate(out)


def test_streaming_scores_equal_the_batch_scorer_row_for_row(model: GatewayModel) -> None:
    frame = pump_frame(3, 900, fault_from=700)
    batch = model.score_frame(frame, 400).scores[400:] / model.feature_config.threshold_factor  # type: ignore[union-attr]
    streamed = _stream_scores(model, frame, [1, 7, 399, 2, 1, 50], 400)
    assert streamed.shape == batch.shape
    np.testing.assert_allclose(streamed, batch, rtol=1e-4, atol=1e-5)
    # And the comparison is not vacuous: the fault is there in both.
    assert streamed[300:].mean() > 5 * streamed[:250].mean()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(st.integers(1, 120), min_size=1, max_size=20),
    calibration=st.sampled_from([64, 200, 400]),
)
def test_streaming_equals_batch_whatever_the_chunking(
    model: GatewayModel, chunks: list[int], calibration: int
) -> None:
    frame = pump_frame(11, calibration + 150, fault_from=calibration + 100)
    cfg = model.feature_config
    assert cfg is not None
    batch = model.score_frame(frame, calibration).scores[calibration:] / cfg.threshold_factor
    np.testing.assert_allclose(
        _stream_scores(model, frame, chunks, calibration), batch, rtol=1e-4, atol=1e-5
    )


def test_no_score_until_the_baseline_is_full(model: GatewayModel) -> None:
    cfg = model.feature_config
    assert cfg is not None
    stream = NodeStream("n", cfg, 400)
    frame = pump_frame(1, 401)
    assert stream.prepare(model, [Row("n", i, tuple(frame[i])) for i in range(399)]) is None
    assert not stream.calibrated
    prepared = stream.prepare(model, [Row("n", i, tuple(frame[i])) for i in (399, 400)])
    assert stream.calibrated
    assert prepared is not None
    assert prepared.t_ms == [400]


def test_rebuilt_stream_scores_like_one_that_ran_the_new_model_all_along(
    model: GatewayModel,
) -> None:
    frame = pump_frame(5, 700, fault_from=600)
    expected = _stream_scores(model, frame, [], 400)
    cfg = model.feature_config
    assert cfg is not None
    stream = NodeStream("n", cfg, 400)
    head = [Row("n", i, tuple(frame[i])) for i in range(500)]
    prepared = stream.prepare(model, head)
    assert prepared is not None
    stream.finish(prepared, window_errors(prepared.windows, model.predict(prepared.windows)))
    rebuilt = stream.rebuilt_for(load_model())
    tail = [Row("n", i, tuple(frame[i])) for i in range(500, 700)]
    prepared = rebuilt.prepare(model, tail)
    assert prepared is not None
    scores = rebuilt.finish(
        prepared, window_errors(prepared.windows, model.predict(prepared.windows))
    )
    np.testing.assert_allclose(scores, expected[100:], rtol=1e-4, atol=1e-5)


def test_default_map_feeds_the_simulated_pump_and_holds_its_missing_channels_at_baseline(
    model: GatewayModel,
) -> None:
    cfg = model.feature_config
    assert cfg is not None
    mapper = ChannelMapper(cfg, DEFAULT_CHANNEL_MAP, "baseline")
    plan = mapper.plan(PUMP_CHANNELS)
    assert plan is not None
    by_model = dict(zip(cfg.channels, plan, strict=True))
    names = [c.name for c in PUMP_CHANNELS]
    assert by_model["Current"] == names.index("current")
    assert by_model["Volume Flow RateRMS"] == names.index("flow")
    assert by_model["Accelerometer1RMS"] == names.index("vib_rms")
    assert by_model["Accelerometer2RMS"] == -1
    assert by_model["Voltage"] == -1
    row = ChannelMapper.row(plan, (2.1, 1.0, 120.0, 50.0, 0.7))
    assert row[cfg.channels.index("Voltage")] == 0.0
    assert row[cfg.channels.index("Pressure")] == 1.0


def test_skip_policy_refuses_a_node_missing_a_model_input(model: GatewayModel) -> None:
    cfg = model.feature_config
    assert cfg is not None
    mapper = ChannelMapper(cfg, DEFAULT_CHANNEL_MAP, "skip")
    assert mapper.plan(PUMP_CHANNELS) is None
    full = mapper.plan(REPLAY_CHANNELS)
    assert full is not None
    assert -1 not in [full[i] for i in cfg.model_channel_index]


def test_a_node_with_no_mapped_channel_is_never_scored(model: GatewayModel) -> None:
    cfg = model.feature_config
    assert cfg is not None
    mapper = ChannelMapper(cfg, DEFAULT_CHANNEL_MAP, "baseline")
    assert mapper.plan((Channel("soil_moisture", "%"), Channel("temperature", "degC"))) is None
