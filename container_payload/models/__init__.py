"""Models that ship with the payload."""
