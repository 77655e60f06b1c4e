"""Built-in base models (`builtin:test|tiny|small|base`): see `finemem.models.base`."""
