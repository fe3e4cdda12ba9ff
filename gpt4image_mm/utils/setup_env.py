"""Register everything at once, for scripts (mmpretrain's ``setup_env``)."""


def register_all_modules() -> None:
    """Register every component into mmpretrain's registries, enforce safe
    checkpoint loading and teach MMEngine the ``gpt4image_mm::`` config
    prefix (imports torch, MMEngine and mmpretrain). A second call costs
    nothing."""
    import gpt4image_mm.engine  # noqa: F401
    import gpt4image_mm.registry  # noqa: F401  (the config prefix, the scope)
