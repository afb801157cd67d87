"""Every test runs with the platform's components handed in, as the entry points do."""

import deploys  # noqa: F401
