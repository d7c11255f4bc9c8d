"""The ``effc`` command line: compile, run, check, bench and explain ONNX models.

``main.py`` builds the typer app and turns errors into exit codes (2: something the user can
fix, printed as one ``effc: error: ...`` line; 1: an internal error or a failed check). Each
command lives in its own module and imports torch, onnx and the compiler only when it runs, so
``effc --help`` stays fast.
"""
