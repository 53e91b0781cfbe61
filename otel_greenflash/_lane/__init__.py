"""The lane stage: mapped events wait for delivery in memory or in the durable spool."""
