"""One brick replica as an OS process: ``python -m lego.bricks.main SPEC.json``.

Its supervisor (a Ray actor or a graph file's runner) writes the
:class:`~lego.bricks.runtime.BrickSpec` and starts
this. A dead worker makes noise: any exception is logged with its traceback,
reported northbound (``bye`` with status ``died``) and the process exits 1.
SIGTERM stops the loop at the next batch (exit 0, status ``stopped``).
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
    from lego.cpu_quota import join_group

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
        # the host's CPU quota (if its supervisor names one), once warm: a source now, any
        # other brick after its first batch (imports, first allocations: one-time)
        if spec.inlet is None:
            join_group()
        else:
            brick.warm_hook = join_group
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
