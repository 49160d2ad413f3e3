"""The composition root: the ``loa`` command and the one place that builds, starts and
stops the services of a process. Nothing imports this package."""
