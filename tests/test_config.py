"""PoolConfig and the config forms Dispatcher accepts, with every validation error."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator

import pytest

from jobdispatch import DEFAULT_QUEUE_SIZE, Dispatcher, PoolConfig


class Level(enum.IntEnum):
    LOW = 0
    HIGH = 1


@pytest.fixture
def made() -> Iterator[list[Dispatcher]]:
    """Dispatchers a test builds; each is finalized after the test."""
    dispatchers: list[Dispatcher] = []
    yield dispatchers
    for d in dispatchers:
        d.finalize(timeout=10)


class TestPoolConfig:
    def test_fields_and_default_queue_size(self) -> None:
        """PoolConfig keeps its fields; queue_size defaults to DEFAULT_QUEUE_SIZE (1024)."""
        config = PoolConfig(3, 2)
        assert (config.priority, config.workers, config.queue_size) == (3, 2, DEFAULT_QUEUE_SIZE)
        assert DEFAULT_QUEUE_SIZE == 1024

    def test_keywords(self) -> None:
        """PoolConfig takes its fields as keywords too."""
        assert PoolConfig(priority=-5, workers=1, queue_size=0) == PoolConfig(-5, 1, 0)

    def test_frozen(self) -> None:
        """A PoolConfig cannot be changed after it is built."""
        config = PoolConfig(0, 1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.workers = 5  # type: ignore[misc]

    def test_equal_and_hashable(self) -> None:
        """Equal PoolConfigs compare and hash equal."""
        assert PoolConfig(1, 2, 3) == PoolConfig(1, 2, 3)
        assert len({PoolConfig(1, 2, 3), PoolConfig(1, 2, 3), PoolConfig(1, 2, 4)}) == 2

    def test_extremes_accepted(self) -> None:
        """Negative and large priorities, one worker and an empty queue are all valid."""
        assert PoolConfig(-(2**40), 1, 0).queue_size == 0
        assert PoolConfig(2**40, 10_000, 10**6).workers == 10_000

    def test_intenum_priority(self) -> None:
        """An IntEnum member is a valid priority and is kept as given."""
        assert PoolConfig(Level.HIGH, 2).priority is Level.HIGH

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"workers": 0}, ValueError, r"^workers must be >= 1, got 0$"),
            ({"workers": -1}, ValueError, r"^workers must be >= 1, got -1$"),
            ({"workers": "3"}, TypeError, r"^workers must be an int, got '3'$"),
            ({"workers": 2.0}, TypeError, r"^workers must be an int, got 2\.0$"),
            ({"workers": True}, TypeError, r"^workers must be an int, got True$"),
            ({"workers": None}, TypeError, r"^workers must be an int, got None$"),
            ({"queue_size": -1}, ValueError, r"^queue_size must be >= 0, got -1$"),
            ({"queue_size": "1"}, TypeError, r"^queue_size must be an int, got '1'$"),
            ({"queue_size": 1.0}, TypeError, r"^queue_size must be an int, got 1\.0$"),
            ({"queue_size": False}, TypeError, r"^queue_size must be an int, got False$"),
            ({"queue_size": None}, TypeError, r"^queue_size must be an int, got None$"),
            ({"priority": 1.5}, TypeError, r"^priority must be an int, got 1\.5$"),
            ({"priority": "0"}, TypeError, r"^priority must be an int, got '0'$"),
            ({"priority": None}, TypeError, r"^priority must be an int, got None$"),
            ({"priority": True}, TypeError, r"^priority must be an int, got True$"),
        ],
    )
    def test_invalid_field(self, kwargs: dict[str, object], error: type[Exception], message: str) -> None:
        """A bad field is refused with a message naming the field and the value."""
        fields: dict[str, object] = {"priority": 0, "workers": 1, "queue_size": 4}
        fields.update(kwargs)
        with pytest.raises(error, match=message):
            PoolConfig(**fields)  # type: ignore[arg-type]


class TestConfigForms:
    def test_int_is_one_pool_of_priority_zero(self, made: list[Dispatcher]) -> None:
        """Dispatcher(n) is one pool, priority 0, with n workers."""
        d = Dispatcher(3)
        made.append(d)
        assert d.priorities == (0,)
        assert d.total_workers(0) == 3

    def test_mapping_is_priority_to_workers(self, made: list[Dispatcher]) -> None:
        """Dispatcher({p: n}) makes one pool per key, in the mapping's order."""
        d = Dispatcher({5: 1, -2: 4, 0: 2})
        made.append(d)
        assert d.priorities == (5, -2, 0)
        assert [d.total_workers(p) for p in d.priorities] == [1, 4, 2]

    def test_sequence_of_poolconfigs(self, made: list[Dispatcher]) -> None:
        """A list or tuple of PoolConfigs makes their pools in order."""
        for config in ([PoolConfig(1, 2), PoolConfig(0, 3)], (PoolConfig(1, 2), PoolConfig(0, 3))):
            d = Dispatcher(config)
            made.append(d)
            assert d.priorities == (1, 0)
            assert (d.total_workers(1), d.total_workers(0)) == (2, 3)

    def test_single_poolconfig(self, made: list[Dispatcher]) -> None:
        """A lone PoolConfig, not in a list, is accepted."""
        d = Dispatcher(PoolConfig(7, 2))  # type: ignore[arg-type]
        made.append(d)
        assert d.priorities == (7,)

    def test_generator_of_poolconfigs(self, made: list[Dispatcher]) -> None:
        """Any iterable of PoolConfigs, a generator included, is accepted."""
        d = Dispatcher(PoolConfig(p, 1) for p in range(3))
        made.append(d)
        assert d.priorities == (0, 1, 2)

    def test_intenum_keys(self, made: list[Dispatcher]) -> None:
        """IntEnum keys are valid priorities and are kept as given."""
        d = Dispatcher({Level.LOW: 1, Level.HIGH: 2})  # type: ignore[arg-type]
        made.append(d)
        assert d.priorities == (Level.LOW, Level.HIGH)
        assert d.total_workers(Level.HIGH) == 2
        assert d.total_workers(1) == 2


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("config", "error", "message"),
        [
            ([], ValueError, r"^config must describe at least one pool, got none$"),
            ({}, ValueError, r"^config must describe at least one pool, got none$"),
            ((), ValueError, r"^config must describe at least one pool, got none$"),
            (iter([]), ValueError, r"^config must describe at least one pool, got none$"),
            (0, ValueError, r"^workers must be >= 1, got 0$"),
            (-1, ValueError, r"^workers must be >= 1, got -1$"),
            ([PoolConfig(3, 1), PoolConfig(3, 2)], ValueError, r"^config has priority 3 more than once$"),
            ([PoolConfig(Level.HIGH, 1), PoolConfig(1, 1)], ValueError, r"^config has priority 1 more than once$"),
            ("3", TypeError, r"^config must be an int, a mapping or PoolConfigs, got '3'$"),
            (b"3", TypeError, r"^config must be an int, a mapping or PoolConfigs, got b'3'$"),
            (1.5, TypeError, r"^config must be an int, a mapping or PoolConfigs, got 1\.5$"),
            (None, TypeError, r"^config must be an int, a mapping or PoolConfigs, got None$"),
            (True, TypeError, r"^config must be an int, a mapping or PoolConfigs, got True$"),
            ([1, 2], TypeError, r"^config items must be PoolConfig, got 1$"),
            ([PoolConfig(0, 1), (1, 2)], TypeError, r"^config items must be PoolConfig, got \(1, 2\)$"),
            ({0: 0}, ValueError, r"^workers must be >= 1, got 0$"),
            ({0: "3"}, TypeError, r"^workers must be an int, got '3'$"),
            ({0: True}, TypeError, r"^workers must be an int, got True$"),
            ({1.5: 2}, TypeError, r"^priority must be an int, got 1\.5$"),
            ({"a": 2}, TypeError, r"^priority must be an int, got 'a'$"),
        ],
    )
    def test_invalid_config(self, config: object, error: type[Exception], message: str) -> None:
        """A bad config is refused with a message that names the problem and the value."""
        with pytest.raises(error, match=message):
            Dispatcher(config)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"name": 5}, r"^name must be a str, got 5$"),
            ({"name": None}, r"^name must be a str, got None$"),
            ({"name": b"x"}, r"^name must be a str, got b'x'$"),
            ({"on_error": 5}, r"^on_error must be callable or None, got 5$"),
            ({"on_error": "log"}, r"^on_error must be callable or None, got 'log'$"),
            ({"propagate_context": "yes"}, r"^propagate_context must be a bool, got 'yes'$"),
            ({"propagate_context": 1}, r"^propagate_context must be a bool, got 1$"),
            ({"propagate_context": None}, r"^propagate_context must be a bool, got None$"),
        ],
    )
    def test_invalid_keyword(self, kwargs: dict[str, object], message: str) -> None:
        """A bad keyword argument is refused with TypeError naming it and its value."""
        with pytest.raises(TypeError, match=message):
            Dispatcher(1, **kwargs)  # type: ignore[arg-type]

    def test_options_are_keyword_only(self) -> None:
        """name, on_error and propagate_context cannot be passed by position."""
        with pytest.raises(
            TypeError, match=r"^Dispatcher\.__init__\(\) takes 2 positional arguments but 3 were given$"
        ):
            Dispatcher(1, "name")  # type: ignore[call-arg]
