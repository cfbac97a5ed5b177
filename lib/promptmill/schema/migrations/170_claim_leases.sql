-- Claim leases. A run sending paid requests keeps `lease_until` one lease ahead (renewed
-- every quarter lease while its request loop goes on). A process on another host can't be
-- seen, so its claims hold only until then: one SIGKILLed there loses its claims when the
-- lease runs out, instead of holding them until that host runs promptmill again.
ALTER TABLE runs ADD COLUMN lease_until TEXT;
