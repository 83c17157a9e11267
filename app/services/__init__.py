"""Use cases: each module owns one kind of work and its transactions; routes, CLI and worker call them.

Services sit below the entry points (web, api, cli, the worker's tasks) and above the domain core (models,
db, stats, media, prompts, presets). They never import a router, the web framework or the task queue
(``task_queue`` is the port the worker fills in). See docs/architecture.md.
"""
