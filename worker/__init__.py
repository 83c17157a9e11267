"""The generation worker: presets, pipeline loading, clip generation and the Celery task."""
