"""CAI Studio's engine: constitutions, prompt sets, the DuckDB store and the pipeline stages.

Importing this package is cheap and never loads streamlit, torch or transformers; heavy
modules are imported inside the functions that need them.
"""

__version__ = "0.1.0"
