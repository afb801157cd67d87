"""pyinfra entry point: apply this host's components, in order, from its plan."""

from pyinfra import host, logger

from deploys import converge, operation_order, served_roles

operation_order.install()

plan = host.data.mailstack_plan
for role in sorted(set(plan.roles) - served_roles()):
    logger.warning(f"{host.name}: role {role!r} has no deploy yet; nothing was done for it")
converge(plan)
