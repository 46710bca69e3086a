"""The admin API under /__admin: routes, the guards around them, the JSON they answer."""
