"""`mlops serve`: the model server with canary routing, server-side batching and Prometheus metrics."""
