"""Settings declared once: the schema (``schema``), every section of hanode.toml
(``sections``), the reader with its messages (``reader``) and the generated example config
(``example``). ``hanode.config`` loads a file with them; nothing here is imported eagerly, so
``hanode.settings.schema`` stays cheap for code that only builds policy objects."""
