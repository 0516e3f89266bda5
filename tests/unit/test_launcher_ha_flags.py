"""The launcher's flags for several instances and drift (issue 14, 15): a bad value is one
line on stderr and exit 2, before anything starts."""

from __future__ import annotations

import pytest

from controller.launcher import EXIT_USAGE, build_parser


def _parse(*argv: str) -> object:
    return build_parser().parse_args(list(argv))


def test_a_clustered_northbound_is_its_members_comma_separated() -> None:
    ns = _parse("--nb-db", "tcp:10.0.0.1:6641,unix:/run/nb-b.sock,tcp:10.0.0.3:6641",
                "--instance-name", "ctl1", "--drift", "report")
    assert ns.nb_db == "tcp:10.0.0.1:6641,unix:/run/nb-b.sock,tcp:10.0.0.3:6641"  # type: ignore[attr-defined]
    assert ns.instance_name == "ctl1" and ns.drift == "report"  # type: ignore[attr-defined]
    assert _parse().drift == "repair"  # type: ignore[attr-defined]


@pytest.mark.parametrize("argv, says", [
    (("--nb-db", "tcp:10.0.0.1:6641,10.0.0.2:6641"), "expected an OVSDB remote"),
    (("--nb-db", "unix:/a.sock,unix:/a.sock"), "listed twice"),
    (("--drift", "fix"), "invalid choice"),
])
def test_bad_values_are_refused_in_one_line(
        argv: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(*argv)
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
