"""The money, in three stages: ``attribution`` (who held each GPU-second) → ``ledger``
(durable hourly running totals) → ``report`` (the monthly chargeback priced with a rate
card). Nothing here reads NVML or HTTP; it gets readings from the collectors."""
