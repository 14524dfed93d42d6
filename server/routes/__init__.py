"""Route handlers, grouped by the API they belong to."""
