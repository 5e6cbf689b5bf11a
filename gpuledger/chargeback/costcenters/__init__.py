"""Cost centers: who pays for a service's (or a tenant's) GPU-hours. See
``docs/cost-centers.md``."""
