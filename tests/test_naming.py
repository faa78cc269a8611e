"""Which job failed: names, notes on exceptions, arguments, and what cannot be dispatched."""

from __future__ import annotations

import functools
import logging
import threading

import pytest

from jobdispatch import PoolConfig
from support import WAIT, Kit


def fail(what: str) -> None:
    raise ValueError(what)


class NamedJob:
    name = "resize thumbnails"

    def do(self) -> None:
        raise OSError("disk full")

    def priority(self) -> int:
        return 0


class TestNotes:
    def test_batch_failures_name_their_jobs(self, kit: Kit) -> None:
        """Each exception of a batch's ExceptionGroup carries a note naming its job and pool."""
        d = kit.dispatcher({0: 2, 1: 1})
        with pytest.raises(ExceptionGroup) as caught, d.batch() as batch:
            batch.dispatch(fail, "a", name="fetch page a", priority=0)
            batch.dispatch(fail, "b", priority=1)
            batch.dispatch(NamedJob())
        notes = sorted(note for error in caught.value.exceptions for note in error.__notes__)
        assert notes == [
            "jobdispatch: raised by job fail('b') in pool 1",
            "jobdispatch: raised by job fetch page a in pool 0",
            "jobdispatch: raised by job resize thumbnails in pool 0",
        ]

    def test_on_error_gets_the_job_itself_and_a_named_exception(self, kit: Kit) -> None:
        """on_error receives the job as dispatched (not a wrapper) and an exception whose note names it."""
        seen: list[tuple[object, list[str]]] = []
        done = threading.Event()

        def on_error(job: object, error: BaseException) -> None:
            seen.append((job, list(error.__notes__)))
            done.set()

        d = kit.dispatcher(1, on_error=on_error)
        job = NamedJob()
        d.dispatch(job, name="nightly resize")
        assert done.wait(WAIT)
        assert seen == [(job, ["jobdispatch: raised by job nightly resize in pool 0"])]

    def test_log_names_the_job(self, kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
        """A failure without on_error is logged with the job's name, and the record carries it."""
        d = kit.dispatcher(1)
        with caplog.at_level(logging.ERROR, logger="jobdispatch"):
            d.dispatch(lambda: fail("x"), name="crawl example.org")
            assert d.wait(WAIT)
        (record,) = caplog.records
        assert record.getMessage() == "job crawl example.org failed in pool 0"
        assert record.job == "crawl example.org"  # type: ignore[attr-defined]

    def test_delayed_job_is_named(self, kit: Kit) -> None:
        """dispatch_later takes name= too."""
        d = kit.dispatcher(1)
        with pytest.raises(ExceptionGroup) as caught, d.batch() as batch:
            batch.dispatch_later(0, fail, "late", name="late job")
        assert caught.value.exceptions[0].__notes__ == ["jobdispatch: raised by job late job in pool 0"]

    def test_name_must_be_a_str(self, kit: Kit) -> None:
        """A name that is not a str is refused at dispatch, with the value."""
        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match=r"^name must be a str, got 42$"):
            d.dispatch(lambda: None, name=42)  # type: ignore[arg-type]
        assert d.stats(0).completed == 0


class TestArguments:
    def test_arguments_are_bound_at_dispatch(self, kit: Kit) -> None:
        """dispatch(fn, *args) binds each argument at the call: no loop-variable trap."""
        d = kit.dispatcher(2)
        seen: list[int] = []
        lock = threading.Lock()

        def record(n: int) -> None:
            with lock:
                seen.append(n)

        for n in range(5):
            d.dispatch(record, n)
        assert d.wait(WAIT)
        assert sorted(seen) == [0, 1, 2, 3, 4]

    @pytest.mark.parametrize("pools", [1, 2])
    def test_a_failing_call_is_named_with_its_arguments(self, kit: Kit, pools: int) -> None:
        """A function or a method dispatched with arguments fails under its name and those arguments."""
        errors: list[tuple[object, BaseException]] = []
        d = kit.dispatcher(
            [PoolConfig(p, 1, 4) for p in range(pools)], on_error=lambda job, error: errors.append((job, error))
        )

        def boom(n: int) -> None:
            raise ValueError(n)

        class Account:
            def close(self, n: int) -> None:
                raise KeyError(n)

        priority = None if pools == 1 else pools - 1
        d.dispatch(boom, 3, priority=priority)
        d.dispatch(Account().close, 4, priority=priority)
        assert d.wait(WAIT)
        notes = sorted(note for _, error in errors for note in error.__notes__)
        assert notes == sorted(
            [
                f"jobdispatch: raised by job {boom.__qualname__}(3) in pool {pools - 1}",
                f"jobdispatch: raised by job {Account.close.__qualname__}(4) in pool {pools - 1}",
            ]
        )
        assert sorted(type(error).__name__ for _, error in errors) == ["KeyError", "ValueError"]
        assert all(isinstance(job, functools.partial) for job, _ in errors)
        assert d.stats(pools - 1).failed == 2

    def test_a_coroutine_function_with_arguments_is_refused(self, kit: Kit) -> None:
        """A coroutine function dispatched with arguments is refused, as without them."""

        async def fetch(n: int) -> None:
            pass

        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match=r"is a coroutine function: .*asyncio"):
            d.dispatch(fetch, 1)
        assert d.stats(0).completed == 0

    def test_arguments_are_refused_for_a_job_object(self, kit: Kit) -> None:
        """Positional arguments go to a callable; a Job object refuses them."""
        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match="positional arguments are for a callable job"):
            d.dispatch(NamedJob(), 1)  # type: ignore[call-arg]


class TestRefused:
    def test_coroutine_function_is_refused(self, kit: Kit) -> None:
        """A coroutine function is refused at dispatch with a TypeError that points to asyncio."""

        async def fetch() -> None:
            pass

        d = kit.dispatcher(1)
        for job in (fetch, functools.partial(fetch)):
            with pytest.raises(TypeError, match=r"is a coroutine function: .*asyncio"):
                d.dispatch(job)
        with pytest.raises(TypeError, match="asyncio"):
            d.dispatch_later(0, fetch)
        assert d.stats(0).completed == 0

    def test_coroutine_object_is_refused(self, kit: Kit) -> None:
        """A coroutine object is refused with a TypeError that points to asyncio."""

        async def fetch() -> None:
            pass

        d = kit.dispatcher(1)
        coroutine = fetch()
        try:
            with pytest.raises(TypeError, match="asyncio"):
                d.dispatch(coroutine)  # type: ignore[arg-type]
        finally:
            coroutine.close()

    def test_async_do_method_is_refused(self, kit: Kit) -> None:
        """A Job whose do() is a coroutine function is refused."""

        class AsyncJob:
            async def do(self) -> None:
                pass

            def priority(self) -> int:
                return 0

        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match="coroutine function"):
            d.dispatch(AsyncJob())  # type: ignore[arg-type]

    def test_job_class_instead_of_instance(self, kit: Kit) -> None:
        """Dispatching a Job class says so, instead of a missing 'self'."""
        d = kit.dispatcher(1)
        with pytest.raises(TypeError, match=r"got the class NamedJob itself: dispatch NamedJob\(\.\.\.\) instead"):
            d.dispatch(NamedJob)

    def test_priority_that_raises_has_a_note(self, kit: Kit) -> None:
        """An exception from job.priority() propagates from dispatch with a note saying where it came from."""

        class Broken:
            name = "broken"

            def do(self) -> None:
                pass

            def priority(self) -> int:
                raise KeyError("tenant")

        d = kit.dispatcher({0: 1, 1: 1})
        with pytest.raises(KeyError) as caught:
            d.dispatch(Broken())
        assert caught.value.__notes__ == ["jobdispatch: raised by broken.priority(), called to choose its pool"]
