"""FAULTS=...: a spec is checked whole before a run starts (pure)."""

from __future__ import annotations

import pytest

from lego.errors import ConfigError
from lego.experiments.elastic.faults import Fault, parse_faults

HOSTS = ["nf1", "nf2", "nf3"]
ROLES = ["src", "fq", "fm", "uln", "dec"]


def test_a_spec_is_faults_in_time_order():
    assert parse_faults("30:kill:uln@nf2 20:kill:fq@nf1  40.5:lose:nf3", HOSTS, ROLES) == [
        Fault(20.0, "kill", "nf1", "fq"), Fault(30.0, "kill", "nf2", "uln"),
        Fault(40.5, "lose", "nf3")]
    assert parse_faults("", HOSTS, ROLES) == []
    assert Fault(20.0, "kill", "nf1", "fq").text() == "20:kill:fq@nf1"


@pytest.mark.parametrize("spec, says", [
    ("20-kill-fq@nf1", "expected SECONDS:ACTION:TARGET"),
    ("x:kill:fq@nf1", "expected seconds >= 0"),
    ("-3:kill:fq@nf1", "expected seconds >= 0"),
    ("nan:lose:nf1", "expected seconds >= 0"),
    ("20:stop:fq@nf1", "expected an action of kill, lose"),
    ("20:kill:nf1", "expected kill:ROLE@HOST with a role of src, fq"),
    ("20:kill:ensemble@nf1", "with a role of"),
    ("20:kill:fq@nf9", "no NF host 'nf9'"),
    ("20:lose:fq@nf1", "no NF host 'fq@nf1'"),
])
def test_a_bad_item_is_one_line_naming_it(spec, says):
    with pytest.raises(ConfigError, match=says) as e:
        parse_faults(f"10:kill:fq@nf1 {spec}", HOSTS, ROLES)
    assert spec in str(e.value) and "\n" not in str(e.value)


def test_replicas_run_fused_unless_faults_are_injected_or_the_user_says():
    """FUSE=auto: one process per replica, except with FAULTS (a killed brick's exact
    recovery replays the log of the process before it); on and off as said."""
    from lego.cli_run import _fused

    kill, lose = Fault(12.0, "kill", "nf1", "fq"), Fault(30.0, "lose", "nf2")
    assert _fused("auto", []) and not _fused("auto", [lose]) and not _fused("auto", [kill])
    assert _fused("on", [kill]) and not _fused("off", [])
