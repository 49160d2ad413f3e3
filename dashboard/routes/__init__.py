"""API and UI routers, one module per area."""
