"""One project's guests share a budget of answers per second on the controller: a
project flooding from many guests (each within its own meter) exhausts its own budget,
never another project's."""

from __future__ import annotations

import dataclasses

from controller.punt import PROJECT_BURST, PROJECT_RATE, ProjectBuckets, PuntService


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flooding_project_runs_out_and_another_is_untouched() -> None:
    clock = Clock()
    buckets = ProjectBuckets(clock=clock)
    assert sum(buckets.take("noisy") for _ in range(1000)) == PROJECT_BURST
    assert buckets.take("quiet")  # its own budget, full
    clock.now += 1.0
    assert sum(buckets.take("noisy") for _ in range(1000)) == PROJECT_RATE


def test_the_service_answers_the_quiet_project_while_the_noisy_one_is_over_budget(
        ) -> None:
    from os_ken.lib.packet import dhcp
    from test_dhcp_answer import INTENT, PORT, _request

    clock = Clock()
    service = PuntService(buckets=ProjectBuckets(rate=1, burst=1, clock=clock))
    noisy = dataclasses.replace(PORT, id="p9", project_id="noisy")
    intent = dataclasses.replace(INTENT, ports={**INTENT.ports, "p9": noisy})
    discover = _request(dhcp.DHCP_DISCOVER)
    assert len(service.handle(noisy, intent, discover, lambda s: None)) == 1
    assert service.handle(noisy, intent, discover, lambda s: None) == []  # over budget
    assert len(service.handle(PORT, intent, discover, lambda s: None)) == 1  # untouched
    clock.now += 1.0
    assert len(service.handle(noisy, intent, discover, lambda s: None)) == 1  # refilled
