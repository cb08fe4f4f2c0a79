"""``python -m paraconnect.servers._mpi -- mpiexec -n N pvserver ...``: start an MPI pvserver
as whoever runs the agent, root included.

Open MPI's ``mpiexec`` refuses to start as root unless ``OMPI_ALLOW_RUN_AS_ROOT`` and
``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM`` are set (FACTS.md), and CI and many containers run as root:
without this, ``--ranks N`` fails there with Open MPI's advice buried in a failure reason.  The
decision is made on the host that runs the program (the hub cannot know who that is for ssh or
Slurm), the two variables are set for this one child only, and the log says so in one line.

The ranks start under the agent's private leg like any pvserver: ``mpiexec`` forks the local
ranks inside the agent's network namespace (in a Slurm job too: Open MPI takes the allocation
from Slurm and only uses ``srun`` for its daemons on *other* nodes), so rank 0's port and Open
MPI's own ranks-to-ranks sockets are reachable from nowhere but that namespace.
"""

from __future__ import annotations

import os
import sys

ROOT_VARIABLES = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m paraconnect.servers._mpi -- MPIEXEC ...", file=sys.stderr)
        return 2
    command = argv[1:]
    env = dict(os.environ)
    if os.geteuid() == 0 and not all(env.get(v) for v in ROOT_VARIABLES):
        for name in ROOT_VARIABLES:
            env[name] = "1"
        print(
            "paraconnect: running as root: setting OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1 for this "
            "pvserver's mpiexec only (Open MPI refuses root otherwise); run the agent as a "
            "normal user where you can",
            file=sys.stderr,
            flush=True,
        )
    try:
        os.execvpe(command[0], command, env)  # noqa: S606 - the kind's own command, no shell
    except OSError as exc:
        print(
            f"paraconnect: cannot run {command[0]!r} ({exc.strerror}); install Open MPI's "
            "mpiexec (Debian: openmpi-bin) or set the pvserver option mpiexec to its path",
            file=sys.stderr,
        )
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
