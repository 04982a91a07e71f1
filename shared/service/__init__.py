"""The one service skeleton: settings base, components built in a lifespan, a supervisor for
background tasks, readiness and liveness, one problem format, and the process entrypoint.

Every service (intake, classifier, metrics) is built the same way::

    settings = IntakeSettings()                       # config.py, extends ServiceSettings
    app = service_app(settings, build=build, ...)     # main.py: wiring only
    # lifespan: async with AsyncExitStack() as stack: components = await build(settings, stack)
"""
