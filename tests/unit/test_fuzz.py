"""Whatever an operator types, the answer is a valid model or a clean problem list."""

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unitdata import ROOT, VALID

from mailstack.inventory import Inventory, InventoryInvalid, check_text

SOURCES = [VALID, (ROOT / "inventories" / "lab.yml").read_text(),
           (ROOT / "inventories" / "multi-host.example.yml").read_text()]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["mx", "reject", "mx1", "@", "192.0.2.1",
                                                           "a@b.example", "-all", "2G", "{PLAIN}x"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


def outcome(text: str) -> None:
    try:
        result = check_text(text, "fuzz.yml")
    except InventoryInvalid as err:
        assert err.problems
        for problem in err.problems:
            assert str(problem).startswith("fuzz.yml:") and problem.line >= 1
    else:
        assert isinstance(result, Inventory)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(SOURCES), data=st.data())
def test_structural_mutations(source, data):
    doc = yaml.safe_load(source)
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(list(paths(doc))[1:]))
        parent = doc
        for part in target[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[target[-1]] = data.draw(VALUES)
        elif action == "delete":
            del parent[target[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(VALUES)
        else:
            parent.append(copy.deepcopy(data.draw(VALUES)))
        if not isinstance(doc, dict):
            break
    outcome(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(source=st.sampled_from(SOURCES), data=st.data())
def test_textual_mutations(source, data):
    text = source
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:at] + text[at + 1:]
        else:
            text = text[:at] + data.draw(st.sampled_from(list(":-[]{}\"'&*!|>#\t \n%@"))) + text[at:]
    outcome(text)
