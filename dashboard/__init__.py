"""FastAPI REST API and web UI over the domain packages. Routes stay thin."""
