"""Real-PostgreSQL test bed: throwaway clusters, a fault proxy and a fake server."""
