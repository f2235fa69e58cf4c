"""Where leases live and how long they last unless told otherwise.

Apart from :mod:`asyncmig.core.cosmos.leases` (which needs the SDK) so that the command line can
show these defaults in its help without loading the SDK into every command.
"""

DEFAULT_LEASE_CONTAINER = "asyncmig-leases"
DEFAULT_TTL_SECONDS = 30.0  # a lease not renewed for this long may be taken by another worker
