"""pyinfra entry point: apply this host's roles, in order, through the dispatch table."""

from pyinfra import host, logger

from deploys import deploys_for

runs, missing = deploys_for(host.data.mailstack_host.roles)
for role in missing:
    logger.warning(f"{host.name}: role {role!r} has no deploy yet; nothing was done for it")
for run in runs:
    run()
