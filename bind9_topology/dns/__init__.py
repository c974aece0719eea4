"""Talking DNS to real servers: checks, the gate loop, serials, DNSSEC, statistics."""
