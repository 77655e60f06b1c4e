"""Built-in base models (`builtin:<size>`, the sizes in `base.SIZES`): see `finemem.models.base`."""
