"""jobdispatch: a priority/bulkhead worker-pool job dispatcher for threads.

Each priority gets its own isolated pool of worker threads and a bounded
queue; ``dispatch`` blocks while a pool is full; ``wait`` and ``batch`` put
barriers between rounds of work; ``finalize`` drains and joins everything.
"""

from ._backends import DaskBackend as DaskBackend
from ._backends import ExecutorBackend as ExecutorBackend
from ._batch import Batch as Batch
from ._batch import ProgressCallback as ProgressCallback
from ._config import DEFAULT_QUEUE_SIZE as DEFAULT_QUEUE_SIZE
from ._config import ConfigLike as ConfigLike
from ._config import PoolConfig as PoolConfig
from ._dispatcher import Dispatcher as Dispatcher
from ._dispatcher import JobLike as JobLike
from ._errors import DispatcherClosed as DispatcherClosed
from ._errors import DispatcherError as DispatcherError
from ._errors import EngineBroken as EngineBroken
from ._errors import JobNotSerializable as JobNotSerializable
from ._errors import PoolFull as PoolFull
from ._errors import RemoteJobError as RemoteJobError
from ._errors import ResultNotSerializable as ResultNotSerializable
from ._errors import UnknownPriority as UnknownPriority
from ._futures import PoolExecutor as PoolExecutor
from ._job import Job as Job
from ._pool import ErrorHandler as ErrorHandler
from ._scheduler import DelayedJob as DelayedJob
from ._stats import PoolStats as PoolStats
from ._threadpool import ThreadPoolExecutor as ThreadPoolExecutor

__version__ = "1.5.0"

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "Batch",
    "ConfigLike",
    "DaskBackend",
    "DelayedJob",
    "Dispatcher",
    "DispatcherClosed",
    "DispatcherError",
    "EngineBroken",
    "ErrorHandler",
    "ExecutorBackend",
    "Job",
    "JobLike",
    "JobNotSerializable",
    "PoolConfig",
    "PoolExecutor",
    "PoolFull",
    "PoolStats",
    "ProgressCallback",
    "RemoteJobError",
    "ResultNotSerializable",
    "ThreadPoolExecutor",
    "UnknownPriority",
]
