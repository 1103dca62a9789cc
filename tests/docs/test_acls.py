"""The Kafka security page's ACL table is exactly the ACLs the code grants per role."""

from __future__ import annotations

import re

import pytest

from service.kafka.acls import ROLES, Role, readme_rows
from tests.docs.pages import page

SECURITY = page("how-to/kafka-security.md")


@pytest.mark.parametrize("role", ROLES)
def test_the_security_page_lists_exactly_the_acls_of(role: Role) -> None:
    listed = re.findall(rf"^\| {role} \|.*\|$", SECURITY, re.MULTILINE)
    assert listed == readme_rows(role)
