"""wanflash: a self-hosted, Runware-compatible video generation service.

Importing this package (or ``wanflash.api``) never imports torch; only ``wanflash.pipelines``
modules that run a model do.
"""

__version__ = "0.1.0"
MODEL_ID = "alibaba:wan@2.6-flash"
