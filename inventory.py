"""pyinfra inventory: the validated mailstack inventory named by $MAILSTACK_INVENTORY.

Groups are roles; each host's data is its plan (`mailstack_plan`), computed once for
the whole platform after the secrets step made whatever secret it needs. An invalid
inventory stops pyinfra before it connects anywhere (exit 2, every problem listed).
"""

import os
import sys

import deploys  # hands the components in
from mailstack.inventory import InventoryInvalid, load
from mailstack.plan import plans
from mailstack.pyinfra_data import host_data, pyinfra_name
from mailstack.secrets import reading_only

_path = os.environ.get("MAILSTACK_INVENTORY", "inventories/lab.yml")
try:
    _inventory = load(_path)
except InventoryInvalid as _err:
    print(_err, file=sys.stderr)
    print(f"{_path}: invalid inventory; nothing was deployed", file=sys.stderr)
    sys.exit(2)

deploys.make_secrets(_inventory)  # the one step that makes secrets; from here on they are only read
reading_only()
_plans = plans(_inventory)
all = ([(pyinfra_name(h), host_data(_inventory, h, _plans[h.name])) for h in _inventory.hosts], {})  # noqa: A001

for _role in sorted({r for h in _inventory.hosts for r in h.roles}):
    globals()[_role] = [pyinfra_name(h) for h in _inventory.hosts_with(_role)]
