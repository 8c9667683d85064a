"""What a config field says about itself: its default, bounds and help.

The stage configs (pydantic models) are the one source of their defaults; the CLI's flags and
the studio's forms read them through these helpers instead of typing the values again.
"""

from __future__ import annotations

BOUND_KEYS = ("ge", "gt", "le", "lt")


def config_field(config_cls, name: str):
    """`(field, default)` of a config field. A dotted name reaches into a nested config through
    the parent's default: `"sampling.max_new_tokens"` is read from the config's own
    `default_factory` (160 for a critique, 256 for SamplingParams itself). A required field's
    default is None."""
    head, _, rest = name.partition(".")
    field = config_cls.model_fields[head]
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    if not rest:
        return field, default
    return type(default).model_fields[rest], getattr(default, rest)


def field_default(config_cls, name: str):
    """The default of a config field (dotted names as in `config_field`)."""
    return config_field(config_cls, name)[1]


def field_bounds(field) -> dict:
    """The numeric bounds a field declares, e.g. `{"ge": 1, "le": 16}`."""
    return {
        key: getattr(m, key)
        for m in field.metadata
        for key in BOUND_KEYS
        if getattr(m, key, None) is not None
    }


def sampling_with(config_cls, **given) -> dict:
    """The config's default sampling (its `default_factory`) with `given` changed, as a dict
    for a job config: the keys left out keep the stage's defaults, not SamplingParams'."""
    return {**field_default(config_cls, "sampling").model_dump(), **given}
