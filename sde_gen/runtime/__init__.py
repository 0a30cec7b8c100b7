"""What a run stands on, below the maths: files (atomic writes, the folder lock, disk-full
errors), resources (device, seed, threads, memory, stop signals), progress bars, building objects
from config nodes, and the distributed world with its sharded chunks (``distributed``,
``sharding``, imported by name)."""

from sde_gen.runtime.files import *  # noqa: F403
from sde_gen.runtime.progress import *  # noqa: F403
from sde_gen.runtime.resources import *  # noqa: F403
