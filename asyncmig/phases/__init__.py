"""The Vimarsh migration's phases: backup, create-containers, migrate, validate, rollback, restore.

Each phase is a module with one async entry point taking a :class:`~asyncmig.phases.context.PhaseContext`;
``asyncmig run`` (:mod:`asyncmig.phases.run`) chains backup -> create -> migrate -> validate.
"""
