"""One brick replica as an OS process: ``python -m lego.bricks.main SPEC.json``.

Its supervisor (a Ray actor or a graph file's runner) writes the
:class:`~lego.bricks.runtime.BrickSpec` and starts
this. A dead worker makes noise: any exception is logged with its traceback,
reported northbound (``bye`` with status ``died``) and the process exits 1.
SIGTERM stops the loop at the next batch (exit 0, status ``stopped``).

Once warm (a source at once, any other brick after its first batch: imports and
first allocations are one-time), a brick enters its data path: it joins its
host's CPU quota, if its supervisor names one, and takes the normal CPU priority
(:data:`BRICK_NICENESS`). Until then it runs at its supervisor's: under Ray a
worker's niceness, 15, so that a standby graph starting at a scale-out takes
only the CPU that the running NF leaves idle.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

log = logging.getLogger("lego.bricks.main")

#: what a brick process may use: one thread per numeric library (its supervisor
#: starts it with this environment)
ONE_CORE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: a warm brick's niceness. A brick keeping Ray's worker niceness (15) weighs 36
#: against every other process's 1024 when the machine's cores are all busy (a
#: standby starting, the switch at the peak): the NF, whose share its host's quota
#: already caps, then gets a sliver of even that, and its packets wait. Measured in
#: make run, where the calibration's replica ran at 0 and the run's at 15.
BRICK_NICENESS = 0


def enter_data_path() -> None:
    """Join the host's CPU quota (if any) and take the normal priority (lowering a
    niceness needs CAP_SYS_NICE: without it the brick keeps its own, and says so)."""
    from lego.cpu_quota import join_group

    join_group()
    if os.getpriority(os.PRIO_PROCESS, 0) > BRICK_NICENESS:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, BRICK_NICENESS)
        except PermissionError:
            log.warning("niceness stays %d (setting %d needs CAP_SYS_NICE)",
                        os.getpriority(os.PRIO_PROCESS, 0), BRICK_NICENESS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("LEGO_BRICK_LOG", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if len(argv) != 1:
        log.error("usage: python -m lego.bricks.main SPEC.json")
        return 2
    import zmq

    from lego.bricks.catalog import make_logic
    from lego.bricks.northbound import ZmqNorthbound
    from lego.bricks.runtime import Brick, BrickSpec

    spec = BrickSpec.from_dict(json.loads(Path(argv[0]).read_text()))
    if spec.cpus:
        os.sched_setaffinity(0, spec.cpus)
    ctx = zmq.Context()
    northbound = ZmqNorthbound(ctx, spec.report)
    brick = None
    try:
        logic = make_logic(spec.type, spec.options, spec.id)
        brick = Brick(spec, logic, northbound, ctx)
        signal.signal(signal.SIGTERM, lambda *_: brick.stop())
        brick.init()
        if spec.inlet is None:  # warm: a source now, any other brick after its first batch
            enter_data_path()
        else:
            brick.warm_hook = enter_data_path
        brick.run()
        brick.close()
        return 0
    except BaseException as exc:  # noqa: BLE001 - a dead worker makes noise, then exits
        log.exception("brick %s (%s) died", spec.id, spec.type)
        northbound.bye(str(spec.id), "died", {"error": f"{type(exc).__name__}: {exc}",
                                              "traceback": traceback.format_exc()[-4000:]})
        northbound.close()
        return 1
    finally:
        ctx.destroy(linger=1000)


if __name__ == "__main__":
    sys.exit(main())
