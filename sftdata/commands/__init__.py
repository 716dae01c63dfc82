"""One Click command per module; each is a thin wrapper: read -> check -> op -> write."""
