"""The modules that run after boot keep the codes of h2p.codes they compare
as constants of their own (h2p.codes is dropped after boot to save RAM, and
a constant costs no lookup in the step): each copy must equal the code."""

import re

import pytest

from h2p import codes, devbuild, devices, supervisor


@pytest.mark.parametrize("mod", [supervisor, devices, devbuild])
def test_private_copies_equal_the_codes(mod):
    with open(mod.__file__) as f:
        src = f.read()
    names = re.findall(r"^_([A-Z][A-Z0-9_]*) = const\(", src, re.M)
    copies = [n for n in names if hasattr(codes, n)]
    assert copies, "no copies of h2p.codes found"
    for n in copies:
        assert getattr(mod, "_" + n) == getattr(codes, n), n


@pytest.mark.parametrize("mod", [supervisor, devices])
def test_no_lookup_of_the_codes_module_at_run_time(mod):
    with open(mod.__file__) as f:
        src = f.read()
    assert "from h2p import codes" not in src and not re.search(r"\bK\.[A-Z]", src)
