"""payrail services: one package per independently deployed process."""
