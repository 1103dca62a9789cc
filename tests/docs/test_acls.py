"""The README's Kafka security table is exactly the ACLs the code grants per role."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.kafka.acls import ROLES, Role, readme_rows

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_lists_exactly_the_acls_of(role: Role) -> None:
    listed = re.findall(rf"^\| {role} \|.*\|$", README, re.MULTILINE)
    assert listed == readme_rows(role)
