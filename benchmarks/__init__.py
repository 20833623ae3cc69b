"""opcd's benchmarks: performance measurements, the reproduction reports and the TRL head-to-heads.

Run one from the repository root as ``python benchmarks/<name>.py`` (or, equivalently,
``python -m benchmarks.<name>``); ``benchmarks/README.md`` lists them with their results. The
pieces they share live in ``benchmarks.common``. Tests import every module as ``benchmarks.<name>``
(the repository root on ``sys.path``); no benchmark loads another by file path.
"""
