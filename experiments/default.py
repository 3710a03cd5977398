"""The defaults every experiment starts from: the library's declared keys, unchanged.

The keys, their defaults and meanings are declared once in ``siamese_jax/config_keys.py``; an
experiment config starts from ``get_config()`` here and overrides only what differs.
"""

from siamese_jax.config_keys import (KEYS, TINY, VARIANTS, Key, declared_paths, get_config,  # noqa: F401
                                     override, with_variant)
