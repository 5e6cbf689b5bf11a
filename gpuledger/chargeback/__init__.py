"""Attribution of GPU-seconds to services, the ledger and the monthly report (later issues)."""
