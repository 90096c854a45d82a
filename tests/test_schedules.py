import pytest

from tmexp.config import Config
from tmexp.core.schedules import ScheduleError, build_schedules, make_schedule


def test_exponential_schedule_at_and_between_points():
    s = make_schedule([[0, 1e-3], [100, 1e-5], [200, 1e-5]], "exponential", "lr")
    assert s(0) == pytest.approx(1e-3)
    assert s(100) == pytest.approx(1e-5)
    assert s(50) == pytest.approx(1e-4)  # geometric midpoint
    assert s(150) == pytest.approx(1e-5)
    assert s(10_000) == pytest.approx(1e-5)  # holds the last value


def test_linear_and_staircase():
    g = make_schedule([[0, 0.9], [10, 0.9], [20, 1.0]], "linear", "gamma")
    assert g(15) == pytest.approx(0.95)
    assert g(5) == pytest.approx(0.9)
    m = make_schedule([[0, [10, 5]], [100, [20, 15]]], "staircase", "memory")
    assert m(99) == [10, 5] and m(100) == [20, 15] and m(1e9) == [20, 15]


def test_global_schedule_speed_stretches_all_but_gamma():
    cfg = Config()
    cfg.training.global_schedule_speed = 4
    slow = build_schedules(cfg.training, cfg.memory, cfg.exploration)
    cfg.training.global_schedule_speed = 1
    base = build_schedules(cfg.training, cfg.memory, cfg.exploration)
    for frame in (0, 50_000, 123_456, 300_000, 2_000_000):
        assert slow.epsilon(4 * frame) == pytest.approx(base.epsilon(frame))
        assert slow.lr(4 * frame) == pytest.approx(base.lr(frame))
        assert slow.epsilon_boltzmann(4 * frame) == pytest.approx(base.epsilon_boltzmann(frame))
        assert slow.memory_size(4 * frame) == base.memory_size(frame)
        assert slow.gamma(frame) == pytest.approx(base.gamma(frame))  # gamma is not stretched
    assert slow.gamma(2_000_000) == pytest.approx(0.9995)
    # Linesight's epsilon: 1 until 50k, 0.1 at 300k
    assert base.epsilon(50_000) == pytest.approx(1.0)
    assert base.epsilon(300_000) == pytest.approx(0.1)
    assert slow.epsilon(300_000) > 0.3


@pytest.mark.parametrize(
    "points, message",
    [
        ([[10, 1.0], [20, 0.5]], "first point must be at frame 0"),
        ([[0, 1.0], [0, 0.5]], "do not increase"),
        ([], "empty"),
        ([[0, 1.0, 3]], "[frame, value]"),
        ([[0, 0.0], [10, 1.0]], "positive"),
    ],
)
def test_bad_schedules_are_named(points, message):
    with pytest.raises(ScheduleError) as info:
        make_schedule(points, "exponential", "exploration.epsilon_schedule")
    assert message in str(info.value) and "exploration.epsilon_schedule" in str(info.value)
