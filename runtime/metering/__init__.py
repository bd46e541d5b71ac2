"""Usage metering: CloudEvents measured where the work happens (sink, API), a ledger in
the warehouse that counts each event once, and monthly statements per municipality.
See docs/metering.md."""
